"""Search strategies, found by name: the ask/tell ones (`STRATEGIES`, each a
`nas.strategies.base.Strategy`) and the plans over the search driver (`PLANS`: DARTS, which trains a
supernet instead of proposing assignments to score)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from nas.space import SearchSpace
from nas.strategies.base import Strategy

STRATEGIES: dict[str, str] = {
    "random": "nas.strategies.random_search:RandomSearch",
    "evolution": "nas.strategies.evolution:RegularizedEvolution",
    "combo": "nas.strategies.combo:Combo",
}

# strategies that are a plan over the driver's public steps (nas.search), not an ask/tell loop:
# ``plan(cfg, folder, log) -> nas.search.SearchOutcome``
PLANS: dict[str, str] = {
    "darts": "nas.darts.plan:run_darts",
}

PLAN_MESSAGE = ("strategy {name!r} cannot optimise a black-box objective: it is a plan over the search driver "
                "(DARTS trains a supernet in which every op choice is a softmax mixture of its alternatives, so it "
                "needs a search space with op-choice variables and a data set, not a function of an assignment). "
                "Run it with `nas search --strategy {name} --space <space>` (or nas.search.run_search("
                "SearchConfig(strategy={name!r}, ...))); for a black-box objective use {asktell}.")


def _load(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def strategy_class(name: str) -> type[Strategy]:
    if name in PLANS:
        raise ValueError(PLAN_MESSAGE.format(name=name, asktell=" or ".join(repr(s) for s in STRATEGIES)))
    try:
        path = STRATEGIES[name]
    except KeyError:
        known = sorted([*STRATEGIES, *PLANS])
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(known)}") from None
    return _load(path)


def strategy_plan(name: str) -> Callable[..., Any] | None:
    """The plan of a strategy in `PLANS`, or None for an ask/tell strategy."""
    return _load(PLANS[name]) if name in PLANS else None


def make_strategy(name: str, space: SearchSpace, seed: int = 0, mode: str | Sequence[str] = "max",
                  **options: Any) -> Strategy:
    """Instantiate strategy `name`; an option it does not take raises naming the option. `mode`: the
    direction of the objective, or a list of directions (one per objective) for a multi-objective search."""
    cls = strategy_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "space", "seed", "mode"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(accepted)}")
    return cls(space, seed=seed, mode=mode, **options)


__all__ = ["PLANS", "STRATEGIES", "Strategy", "make_strategy", "strategy_class", "strategy_plan"]
