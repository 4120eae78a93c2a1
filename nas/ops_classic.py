"""Parameter-free ops of the classic networks: AlexNet / VGG's local response normalisation, ResNet's
zero-padding identity shortcut (option A of He et al. 2015), the residual scaling of Inception-ResNet
(Szegedy et al. 2016) and the L2 normalisation of a Siamese tracker's features (SINT, Tao et al. 2016).

- ``lrn``: ``nn.LocalResponseNorm(size, alpha, beta, k)`` across channels, defaults those of AlexNet and
  the VGG paper's A-LRN (size 5, alpha 1e-4, beta 0.75, k 2). PyTorch's convention: the sum of squares
  over the ``size`` neighbouring channels is multiplied by ``alpha / size`` (as Caffe's).
- ``pad_shortcut``: the identity subsampled by ``stride`` (``x[:, :, ::s, ::s]``, so the output side is
  ceil(side / s), that of a 'same'-padded conv at stride s) with zero channels appended up to
  ``out_channels`` (None: no new channels). ``stride`` is an int or one int per spatial dimension (a
  video network keeps time with [1, 2, 2]). No parameters, no multiply-accumulates.
- ``scale``: multiplies by the constant ``factor`` (Inception-ResNet's residual scaling, before the sum).
- ``l2_normalize``: divides each example's vector (dimension 1, the channels) by its Euclidean norm (at least
  ``eps``), so that the inner product of two outputs is their cosine: SINT's matching function.

All four work on (C, L), (C, H, W) and (C, T, H, W) inputs, and export to Python, TorchScript and ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.ops import OpError, OpSpec, Shape, _spatial_rank, _tuple, call_source, register_op


def _number(op: str, key: str, value: object, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (
            positive and value <= 0):
        raise OpError(f"{op}.{key} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------
# lrn


def _lrn_check(p: dict, in_shape: Shape) -> tuple[int, float, float, float]:
    _spatial_rank(in_shape, "lrn")
    size = p["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise OpError(f"lrn.size must be a positive int, got {size!r}")
    return (size, _number("lrn", "alpha", p["alpha"], positive=False), _number("lrn", "beta", p["beta"], False),
            _number("lrn", "k", p["k"]))


def _lrn_shape(p: dict, in_shape: Shape) -> Shape:
    _lrn_check(p, in_shape)
    return tuple(in_shape)


def _lrn_build(p: dict, in_shape: Shape) -> nn.Module:
    size, alpha, beta, k = _lrn_check(p, in_shape)
    return nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)


def _lrn_source(p: dict, in_shape: Shape) -> str:
    size, alpha, beta, k = _lrn_check(p, in_shape)
    return call_source("nn.LocalResponseNorm", size, alpha=alpha, beta=beta, k=k)


register_op(OpSpec(
    "lrn", _lrn_shape, _lrn_build, defaults={"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0},
    doc="local response normalisation across channels (AlexNet, VGG A-LRN); no parameters",
    source=_lrn_source,
))


# ---------------------------------------------------------------------------------------------------
# pad_shortcut


class PadShortcut(nn.Module):
    """ResNet's option-A shortcut: the input subsampled by `stride` (one step per spatial dimension) with
    `extra_channels` zero channels appended."""

    def __init__(self, stride: tuple[int, ...], extra_channels: int):
        super().__init__()
        self.stride = list(stride)
        self.extra_channels = extra_channels

    def extra_repr(self) -> str:
        return f"stride={tuple(self.stride)}, extra_channels={self.extra_channels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if len(s) == 1:
            x = x[:, :, :: s[0]]
        elif len(s) == 2:
            x = x[:, :, :: s[0], :: s[1]]
        else:
            x = x[:, :, :: s[0], :: s[1], :: s[2]]
        if self.extra_channels > 0:
            x = torch.nn.functional.pad(x, [0, 0] * len(s) + [0, self.extra_channels])
        return x


def _pad_geometry(p: dict, in_shape: Shape) -> tuple[tuple[int, ...], int]:
    n = _spatial_rank(in_shape, "pad_shortcut")
    stride = _tuple(p["stride"], n, "pad_shortcut.stride")
    if min(stride) < 1:
        raise OpError(f"pad_shortcut.stride must be >= 1, got {list(stride)}")
    c_out = in_shape[0] if p["out_channels"] is None else p["out_channels"]
    if isinstance(c_out, bool) or not isinstance(c_out, int) or c_out < in_shape[0]:
        raise OpError(f"pad_shortcut.out_channels must be an int >= the input's {in_shape[0]} channels (it only "
                      f"appends zero channels), got {p['out_channels']!r}")
    return stride, c_out


def _pad_shape(p: dict, in_shape: Shape) -> Shape:
    stride, c_out = _pad_geometry(p, in_shape)
    return (c_out, *(-(-size // s) for size, s in zip(in_shape[1:], stride, strict=True)))


def _pad_build(p: dict, in_shape: Shape) -> nn.Module:
    stride, c_out = _pad_geometry(p, in_shape)
    return PadShortcut(stride, c_out - in_shape[0])


def _pad_source(p: dict, in_shape: Shape) -> str:
    stride, c_out = _pad_geometry(p, in_shape)
    return call_source("PadShortcut", stride, c_out - in_shape[0])


register_op(OpSpec(
    "pad_shortcut", _pad_shape, _pad_build, defaults={"stride": 1, "out_channels": None},
    doc="ResNet option-A shortcut: identity subsampled by stride, zero channels appended; no parameters",
    source=_pad_source, source_classes=(PadShortcut,),
))


# ---------------------------------------------------------------------------------------------------
# scale


class Scale(nn.Module):
    """Multiply by a constant (Inception-ResNet's residual scaling)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _scale_factor(p: dict) -> float:
    return _number("scale", "factor", p["factor"], positive=False)


def _scale_shape(p: dict, in_shape: Shape) -> Shape:
    _scale_factor(p)
    return tuple(in_shape)


register_op(OpSpec(
    "scale", _scale_shape, lambda p, s: Scale(_scale_factor(p)),
    required=("factor",), doc="multiply by a constant factor (residual scaling); no parameters",
    source=lambda p, s: call_source("Scale", _scale_factor(p)), source_classes=(Scale,),
))


# ---------------------------------------------------------------------------------------------------
# l2_normalize


class L2Normalize(nn.Module):
    """x / max(||x||, eps) over dimension 1 (the channels) of every example."""

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def extra_repr(self) -> str:
        return f"eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, p=2.0, dim=1, eps=self.eps)


def _l2_shape(p: dict, in_shape: Shape) -> Shape:
    _number("l2_normalize", "eps", p["eps"])
    return tuple(in_shape)


register_op(OpSpec(
    "l2_normalize", _l2_shape, lambda p, s: L2Normalize(float(p["eps"])), defaults={"eps": 1e-12},
    doc="divide each example by its L2 norm over the channels (unit-length features); no parameters",
    source=lambda p, s: call_source("L2Normalize", float(p["eps"])), source_classes=(L2Normalize,),
))
