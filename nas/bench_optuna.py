"""Optuna's samplers as peers in `nas bench` (benchmark only: ``pip install -e ".[bench]"``).

`OptunaPeer` drives an Optuna study through the same ask/tell interface as graphnas's strategies
(`nas.strategies.base.Strategy`), so a peer runs in the same loop, on the same table look-ups, with the
same budget of simulated seconds. Each variable of the space is one ``suggest_categorical`` (Optuna's
samplers see every variable as categorical; an ordinal's order is not given to them). The samplers keep
their defaults, seeded with the run's seed: ``NSGAIISampler(seed=seed)`` and ``TPESampler(seed=seed)``
(multi-objective TPE where there are several objectives).

Repeats: where Optuna asks for an architecture already evaluated, the adapter answers it from what that
evaluation gave (Optuna is told the same values, no simulated time is charged), as the search driver's
deduplication does, and asks again; after `MAX_CACHED_IN_A_ROW` such answers in a row it lets the repeat
through (it is then evaluated and charged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nas.space import Assignment, SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.ledger import Key, assignment_key

PEERS = {"optuna-nsga2": "nsga2", "optuna-tpe": "tpe"}
MAX_CACHED_IN_A_ROW = 1000


class OptunaUnavailable(ImportError):
    """Optuna is not installed (it is a benchmark-only extra)."""


class OptunaPeer(Strategy):
    name = "optuna"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str | Sequence[str] = "max",
                 sampler: str = "nsga2"):
        super().__init__(space, seed=seed, mode=mode)
        try:
            import optuna
        except ImportError:
            raise OptunaUnavailable("optuna is not installed; it is a benchmark-only extra: "
                                    "pip install -e \".[bench]\"") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if sampler == "nsga2":
            made = optuna.samplers.NSGAIISampler(seed=seed)
        elif sampler == "tpe":
            made = optuna.samplers.TPESampler(seed=seed)
        else:
            raise ValueError(f"optuna peer: sampler must be nsga2 or tpe, got {sampler!r}")
        directions = ["maximize" if m == "max" else "minimize" for m in self.modes]
        self.sampler = sampler
        self.study = optuna.create_study(directions=directions, sampler=made)
        self._trials: dict[Key, list[Any]] = {}  # asked, not yet told
        self._known: dict[Key, Any] = {}  # evaluated: the values told (None: failed)
        self.n_cached = 0

    def propose(self) -> Assignment:
        for _ in range(MAX_CACHED_IN_A_ROW + 1):
            trial = self.study.ask()
            a = {v.name: trial.suggest_categorical(v.name, list(v.values)) for v in self.space.variables}
            k = assignment_key(self.space, a)
            if k in self._known:
                self._tell(trial, self._known[k])
                self.n_cached += 1
                continue
            break
        self._trials.setdefault(k, []).append(trial)
        return a

    def observe(self, assignment: Assignment, value: Any, score: Any) -> None:
        k = assignment_key(self.space, assignment)
        waiting = self._trials.get(k)
        if not waiting:  # told without an ask of ours (never in the bench)
            return
        trial = waiting.pop(0)
        self._known[k] = value if score is not None else None
        self._tell(trial, self._known[k])

    def _tell(self, trial: Any, value: Any) -> None:
        import optuna

        if value is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, list(value) if self.multi_objective else float(value))


def make_peer(name: str, space: SearchSpace, seed: int, mode: str | Sequence[str]) -> OptunaPeer:
    return OptunaPeer(space, seed=seed, mode=mode, sampler=PEERS[name])
