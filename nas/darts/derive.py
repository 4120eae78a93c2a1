"""From architecture weights to a discrete assignment, and how much of it is parameter-free.

Op choices: the alternative of largest weight. Zero alternatives (DARTS' 'none') are excluded where the
paper excludes them: in cell spaces with input choices (a node keeps its k strongest incoming edges, by
the largest non-none weight on each, and each kept edge its strongest non-none op). For plain op choices
(no relaxation) they are kept by default, since 'none' is then an ordinary alternative of the space (as
in NAS-Bench-201's DARTS baseline); ``exclude_none=True`` drops them there too.

DARTS is known to collapse onto parameter-free ops (skip connections, pooling, none) as its search goes
on; `parameter_free_share` measures that on the derived network: the share of its op choices whose node
has no parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import torch

from nas.darts.supernet import Supernet
from nas.space import Assignment, SearchSpace


def _argmax(values: list, weights: list[float], excluded: list) -> Any:
    allowed = [i for i, v in enumerate(values) if v not in excluded] or list(range(len(values)))
    return values[max(allowed, key=lambda i: (weights[i], -i))]


def derive(net: Supernet, weights: Mapping[str, list[float]], exclude_none: bool | None = None) -> Assignment:
    """The target space's assignment the weights (variable -> softmax weights) stand for."""
    missing = [v for v in net.values if v not in weights]
    if missing:
        raise ValueError(f"derive: no architecture weights for variable(s) {missing}")
    for var, w in weights.items():
        if var in net.values and len(w) != len(net.values[var]):
            raise ValueError(f"derive: variable {var!r} has {len(net.values[var])} alternatives but "
                             f"{len(w)} weights")
    relaxation = net.relaxation
    exclude = relaxation is not None if exclude_none is None else bool(exclude_none)
    out: dict[str, Any] = dict(net.fixed)
    used: set[str] = set()
    if relaxation is not None:
        for node in relaxation.nodes:
            strength = {}
            for j, edge in node.edges.items():
                vals, w, zero = net.values[edge], weights[edge], net.zero_values[edge]
                nonzero = [w[i] for i, v in enumerate(vals) if v not in zero] or list(w)
                strength[j] = max(nonzero)
                used.add(edge)
            order = list(node.edges)
            kept = sorted(order, key=lambda j: (-strength[j], order.index(j)))[:len(node.input_vars)]
            for in_var, op_var, j in zip(node.input_vars, node.op_vars, kept, strict=True):
                edge = node.edges[j]
                out[in_var] = j
                out[op_var] = _argmax(net.values[edge], weights[edge], net.zero_values[edge])
    target_names = set(net.target.names)
    for var, vals in net.values.items():
        if var in used:
            continue
        if var not in target_names:
            raise ValueError(f"derive: relaxed variable {var!r} is neither an edge of the relaxation nor a "
                             f"variable of space {net.target.name!r}")
        out[var] = _argmax(vals, weights[var], net.zero_values[var] if exclude else [])
    return net.target.validate(out)


def op_choice_report(space: SearchSpace, g: nx.DiGraph, assignment: Mapping[str, Any]) -> dict[str, dict]:
    """variable -> {value, node, op, params} for each op choice of `space` in its architecture `g`."""
    from nas.builder import GraphModule

    with torch.device("meta"):
        model = GraphModule(g)
    marked = {d["choice"]: n for n, d in g.nodes(data=True) if d.get("choice") is not None}
    report = {}
    for var in space.op_choices:
        n = marked[var.name]
        report[var.name] = {"value": assignment[var.name], "node": n, "op": g.nodes[n]["op"],
                            "params": sum(p.numel() for p in model.get_submodule(n).parameters())}
    return report


def parameter_free_share(report: Mapping[str, dict]) -> float:
    """The share of op choices whose node has no parameters (skip, pooling, none), 0..1."""
    return sum(r["params"] == 0 for r in report.values()) / len(report) if report else 0.0
