"""What a strategy has proposed and heard back about, kept once for every strategy.

A `Ledger` holds the keys (an assignment as the index of each variable's value) of the assignments that
were told (evaluated, failed or rejected: ``seen``) and of those asked and not yet told (``pending``, a
multiset in ask order). The `nas.strategies.base.Strategy` base class updates it around every
``ask`` / ``tell`` / ``reject``, so no strategy keeps its own copy; a strategy reads ``taken()`` to avoid
proposing a repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.space import Assignment, SearchSpace

Key = tuple[int, ...]


def assignment_key(space: SearchSpace, assignment: Mapping[str, Any]) -> Key:
    """The assignment as the index of each variable's value, in the space's variable order (hashable,
    JSON-able as a list). Raises `SpaceError` naming the variable if a value is not in its domain."""
    return tuple(var.index(assignment[var.name]) for var in space.variables)


def key_assignment(space: SearchSpace, key: Key) -> Assignment:
    return {var.name: var.values[i] for var, i in zip(space.variables, key, strict=True)}


class Ledger:
    """Seen and pending keys; plain data, saved with the strategy's state."""

    def __init__(self) -> None:
        self.seen: set[Key] = set()
        self.pending: list[Key] = []

    def taken(self) -> set[Key]:
        """Every key evaluated, rejected or pending: what a strategy should not propose again."""
        return self.seen.union(self.pending)

    def asked(self, key: Key) -> None:
        self.pending.append(key)

    def told(self, key: Key) -> None:
        if key in self.pending:
            self.pending.remove(key)
        self.seen.add(key)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": sorted(list(k) for k in self.seen), "pending": [list(k) for k in self.pending]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seen = {tuple(k) for k in state.get("seen", ())}
        self.pending = [tuple(k) for k in state.get("pending", ())]
