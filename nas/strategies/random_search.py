"""Random search: uniform random assignments, without repeats while the space has unseen ones.

The baseline every other strategy is measured against. Also home of the two helpers the other
strategies share: `assignment_key` (an assignment as a tuple of value indices) and `sample_unseen`
(a uniform draw among the assignments not yet evaluated or pending).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Mapping
from typing import Any

from nas.space import Assignment, SearchSpace
from nas.strategies.base import Strategy

Key = tuple[int, ...]

SAMPLE_TRIES = 100  # rejection-sampling draws before the fallback below
ENUMERATE_LIMIT = 100_000  # spaces up to this size are enumerated when rejection keeps hitting seen points


def assignment_key(space: SearchSpace, assignment: Mapping[str, Any]) -> Key:
    """The assignment as the index of each variable's value, in the space's variable order (hashable,
    JSON-able as a list). Raises `SpaceError` naming the variable if a value is not in its domain."""
    return tuple(var.index(assignment[var.name]) for var in space.variables)


def key_assignment(space: SearchSpace, key: Key) -> Assignment:
    return {var.name: var.values[i] for var, i in zip(space.variables, key, strict=True)}


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
    """Uniform random assignments. No assignment is proposed twice (counting evaluated and pending ones)
    while unseen ones remain, within the bounded retry of `sample_unseen`; once the space is exhausted,
    repeats are uniform draws. Failed evaluations count as evaluated (they are not proposed again)."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str = "max"):
        super().__init__(space, seed=seed, mode=mode)
        self.seen: set[Key] = set()
        self.pending: list[Key] = []  # asked, not yet told, in ask order (a multiset)

    def ask(self) -> Assignment:
        a = sample_unseen(self.space, self.rng, self.seen.union(self.pending))
        self.pending.append(assignment_key(self.space, a))
        return a

    def tell(self, assignment: Assignment, value: float | None) -> None:
        self.score(value)  # a value that is not a number raises here
        key = assignment_key(self.space, self.space.validate(assignment))
        if key in self.pending:
            self.pending.remove(key)
        self.seen.add(key)
        self.n_told += 1

    def clear_pending(self) -> None:
        self.pending = []

    def _extra_state(self) -> dict[str, Any]:
        return {"seen": sorted(list(k) for k in self.seen), "pending": [list(k) for k in self.pending]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seen = {tuple(k) for k in state["seen"]}
        self.pending = [tuple(k) for k in state["pending"]]
