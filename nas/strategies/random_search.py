"""Random search: uniform random assignments, without repeats while the space has unseen ones.

The baseline every other strategy is measured against. Also home of `sample_unseen` (a uniform draw
among the assignments not yet evaluated, rejected or pending), which the other strategies share.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection

from nas.space import Assignment, SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.ledger import Key, assignment_key, key_assignment

__all__ = ["Key", "RandomSearch", "assignment_key", "key_assignment", "sample_unseen"]

SAMPLE_TRIES = 100  # rejection-sampling draws before the fallback below
ENUMERATE_LIMIT = 100_000  # spaces up to this size are enumerated when rejection keeps hitting seen points


def sample_unseen(space: SearchSpace, rng: random.Random, taken: Collection[Key],
                  tries: int = SAMPLE_TRIES) -> Assignment:
    """A uniform random assignment whose key is not in `taken`, if one exists.

    Rejection sampling, at most `tries` draws (each uniform over the space, so a success is uniform over
    the unseen assignments). If every draw hits `taken` and the space has at most ENUMERATE_LIMIT
    assignments, the unseen ones are enumerated and one is drawn uniformly; a larger space that is that
    full gives the last draw, a repeat. An exhausted space (every assignment taken) gives a uniform draw.
    """
    size = space.size()
    if len(taken) >= size:
        return space.sample(rng)
    a = space.sample(rng)
    for _ in range(tries):
        if assignment_key(space, a) not in taken:
            return a
        a = space.sample(rng)
    if size <= ENUMERATE_LIMIT:
        ranges = [range(len(v)) for v in space.variables]
        unseen = [k for k in itertools.product(*ranges) if k not in taken]
        if unseen:
            return key_assignment(space, rng.choice(unseen))
    return a


class RandomSearch(Strategy):
    """Uniform random assignments. No assignment is proposed twice (counting evaluated, rejected and
    pending ones) while unseen ones remain, within the bounded retry of `sample_unseen`; once the space is
    exhausted, repeats are uniform draws. Failed evaluations count as evaluated (they are not proposed
    again)."""

    name = "random"

    def propose(self) -> Assignment:
        return sample_unseen(self.space, self.rng, self.taken())

    def observe(self, assignment: Assignment, value: float | None, score: float | None) -> None:
        pass
