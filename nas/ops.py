"""The operation table: every op an architecture graph may name.

Each op is plain data (`OpSpec`): which hyperparameters it takes, how it maps an input shape to an
output shape, how many multiply-accumulates it costs, and how to build its `torch.nn.Module`. Shapes
exclude the batch dimension: (C,) for vectors, (C, L) for sequences, (C, H, W) for images and
(C, T, H, W) for video. Convolutions and pooling infer 1D/2D/3D from the rank of their input.

`source` (optional) writes the op's module constructor as Python source for `nas.export`, e.g.
"nn.Conv2d(64, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)", or a tuple of that
expression and statements initialising the new module, written with ``{m}`` for it (e.g.
"nn.init.constant_({m}.bias, -2.0)"). `source_classes` lists the graphnas-defined classes the expression
may name (base classes first); the export copies their source into the generated file.

`arity` is how many inputs the op takes as separate arguments (default 1). An op with arity n > 1 (e.g.
``roi_pool``: feature map and boxes) has exactly n inputs and no merge; its `shape`, `build`, `macs` and
`source` receive the tuple of its inputs' shapes, in input order, and its module's forward takes n tensors.

`flops` counts multiply-accumulates of convolutions and linear layers, the convention torchvision and
most NAS papers use (ResNet-50 at 224x224: about 4.1 G).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Shape = tuple[int, ...]


class OpError(ValueError):
    """An op's hyperparameters or input shape are invalid; the message says which."""


@dataclass(frozen=True)
class OpSpec:
    name: str
    shape: Callable[[dict, Shape], Shape]
    build: Callable[[dict, Shape], nn.Module]
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    macs: Callable[[dict, Shape, Shape], int] = lambda p, i, o: 0
    doc: str = ""
    source: Callable[[dict, Shape], str | tuple[str, ...]] | None = None
    source_classes: tuple[type, ...] = ()
    arity: int = 1


OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Add an op to the table (used by later modules, e.g. video or cell ops)."""
    if spec.name in OPS:
        raise OpError(f"op {spec.name!r} is already registered")
    OPS[spec.name] = spec
    return spec


def get_op(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise OpError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def resolve_params(op: str, params: dict) -> dict:
    """The op's hyperparameters with defaults filled in; unknown or missing keys raise."""
    spec = get_op(op)
    allowed = set(spec.required) | set(spec.defaults)
    unknown = set(params) - allowed
    if unknown:
        raise OpError(f"op {op!r} takes no parameter(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    missing = [k for k in spec.required if k not in params]
    if missing:
        raise OpError(f"op {op!r} needs parameter(s) {missing}")
    return {**spec.defaults, **params}


# ---------------------------------------------------------------------------------------------------
# helpers


def _tuple(value: Any, n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise OpError(f"{what} must be an int or a list of {n} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * n
    if isinstance(value, list | tuple) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise OpError(f"{what} must be an int or a list of {n} ints, got {value!r}")


def _spatial_rank(in_shape: Shape, op: str) -> int:
    if len(in_shape) not in (2, 3, 4):
        raise OpError(f"op {op!r} needs a (C, L), (C, H, W) or (C, T, H, W) input, got shape {in_shape}")
    return len(in_shape) - 1


def _out_len(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    n = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (n - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
        n -= 1
    return n


def _window_geometry(p: dict, in_shape: Shape, op: str, default_pad: bool) -> tuple[tuple[int, ...], ...]:
    n = _spatial_rank(in_shape, op)
    k = _tuple(p["kernel_size"], n, f"{op}.kernel_size")
    s = _tuple(p["stride"] if p.get("stride") is not None else (k if op.endswith("pool") else 1), n,
               f"{op}.stride")
    d = _tuple(p.get("dilation", 1), n, f"{op}.dilation")
    if p.get("padding") is None:
        pad = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d, strict=True)) if default_pad else (0,) * n
    else:
        pad = _tuple(p["padding"], n, f"{op}.padding")
    for what, values, least in (("kernel_size", k, 1), ("stride", s, 1), ("dilation", d, 1), ("padding", pad, 0)):
        if min(values) < least:
            raise OpError(f"{op}.{what} must be >= {least}, got {list(values)}")
    return k, s, pad, d


def _windowed_shape(p: dict, in_shape: Shape, op: str, out_c: int, default_pad: bool) -> Shape:
    k, s, pad, d = _window_geometry(p, in_shape, op, default_pad)
    ceil = bool(p.get("ceil_mode", False))
    spatial = tuple(
        _out_len(size, ki, si, pi, di, ceil)
        for size, ki, si, pi, di in zip(in_shape[1:], k, s, pad, d, strict=True)
    )
    if any(v <= 0 for v in spatial):
        raise OpError(f"op {op!r} with kernel {k}, stride {s}, padding {pad} leaves no output on input "
                      f"{in_shape}")
    return (out_c, *spatial)


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def call_source(name: str, *args: Any, **kwargs: Any) -> str:
    """`name(arg, ..., key=value, ...)` with every value written by repr (for `OpSpec.source`)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# ---------------------------------------------------------------------------------------------------
# convolution and linear

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def _conv_shape(p: dict, in_shape: Shape) -> Shape:
    c_in, c_out, g = in_shape[0], p["out_channels"], p["groups"]
    if not isinstance(c_out, int) or c_out <= 0:
        raise OpError(f"conv.out_channels must be a positive int, got {c_out!r}")
    if c_in % g or c_out % g:
        raise OpError(f"conv with groups={g} needs in ({c_in}) and out ({c_out}) channels divisible by it")
    return _windowed_shape(p, in_shape, "conv", c_out, default_pad=True)


def _conv_build(p: dict, in_shape: Shape) -> nn.Module:
    n = _spatial_rank(in_shape, "conv")
    k, s, pad, d = _window_geometry(p, in_shape, "conv", default_pad=True)
    conv = _CONV[n](in_shape[0], p["out_channels"], k, stride=s, padding=pad, dilation=d,
                    groups=p["groups"], bias=p["bias"])
    if p["bias_init"] is not None:
        if not p["bias"]:
            raise OpError("conv.bias_init needs bias=true")
        nn.init.constant_(conv.bias, float(p["bias_init"]))
    return conv


def _conv_source(p: dict, in_shape: Shape) -> str | tuple[str, ...]:
    n = _spatial_rank(in_shape, "conv")
    k, s, pad, d = _window_geometry(p, in_shape, "conv", default_pad=True)
    extra = {"dilation": d} if d != (1,) * n else {}
    if p["groups"] != 1:
        extra["groups"] = p["groups"]
    expr = call_source(f"nn.Conv{n}d", in_shape[0], p["out_channels"], kernel_size=k, stride=s, padding=pad,
                       **extra, bias=bool(p["bias"]))
    if p["bias_init"] is not None:
        return expr, f"nn.init.constant_({{m}}.bias, {float(p['bias_init'])!r})"
    return expr


def _conv_macs(p: dict, in_shape: Shape, out_shape: Shape) -> int:
    k = _window_geometry(p, in_shape, "conv", True)[0]
    return _numel(out_shape) * (in_shape[0] // p["groups"]) * math.prod(k)


register_op(OpSpec(
    "conv", _conv_shape, _conv_build, required=("out_channels", "kernel_size"),
    defaults={"stride": 1, "padding": None, "dilation": 1, "groups": 1, "bias": False, "bias_init": None},
    macs=_conv_macs, doc="convolution (1D/2D/3D by input rank); padding defaults to 'same' at stride 1",
    source=_conv_source,
))


def _linear_shape(p: dict, in_shape: Shape) -> Shape:
    if len(in_shape) != 1:
        raise OpError(f"op 'linear' needs a flat (C,) input, got shape {in_shape}; add a flatten or "
                      "global_avgpool before it")
    if not isinstance(p["out_features"], int) or p["out_features"] <= 0:
        raise OpError(f"linear.out_features must be a positive int, got {p['out_features']!r}")
    return (p["out_features"],)


def _linear_build(p: dict, in_shape: Shape) -> nn.Module:
    lin = nn.Linear(in_shape[0], p["out_features"], bias=p["bias"])
    if p["bias_init"] is not None:
        nn.init.constant_(lin.bias, float(p["bias_init"]))
    return lin


def _linear_source(p: dict, in_shape: Shape) -> str | tuple[str, ...]:
    expr = call_source("nn.Linear", in_shape[0], p["out_features"], **({} if p["bias"] else {"bias": False}))
    if p["bias_init"] is not None:
        return expr, f"nn.init.constant_({{m}}.bias, {float(p['bias_init'])!r})"
    return expr


register_op(OpSpec(
    "linear", _linear_shape, _linear_build, required=("out_features",),
    defaults={"bias": True, "bias_init": None},
    macs=lambda p, i, o: i[0] * o[0], doc="fully connected layer on a (C,) input", source=_linear_source,
))


# ---------------------------------------------------------------------------------------------------
# normalisation, activations, regularisation


def _same(p: dict, in_shape: Shape) -> Shape:
    return tuple(in_shape)


def _bn_build(p: dict, in_shape: Shape) -> nn.Module:
    n = max(1, len(in_shape) - 1)
    return _BN[n](in_shape[0], eps=p["eps"], momentum=p["momentum"])


def _bn_shape(p: dict, in_shape: Shape) -> Shape:
    if len(in_shape) > 4:
        raise OpError(f"op 'bn' takes inputs of rank 1 to 4, got shape {in_shape}")
    return tuple(in_shape)


def _bn_source(p: dict, in_shape: Shape) -> str:
    extra = {k: p[k] for k, default in (("eps", 1e-5), ("momentum", 0.1)) if p[k] != default}
    return call_source(f"nn.BatchNorm{max(1, len(in_shape) - 1)}d", in_shape[0], **extra)


register_op(OpSpec("bn", _bn_shape, _bn_build, defaults={"eps": 1e-5, "momentum": 0.1},
                   doc="batch normalisation over the channel dimension", source=_bn_source))
register_op(OpSpec("relu", _same, lambda p, s: nn.ReLU(inplace=p["inplace"]), defaults={"inplace": False},
                   source=lambda p, s: "nn.ReLU(inplace=True)" if p["inplace"] else "nn.ReLU()"))
register_op(OpSpec("sigmoid", _same, lambda p, s: nn.Sigmoid(), source=lambda p, s: "nn.Sigmoid()"))
register_op(OpSpec("tanh", _same, lambda p, s: nn.Tanh(), source=lambda p, s: "nn.Tanh()"))
register_op(OpSpec("identity", _same, lambda p, s: nn.Identity(), source=lambda p, s: "nn.Identity()"))
register_op(OpSpec("dropout", _same, lambda p, s: nn.Dropout(p["p"]), defaults={"p": 0.5},
                   source=lambda p, s: call_source("nn.Dropout", p=p["p"])))


# ---------------------------------------------------------------------------------------------------
# pooling and reshaping


def _pool_shape(op: str) -> Callable[[dict, Shape], Shape]:
    def shape(p: dict, in_shape: Shape) -> Shape:
        return _windowed_shape(p, in_shape, op, in_shape[0], default_pad=False)

    return shape


def _maxpool_build(p: dict, in_shape: Shape) -> nn.Module:
    k, s, pad, _ = _window_geometry(p, in_shape, "maxpool", default_pad=False)
    return _MAXPOOL[len(in_shape) - 1](k, s, pad, ceil_mode=p["ceil_mode"])


def _avgpool_build(p: dict, in_shape: Shape) -> nn.Module:
    k, s, pad, _ = _window_geometry(p, in_shape, "avgpool", default_pad=False)
    return _AVGPOOL[len(in_shape) - 1](k, s, pad, ceil_mode=p["ceil_mode"],
                                        count_include_pad=p["count_include_pad"])


def _pool_source(op: str) -> Callable[[dict, Shape], str]:
    def source(p: dict, in_shape: Shape) -> str:
        k, s, pad, _ = _window_geometry(p, in_shape, op, default_pad=False)
        extra = {"ceil_mode": True} if p["ceil_mode"] else {}
        if op == "avgpool" and not p["count_include_pad"]:
            extra["count_include_pad"] = False
        cls = "MaxPool" if op == "maxpool" else "AvgPool"
        return call_source(f"nn.{cls}{len(in_shape) - 1}d", kernel_size=k, stride=s, padding=pad, **extra)

    return source


register_op(OpSpec("maxpool", _pool_shape("maxpool"), _maxpool_build, required=("kernel_size",),
                   defaults={"stride": None, "padding": 0, "ceil_mode": False},
                   doc="max pooling; stride defaults to the kernel size", source=_pool_source("maxpool")))
register_op(OpSpec("avgpool", _pool_shape("avgpool"), _avgpool_build, required=("kernel_size",),
                   defaults={"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True},
                   doc="average pooling; stride defaults to the kernel size", source=_pool_source("avgpool")))


def _adaptive_shape(p: dict, in_shape: Shape) -> Shape:
    n = _spatial_rank(in_shape, "adaptive_avgpool")
    return (in_shape[0], *_tuple(p["output_size"], n, "adaptive_avgpool.output_size"))


register_op(OpSpec(
    "adaptive_avgpool", _adaptive_shape,
    lambda p, s: _ADAPTIVE_AVG[len(s) - 1](_tuple(p["output_size"], len(s) - 1, "output_size")),
    required=("output_size",), doc="adaptive average pooling to a fixed spatial size",
    source=lambda p, s: call_source(f"nn.AdaptiveAvgPool{len(s) - 1}d",
                                    _tuple(p["output_size"], len(s) - 1, "output_size")),
))


class GlobalAvgPool(nn.Module):
    """Mean over every spatial (and temporal) dimension: (N, C, ...) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


def _global_pool_shape(p: dict, in_shape: Shape) -> Shape:
    _spatial_rank(in_shape, "global_avgpool")
    return (in_shape[0],)


register_op(OpSpec("global_avgpool", _global_pool_shape, lambda p, s: GlobalAvgPool(),
                   doc="average over all spatial dimensions, giving a (C,) vector",
                   source=lambda p, s: "GlobalAvgPool()", source_classes=(GlobalAvgPool,)))
register_op(OpSpec("flatten", lambda p, s: (_numel(s),), lambda p, s: nn.Flatten(),
                   doc="flatten everything but the batch dimension", source=lambda p, s: "nn.Flatten()"))


# ---------------------------------------------------------------------------------------------------
# input preprocessing (nas.preprocessing): what the search's worker did to the data before training


class Normalize(nn.Module):
    """Input preprocessing without parameters: x * scale (computed as x / (1 / scale), as the data loader
    divides), then (x - mean) / std per channel (dimension 1). Integer inputs (uint8) are cast first. The
    constants are non-persistent buffers: they follow .to() but are not in the state dict."""

    def __init__(self, scale: float, mean: list[float], std: list[float], channels: int, rank: int = 3):
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"Normalize: {len(mean)} mean(s) and {len(std)} std(s) for {channels} input "
                             "channel(s); give one mean and one std per channel (input_mean=, input_std=)")
        if scale <= 0 or min(std) <= 0:
            raise ValueError(f"Normalize: scale and std must be positive, got scale {scale}, std {std}")
        self.divisor = 1.0 / float(scale)
        view = [channels] + [1] * (rank - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(view), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(view), persistent=False)

    def extra_repr(self) -> str:
        return f"divisor={self.divisor!r}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) / self.divisor - self.mean) / self.std


def _normalize_shape(p: dict, in_shape: Shape) -> Shape:
    for key in ("mean", "std"):
        v = p[key]
        if not isinstance(v, list | tuple) or len(v) != in_shape[0] or not all(
                isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in v):
            raise OpError(f"normalize.{key} must be a list of {in_shape[0]} numbers (one per input channel), "
                          f"got {v!r}")
    if any(a <= 0 for a in p["std"]):
        raise OpError(f"normalize.std must be positive, got {p['std']!r}")
    scale = p["scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise OpError(f"normalize.scale must be a positive number, got {scale!r}")
    return tuple(in_shape)


def _normalize_build(p: dict, in_shape: Shape) -> nn.Module:
    return Normalize(p["scale"], p["mean"], p["std"], channels=in_shape[0], rank=len(in_shape))


def _normalize_source(p: dict, in_shape: Shape) -> str:
    return call_source("Normalize", float(p["scale"]), [float(v) for v in p["mean"]],
                       [float(v) for v in p["std"]], channels=in_shape[0], rank=len(in_shape))


register_op(OpSpec("normalize", _normalize_shape, _normalize_build, required=("mean", "std"),
                   defaults={"scale": 1.0},
                   doc="input preprocessing: x * scale, then (x - mean) / std per channel (no parameters)",
                   source=_normalize_source, source_classes=(Normalize,)))


# ---------------------------------------------------------------------------------------------------
# merges: how a node with several inputs combines them before its op runs

MERGES = ("sum", "concat", "gate", "mul")


def merge_shape(merge: str, shapes: list[Shape], where: str) -> Shape:
    """Shape after merging `shapes` (ordered as the node's inputs); raises naming `where`."""
    if merge not in MERGES:
        raise OpError(f"{where}: unknown merge {merge!r}; known merges: {', '.join(MERGES)}")
    if merge == "concat":
        rest = {tuple(s[1:]) for s in shapes}
        if len(rest) != 1:
            raise OpError(f"{where}: concat needs inputs equal in all but the channel dimension, got {shapes}")
        return (sum(s[0] for s in shapes), *shapes[0][1:])
    if merge == "gate" and len(shapes) != 3:
        raise OpError(f"{where}: gate merge takes three inputs (h, t, x) -> h*t + x*(1-t), got {len(shapes)}")
    if len({tuple(s) for s in shapes}) != 1:
        raise OpError(f"{where}: {merge} merge needs inputs of one shape, got {shapes}")
    return tuple(shapes[0])


def apply_merge(merge: str, xs: list[torch.Tensor]) -> torch.Tensor:
    if merge == "sum":
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out
    if merge == "concat":
        return torch.cat(xs, 1)
    if merge == "gate":
        h, t, x = xs
        return h * t + x * (1.0 - t)
    out = xs[0] * xs[1]
    for x in xs[2:]:
        out = out * x
    return out
