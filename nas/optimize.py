"""Black-box use of the strategies: `optimize(objective, space, ...)` runs the search loop (`nas.loop`) in
this process, ask -> objective -> tell, one evaluation at a time, and returns a `History`. No Ray, no
training.

Note: ``nas.optimize`` is the function (re-exported by the package); import the module's names with
``from nas.optimize import History, optimize``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from nas.loop import AskTellLoop, Outcome, Proposal, run_in_process
from nas.space import Assignment, SearchSpace, Variable, as_space
from nas.strategies import make_strategy


@dataclass
class Evaluation:
    """One call of the objective. ``value`` is None when it failed (raised, returned NaN or a non-number);
    ``error`` then says why. ``seconds``: the call's own time; ``elapsed_s``: since `optimize` started."""

    assignment: Assignment
    value: float | None
    error: str | None = None
    seconds: float = 0.0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class History:
    """The evaluations of one `optimize` run, in order, and what they found (``mode``: "max" or "min")."""

    evaluations: list[Evaluation] = field(default_factory=list)
    mode: str = "max"
    strategy: str = ""
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.evaluations)

    def __iter__(self) -> Iterator[Evaluation]:
        return iter(self.evaluations)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    @property
    def values(self) -> list[float]:
        """Each evaluation's value, NaN for a failed one (a numeric series)."""
        return [e.value if e.value is not None else math.nan for e in self.evaluations]

    @property
    def n_failed(self) -> int:
        return sum(not e.ok for e in self.evaluations)

    @property
    def best_index(self) -> int | None:
        """Index of the best successful evaluation (the first of equals), None if none succeeded."""
        best = None
        for i, e in enumerate(self.evaluations):
            if e.ok and (best is None or self._better(e.value, self.evaluations[best].value)):
                best = i
        return best

    @property
    def best(self) -> Assignment | None:
        i = self.best_index
        return None if i is None else dict(self.evaluations[i].assignment)

    @property
    def best_value(self) -> float | None:
        i = self.best_index
        return None if i is None else self.evaluations[i].value

    def best_so_far(self) -> list[float]:
        """The best value after each evaluation (NaN until the first success)."""
        curve, best = [], math.nan
        for e in self.evaluations:
            if e.ok and (math.isnan(best) or self._better(e.value, best)):
                best = e.value
            curve.append(best)
        return curve

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps({"mode": self.mode, "strategy": self.strategy, "seed": self.seed,
                           "evaluations": [asdict(e) for e in self.evaluations]}, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> History:
        data = json.loads(text)
        return cls(evaluations=[Evaluation(**e) for e in data["evaluations"]], mode=data["mode"],
                   strategy=data.get("strategy", ""), seed=data.get("seed"))


def optimize(objective: Callable[[Assignment], float], space: SearchSpace | Iterable[Variable],
             strategy: str = "evolution", budget: int = 100, seed: int = 0, mode: str = "max",
             **strategy_options: Any) -> History:
    """Evaluate `budget` assignments proposed by `strategy` (a name in `nas.strategies.STRATEGIES`,
    built with `make_strategy(strategy, space, seed, mode, **strategy_options)`) and return the History.

    `space` is a SearchSpace or a plain list of `nas.Categorical` / `nas.Ordinal` variables;
    ``objective(assignment) -> float`` gets a fresh dict each call. An objective that raises (any
    Exception; KeyboardInterrupt stops the run), returns NaN or returns something that is not a number is
    recorded as a failed evaluation with the error text, the strategy is told None, and the loop goes on.
    """
    if not isinstance(mode, str):
        raise ValueError(f"optimize: one objective, mode 'max' or 'min', got {mode!r}; for several objectives (a "
                         "Pareto front) ask and tell a strategy yourself, make_strategy(..., mode=[...]), or run "
                         "`nas search --objective ...`")
    if not callable(objective):
        raise TypeError(f"optimize: objective must be callable, got {type(objective).__name__}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"optimize: budget must be an integer >= 0, got {budget!r}")
    space = as_space(space)
    strat = make_strategy(strategy, space, seed=seed, mode=mode, **strategy_options)
    history = History(mode=mode, strategy=strategy, seed=seed)
    start = time.perf_counter()

    def call(p: Proposal) -> Outcome:
        t0 = time.perf_counter()
        value, error = _call(objective, dict(p.assignment))
        t1 = time.perf_counter()
        return Outcome("ok" if value is not None else "failed", value, error=error,
                       extra={"seconds": t1 - t0, "elapsed_s": t1 - start})

    class Record:
        def record(self, p: Proposal, o: Outcome) -> None:
            history.evaluations.append(Evaluation(dict(p.assignment), o.value, o.error, o.extra["seconds"],
                                                  o.extra["elapsed_s"]))

        def told(self, p: Proposal, o: Outcome) -> None:
            pass

    run_in_process(AskTellLoop(strat, journal=Record(), budget=budget), call)
    return history


def _call(objective: Callable[[Assignment], float], assignment: Assignment) -> tuple[float | None, str | None]:
    try:
        out = objective(assignment)
    except Exception as e:  # the candidate fails, not the search
        return None, f"{type(e).__name__}: {e}"
    try:
        if isinstance(out, str):
            raise TypeError
        value = float(out)
    except Exception:  # None, a string, a multi-element array, ...
        return None, f"objective returned {out!r} ({type(out).__name__}), not a number"
    if math.isnan(value):
        return None, "objective returned NaN"
    return value, None
