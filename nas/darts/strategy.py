"""``strategy="darts"`` outside the search driver: a clear error, not an ask/tell loop.

DARTS is not a black-box strategy. It never proposes an assignment to be scored: it trains one supernet
whose op choices are softmax mixtures, and reads the architecture off the mixture weights. That needs a
search space with an architecture (op-choice variables) and a data set to train on, which an objective
function of an assignment does not give. `nas.optimize(..., strategy="darts")` therefore raises, naming
what to run instead. The constructor's signature lists DARTS' settings, so a misspelt option is still
reported as such by `nas.strategies.make_strategy`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from nas.darts.settings import DartsSettings
from nas.space import Assignment
from nas.strategies.base import Strategy

MESSAGE = ("strategy 'darts' cannot optimise a black-box objective: DARTS trains a supernet in which every op "
           "choice is a softmax mixture of its alternatives, so it needs a search space with an architecture "
           "(op-choice variables) and a data set, not a function of an assignment. Run it with "
           "`nas search --strategy darts --space <space>` (or nas.search.run_search(SearchConfig(strategy='darts', "
           "...))); for a black-box objective use 'evolution' or 'random'.")


class DartsStrategy(Strategy):
    name = "darts"

    def __init__(self, space: Any, seed: int = 0, mode: str = "max", **options: Any):
        raise ValueError(MESSAGE)

    def ask(self) -> Assignment:
        raise ValueError(MESSAGE)

    def tell(self, assignment: Assignment, value: float | None) -> None:
        raise ValueError(MESSAGE)


def _signature() -> inspect.Signature:
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("self", "space")]
    params += [inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0),
               inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default="max")]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None)
               for f in dataclasses.fields(DartsSettings) if f.name != "seed"]
    return inspect.Signature(params)


DartsStrategy.__init__.__signature__ = _signature()
