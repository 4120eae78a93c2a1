"""How a cell space's *input* choices relax: plain data a space declares, read by relaxing strategies.

Op-choice variables relax generically (`nas.darts.supernet`): each becomes a softmax mixture of its
alternatives. Input choices ("node i takes its inputs from two of the earlier nodes") do not: DARTS
relaxes them by putting a mixed edge on *every* (node, earlier node) pair and, after the search, keeping
the k strongest edges of each node. A space states that with a `Relaxation`:

- ``space``: a second search space over the same network whose op-choice variables are one per
  candidate edge (its alternatives include a zero op, which is what lets an edge be dropped). It is an
  ordinary space (an evolution search can run on it too); DARTS relaxes its op choices generically.
- ``nodes``: for each node whose inputs are chosen, which variables of the original space hold its k
  inputs and k ops, and which edge variable of the relaxed space stands for each candidate input.

A space declares it as ``SearchSpace(..., relaxation=factory)``: a zero-argument callable returning the
`Relaxation`, called only when a strategy asks (`nas.darts.relax.find_relaxation`), so loading a space
does not build its relaxed space. This module is core data: it imports no strategy, so a space can
import it (spaces never import `nas.darts` or `nas.strategies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.space import SearchSpace, SpaceError


@dataclass(frozen=True)
class InputChoice:
    """One node of a cell: slot s takes input ``space[input_vars[s]]`` through op ``space[op_vars[s]]``;
    ``edges[j]`` is the relaxed space's op-choice variable of the candidate edge from input j."""

    input_vars: tuple[str, ...]
    op_vars: tuple[str, ...]
    edges: Mapping[Any, str]


@dataclass(frozen=True)
class Relaxation:
    space: SearchSpace
    nodes: tuple[InputChoice, ...]

    def check(self, target: SearchSpace) -> None:
        """Raise unless the relaxation fits `target` (variables exist, domains agree)."""
        relaxed_ops = {v.name for v in self.space.op_choices}
        for node in self.nodes:
            if len(node.input_vars) != len(node.op_vars) or not node.input_vars:
                raise SpaceError(f"relaxation of {target.name!r}: {node.input_vars} and {node.op_vars} must be "
                                 "equally long and not empty")
            if len(node.edges) < len(node.input_vars):
                raise SpaceError(f"relaxation of {target.name!r}: {node.input_vars} choose {len(node.input_vars)} "
                                 f"inputs among only {len(node.edges)} candidate edges")
            for var in node.input_vars:
                for value in node.edges:
                    if not target.variable(var).contains(value):
                        raise SpaceError(f"relaxation of {target.name!r}: input {value!r} is not in the domain "
                                         f"of variable {var!r}")
            for edge in node.edges.values():
                if edge not in relaxed_ops:
                    raise SpaceError(f"relaxation of {target.name!r}: edge variable {edge!r} is not an op-choice "
                                     f"variable of the relaxed space {self.space.name!r}")
                for var in node.op_vars:
                    domain = target.variable(var).values
                    extra = [v for v in self.space.variable(edge).values if v not in domain]
                    if extra:
                        raise SpaceError(f"relaxation of {target.name!r}: edge variable {edge!r} has value(s) "
                                         f"{extra} that op variable {var!r} lacks")
