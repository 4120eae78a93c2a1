"""Search strategies, found by name. Each is a `nas.strategies.base.Strategy`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from nas.space import SearchSpace
from nas.strategies.base import Strategy

STRATEGIES: dict[str, str] = {
    "random": "nas.strategies.random_search:RandomSearch",
    "evolution": "nas.strategies.evolution:RegularizedEvolution",
    "combo": "nas.strategies.combo:Combo",
    "darts": "nas.darts.strategy:DartsStrategy",  # needs a space and data: nas search --strategy darts
}


def strategy_class(name: str) -> type[Strategy]:
    try:
        module, attr = STRATEGIES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
    return getattr(importlib.import_module(module), attr)


def make_strategy(name: str, space: SearchSpace, seed: int = 0, mode: str = "max", **options: Any) -> Strategy:
    """Instantiate strategy `name`; an option it does not take raises naming the option."""
    cls = strategy_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "space", "seed", "mode"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(accepted)}")
    return cls(space, seed=seed, mode=mode, **options)


__all__ = ["STRATEGIES", "Strategy", "make_strategy", "strategy_class"]
