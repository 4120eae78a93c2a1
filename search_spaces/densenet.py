"""DenseNet search space: DenseNet and DenseNet-BC (Huang et al. 2017, "Densely Connected Convolutional
Networks"), in torchvision's layout so that its presets match torchvision parameter for parameter.

Layout: stem, ``num_blocks`` dense blocks with a transition between consecutive blocks, final BN (norm5),
ReLU, global average pool, linear classifier.

- Dense layer ``l`` of a block sees the channel concatenation of the block input and the outputs of layers
  1..l-1 (in that order). With ``bottleneck`` (DenseNet-B) it is BN-ReLU-conv1x1(bn_size * growth_rate)-
  BN-ReLU-conv3x3(growth_rate); without, BN-ReLU-conv3x3(growth_rate). Block ``i`` has ``block{i}_layers``
  layers; the variables of blocks beyond ``num_blocks`` are ignored (the space has a fixed dimensionality).
- Transition: BN-ReLU-conv1x1(floor(compression * channels), at least 1)-avgpool 2x2/2. DenseNet-C /
  DenseNet-BC use compression 0.5, plain DenseNet 1.0 (torchvision: always 0.5).
- Stems: ``imagenet`` = conv0 7x7/2 (64 or 96 channels in torchvision, no bias), norm0, relu0, pool0 3x3/2
  pad 1; ``small`` = a single 3x3/1 conv0 (no bias), as the paper's CIFAR/SVHN networks (the first dense
  layer's BN-ReLU follows). Its width is ``init_features`` (the paper's CIFAR nets: 16, or 2 * growth
  rate for DenseNet-BC).
- Option ``drop_rate``: dropout after every dense layer's last conv (torchvision's ``drop_rate``), 0 = none.

Small inputs: a transition's 2x2 average pool is written only while every spatial side of its input is at
least 2; on a smaller map the transition is BN-ReLU-conv1x1 alone. The stem never collapses a side (a 1x1
input stays 1x1 through 7x7/2 pad 3 and 3x3/2 pad 1), so every assignment builds on any input down to
1x1, e.g. the default 1x8x8 digits (small stem, 3 blocks: 8x8 -> 4x4 -> 2x2).

Convolutions have no bias; every BN is affine with torchvision's eps 1e-5 and momentum 0.1. State-dict keys
are torchvision's with '.' -> '_' and the ``features.`` prefix dropped (``features.denseblock1.denselayer1.
norm1.weight`` -> ``denseblock1_denselayer1_norm1.weight``); without a bottleneck the single conv of a dense
layer is ``..._norm``, ``..._relu``, ``..._conv``.
"""

from __future__ import annotations

import math

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

MAX_BLOCKS = 4
LAYERS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 36, 48)

VARIABLES = [
    Ordinal("growth_rate", (4, 8, 12, 16, 24, 32, 40, 48), default=8),
    Ordinal("num_blocks", tuple(range(1, MAX_BLOCKS + 1)), default=3),
    *(Ordinal(f"block{i}_layers", LAYERS, default=2) for i in range(1, MAX_BLOCKS + 1)),
    Categorical("bottleneck", (True, False)),
    Ordinal("bn_size", (1, 2, 4), default=4),
    Ordinal("compression", (0.5, 0.75, 1.0), default=0.5),
    Ordinal("init_features", (8, 16, 24, 32, 48, 64, 96), default=16),
    Categorical("stem", ("small", "imagenet")),
]


def _pool_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _concat(inputs: list[str]) -> str | None:
    return "concat" if len(inputs) > 1 else None


def _stem(g: ArchGraph, kind: str, width: int, spatial: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    if kind == "small":
        return g.add_op("conv0", "conv", "input", out_channels=width, kernel_size=3), spatial
    x = g.add_op("conv0", "conv", "input", out_channels=width, kernel_size=7, stride=2, padding=3)
    x = g.add_op("norm0", "bn", x)
    x = g.add_op("relu0", "relu", x)
    x = g.add_op("pool0", "maxpool", x, kernel_size=3, stride=2, padding=1)
    return x, tuple(_pool_out(_pool_out(s, 7, 2, 3), 3, 2, 1) for s in spatial)


def _dense_layer(g: ArchGraph, name: str, inputs: list[str], a: dict, drop_rate: float) -> str:
    """One dense layer reading the concatenation of `inputs`; returns its output node."""
    merge = _concat(inputs)
    growth = a["growth_rate"]
    if a["bottleneck"]:
        x = g.add_op(f"{name}_norm1", "bn", inputs, merge=merge)
        x = g.add_op(f"{name}_relu1", "relu", x)
        x = g.add_op(f"{name}_conv1", "conv", x, out_channels=a["bn_size"] * growth, kernel_size=1)
        x = g.add_op(f"{name}_norm2", "bn", x)
        x = g.add_op(f"{name}_relu2", "relu", x)
        x = g.add_op(f"{name}_conv2", "conv", x, out_channels=growth, kernel_size=3)
    else:
        x = g.add_op(f"{name}_norm", "bn", inputs, merge=merge)
        x = g.add_op(f"{name}_relu", "relu", x)
        x = g.add_op(f"{name}_conv", "conv", x, out_channels=growth, kernel_size=3)
    if drop_rate > 0:
        x = g.add_op(f"{name}_dropout", "dropout", x, p=drop_rate)
    return x


def build_densenet(a: dict, *, num_classes: int, input_shape: tuple, drop_rate: float = 0.0) -> ArchGraph:
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, int | float) or not 0 <= drop_rate < 1:
        raise SpaceError(f"option 'drop_rate' must be a number in [0, 1), got {drop_rate!r}")
    g = ArchGraph(input_shape)
    spatial = tuple(input_shape[1:])
    x, spatial = _stem(g, a["stem"], a["init_features"], spatial)
    channels = a["init_features"]
    for b in range(1, a["num_blocks"] + 1):
        features = [x]
        for i in range(1, a[f"block{b}_layers"] + 1):
            features.append(_dense_layer(g, f"denseblock{b}_denselayer{i}", features, a, drop_rate))
        channels += a[f"block{b}_layers"] * a["growth_rate"]
        if b == a["num_blocks"]:
            x = g.add_op("norm5", "bn", features, merge=_concat(features))
            break
        name = f"transition{b}"
        x = g.add_op(f"{name}_norm", "bn", features, merge=_concat(features))
        x = g.add_op(f"{name}_relu", "relu", x)
        channels = max(1, math.floor(a["compression"] * channels))
        x = g.add_op(f"{name}_conv", "conv", x, out_channels=channels, kernel_size=1)
        if spatial and min(spatial) >= 2:
            x = g.add_op(f"{name}_pool", "avgpool", x, kernel_size=2, stride=2)
            spatial = tuple(s // 2 for s in spatial)
    x = g.add_op("relu5", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("classifier", "linear", x, out_features=num_classes)
    return g


def _imagenet(growth: int, blocks: tuple[int, ...], init: int, description: str) -> Preset:
    layers = {f"block{i}_layers": n for i, n in enumerate(blocks, 1)}
    return Preset(
        {"growth_rate": growth, "num_blocks": len(blocks), **layers, "bottleneck": True, "bn_size": 4,
         "compression": 0.5, "init_features": init, "stem": "imagenet"},
        num_classes=1000, input_shape=(3, 224, 224), description=description,
    )


def _cifar(growth: int, layers: int, bottleneck: bool, description: str) -> Preset:
    return Preset(
        {"growth_rate": growth, "num_blocks": 3, **{f"block{i}_layers": layers for i in range(1, 4)},
         "bottleneck": bottleneck, "bn_size": 4, "compression": 0.5 if bottleneck else 1.0,
         "init_features": 2 * growth if bottleneck else 16, "stem": "small"},
        num_classes=10, input_shape=(3, 32, 32), description=description,
    )


PRESETS = {
    "densenet121": _imagenet(32, (6, 12, 24, 16), 64, "torchvision densenet121: 7,978,856 parameters"),
    "densenet169": _imagenet(32, (6, 12, 32, 32), 64, "torchvision densenet169: 14,149,480 parameters"),
    "densenet201": _imagenet(32, (6, 12, 48, 32), 64, "torchvision densenet201: 20,013,928 parameters"),
    "densenet161": _imagenet(48, (6, 12, 36, 24), 96, "torchvision densenet161: 28,681,000 parameters"),
    "densenet40_k12": _cifar(12, 12, False, "the paper's CIFAR DenseNet (L=40, k=12): 3 blocks of 12 "
                             "BN-ReLU-conv3x3 layers, 16 stem channels, no compression; the paper reports "
                             "1.0M parameters (rounded), convolutions here have no bias"),
    "densenet_bc100_k12": _cifar(12, 16, True, "the paper's CIFAR DenseNet-BC (L=100, k=12): 3 blocks of "
                                 "16 bottleneck layers, 24 stem channels, compression 0.5; the paper reports "
                                 "0.8M parameters (rounded)"),
}


def densenet_space() -> SearchSpace:
    return SearchSpace(
        "densenet", list(VARIABLES), build_densenet, presets=dict(PRESETS), input_shape=(1, 8, 8),
        num_classes=10, options={"drop_rate": 0.0}, description=__doc__ or "",
    )
