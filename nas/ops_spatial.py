"""Ops that move or resample pixels: the spatial transformer, upsampling and transposed convolution.

- ``stn`` (Jaderberg, Simonyan, Zisserman & Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015): a
  localisation network (two stages of 5x5 conv, 2x2 max-pool while the map is at least 2x2, ReLU, then
  a hidden linear layer with ReLU and a linear layer to six numbers) predicts one 2x3 affine matrix per
  example; the input is resampled through it (``affine_grid`` + bilinear ``grid_sample``, zeros outside).
  The last layer starts at zero weights and the identity's bias, so an untrained STN passes its input
  through unchanged. Input (C, H, W), output the same shape. Params: ``channels`` (of each localisation
  conv, default 8), ``hidden`` (default 32), ``grad_scale`` (default 0.1): the localisation network's
  gradients are multiplied by it (the forward pass is unchanged), so under SGD it learns at that fraction
  of the network's learning rate, as the STN paper trains it; at the full rate the predicted transform
  tends to leave the image early in training (all zeros, no gradient back) and stay there. Under Adam(W)
  it changes nothing (Adam divides the scale out), and under SGD weight decay still pulls at the full rate,
  so decay outweighs the scaled gradients ten times at 0.1. ``norm`` (default true; false is the network before
  this option): batch norm after each
  localisation conv and after the hidden linear layer (instead of their biases), which keeps their ReLU
  units from dying (without it, under Adam most hidden units were dead after two epochs and the transform
  was the same for every image); ``downsample``
  (default 1): the localisation network reads the input average-pooled by this factor (the paper's
  localisation nets read a downsampled image), a quarter of the cost at 2. Its multiply-accumulates are
  the localisation network's convolutions and linear layers.
- ``upsample`` (``scale_factor``: an int or one per spatial dimension; ``mode``: ``nearest`` or ``linear``,
  which is linear / bilinear / trilinear by the input's rank): no parameters, input size times the factor.
- ``conv_transpose`` (a strided up-convolution, Long, Shelhamer & Darrell's "deconvolution"): the output
  side is ``(side - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``;
  ``kernel_size=2s, stride=s, padding=s/2`` upsamples exactly s times. ``init="bilinear"`` (needs equal
  in and out channels) starts it as bilinear interpolation of each channel, as FCN does, with zero bias.

All work on (C, L), (C, H, W) and (C, T, H, W) inputs but ``stn`` (images only), and export to Python,
TorchScript and ONNX.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nas.ops import (
    OpError,
    OpSpec,
    Shape,
    _numel,
    _spatial_rank,
    _tuple,
    _window_geometry,
    call_source,
    register_op,
)


def _int(op: str, key: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise OpError(f"{op}.{key} must be an int >= {least}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# stn


class SpatialTransformer(nn.Module):
    """Spatial transformer (Jaderberg et al. 2015) on (N, C, H, W): a localisation network predicts a 2x3
    affine matrix per example (the identity at initialisation), and the input is resampled through it."""

    def __init__(self, in_channels: int, height: int, width: int, channels: int = 8, hidden: int = 32,
                 grad_scale: float = 0.1, norm: bool = True, downsample: int = 1):
        super().__init__()
        self.grad_scale = grad_scale
        layers: list[nn.Module] = []
        c, h, w = in_channels, height, width
        if downsample > 1:  # the localisation network sees an average-pooled copy of the input
            layers.append(nn.AvgPool2d(downsample))
            h, w = h // downsample, w // downsample
        for _ in range(2):
            layers.append(nn.Conv2d(c, channels, kernel_size=5, padding=2, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(channels))
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            layers.append(nn.ReLU())
            c = channels
        self.loc = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Linear(c * h * w, hidden, bias=not norm)]
        if norm:
            head.append(nn.BatchNorm1d(hidden))
        self.fc = nn.Sequential(*head, nn.ReLU(), nn.Linear(hidden, 6))
        with torch.no_grad():  # start at the identity transform
            self.fc[-1].weight.zero_()
            self.fc[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 2, 3) affine matrices the localisation network predicts for `x`."""
        t = self.fc(self.loc(x).flatten(1))
        if self.grad_scale != 1.0:  # the same values; the localisation network's gradients scaled
            t = t.detach() + self.grad_scale * (t - t.detach())
        return t.view(-1, 2, 3)

    def extra_repr(self) -> str:
        return f"grad_scale={self.grad_scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = nn.functional.affine_grid(self.theta(x), list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _stn_check(p: dict, in_shape: Shape) -> dict[str, Any]:
    """The SpatialTransformer's keyword arguments of params `p` on input `in_shape`, checked."""
    if len(in_shape) != 3:
        raise OpError(f"op 'stn' needs an image input (C, H, W), got shape {tuple(in_shape)}")
    scale = p["grad_scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1:
        raise OpError(f"stn.grad_scale must be a number in (0, 1], got {scale!r}")
    if not isinstance(p["norm"], bool):
        raise OpError(f"stn.norm must be true or false, got {p['norm']!r}")
    down = _int("stn", "downsample", p["downsample"], 1)
    if min(in_shape[1:]) < down:
        raise OpError(f"stn.downsample {down} is larger than the input's side ({tuple(in_shape)})")
    return {"channels": _int("stn", "channels", p["channels"], 1), "hidden": _int("stn", "hidden", p["hidden"], 1),
            "grad_scale": float(scale), "norm": p["norm"], "downsample": down}


def _stn_shape(p: dict, in_shape: Shape) -> Shape:
    _stn_check(p, in_shape)
    return tuple(in_shape)


def _stn_build(p: dict, in_shape: Shape) -> nn.Module:
    return SpatialTransformer(*in_shape, **_stn_check(p, in_shape))


def _stn_macs(p: dict, in_shape: Shape, out_shape: Shape) -> int:
    """The localisation network's convolutions and linear layers (pooling, batch norm and the sampling are not
    counted)."""
    k = _stn_check(p, in_shape)
    channels, hidden, down = k["channels"], k["hidden"], k["downsample"]
    c, h, w = in_shape
    h, w = h // down, w // down
    macs = 0
    for _ in range(2):
        macs += h * w * channels * c * 25
        if min(h, w) >= 2:
            h, w = h // 2, w // 2
        c = channels
    return macs + c * h * w * hidden + hidden * 6


def _stn_source(p: dict, in_shape: Shape) -> str:
    k = _stn_check(p, in_shape)
    extra = {key: k[key] for key, default in (("norm", True), ("downsample", 1)) if k[key] != default}
    return call_source("SpatialTransformer", *in_shape, channels=k["channels"], hidden=k["hidden"],
                       grad_scale=k["grad_scale"], **extra)


register_op(OpSpec(
    "stn", _stn_shape, _stn_build,
    defaults={"channels": 8, "hidden": 32, "grad_scale": 0.1, "norm": True, "downsample": 1}, macs=_stn_macs,
    doc="spatial transformer: a localisation net predicts an affine map (identity at init) that resamples the "
        "input", source=_stn_source, source_classes=(SpatialTransformer,),
))


# ---------------------------------------------------------------------------------------------------
# upsample

UPSAMPLE_MODES = ("nearest", "linear")
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _upsample_check(p: dict, in_shape: Shape) -> tuple[tuple[int, ...], str]:
    n = _spatial_rank(in_shape, "upsample")
    factor = _tuple(p["scale_factor"], n, "upsample.scale_factor")
    if min(factor) < 1:
        raise OpError(f"upsample.scale_factor must be >= 1, got {list(factor)}")
    if p["mode"] not in UPSAMPLE_MODES:
        raise OpError(f"upsample.mode must be one of {UPSAMPLE_MODES}, got {p['mode']!r}")
    return factor, "nearest" if p["mode"] == "nearest" else _LINEAR_MODE[n]


def _upsample_shape(p: dict, in_shape: Shape) -> Shape:
    factor, _ = _upsample_check(p, in_shape)
    return (in_shape[0], *(s * f for s, f in zip(in_shape[1:], factor, strict=True)))


def _upsample_kwargs(p: dict, in_shape: Shape) -> dict:
    factor, mode = _upsample_check(p, in_shape)
    kwargs = {"scale_factor": tuple(float(f) for f in factor), "mode": mode}
    if mode != "nearest":
        kwargs["align_corners"] = False
    return kwargs


register_op(OpSpec(
    "upsample", _upsample_shape, lambda p, s: nn.Upsample(**_upsample_kwargs(p, s)), required=("scale_factor",),
    defaults={"mode": "nearest"}, doc="upsampling by an integer factor (nearest, or (bi/tri)linear); no parameters",
    source=lambda p, s: call_source("nn.Upsample", **_upsample_kwargs(p, s)),
))


# ---------------------------------------------------------------------------------------------------
# conv_transpose

_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
CONV_T_INITS = ("default", "bilinear")


def fill_bilinear_(conv: nn.Module) -> None:
    """Set a transposed convolution with equal in and out channels to bilinear (or (tri)linear)
    interpolation of each channel on its own (FCN's initialisation), with zero bias."""
    weight = conv.weight  # (C_in, C_out / groups, *kernel)
    per_group = weight.shape[1]
    kernel = torch.ones(weight.shape[2:])
    for d, k in enumerate(weight.shape[2:]):
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        f = 1 - (torch.arange(k, dtype=torch.float32) - center).abs() / factor
        view = [1] * (weight.dim() - 2)
        view[d] = k
        kernel = kernel * f.view(view)
    with torch.no_grad():
        weight.zero_()
        for i in range(weight.shape[0]):
            weight[i, i % per_group] = kernel
        if conv.bias is not None:
            conv.bias.zero_()


def _conv_t_geometry(p: dict, in_shape: Shape) -> tuple[tuple[int, ...], ...]:
    op = "conv_transpose"
    n = _spatial_rank(in_shape, op)
    k, s, pad, d = _window_geometry(p, in_shape, op, default_pad=False)
    out_pad = _tuple(p["output_padding"], n, f"{op}.output_padding")
    for o, si, di in zip(out_pad, s, d, strict=True):
        if not 0 <= o < max(si, di):
            raise OpError(f"{op}.output_padding must be >= 0 and smaller than stride or dilation, got "
                          f"{list(out_pad)} with stride {list(s)}")
    c_in, c_out, g = in_shape[0], p["out_channels"], p["groups"]
    _int(op, "out_channels", c_out, 1)
    _int(op, "groups", g, 1)
    if c_in % g or c_out % g:
        raise OpError(f"{op} with groups={g} needs in ({c_in}) and out ({c_out}) channels divisible by it")
    if p["init"] not in CONV_T_INITS:
        raise OpError(f"{op}.init must be one of {CONV_T_INITS}, got {p['init']!r}")
    if p["init"] == "bilinear" and c_in != c_out:
        raise OpError(f"{op}.init='bilinear' needs as many out_channels as input channels ({c_in}), got {c_out}")
    return k, s, pad, d, out_pad


def _conv_t_shape(p: dict, in_shape: Shape) -> Shape:
    k, s, pad, d, out_pad = _conv_t_geometry(p, in_shape)
    spatial = tuple((size - 1) * si - 2 * pi + di * (ki - 1) + oi + 1
                    for size, ki, si, pi, di, oi in zip(in_shape[1:], k, s, pad, d, out_pad, strict=True))
    if min(spatial) <= 0:
        raise OpError(f"op 'conv_transpose' with kernel {k}, stride {s}, padding {pad} leaves no output on input "
                      f"{tuple(in_shape)}")
    return (p["out_channels"], *spatial)


def _conv_t_build(p: dict, in_shape: Shape) -> nn.Module:
    k, s, pad, d, out_pad = _conv_t_geometry(p, in_shape)
    conv = _CONV_T[len(in_shape) - 1](in_shape[0], p["out_channels"], k, stride=s, padding=pad,
                                      output_padding=out_pad, groups=p["groups"], bias=p["bias"], dilation=d)
    if p["init"] == "bilinear":
        fill_bilinear_(conv)
    return conv


def _conv_t_source(p: dict, in_shape: Shape) -> str | tuple[str, ...]:
    k, s, pad, d, out_pad = _conv_t_geometry(p, in_shape)
    n = len(in_shape) - 1
    extra = {}
    if out_pad != (0,) * n:
        extra["output_padding"] = out_pad
    if p["groups"] != 1:
        extra["groups"] = p["groups"]
    expr = call_source(f"nn.ConvTranspose{n}d", in_shape[0], p["out_channels"], kernel_size=k, stride=s,
                       padding=pad, **extra, bias=bool(p["bias"]), **({"dilation": d} if d != (1,) * n else {}))
    if p["init"] == "bilinear":
        return expr, "fill_bilinear_({m})"
    return expr


def _conv_t_macs(p: dict, in_shape: Shape, out_shape: Shape) -> int:
    """Every input position scatters into kernel x out_channels / groups outputs."""
    k = _conv_t_geometry(p, in_shape)[0]
    return _numel(in_shape) * (p["out_channels"] // p["groups"]) * math.prod(k)


register_op(OpSpec(
    "conv_transpose", _conv_t_shape, _conv_t_build, required=("out_channels", "kernel_size"),
    defaults={"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1, "bias": False,
              "init": "default"},
    macs=_conv_t_macs, doc="transposed ('up-') convolution (1D/2D/3D by input rank); init 'bilinear' as FCN",
    source=_conv_t_source, source_classes=(fill_bilinear_,),
))
