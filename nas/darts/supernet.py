"""A space's DARTS supernet, built generically by the space's own build function.

Every op-choice variable of the space becomes a mixed op; every other variable keeps the value given
(or its default). Nothing in a space is DARTS-specific: the space is built once per alternative of each
op-choice variable (the others held at the base assignment), and the nodes whose (op, params) change
with that variable are the nodes it decides: the node it marks with ``choice=`` and, in cell spaces
whose cells share one genotype, the same node of every other cell of that type. Those nodes get op
``mixed`` with one candidate per alternative, in domain order; the graph is otherwise the base one.

A variable that changes the graph's structure (nodes, edges, merges), or two variables deciding one
node, cannot be relaxed this way and raise an error naming them. A space whose nodes choose their inputs
declares a `nas.relaxation.Relaxation` (``SearchSpace.relaxation``); the supernet is then built from the
relaxation's all-edges space, and the derived assignment maps back to the original space (`nas.darts.derive`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nas.darts.mixed import ZERO_OPS
from nas.darts.relax import find_relaxation
from nas.graph import ArchGraph, infer_shapes
from nas.ops import get_op
from nas.relaxation import Relaxation
from nas.space import Assignment, SearchSpace, SpaceError


@dataclass
class Supernet:
    graph: ArchGraph  # mixed nodes in place of the nodes op choices decide
    target: SearchSpace  # the space searched: the derived assignment is one of its points
    relaxed: SearchSpace  # the space whose op choices are mixed (target, or its relaxation's space)
    relaxation: Relaxation | None
    base: Assignment  # the relaxed space's assignment the supernet was built around
    fixed: Assignment  # the target's values of the variables DARTS does not search
    values: dict[str, list] = field(default_factory=dict)  # variable -> alternatives, in candidate order
    ops: dict[str, list[str]] = field(default_factory=dict)  # variable -> each alternative's op (first node)
    nodes: dict[str, list[str]] = field(default_factory=dict)  # variable -> the mixed nodes it decides
    zero_values: dict[str, list] = field(default_factory=dict)  # alternatives that are the zero op everywhere


def _signature(g: nx.DiGraph, n: str) -> str:
    d = g.nodes[n]
    return json.dumps([d["op"], d.get("params", {})], sort_keys=True, default=str)


def _structure(g: nx.DiGraph) -> tuple:
    nodes = {n: (d.get("merge"), bool(d.get("aux"))) for n, d in g.nodes(data=True)}
    edges = {(u, v, int(d.get("order", 0))) for u, v, d in g.edges(data=True)}
    return nodes, edges


def build_supernet(space: SearchSpace, assignment: Mapping[str, Any] | None = None, *,
                   num_classes: int | None = None, input_shape: tuple[int, ...] | None = None,
                   options: Mapping[str, Any] | None = None, partial_channels: int = 1,
                   affine: bool | None = False) -> Supernet:
    """The supernet of `space` (see the module docstring).

    `assignment`: values of variables that are not searched (op choices and, with a relaxation, input
    choices are; naming one raises). `affine`: set the ``affine`` param of candidates that have one
    (DARTS searches with affine=False batch norms in candidate ops; None keeps the space's).
    """
    assignment = dict(assignment or {})
    relaxation = find_relaxation(space)
    relaxed = relaxation.space if relaxation is not None else space
    searched = {v.name for v in space.op_choices}
    if relaxation is not None:
        searched |= {var for node in relaxation.nodes for var in (*node.input_vars, *node.op_vars)}
    named = sorted(set(assignment) & searched)
    if named:
        raise SpaceError(f"space {space.name!r}: {named} are searched by DARTS (op or input choices); leave them "
                         "out of the fixed assignment")
    fixed = {k: v for k, v in space.complete(assignment).items() if k not in searched}
    base = relaxed.complete({k: v for k, v in fixed.items() if k in relaxed.names})
    if not relaxed.op_choices:
        raise SpaceError(f"space {relaxed.name!r} has no op-choice variables: there is nothing for DARTS to relax")
    opts = {**relaxed.options, **(options or {})}
    n_cls = int(num_classes if num_classes is not None else relaxed.num_classes)
    shape = tuple(int(v) for v in (input_shape if input_shape is not None else relaxed.input_shape))
    g0 = relaxed.graph(base, num_classes=n_cls, input_shape=shape, **(options or {}))
    structure = _structure(g0)
    net = Supernet(ArchGraph(), space, relaxed, relaxation, base, fixed)
    owner: dict[str, str] = {}
    candidates: dict[str, list[dict]] = {}
    for var in relaxed.op_choices:
        graphs = []
        for value in var.values:
            if value == base[var.name]:
                graphs.append(g0)
                continue
            ga = relaxed.build({**base, var.name: value}, num_classes=n_cls, input_shape=shape, **opts)
            if _structure(ga) != structure:
                raise SpaceError(f"space {relaxed.name!r}: op-choice variable {var.name!r} = {value!r} changes the "
                                 "network's nodes or edges, not only ops; DARTS cannot mix its alternatives")
            graphs.append(ga)
        marked = [n for n, d in g0.nodes(data=True) if d.get("choice") == var.name]
        decided = [n for n in g0.nodes if n in marked or len({_signature(ga, n) for ga in graphs}) > 1]
        for n in decided:
            if n in owner:
                raise SpaceError(f"space {relaxed.name!r}: node {n!r} depends on op-choice variables {owner[n]!r} and "
                                 f"{var.name!r}; DARTS relaxes each node by one variable")
            owner[n] = var.name
            candidates[n] = [_candidate(ga.nodes[n], affine) for ga in graphs]
        net.values[var.name] = list(var.values)
        net.nodes[var.name] = decided
        net.ops[var.name] = [c["op"] for c in candidates[decided[0]]] if decided else []
        net.zero_values[var.name] = [v for i, v in enumerate(var.values)
                                     if decided and all(candidates[n][i]["op"] in ZERO_OPS for n in decided)]
    g = g0.copy()
    for n, var in owner.items():
        d = g.nodes[n]
        d["op"] = "mixed"
        d["params"] = {"variable": var, "candidates": candidates[n], "values": net.values[var],
                       "partial_channels": partial_channels}
        d["choice"] = var
    g.graph["supernet_of"] = space.name
    infer_shapes(g)
    net.graph = g
    return net


def _candidate(data: dict, affine: bool | None) -> dict:
    params = dict(data.get("params", {}))
    if affine is not None and "affine" in get_op(data["op"]).defaults:
        params["affine"] = affine
    return {"op": data["op"], "params": params}
