"""Ops of the video spaces: channel grouping and shuffling, padding, global max pooling, leaky ReLU.

Temporal-only layers need no ops of their own: the core ``conv``, ``maxpool``, ``avgpool`` and ``bn`` are
rank-generic, so on a (C, T, H, W) input a temporal depthwise convolution is ``conv`` with
``kernel_size=[k, 1, 1]``, ``groups=C`` (and ``dilation=[d, 1, 1]``), and temporal max pooling is
``maxpool`` with ``kernel_size=[k, 1, 1]``. What Timeception (Hussein et al., CVPR 2019) needs beyond
those:

- ``channel_slice`` (start, stop): channels ``start:stop`` of the input, so a graph can split channels into
  groups (one node per group) and concatenate them back with a ``concat`` merge;
- ``channel_shuffle`` (groups): ShuffleNet's shuffle, C = groups x (C/groups) -> (C/groups) x groups, so the
  next layer's groups each see channels of every group of this one (``ChannelShuffleLayer`` in the
  authors' code);
- ``pad`` (padding per spatial dimension, mode constant / replicate / reflect): e.g. the authors' max-pool
  branch pools with kernel 2 at stride 1 and repeats the first time step (``ReplicationPad3d``);
- ``global_maxpool``: the maximum over every spatial and temporal position, (C, ...) -> (C,) (the
  authors' classifier pools this way);
- ``leaky_relu`` (negative_slope): the authors' classifier's activation.

All of them are rank-generic over (C, L), (C, H, W) and (C, T, H, W) inputs, have no parameters and no
multiply-accumulates, and export as Python (`OpSpec.source`).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.ops import OpError, OpSpec, Shape, call_source, register_op

PAD_MODES = ("constant", "replicate", "reflect")
_PAD_CLASSES = {"constant": "ConstantPad", "replicate": "ReplicationPad", "reflect": "ReflectionPad"}


def _int(op: str, key: str, value: object, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise OpError(f"{op}.{key} must be an int >= {least}, got {value!r}")
    return value


def _check_rank(op: str, in_shape: Shape) -> int:
    """The number of spatial (and temporal) dimensions: 1, 2 or 3; anything else raises."""
    if len(in_shape) not in (2, 3, 4):
        raise OpError(f"op {op!r} needs a (C, L), (C, H, W) or (C, T, H, W) input, got shape {tuple(in_shape)}")
    return len(in_shape) - 1


# -- modules (copied into exported files: torch only) ---------------------------------------------------


class ChannelShuffle(nn.Module):
    """(N, g*k, ...) -> (N, k*g, ...): channel i*k + j moves to j*g + i (ShuffleNet, Timeception)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        y = x.reshape(shape[0], self.groups, shape[1] // self.groups, -1).transpose(1, 2)
        return y.reshape(shape)


class ChannelSlice(nn.Module):
    """Channels start:stop of the input."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start = start
        self.stop = stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


class GlobalMaxPool(nn.Module):
    """Maximum over every spatial (and temporal) dimension: (N, C, ...) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).amax(-1)


# -- channel_shuffle ------------------------------------------------------------------------------------


def _shuffle_shape(p: dict, in_shape: Shape) -> Shape:
    _check_rank("channel_shuffle", in_shape)
    g = _int("channel_shuffle", "groups", p["groups"], 1)
    if in_shape[0] % g:
        raise OpError(f"channel_shuffle with groups={g} needs the channels ({in_shape[0]}) divisible by it")
    return tuple(in_shape)


register_op(OpSpec(
    "channel_shuffle", _shuffle_shape, lambda p, s: ChannelShuffle(p["groups"]), required=("groups",),
    doc="channel shuffle: view channels as (groups, C/groups), transpose, flatten",
    source=lambda p, s: call_source("ChannelShuffle", p["groups"]), source_classes=(ChannelShuffle,),
))


# -- channel_slice --------------------------------------------------------------------------------------


def _slice_shape(p: dict, in_shape: Shape) -> Shape:
    _check_rank("channel_slice", in_shape)
    start = _int("channel_slice", "start", p["start"], 0)
    stop = _int("channel_slice", "stop", p["stop"], 1)
    if not start < stop <= in_shape[0]:
        raise OpError(f"channel_slice needs 0 <= start < stop <= channels ({in_shape[0]}), "
                      f"got start={start}, stop={stop}")
    return (stop - start, *in_shape[1:])


register_op(OpSpec(
    "channel_slice", _slice_shape, lambda p, s: ChannelSlice(p["start"], p["stop"]), required=("start", "stop"),
    doc="channels start:stop of the input (split into groups; concatenate them back with a concat merge)",
    source=lambda p, s: call_source("ChannelSlice", p["start"], p["stop"]), source_classes=(ChannelSlice,),
))


# -- pad ------------------------------------------------------------------------------------------------


def _pad_pairs(p: dict, in_shape: Shape) -> tuple[tuple[int, int], ...]:
    n = _check_rank("pad", in_shape)
    pad = p["padding"]
    ok = (isinstance(pad, list | tuple) and len(pad) == n
          and all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in pad))
    if not ok:
        dims = ("L",) if n == 1 else ("H", "W") if n == 2 else ("T", "H", "W")
        raise OpError(f"pad.padding must list [before, after] for each of the input's {n} dimension(s) "
                      f"{', '.join(dims)} (input shape {tuple(in_shape)}), got {pad!r}")
    pairs = tuple((_int("pad", "padding", a, 0), _int("pad", "padding", b, 0)) for a, b in pad)
    if p["mode"] not in PAD_MODES:
        raise OpError(f"pad.mode must be one of {PAD_MODES}, got {p['mode']!r}")
    if p["mode"] == "reflect":
        for size, (a, b) in zip(in_shape[1:], pairs, strict=True):
            if max(a, b) >= size:
                raise OpError(f"pad with mode 'reflect' needs each padding smaller than its dimension, got "
                              f"padding {[list(q) for q in pairs]} on input {tuple(in_shape)}")
    return pairs


def _torch_padding(pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """[before, after] per dimension in dimension order -> torch's order (last dimension first)."""
    return tuple(v for a, b in reversed(pairs) for v in (a, b))


def _pad_shape(p: dict, in_shape: Shape) -> Shape:
    pairs = _pad_pairs(p, in_shape)
    return (in_shape[0], *(size + a + b for size, (a, b) in zip(in_shape[1:], pairs, strict=True)))


def _pad_source(p: dict, in_shape: Shape) -> str:
    pad = _torch_padding(_pad_pairs(p, in_shape))
    cls = f"nn.{_PAD_CLASSES[p['mode']]}{len(in_shape) - 1}d"
    if p["mode"] == "constant":
        return call_source(cls, pad, float(p["value"]))
    return call_source(cls, pad)


def _pad_build(p: dict, in_shape: Shape) -> nn.Module:
    pad = _torch_padding(_pad_pairs(p, in_shape))
    cls = getattr(nn, f"{_PAD_CLASSES[p['mode']]}{len(in_shape) - 1}d")
    return cls(pad, float(p["value"])) if p["mode"] == "constant" else cls(pad)


register_op(OpSpec(
    "pad", _pad_shape, _pad_build, required=("padding",), defaults={"mode": "constant", "value": 0.0},
    doc="pad each spatial/temporal dimension by [before, after] (mode constant, replicate or reflect)",
    source=_pad_source,
))


# -- global_maxpool, leaky_relu ---------------------------------------------------------------------------


def _global_max_shape(p: dict, in_shape: Shape) -> Shape:
    _check_rank("global_maxpool", in_shape)
    return (in_shape[0],)


register_op(OpSpec(
    "global_maxpool", _global_max_shape, lambda p, s: GlobalMaxPool(),
    doc="maximum over all spatial (and temporal) positions, giving a (C,) vector",
    source=lambda p, s: "GlobalMaxPool()", source_classes=(GlobalMaxPool,),
))


def _leaky_shape(p: dict, in_shape: Shape) -> Shape:
    slope = p["negative_slope"]
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0 <= slope < 1:
        raise OpError(f"leaky_relu.negative_slope must be a number in [0, 1), got {slope!r}")
    return tuple(in_shape)


register_op(OpSpec(
    "leaky_relu", _leaky_shape, lambda p, s: nn.LeakyReLU(float(p["negative_slope"])),
    defaults={"negative_slope": 0.01}, doc="leaky ReLU: x if x > 0 else negative_slope * x",
    source=lambda p, s: call_source("nn.LeakyReLU", float(p["negative_slope"])),
))
