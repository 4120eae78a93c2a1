"""Human- and machine-readable descriptions of an architecture."""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from nas.builder import GraphModule, count_flops
from nas.graph import (
    CALL_OP,
    arch_id,
    aux_nodes,
    infer_shapes,
    input_shapes,
    ordered_inputs,
    output_node,
    topological_order,
)


def summary(g: nx.DiGraph) -> dict[str, Any]:
    """The facts `nas describe --json` prints: params, flops (multiply-accumulates), shapes, arch_id."""
    shapes = infer_shapes(g)
    with torch.device("meta"):
        model = GraphModule(g)
    aux = aux_nodes(g)
    params = sum(p.numel() for p in model.parameters())
    aux_params = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in aux)
    out = {
        "arch_id": arch_id(g),
        "space": g.graph.get("space"),
        "preset": g.graph.get("preset"),
        "params": params,
        "flops": count_flops(g),
        "input_shape": list(g.graph["input_shape"]),
        "output_shape": list(shapes[output_node(g)]),
        "num_nodes": g.number_of_nodes(),
        "num_edges": g.number_of_edges(),
        "assignment": g.graph.get("assignment"),
    }
    if len(input_shapes(g)) > 1:
        out["input_shapes"] = [list(s) for s in input_shapes(g)]
    if aux:
        out["aux_params"] = aux_params
    if g.graph.get("options"):
        out["options"] = g.graph["options"]
    return out


def _short_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def render(g: nx.DiGraph, max_rows: int | None = None) -> str:
    """A readable table: one row per node with its op, inputs, output shape and parameter count."""
    shapes = infer_shapes(g)
    with torch.device("meta"):
        model = GraphModule(g)
    rows = [("node", "op", "inputs", "output", "params")]
    shown_subgraphs = set()
    for n in topological_order(g):
        d = g.nodes[n]
        sub = model._modules.get(n)
        if d["op"] == CALL_OP and d["params"]["graph"] not in shown_subgraphs:  # its weights, at its first call
            sub = model._modules.get(d["params"]["graph"])
            shown_subgraphs.add(d["params"]["graph"])
        n_params = sum(p.numel() for p in sub.parameters()) if sub is not None else 0
        op = d["op"] + (f"({_short_params(d.get('params', {}))})" if d.get("params") else "")
        ins = ordered_inputs(g, n)
        inputs = (f"{d['merge']}(" + ", ".join(ins) + ")") if d.get("merge") else ", ".join(ins)
        rows.append((n + (" [aux]" if d.get("aux") else ""), op, inputs, "x".join(map(str, shapes[n])),
                     f"{n_params:,}" if n_params else ""))
    shown = rows if max_rows is None or len(rows) <= max_rows + 1 else rows[: max_rows + 1]
    widths = [min(max(len(r[i]) for r in shown), 60) for i in range(5)]
    lines = ["  ".join(c[:60].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    if shown is not rows:
        lines.append(f"... {len(rows) - len(shown)} more nodes (--all to show every node)")
    s = summary(g)
    lines += [
        "",
        f"space: {s['space']}  preset: {s['preset']}  arch_id: {s['arch_id']}",
        f"params: {s['params']:,}  flops (multiply-accumulates): {s['flops']:,}",
        f"input: {', '.join('x'.join(map(str, v)) for v in s.get('input_shapes', [s['input_shape']]))}  "
        f"output: {'x'.join(map(str, s['output_shape']))}",
    ]
    if "aux_params" in s:
        lines.append(f"auxiliary heads: {s['aux_params']:,} params (training only)")
    return "\n".join(lines)
