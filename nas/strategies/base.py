"""The strategy interface: `ask() -> assignment`, `tell(assignment, value)`, `reject(assignment, reason)`.

Pure Python, seeded, no Ray: every strategy is tested on a plain function. Strategies are asynchronous:
`ask` may be called several times before the matching `tell`s arrive (one per busy worker), and tells may
come back in any order. A failed candidate is told with ``value=None`` (or NaN): the strategy records it
and never counts it as good. A proposal that a constraint rejected before evaluation (too many
parameters, say) is told with `reject`: it is neither a result nor a failure, and it is not proposed
again. State round-trips through `state_dict` / `load_state_dict` as plain JSON-able data, so a search
restored from disk continues exactly where it stopped.

What every strategy shares is kept here once, not in each strategy: the `nas.strategies.ledger.Ledger`
of seen and pending assignments (updated around `propose` / `observe`), the count of results, the seeded
generator and the sign of `mode`. A strategy implements `propose()` (reading `taken()` to avoid repeats)
and `observe(assignment, value, score)`; deduplication of architectures, constraints and failure
handling of whole evaluations are wrappers around a strategy (`nas.loop`).

Several objectives: ``mode`` a sequence of directions (``["max", "min"]``) makes a multi-objective
strategy. It is told a vector of values, one per objective (None, or a NaN anywhere: a failure), and its
`score` is the vector to maximise in every coordinate; the strategy searches the Pareto front of those
(`nas.pareto`). One direction (a string, or a sequence of one) is the single-objective strategy, with
plain numbers, exactly as before.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from nas.space import Assignment, SearchSpace
from nas.strategies.ledger import Key, Ledger, assignment_key


class Strategy(ABC):
    """Base class. Subclasses implement `propose`, `observe` and, for extra state, `_extra_state` /
    `_load_extra_state`. Internally every strategy maximises `score(value)`; `mode="min"` flips the sign. A
    sequence of modes (two or more) makes it multi-objective (see the module docstring)."""

    name = "strategy"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str | Sequence[str] = "max"):
        self.modes = check_modes(mode)
        self.space = space
        self.seed = seed
        self.mode = self.modes[0] if len(self.modes) == 1 else list(self.modes)
        self.rng = random.Random(seed)
        self.n_told = 0  # results told (successes and failures), not rejections
        self.n_rejected = 0
        self.ledger = Ledger()

    @property
    def n_objectives(self) -> int:
        return len(self.modes)

    @property
    def multi_objective(self) -> bool:
        return len(self.modes) > 1

    def score(self, value: Any) -> Any:
        """The value to maximise, or None for a failed evaluation (None or NaN); a value that is not a
        number (a string too, even "1.5") raises. Multi-objective: a tuple, one score per objective, from
        a sequence of as many values (None if any is None or NaN)."""
        if not self.multi_objective:
            return self._score_one(value, self.modes[0])
        if value is None:
            return None
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__len__"):
            raise TypeError(f"a {self.n_objectives}-objective strategy is told {self.n_objectives} values (or None "
                            f"for a failure), got {value!r}")
        if len(value) != self.n_objectives:
            raise ValueError(f"a {self.n_objectives}-objective strategy is told {self.n_objectives} values, got "
                             f"{len(value)}: {value!r}")
        scores = [self._score_one(v, m) for v, m in zip(value, self.modes, strict=True)]
        return None if any(s is None for s in scores) else tuple(scores)

    @staticmethod
    def _score_one(value: Any, mode: str) -> float | None:
        if isinstance(value, str | bytes):
            raise TypeError(f"a strategy is told a number (or None for a failure), got {value!r}")
        if value is None or math.isnan(value := float(value)):  # float(): numpy float32 NaN is no float
            return None
        return value if mode == "max" else -value

    def told_value(self, value: Any) -> Any:
        """`value` as a strategy keeps it: a float, a list of floats (multi-objective), or None (failed)."""
        if self.score(value) is None:
            return None
        return [float(v) for v in value] if self.multi_objective else float(value)

    # -- the interface the driver calls ------------------------------------------------------------
    def ask(self) -> Assignment:
        """The next assignment to evaluate (recorded as pending until it is told or rejected)."""
        a = self.propose()
        self.ledger.asked(assignment_key(self.space, a))
        return a

    def tell(self, assignment: Assignment, value: float | None) -> None:
        """The result of evaluating `assignment` (None or NaN: it failed)."""
        score = self.score(value)  # a value that is not a number raises here
        assignment = self.space.validate(assignment)
        self.ledger.told(assignment_key(self.space, assignment))
        self.n_told += 1
        self.observe(assignment, None if score is None else self.told_value(value), score)

    def reject(self, assignment: Assignment, reason: str = "") -> None:
        """`assignment` was not evaluated: a constraint ruled it out (`reason` says which). It is not a
        failure and not a result; like them it is in `taken()`, so it is not proposed again while the
        strategy finds an unseen alternative (evolution's stuck-parent fallback is the documented exception)."""
        assignment = self.space.validate(assignment)
        self.ledger.told(assignment_key(self.space, assignment))
        self.n_rejected += 1
        self.on_reject(assignment, reason)

    def clear_pending(self) -> None:
        """Forget asks whose results will never come (called when a search resumes after a kill)."""
        self.ledger.pending = []

    # -- what a strategy implements ------------------------------------------------------------------
    @abstractmethod
    def propose(self) -> Assignment:
        """The next assignment; `taken()` holds the ones evaluated, rejected or pending."""

    @abstractmethod
    def observe(self, assignment: Assignment, value: float | None, score: float | None) -> None:
        """Learn from a result: `value` as told, `score` the value to maximise (None: it failed)."""

    def on_reject(self, assignment: Assignment, reason: str) -> None:  # noqa: B027 - optional hook
        """Learn from a rejection (nothing by default: the ledger already keeps it from being proposed)."""

    # -- the ledger, read by strategies and tests ----------------------------------------------------
    def taken(self) -> set[Key]:
        return self.ledger.taken()

    @property
    def seen(self) -> set[Key]:
        return self.ledger.seen

    @property
    def pending(self) -> list[Key]:
        return self.ledger.pending

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"name": self.name, "seed": self.seed, "mode": self.mode, "n_told": self.n_told,
                "n_rejected": self.n_rejected, "rng": [version, list(internal), gauss],
                **self.ledger.state_dict(), **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state is for strategy {state.get('name')!r}, not {self.name!r}")
        version, internal, gauss = state["rng"]
        if list(check_modes(state["mode"])) != list(self.modes):
            raise ValueError(f"state is for objectives {state['mode']!r}, this strategy's are {self.mode!r}")
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed, self.n_told = state["seed"], state["n_told"]
        self.n_rejected = state.get("n_rejected", 0)
        self.ledger.load_state_dict(state)
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `_extra_state` saved (nothing by default)."""


def check_modes(mode: Any) -> tuple[str, ...]:
    """The directions of a strategy's objectives: "max" / "min", or a non-empty sequence of them."""
    modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list | tuple) else None
    if not modes or any(m not in ("max", "min") for m in modes):
        raise ValueError(f"mode must be 'max' or 'min' (or a list of them, one per objective), got {mode!r}")
    return modes
