"""Composite ops of cell-based spaces (DARTS, NAS-Bench-201): one node per candidate op on an edge.

A cell edge's op must be one node so that an op-choice variable decides exactly one node; these
modules bundle the usual ReLU-conv-BN sequences. Definitions follow the DARTS and NAS-Bench-201 papers'
public code (``ReLUConvBN``, ``SepConv``, ``DilConv``, ``FactorizedReduce``, ``Zero``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.ops import OpError, OpSpec, Shape, _windowed_shape, call_source, register_op


def _check_2d(op: str, in_shape: Shape) -> None:
    if len(in_shape) != 3:
        raise OpError(f"op {op!r} needs a (C, H, W) input, got shape {in_shape}")


def _positive(op: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OpError(f"{op}.{key} must be a positive int, got {value!r}")
    return value


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape (strided like the other candidates)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv(dilation 1): the DARTS separable convolution."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool):
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs, concatenated (DARTS' reducing skip)."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


# -- op table entries ---------------------------------------------------------------------------------


def _zero_shape(p: dict, s: Shape) -> Shape:
    stride = _positive("zero", "stride", p["stride"])
    c = s[0] if p["out_channels"] is None else _positive("zero", "out_channels", p["out_channels"])
    return (c, *(math.ceil(v / stride) for v in s[1:]))


class _ZeroTo(Zero):
    """Zero with a different channel count (a 'none' edge in a cell whose channels change)."""

    def __init__(self, stride: int, c_out: int):
        super().__init__(stride)
        self.c_out = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y.new_zeros((y.shape[0], self.c_out, *y.shape[2:]))


register_op(OpSpec(
    "zero", _zero_shape,
    lambda p, s: Zero(p["stride"]) if p["out_channels"] in (None, s[0]) else _ZeroTo(p["stride"], p["out_channels"]),
    defaults={"stride": 1, "out_channels": None}, doc="the 'none' op: zeros (strided); no parameters",
    source=lambda p, s: (call_source("Zero", p["stride"]) if p["out_channels"] in (None, s[0])
                         else call_source("_ZeroTo", p["stride"], p["out_channels"])),
    source_classes=(Zero, _ZeroTo),
))


def _conv_like_shape(op: str):
    def shape(p: dict, s: Shape) -> Shape:
        _check_2d(op, s)
        _positive(op, "out_channels", p["out_channels"])
        return _windowed_shape({**p, "dilation": p.get("dilation", 1)}, s, op, p["out_channels"], default_pad=True)

    return shape


def _pad(p: dict) -> int:
    k, d = p["kernel_size"], p.get("dilation", 1)
    return d * (k - 1) // 2 if p["padding"] is None else p["padding"]


register_op(OpSpec(
    "relu_conv_bn", _conv_like_shape("relu_conv_bn"),
    lambda p, s: ReLUConvBN(s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p), p["dilation"],
                            p["affine"]),
    required=("out_channels", "kernel_size"),
    defaults={"stride": 1, "padding": None, "dilation": 1, "affine": True},
    macs=lambda p, i, o: math.prod(o) * i[0] * p["kernel_size"] ** 2,
    doc="ReLU, conv (no bias), BN: NAS-Bench-201's nor_conv",
    source=lambda p, s: call_source("ReLUConvBN", s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p),
                                    p["dilation"], p["affine"]),
    source_classes=(ReLUConvBN,),
))


def _sep_macs(p: dict, i: Shape, o: Shape) -> int:
    k, mid = p["kernel_size"] ** 2, math.prod(o[1:])
    first = math.prod(o[1:]) * i[0] * (k + i[0])  # depthwise + pointwise at the output resolution
    return first + mid * i[0] * k + mid * i[0] * o[0]


register_op(OpSpec(
    "sep_conv", _conv_like_shape("sep_conv"),
    lambda p, s: SepConv(s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p), p["affine"]),
    required=("out_channels", "kernel_size"), defaults={"stride": 1, "padding": None, "affine": True},
    macs=_sep_macs, doc="DARTS separable conv: (ReLU, depthwise, pointwise, BN) twice",
    source=lambda p, s: call_source("SepConv", s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p),
                                    p["affine"]),
    source_classes=(DilConv, SepConv),
))

register_op(OpSpec(
    "dil_conv", _conv_like_shape("dil_conv"),
    lambda p, s: DilConv(s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p), p["dilation"],
                         p["affine"]),
    required=("out_channels", "kernel_size"),
    defaults={"stride": 1, "padding": None, "dilation": 2, "affine": True},
    macs=lambda p, i, o: math.prod(o[1:]) * i[0] * (p["kernel_size"] ** 2 + o[0]),
    doc="DARTS dilated conv: ReLU, depthwise dilated conv, pointwise conv, BN",
    source=lambda p, s: call_source("DilConv", s[0], p["out_channels"], p["kernel_size"], p["stride"], _pad(p),
                                    p["dilation"], p["affine"]),
    source_classes=(DilConv,),
))


def _fr_shape(p: dict, s: Shape) -> Shape:
    _check_2d("factorized_reduce", s)
    c = _positive("factorized_reduce", "out_channels", p["out_channels"])
    if s[1] % 2 or s[2] % 2:
        raise OpError(f"op 'factorized_reduce' needs an even height and width, got {s[1]}x{s[2]}")
    return (c, s[1] // 2, s[2] // 2)


register_op(OpSpec(
    "factorized_reduce", _fr_shape, lambda p, s: FactorizedReduce(s[0], p["out_channels"], p["affine"]),
    required=("out_channels",), defaults={"affine": True},
    macs=lambda p, i, o: math.prod(o) * i[0], doc="DARTS' reducing skip: two offset stride-2 1x1 convs",
    source=lambda p, s: call_source("FactorizedReduce", s[0], p["out_channels"], p["affine"]),
    source_classes=(FactorizedReduce,),
))
