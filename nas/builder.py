"""Architecture graph -> torch.nn.Module. Nothing else in graphnas constructs networks.

`GraphModule` registers one submodule per node under the node's id (so ``state_dict`` keys are
``<node>.weight``), and its forward runs a precomputed plan in topological order: merge the node's
inputs, run its op, and drop every intermediate tensor after its last use, so peak memory is that of a
hand-written network. Auxiliary heads (nodes marked ``aux``) run only in training mode; their outputs
are left in ``module.aux_outputs`` for the loss. A graph with several inputs gives a module whose forward
takes them in index order; a subgraph is one `GraphModule` registered under its name, which every
``call`` node of it applies (shared weights, ``<subgraph>.<node>.weight`` in the state dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from nas.graph import (
    CALL_OP,
    ArchitectureError,
    aux_nodes,
    infer_shapes,
    input_nodes,
    node_input_shape,
    ordered_inputs,
    output_node,
    subgraphs,
    topological_order,
)
from nas.ops import Shape, apply_merge, get_op, resolve_params

# ops whose output is a fresh tensor nobody else holds, so a following ReLU may work in place
_FRESH_OUTPUT_OPS = {"conv", "bn", "linear"}


@dataclass(frozen=True)
class _Step:
    name: str  # the submodule to run: the node's own, or the subgraph a call node applies
    out: int
    inputs: tuple[int, ...]
    merge: str | None
    free: tuple[int, ...]  # slots whose last reader is this step
    aux: bool
    spread: bool = False  # an op of arity > 1: its inputs are separate arguments


class GraphModule(nn.Module):
    """A network compiled from an architecture graph."""

    def __init__(self, g: nx.DiGraph):
        super().__init__()
        shapes = infer_shapes(g)
        order = topological_order(g)
        srcs, out = input_nodes(g), output_node(g)
        src = srcs[0]
        aux = aux_nodes(g)
        subs = subgraphs(g) if any(g.nodes[n]["op"] == CALL_OP for n in order) else {}
        slot = {n: i for i, n in enumerate(order)}
        self.input_shape: Shape = shapes[src]
        self.input_shapes: list[Shape] = [shapes[s] for s in srcs]
        self.output_shape: Shape = shapes[out]
        self.aux_outputs: list[torch.Tensor] = []
        last_reader: dict[str, str] = {}
        for n in order:
            for p in ordered_inputs(g, n):
                last_reader[p] = n
        steps = []
        self._aux_sinks = [slot[n] for n in order if n in aux and g.out_degree(n) == 0]
        reserved = {"aux_outputs", "input_shape", "input_shapes", "output_shape"}
        for n in order:
            if n in srcs:
                continue
            d = g.nodes[n]
            params = resolve_params(d["op"], d.get("params", {}))
            name = params["graph"] if d["op"] == CALL_OP else n
            if hasattr(nn.Module, name) or name in reserved:
                kind = "subgraph name" if d["op"] == CALL_OP else "node id"
                raise ArchitectureError(f"{kind} {name!r} clashes with an nn.Module attribute; rename it")
            preds = ordered_inputs(g, n)
            if d["op"] == "relu" and _may_run_in_place(g, n, preds, srcs):
                params["inplace"] = True
            if d["op"] == CALL_OP:
                if name not in self._modules:  # built once, at its first call: every call shares it
                    self.add_module(name, GraphModule(subs[name]))
            else:
                self.add_module(n, get_op(d["op"]).build(params, node_input_shape(g, n, shapes)))
            free = tuple(slot[p] for p in preds if last_reader.get(p) == n and p != out)
            steps.append(_Step(name, slot[n], tuple(slot[p] for p in preds), d.get("merge") if len(preds) > 1 else None,
                               free, n in aux, spread=get_op(d["op"]).arity > 1))
        self._steps = steps
        self._n_slots = len(order)
        self._in_slots, self._out_slot = [slot[s] for s in srcs], slot[out]

    def forward(self, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
        """The network on its input(s): one tensor per input node, in index order."""
        if len(more) + 1 != len(self._in_slots):
            raise TypeError(f"this network takes {len(self._in_slots)} input(s), got {len(more) + 1}")
        values: list[torch.Tensor | None] = [None] * self._n_slots
        for i, v in zip(self._in_slots, (x, *more), strict=True):
            values[i] = v
        run_aux = self.training and bool(self._aux_sinks)
        for step in self._steps:
            if step.aux and not run_aux:
                continue
            if step.spread:
                values[step.out] = self._modules[step.name](*[values[i] for i in step.inputs])
            else:
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


def _may_run_in_place(g: nx.DiGraph, n: str, preds: list[str], srcs: str | list[str]) -> bool:
    if len(preds) > 1:
        return True  # the merge made a fresh tensor
    p = preds[0]
    inputs = {srcs} if isinstance(srcs, str) else set(srcs)
    return p not in inputs and g.out_degree(p) == 1 and g.nodes[p]["op"] in _FRESH_OUTPUT_OPS


def build(g: nx.DiGraph) -> GraphModule:
    """Compile an architecture graph into a trainable module."""
    return GraphModule(g)


def count_params(g: nx.DiGraph) -> int:
    """Trainable parameter count, computed on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = GraphModule(g)
    return sum(p.numel() for p in model.parameters())


def count_flops(g: nx.DiGraph, include_aux: bool = False) -> int:
    """Multiply-accumulates of one forward pass of one sample (convolutions and linear layers; a subgraph
    counts at each call)."""
    shapes = infer_shapes(g)
    aux = aux_nodes(g)
    sub_flops = {name: count_flops(sub) for name, sub in subgraphs(g).items()} if g.graph.get("subgraphs") else {}
    total = 0
    for n in topological_order(g):
        d = g.nodes[n]
        if d["op"] == "input" or (n in aux and not include_aux):
            continue
        params = resolve_params(d["op"], d.get("params", {}))
        if d["op"] == CALL_OP:
            total += sub_flops[params["graph"]]
            continue
        spec = get_op(d["op"])
        total += int(spec.macs(params, node_input_shape(g, n, shapes), shapes[n]))
    return total
