"""Architecture graph -> torch.nn.Module. Nothing else in graphnas constructs networks.

`GraphModule` registers one submodule per node under the node's id (so ``state_dict`` keys are
``<node>.weight``), and its forward runs a precomputed plan in topological order: merge the node's
inputs, run its op, and drop every intermediate tensor after its last use, so peak memory is that of a
hand-written network. Auxiliary heads (nodes marked ``aux``) run only in training mode; their outputs
are left in ``module.aux_outputs`` for the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from nas.graph import (
    ArchitectureError,
    aux_nodes,
    infer_shapes,
    input_node,
    ordered_inputs,
    output_node,
    topological_order,
)
from nas.ops import Shape, apply_merge, get_op, merge_shape, resolve_params

# ops whose output is a fresh tensor nobody else holds, so a following ReLU may work in place
_FRESH_OUTPUT_OPS = {"conv", "bn", "linear"}


@dataclass(frozen=True)
class _Step:
    name: str
    out: int
    inputs: tuple[int, ...]
    merge: str | None
    free: tuple[int, ...]  # slots whose last reader is this step
    aux: bool


class GraphModule(nn.Module):
    """A network compiled from an architecture graph."""

    def __init__(self, g: nx.DiGraph):
        super().__init__()
        shapes = infer_shapes(g)
        order = topological_order(g)
        src, out = input_node(g), output_node(g)
        aux = aux_nodes(g)
        slot = {n: i for i, n in enumerate(order)}
        self.input_shape: Shape = shapes[src]
        self.output_shape: Shape = shapes[out]
        self.aux_outputs: list[torch.Tensor] = []
        last_reader: dict[str, str] = {}
        for n in order:
            for p in ordered_inputs(g, n):
                last_reader[p] = n
        steps = []
        self._aux_sinks = [slot[n] for n in order if n in aux and g.out_degree(n) == 0]
        for n in order:
            if n == src:
                continue
            if hasattr(nn.Module, n) or n in ("aux_outputs", "input_shape", "output_shape"):
                raise ArchitectureError(f"node id {n!r} clashes with an nn.Module attribute; rename it")
            d = g.nodes[n]
            preds = ordered_inputs(g, n)
            params = resolve_params(d["op"], d.get("params", {}))
            if d["op"] == "relu" and _may_run_in_place(g, n, preds, src):
                params["inplace"] = True
            in_shape = shapes[preds[0]] if len(preds) == 1 else _merged_shape(d["merge"], [shapes[p] for p in preds])
            self.add_module(n, get_op(d["op"]).build(params, in_shape))
            free = tuple(slot[p] for p in preds if last_reader.get(p) == n and p != out)
            steps.append(_Step(n, slot[n], tuple(slot[p] for p in preds), d.get("merge") if len(preds) > 1 else None,
                               free, n in aux))
        self._steps = steps
        self._n_slots = len(order)
        self._in_slot, self._out_slot = slot[src], slot[out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor | None] = [None] * self._n_slots
        values[self._in_slot] = x
        run_aux = self.training and bool(self._aux_sinks)
        for step in self._steps:
            if step.aux and not run_aux:
                continue
            if step.merge is None:
                y = values[step.inputs[0]]
            else:
                y = apply_merge(step.merge, [values[i] for i in step.inputs])
            values[step.out] = self._modules[step.name](y)
            for i in step.free:
                if i not in self._aux_sinks:
                    values[i] = None
        self.aux_outputs = [values[i] for i in self._aux_sinks] if run_aux else []
        return values[self._out_slot]


def _merged_shape(merge: str, shapes: list[Shape]) -> Shape:
    return merge_shape(merge, shapes, "merge")


def _may_run_in_place(g: nx.DiGraph, n: str, preds: list[str], src: str) -> bool:
    if len(preds) > 1:
        return True  # the merge made a fresh tensor
    p = preds[0]
    return p != src and g.out_degree(p) == 1 and g.nodes[p]["op"] in _FRESH_OUTPUT_OPS


def build(g: nx.DiGraph) -> GraphModule:
    """Compile an architecture graph into a trainable module."""
    return GraphModule(g)


def count_params(g: nx.DiGraph) -> int:
    """Trainable parameter count, computed on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = GraphModule(g)
    return sum(p.numel() for p in model.parameters())


def count_flops(g: nx.DiGraph, include_aux: bool = False) -> int:
    """Multiply-accumulates of one forward pass of one sample (convolutions and linear layers)."""
    shapes = infer_shapes(g)
    aux = aux_nodes(g)
    total = 0
    for n in topological_order(g):
        d = g.nodes[n]
        if d["op"] == "input" or (n in aux and not include_aux):
            continue
        preds = ordered_inputs(g, n)
        in_shape = shapes[preds[0]] if len(preds) == 1 else _merged_shape(d["merge"], [shapes[p] for p in preds])
        spec = get_op(d["op"])
        total += int(spec.macs(resolve_params(d["op"], d.get("params", {})), in_shape, shapes[n]))
    return total
