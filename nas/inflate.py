"""I3D-style inflation (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017): a 2D image
architecture graph (input (C, H, W)) becomes a 3D video one (input (C, T, H, W)), and its trained 2D
weights become weights of the 3D network that, on a clip of T identical frames, computes exactly what
the 2D network computes on one frame.

Rules, node by node (node ids are kept, so ``state_dict`` keys are the 2D network's):

- ``conv`` k_h x k_w -> t x k_h x k_w, time stride 1, time dilation 1. ``time_kernel="same"`` takes
  t = k for a square k x k kernel (I3D's 7x7 -> 7x7x7, 1x1 stays 1x1x1) and t = min(k_h, k_w) for a
  factorised one (Inception v3's 1x7 and 7x1 stay purely spatial); an int gives every conv that t; a
  callable ``(node, (k_h, k_w)) -> t`` decides per node. Weights are repeated t times over time and
  divided by t (`inflate_state_dict`); biases are kept.
- Time padding: a convolution over identical frames gives the 2D output at every frame only if the
  frames it sees beyond the clip are copies too, so with ``time_padding="replicate"`` (default) or
  ``"reflect"`` a ``pad`` node (nas.ops_video; time dimension only, [(t-1)//2, t-1-(t-1)//2]) is
  inserted before every conv with t > 1, named ``<conv>_tpad``, and the conv has time padding 0: the
  clip keeps its T frames everywhere. ``"zeros"`` is the original I3D (zero padding, equal to the 2D
  output only away from the clip's ends): the conv pads time itself for odd t, a constant ``pad`` node
  does it for even t.
- ``maxpool`` / ``avgpool`` k x k -> ``pool_time`` x k x k (default 1), time stride 1; a pool with
  ``pool_time`` > 1 gets a ``<pool>_tpad`` node like a conv (so T is kept and identical frames still
  pool to the 2D values). Pools never downsample time: a time stride would break the
  branches that run next to stride-1 convolutions (Inception's reduction blocks) and the per-frame
  equality of strided pools in any graph. ``adaptive_avgpool`` (h, w) -> (1, h, w); ``pad`` gets
  [0, 0] on time.
- Rank-generic ops are kept as they are: ``bn``, ``relu``, ``sigmoid``, ``tanh``, ``leaky_relu``,
  ``identity``, ``dropout``, ``channel_slice``, ``channel_shuffle``, ``global_avgpool``,
  ``global_maxpool``, ``lrn``, ``scale``, ``zero`` at stride 1, and every op whose input is already flat
  (C,) (a classifier after global pooling). Merges (sum, concat, gate, mul) are kept.
- ``pad_shortcut`` (ResNet's option-A shortcut) subsamples height and width only (stride [1, s, s]).
- ``flatten`` is kept; one whose input still has T > 1 frames (a fully connected net that flattens its
  input, e.g. the highway space's ``fc`` kind) first gets the clip's mean over time, an
  ``adaptive_avgpool`` to (1, H, W) named ``<flatten>_tmean``, so the layers after it see the 2D
  network's feature count: such a network, having no convolution, only averages the frames.
- Anything else raises `InflateError` naming the node and op: the 2D-only composite cell ops
  (``relu_conv_bn``, ``sep_conv``, ``dil_conv``, ``factorized_reduce`` of nas.ops_cells, built from
  Conv2d / BatchNorm2d), ``zero`` with stride > 1 (its module strides the first two spatial
  dimensions), DARTS ``mixed`` nodes (derive the network first), ops without a rule. A graph whose input
  is not (C, H, W) raises too.

Metadata: the 3D graph's ``inflated_from`` holds the 2D graph's metadata (``space``, ``preset``,
``assignment``, ``options``, ...), its ``input_shape`` and ``arch_id``; ``inflation`` holds the rule
(``frames``, ``time_kernel``, ``time_padding``, ``pool_time``). ``space``, ``preset``, ``assignment`` and
``options`` are not kept at the top level: ``space.graph(assignment)`` gives the 2D network, not this
one. ``num_classes`` is kept.

Usage::

    from nas.inflate import inflate, inflate_state_dict
    g3 = inflate(g2, frames=16)                                # (3, 224, 224) -> (3, 16, 224, 224)
    model3 = nas.build(g3)
    model3.load_state_dict(inflate_state_dict(g2, model2.state_dict(), g3))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Literal

import networkx as nx
import torch
from torch import nn

from nas.builder import GraphModule
from nas.graph import (
    SUBGRAPHS,
    ArchGraph,
    ArchitectureError,
    arch_id,
    infer_shapes,
    input_nodes,
    ordered_inputs,
    topological_order,
)
from nas.ops import Shape, _window_geometry, merge_shape, resolve_params

TimeKernel = int | Literal["same"] | Callable[[str, tuple[int, int]], int]
TimePadding = Literal["replicate", "reflect", "zeros"]
TIME_PADDINGS = ("replicate", "reflect", "zeros")

# ops kept as they are on a (C, H, W) -> (C, T, H, W) input: their modules and shapes are rank-generic
KEPT_OPS = frozenset({
    "bn", "relu", "sigmoid", "tanh", "leaky_relu", "identity", "dropout", "channel_slice", "channel_shuffle",
    "global_avgpool", "global_maxpool", "flatten", "lrn", "scale",
})
_CELL_OPS_2D = frozenset({"relu_conv_bn", "sep_conv", "dil_conv", "factorized_reduce"})


class InflateError(ArchitectureError):
    """A graph (or a state dict) cannot be inflated; the message names the node or key at fault."""


# ---------------------------------------------------------------------------------------------------
# graphs


def inflate(graph: nx.DiGraph, frames: int, *, time_kernel: TimeKernel = "same",
            time_padding: TimePadding = "replicate", pool_time: int = 1) -> ArchGraph:
    """The 3D (video) architecture of a 2D image architecture, for clips of `frames` frames.

    Args:
        graph: a valid architecture graph with a (C, H, W) input.
        frames: T, the clip length of the 3D input (C, T, H, W).
        time_kernel: the temporal extent t of each inflated convolution: ``"same"`` (t = k for k x k,
            min(k_h, k_w) for a non-square kernel), an int for every conv, or a callable
            ``(node, (k_h, k_w)) -> int``.
        time_padding: ``"replicate"`` (default) or ``"reflect"``: a ``pad`` node on time before every conv
            (and pool) with temporal extent > 1, which then has time padding 0, so a clip of identical
            frames gives the 2D network's output at every frame; ``"zeros"``: zero padding as in I3D.
        pool_time: the temporal extent of every ``maxpool`` / ``avgpool`` (time stride 1, T kept).

    Returns:
        a new validated `ArchGraph` (the input graph is not changed) whose node ids are the 2D graph's,
        plus inserted ``<node>_tpad`` / ``<node>_tmean`` nodes; see the module docstring for the rules.

    Raises:
        InflateError: the graph is not a 2D image graph, a node's op has no inflation rule (the message
            names the node and op), or an argument is out of range.
    """
    _check_int("frames", frames, 1)
    _check_int("pool_time", pool_time, 1)
    if time_padding not in TIME_PADDINGS:
        raise InflateError(f"inflate: time_padding must be one of {TIME_PADDINGS}, got {time_padding!r}")
    if not (time_kernel == "same" or callable(time_kernel)):
        _check_int("time_kernel", time_kernel, 1)
    try:
        shapes = infer_shapes(graph)
    except ArchitectureError as e:
        raise InflateError(f"inflate: the 2D graph is invalid: {e}") from None
    inputs = input_nodes(graph)
    if len(inputs) > 1 or graph.graph.get(SUBGRAPHS):
        raise InflateError(f"inflate takes networks with one input and no subgraphs; this one has inputs {inputs}"
                           + (f" and subgraphs {sorted(graph.graph[SUBGRAPHS])}" if graph.graph.get(SUBGRAPHS) else ""))
    in_shape = tuple(graph.graph["input_shape"])
    if len(in_shape) != 3:
        what = {2: "a (C, L) sequence", 4: "already a (C, T, H, W) video"}.get(len(in_shape), "not an image")
        raise InflateError(f"inflate needs a 2D image graph with a (C, H, W) input; its input_shape "
                           f"{list(in_shape)} is {what}")

    c, h, w = in_shape
    g3 = ArchGraph([c, frames, h, w])
    meta = {k: copy.deepcopy(v) for k, v in graph.graph.items() if k != "input_shape"}
    if "num_classes" in meta:
        g3.graph["num_classes"] = meta["num_classes"]
    g3.graph["inflated_from"] = {**meta, "input_shape": list(in_shape), "arch_id": arch_id(graph)}
    g3.graph["inflation"] = {
        "method": "i3d", "frames": frames,
        "time_kernel": time_kernel if not callable(time_kernel) else "custom",
        "time_padding": time_padding, "pool_time": pool_time,
    }

    ctx = _Context(graph, g3, shapes, frames, time_kernel, time_padding, pool_time)
    src = next(n for n, d in graph.nodes(data=True) if d.get("op") == "input")
    if src != "input":  # ArchGraph names its input node 'input'; keep the 2D graph's name
        g3.remove_node("input")
        g3.add_node(src, op="input", params={})
    for n in topological_order(graph):
        if n != src:
            ctx.node(n)
    try:
        infer_shapes(g3)
    except ArchitectureError as e:
        raise InflateError(f"inflate: the inflated graph is invalid (frames={frames}, time_kernel={time_kernel!r}, "
                           f"time_padding={time_padding!r}, pool_time={pool_time}): {e}") from None
    return g3


def _check_int(name: str, value: Any, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InflateError(f"inflate: {name} must be an int >= {least}, got {value!r}")
    return value


def _split(total: int) -> list[int]:
    """[before, after] padding of `total` frames, the extra one after (as 'same' padding of even kernels)."""
    return [total // 2, total - total // 2]


class _Context:
    def __init__(self, g2: nx.DiGraph, g3: ArchGraph, shapes: dict[str, Shape], frames: int,
                 time_kernel: TimeKernel, time_padding: str, pool_time: int):
        self.g2, self.g3, self.shapes = g2, g3, shapes
        self.time_kernel, self.time_padding, self.pool_time = time_kernel, time_padding, pool_time
        self.frames: dict[str, int] = {n: frames for n, d in g2.nodes(data=True) if d.get("op") == "input"}

    # -- helpers ------------------------------------------------------------------------------------
    def _fail(self, n: str, op: str, why: str) -> InflateError:
        return InflateError(f"inflate: node {n!r} (op {op!r}) cannot be inflated to 3D: {why}")

    def _fresh_id(self, base: str) -> str:
        name, i = base, 1
        while name in self.g2 or name in self.g3:
            name, i = f"{base}{i}", i + 1
        return name

    def _t(self, n: str, kernel: tuple[int, int]) -> int:
        tk = self.time_kernel
        if tk == "same":
            return kernel[0] if kernel[0] == kernel[1] else min(kernel)
        t = tk(n, kernel) if callable(tk) else tk
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            raise InflateError(f"inflate: time_kernel returned {t!r} for node {n!r} (kernel {list(kernel)}); "
                               "it must be an int >= 1")
        return t

    def _pad_node(self, n: str, total: int, mode: str) -> dict[str, Any]:
        params: dict[str, Any] = {"padding": [_split(total), [0, 0], [0, 0]], "mode": mode}
        return {"id": self._fresh_id(f"{n}_tpad"), "op": "pad", "params": params}

    def _time_pad(self, n: str, t: int, own_padding_ok: bool) -> tuple[list[dict], int]:
        """(pre-nodes, the op's own time padding) for a window of temporal extent `t`."""
        if t == 1:
            return [], 0
        if self.time_padding == "zeros":
            if own_padding_ok and t % 2 == 1:
                return [], (t - 1) // 2
            return [self._pad_node(n, t - 1, "constant")], 0
        return [self._pad_node(n, t - 1, self.time_padding)], 0

    # -- one node -----------------------------------------------------------------------------------
    def node(self, n: str) -> None:
        d = self.g2.nodes[n]
        op, params = d["op"], copy.deepcopy(d.get("params", {}))
        preds = ordered_inputs(self.g2, n)
        merge = d.get("merge") if len(preds) > 1 else None
        in2 = self.shapes[preds[0]] if merge is None else merge_shape(merge, [self.shapes[p] for p in preds], n)
        t_in = max(self.frames.get(p, 1) for p in preds)
        pre: list[dict] = []
        t_out = t_in
        if len(in2) == 1:
            t_out = 1  # a flat (C,) input: the time dimension is gone, any op computes what it did in 2D
        elif len(in2) != 3:
            raise self._fail(n, op, f"its 2D input has shape {in2}, not (C, H, W) or (C,)")
        elif op == "conv":
            pre, params = self._conv(n, params, in2)
        elif op in ("maxpool", "avgpool"):
            pre, params = self._pool(n, op, params, in2)
        elif op == "adaptive_avgpool":
            size = params["output_size"]
            params["output_size"] = [1, *([size, size] if isinstance(size, int) else list(size))]
            t_out = 1
        elif op == "pad":
            params["padding"] = [[0, 0], *[list(pair) for pair in params["padding"]]]
        elif op == "zero":
            if resolve_params(op, params)["stride"] != 1:
                raise self._fail(n, op, "a strided 'zero' op's module strides the first two spatial dimensions "
                                        "(time and height on a clip), not height and width")
        elif op == "pad_shortcut":  # subsample height and width only, as the strided convs next to it
            stride = resolve_params(op, params)["stride"]
            params["stride"] = [1, *([stride, stride] if isinstance(stride, int) else list(stride))]
        elif op == "flatten":
            if t_in > 1:
                pre = [{"id": self._fresh_id(f"{n}_tmean"), "op": "adaptive_avgpool",
                        "params": {"output_size": [1, in2[1], in2[2]]}}]
            t_out = 1
        elif op in KEPT_OPS:
            if op.startswith("global_"):
                t_out = 1
        elif op in _CELL_OPS_2D:
            raise self._fail(n, op, "it is a 2D-only composite op of nas.ops_cells (its module is built from "
                                    "Conv2d and BatchNorm2d); write the cell with conv, bn and relu nodes to "
                                    "inflate it")
        elif op == "mixed":
            raise self._fail(n, op, "DARTS mixed ops are not inflated; derive the discrete network first")
        else:
            raise self._fail(n, op, f"there is no inflation rule for this op (inflatable ops: conv, maxpool, "
                                    f"avgpool, adaptive_avgpool, pad, zero at stride 1, {', '.join(sorted(KEPT_OPS))}, "
                                    "and any op on a flat (C,) input)")
        self.frames[n] = t_out

        aux = bool(d.get("aux"))
        inputs: list[str] = preds
        for p in pre:
            self.g3.add_op(p["id"], p["op"], inputs, merge=merge, aux=aux, **p["params"])
            inputs, merge = [p["id"]], None
        self.g3.add_op(n, op, inputs, merge=merge, choice=d.get("choice"), aux=aux, **params)

    def _conv(self, n: str, params: dict, in2: Shape) -> tuple[list[dict], dict]:
        k, s, pad, dil = _window_geometry(resolve_params("conv", params), in2, "conv", default_pad=True)
        t = self._t(n, (k[0], k[1]))
        pre, own = self._time_pad(n, t, own_padding_ok=True)
        out = {key: v for key, v in params.items() if key not in ("kernel_size", "stride", "padding", "dilation")}
        out.update(kernel_size=[t, *k], stride=[1, *s], padding=[own, *pad])
        if dil != (1, 1):
            out["dilation"] = [1, *dil]
        return pre, out

    def _pool(self, n: str, op: str, params: dict, in2: Shape) -> tuple[list[dict], dict]:
        k, s, pad, _ = _window_geometry(resolve_params(op, params), in2, op, default_pad=False)
        t = self.pool_time
        pre, _ = self._time_pad(n, t, own_padding_ok=False)
        out = {key: v for key, v in params.items() if key not in ("kernel_size", "stride", "padding")}
        out.update(kernel_size=[t, *k], stride=[1, *s], padding=[0, *pad])
        return pre, out


# ---------------------------------------------------------------------------------------------------
# weights


def _expected_state(g: nx.DiGraph) -> dict[str, tuple[tuple[int, ...], str]]:
    with torch.device("meta"):
        model = GraphModule(g)
    return {k: (tuple(v.shape), k.split(".")[0]) for k, v in model.state_dict().items()}


def inflate_state_dict(graph2d: nx.DiGraph, state_dict2d: Mapping[str, torch.Tensor] | nn.Module,
                       graph3d: nx.DiGraph) -> dict[str, torch.Tensor]:
    """The 2D network's weights for its inflation `graph3d` (made by `inflate` from `graph2d`).

    Every conv weight (O, I/g, k_h, k_w) becomes (O, I/g, t, k_h, k_w): repeated t times over time and
    divided by t, so a clip of identical frames gives the 2D activations; every other tensor (biases,
    batch norm parameters and running statistics, linear layers) is copied. `state_dict2d` may be a
    state dict or the 2D module. The result has exactly the keys of ``nas.build(graph3d).state_dict()``.

    Raises:
        InflateError: `graph3d` is not an inflation of `graph2d`, or the state dict does not fit
            `graph2d` (a missing, unexpected or misshapen key is named).
    """
    state = state_dict2d.state_dict() if isinstance(state_dict2d, nn.Module) else dict(state_dict2d)
    origin = graph3d.graph.get("inflated_from", {})
    if isinstance(origin, dict) and origin.get("arch_id") not in (None, arch_id(graph2d)):
        raise InflateError(f"inflate_state_dict: graph3d was inflated from architecture {origin['arch_id']}, "
                           f"not from graph2d ({arch_id(graph2d)})")
    want2, want3 = _expected_state(graph2d), _expected_state(graph3d)
    missing = [k for k in want2 if k not in state]
    unexpected = [k for k in state if k not in want2]
    if missing or unexpected:
        raise InflateError(f"inflate_state_dict: the state dict does not fit graph2d: missing keys {missing[:10]}, "
                           f"unexpected keys {unexpected[:10]}")
    out: dict[str, torch.Tensor] = {}
    for key, (shape3, node) in want3.items():
        if key not in state:
            raise InflateError(f"inflate_state_dict: graph3d has {key!r} (shape {list(shape3)}), which the 2D "
                               "state dict lacks: graph3d is not an inflation of graph2d")
        v = state[key]
        if not isinstance(v, torch.Tensor):
            raise InflateError(f"inflate_state_dict: {key!r} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != want2[key][0]:
            raise InflateError(f"inflate_state_dict: {key!r} has shape {list(v.shape)}, graph2d expects "
                               f"{list(want2[key][0])}")
        if tuple(v.shape) == shape3:
            out[key] = v.detach().clone()
        elif (graph3d.nodes[node]["op"] == "conv" and key == f"{node}.weight" and v.dim() == 4
              and len(shape3) == 5 and shape3[:2] + shape3[3:] == tuple(v.shape)):
            t = shape3[2]
            out[key] = (v.detach().unsqueeze(2).repeat(1, 1, t, 1, 1) / t).contiguous()
        else:
            raise InflateError(f"inflate_state_dict: {key!r} of node {node!r} has 2D shape {list(v.shape)} "
                               f"but 3D shape {list(shape3)}, which is no inflation of it")
    extra = [k for k in want2 if k not in want3]
    if extra:
        raise InflateError(f"inflate_state_dict: graph3d lacks {extra[:10]} of graph2d: it is not an inflation "
                           "of graph2d")
    return out


def inflate_model(graph2d: nx.DiGraph, weights: Mapping[str, torch.Tensor] | nn.Module, frames: int,
                  **kw: Any) -> tuple[ArchGraph, GraphModule]:
    """`inflate` and `inflate_state_dict` in one: the 3D graph and its built module holding the inflated
    weights (keyword arguments go to `inflate`)."""
    g3 = inflate(graph2d, frames, **kw)
    model = GraphModule(g3)
    model.load_state_dict(inflate_state_dict(graph2d, weights, g3))
    return g3, model
