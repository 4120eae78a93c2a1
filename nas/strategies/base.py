"""The strategy interface: `ask() -> assignment`, `tell(assignment, value)`.

Pure Python, seeded, no Ray: every strategy is tested on a plain function. Strategies are asynchronous:
`ask` may be called several times before the matching `tell`s arrive (one per busy worker), and tells may
come back in any order. A failed candidate is told with ``value=None`` (or NaN): the strategy records it
and never counts it as good. State round-trips through `state_dict` / `load_state_dict` as plain
JSON-able data, so a search restored from disk continues exactly where it stopped.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from typing import Any

from nas.space import Assignment, SearchSpace


class Strategy(ABC):
    """Base class. Subclasses implement `ask`, `tell` and, for extra state, `_extra_state` /
    `_load_extra_state`. Internally every strategy maximises `score(value)`; `mode="min"` flips the sign."""

    name = "strategy"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.space = space
        self.seed = seed
        self.mode = mode
        self.rng = random.Random(seed)
        self.n_told = 0

    def score(self, value: float | None) -> float | None:
        """The value to maximise, or None for a failed evaluation (None or NaN)."""
        if value is None or math.isnan(value := float(value)):  # float(): numpy float32 NaN is no float
            return None
        return value if self.mode == "max" else -value

    @abstractmethod
    def ask(self) -> Assignment:
        """The next assignment to evaluate."""

    @abstractmethod
    def tell(self, assignment: Assignment, value: float | None) -> None:
        """The result of evaluating `assignment` (None or NaN: it failed)."""

    def clear_pending(self) -> None:  # noqa: B027 - optional hook
        """Forget asks whose results will never come (called when a search resumes after a kill)."""

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"name": self.name, "seed": self.seed, "mode": self.mode, "n_told": self.n_told,
                "rng": [version, list(internal), gauss], **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state is for strategy {state.get('name')!r}, not {self.name!r}")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed, self.mode, self.n_told = state["seed"], state["mode"], state["n_told"]
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `_extra_state` saved (nothing by default)."""
