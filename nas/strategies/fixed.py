"""A strategy that proposes one given assignment: what a one-proposal search runs (DARTS' supernet
search and its retraining of the derived architecture, `nas.darts.plan`). Not in the registry: it
searches nothing."""

from __future__ import annotations

from typing import Any

from nas.space import Assignment, SearchSpace
from nas.strategies.base import Strategy


class FixedAssignment(Strategy):
    name = "fixed"

    def __init__(self, space: SearchSpace, assignment: Assignment, seed: int = 0, mode: str = "max"):
        super().__init__(space, seed=seed, mode=mode)
        self.assignment = space.validate(assignment)

    def propose(self) -> Assignment:
        return dict(self.assignment)

    def observe(self, assignment: Assignment, value: float | None, score: float | None) -> None:
        pass

    def _extra_state(self) -> dict[str, Any]:
        return {"assignment": self.assignment}
