"""Finding a space's relaxation of its *input* choices, for DARTS (see `nas.relaxation`).

A space declares how its input choices relax as data: ``SearchSpace.relaxation``, a zero-argument
factory of a `nas.relaxation.Relaxation` (an all-edges space plus, per node, its input and op variables
and the edge variable of each candidate input). `find_relaxation` calls it and checks the result against
the space. Plug-ins that registered a factory with `register_relaxation(build_fn, factory)`, keyed by
the space's build function, keep working: that registry is the fallback when the space declares none.

Derivation (`nas.darts.derive`) keeps, per node, the k inputs whose strongest non-zero op weight is
largest (ties: the earlier input) and gives each kept slot that edge's strongest non-zero op, which is
DARTS' rule. `InputChoice` and `Relaxation` are re-exported here for existing imports.
"""

from __future__ import annotations

from collections.abc import Callable

from nas.relaxation import InputChoice, Relaxation
from nas.space import SearchSpace

__all__ = ["InputChoice", "Relaxation", "find_relaxation", "register_relaxation"]

_RELAXATIONS: dict[Callable, Callable[[], Relaxation]] = {}


def register_relaxation(build_fn: Callable, factory: Callable[[], Relaxation]) -> None:
    """Declare how the spaces built by `build_fn` relax their input choices, for spaces that do not set
    ``SearchSpace.relaxation`` (see the module docstring)."""
    _RELAXATIONS[build_fn] = factory


def find_relaxation(space: SearchSpace) -> Relaxation | None:
    """`space`'s relaxation (its ``relaxation`` factory, else the one registered for its build function),
    checked against `space`; None if it has none."""
    factory = space.relaxation or _RELAXATIONS.get(space.build)
    if factory is None:
        return None
    relaxation = factory()
    relaxation.check(space)
    return relaxation
