"""ResNet search space: basic and bottleneck blocks, original (post-activation) and full pre-activation
units, ResNeXt grouped convolutions, projection, zero-padding or no shortcuts (plain networks), ImageNet
and CIFAR stems.

Layout (torchvision's, so its presets match torchvision parameter for parameter): stem, four stages of
residual blocks, global average pool, fully connected layer. Stage i (1..4) has ``depth{i}`` blocks of
``planes = base_width * 2**(i-1)`` (x4 output channels for bottlenecks); depth 0 drops the stage. The
first block of stages 2..4 has stride 2, on the 3x3 conv in bottlenecks (ResNet v1.5), and a block whose
stride or channel count changes gets a projection shortcut (1x1 conv with that stride, + BN in original
units), or another shortcut as ``shortcut`` says (below). ``kernel_size`` is the kernel of every block's
spatial conv (both convs of a basic block, the middle one of a bottleneck), padded k//2 so every choice
keeps the shape.

Bottleneck inner width: ``planes * bottleneck_width / 64``, rounded up to a multiple of ``cardinality``,
and the middle conv has ``cardinality`` groups. So ``bottleneck_width`` is the inner width of a
planes-64 block and equals torchvision's ``cardinality * width_per_group``: ResNet-50 is (cardinality 1,
bottleneck_width 64), ResNeXt-50 32x4d is (32, 128), Wide ResNet-50-2 is (1, 128). This parametrisation
(rather than width_per_group) keeps width and grouping apart, so the widest block is 4x planes whatever
the cardinality. Cardinality and bottleneck_width do not affect basic blocks (torchvision's basic block
supports neither).

Units: ``original`` is He et al. 2015 (conv-BN-ReLU, ReLU after the addition). ``preact`` is the full
pre-activation unit of He et al. 2016, "Identity Mappings in Deep Residual Networks": BN-ReLU before each
conv, nothing after the addition; the projection shortcut takes the pre-activated input; the stem is a
bare conv (+ max-pool) and a final BN-ReLU precedes the pooling (as timm's ResNetV2).

Shortcuts (He et al. 2015, section 3.3 and 4.2): ``projection`` is option B, the projection just described
(torchvision's, the default); ``zero_pad`` is option A, parameter-free: where the stride or channel count
changes, the identity is subsampled by the stride and zero channels are appended (op ``pad_shortcut``, node
``{block}_shortcut``; in pre-activation units it takes the block's input, as the identity does); ``none``
gives the paper's plain networks: no shortcut at all, the block's output is its last conv's (+ BN) ReLU in
original units (still node ``{block}_relu``) and its last conv in pre-activation units. The CIFAR presets
``resnet20_cifar``, ``resnet56_cifar``, ``resnet110_cifar`` are the paper's CIFAR-10 networks: 3x3 stem of
16, three stages of 16/32/64 channels with n = 3/9/18 basic blocks each, option A: 269,722 / 853,018 /
1,727,962 parameters (with ``shortcut=projection``, option B: 272,474 / 855,770 / 1,730,714; the paper
rounds both to 0.27M / 0.85M / 1.7M).

Stems: ``imagenet`` = 7x7/2 conv + BN + ReLU + 3x3/2 max-pool (pad 1); ``cifar`` = 3x3/1 conv + BN + ReLU,
no pooling. Stem width = base_width.

Small inputs: every stride-2 layer (stem conv, stem max-pool, first block of stages 2..4) uses stride 2
only while both spatial sides of its input are >= 2, and stride 1 otherwise; so 8x8 digits go 8-4-2-1 and
then stay at 1x1, and any input size builds.

State-dict keys are torchvision's with '.' -> '_' in module paths (``layer1.0.conv1.weight`` ->
``layer1_0_conv1.weight``, ``layer1.0.downsample.0`` -> ``layer1_0_downsample_0``), so torchvision weights
load after a key rename.
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError
from search_spaces._blocks import bn_relu, conv_bn, downsample_stride, strided

DEPTHS = (0, 1, 2, 3, 4, 6, 8)  # stage 4
DEPTHS_CIFAR = (0, 1, 2, 3, 4, 6, 8, 9, 18)  # stages 1, 2: 9 and 18 for the CIFAR ResNet-56 and -110
DEPTHS_STAGE3 = (0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 23, 36)  # where ResNet-50/101/152 put their depth
SHORTCUTS = ("projection", "zero_pad", "none")  # He et al.'s options B and A, and plain networks
EXPANSION = 4  # bottleneck output channels / planes

VARIABLES = [
    Categorical("block", ("basic", "bottleneck")),
    Categorical("unit", ("original", "preact")),
    Categorical("stem", ("cifar", "imagenet")),
    Ordinal("depth1", DEPTHS_CIFAR, default=1),
    Ordinal("depth2", DEPTHS_CIFAR, default=1),
    Ordinal("depth3", DEPTHS_STAGE3, default=1),
    Ordinal("depth4", DEPTHS, default=1),
    Ordinal("base_width", (8, 16, 32, 64), default=16),
    Ordinal("cardinality", (1, 2, 4, 8, 16, 32, 64), default=1),
    Ordinal("bottleneck_width", (16, 32, 64, 128, 256), default=64),
    Ordinal("kernel_size", (3, 5), default=3),
    Categorical("shortcut", SHORTCUTS, default="projection"),
]


def _stem(g: ArchGraph, kind: str, preact: bool, width: int, spatial: tuple[int, ...]) -> tuple[str, tuple]:
    k, s = (3, 1) if kind == "cifar" else (7, downsample_stride(spatial))
    if preact:  # the first unit's BN-ReLU follows
        x = g.add_op("conv1", "conv", "input", out_channels=width, kernel_size=k, stride=s)
    else:
        x = conv_bn(g, "", "input", width, k, stride=s, suffix="1")
    spatial = strided(spatial, s)
    if kind == "imagenet":
        s = downsample_stride(spatial)
        x = g.add_op("maxpool", "maxpool", x, kernel_size=3, stride=s, padding=1)
        spatial = strided(spatial, s)
    return x, spatial


def _block(g: ArchGraph, name: str, x: str, in_ch: int, planes: int, stride: int, a: dict) -> tuple[str, int]:
    """One residual block; returns its output node and channel count."""
    preact, k = a["unit"] == "preact", a["kernel_size"]
    if a["block"] == "basic":
        convs = [(planes, k, stride, 1), (planes, k, 1, 1)]
    else:
        card = a["cardinality"]
        width = -(-planes * a["bottleneck_width"] // (64 * card)) * card  # rounded up to a multiple of card
        convs = [(width, 1, 1, 1), (width, k, stride, card), (planes * EXPANSION, 1, 1, 1)]
    out_ch = convs[-1][0]
    kind = a["shortcut"]
    project = (stride != 1 or in_ch != out_ch) and kind == "projection"
    pad = (stride != 1 or in_ch != out_ch) and kind == "zero_pad"

    if preact:
        y = x_pre = bn_relu(g, name, x, suffix="1")
        for i, (ch, kk, s, groups) in enumerate(convs, start=1):
            if i > 1:
                y = bn_relu(g, name, y, suffix=str(i))
            y = g.add_op(f"{name}_conv{i}", "conv", y, out_channels=ch, kernel_size=kk, stride=s, groups=groups)
        if kind == "none":
            return y, out_ch
        shortcut = x
        if project:
            shortcut = g.add_op(f"{name}_downsample_0", "conv", x_pre, out_channels=out_ch, kernel_size=1,
                                stride=stride)
        elif pad:
            shortcut = g.add_op(f"{name}_shortcut", "pad_shortcut", x, stride=stride, out_channels=out_ch)
        return g.add_op(f"{name}_add", "identity", [y, shortcut], merge="sum"), out_ch

    y = x
    for i, (ch, kk, s, groups) in enumerate(convs, start=1):
        y = conv_bn(g, name, y, ch, kk, stride=s, groups=groups, relu=i < len(convs), suffix=str(i))
    if kind == "none":
        return g.add_op(f"{name}_relu", "relu", y), out_ch
    shortcut = x
    if project:
        shortcut = g.add_op(f"{name}_downsample_0", "conv", x, out_channels=out_ch, kernel_size=1, stride=stride)
        shortcut = g.add_op(f"{name}_downsample_1", "bn", shortcut)
    elif pad:
        shortcut = g.add_op(f"{name}_shortcut", "pad_shortcut", x, stride=stride, out_channels=out_ch)
    return g.add_op(f"{name}_relu", "relu", [y, shortcut], merge="sum"), out_ch


def build_resnet(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    """The ResNet of assignment `a` (see the module docstring for the layout and the small-input rule)."""
    if len(input_shape) < 2:
        raise SpaceError(f"space 'resnet' needs a (C, H, W) input (or (C, L) / (C, T, H, W)), got {input_shape}")
    g = ArchGraph(input_shape)
    preact = a["unit"] == "preact"
    base = a["base_width"]
    x, spatial = _stem(g, a["stem"], preact, base, tuple(input_shape[1:]))
    ch = base
    for stage in range(1, 5):
        planes = base * 2 ** (stage - 1)
        for b in range(a[f"depth{stage}"]):
            stride = downsample_stride(spatial) if stage > 1 and b == 0 else 1
            x, ch = _block(g, f"layer{stage}_{b}", x, ch, planes, stride, a)
            spatial = strided(spatial, stride)
    if preact:
        x = bn_relu(g, "final", x)
    x = g.add_op("avgpool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=num_classes)
    return g


def _tv(block: str, depths: tuple[int, int, int, int], cardinality: int = 1, bottleneck_width: int = 64,
        unit: str = "original", stem: str = "imagenet", base_width: int = 64, num_classes: int = 1000,
        input_shape: tuple[int, ...] = (3, 224, 224), description: str = "", shortcut: str = "projection") -> Preset:
    assignment = {"block": block, "unit": unit, "stem": stem, "base_width": base_width,
                  "cardinality": cardinality, "bottleneck_width": bottleneck_width, "kernel_size": 3,
                  "shortcut": shortcut}
    assignment.update({f"depth{i}": d for i, d in enumerate(depths, start=1)})
    return Preset(assignment=assignment, num_classes=num_classes, input_shape=input_shape, description=description)


PRESETS = {
    "resnet18": _tv("basic", (2, 2, 2, 2), description="torchvision resnet18 (11,689,512 parameters)"),
    "resnet34": _tv("basic", (3, 4, 6, 3), description="torchvision resnet34 (21,797,672 parameters)"),
    "resnet50": _tv("bottleneck", (3, 4, 6, 3), description="torchvision resnet50, v1.5 (25,557,032 parameters)"),
    "resnet101": _tv("bottleneck", (3, 4, 23, 3), description="torchvision resnet101 (44,549,160 parameters)"),
    "resnet152": _tv("bottleneck", (3, 8, 36, 3), description="torchvision resnet152 (60,192,808 parameters)"),
    "resnext50_32x4d": _tv("bottleneck", (3, 4, 6, 3), 32, 128,
                           description="torchvision resnext50_32x4d (25,028,904 parameters)"),
    "resnext101_32x8d": _tv("bottleneck", (3, 4, 23, 3), 32, 256,
                            description="torchvision resnext101_32x8d (88,791,336 parameters)"),
    "resnext101_64x4d": _tv("bottleneck", (3, 4, 23, 3), 64, 256,
                            description="torchvision resnext101_64x4d (83,455,272 parameters)"),
    "wide_resnet50_2": _tv("bottleneck", (3, 4, 6, 3), 1, 128,
                           description="torchvision wide_resnet50_2 (68,883,240 parameters)"),
    "wide_resnet101_2": _tv("bottleneck", (3, 4, 23, 3), 1, 128,
                            description="torchvision wide_resnet101_2 (126,886,696 parameters)"),
    "preact_resnet18": _tv("basic", (2, 2, 2, 2), unit="preact", description="pre-activation ResNet-18"),
    "preact_resnet34": _tv("basic", (3, 4, 6, 3), unit="preact", description="pre-activation ResNet-34"),
    "preact_resnet50": _tv("bottleneck", (3, 4, 6, 3), unit="preact", description="pre-activation ResNet-50"),
    "preact_resnet101": _tv("bottleneck", (3, 4, 23, 3), unit="preact", description="pre-activation ResNet-101"),
    "preact_resnet152": _tv("bottleneck", (3, 8, 36, 3), unit="preact", description="pre-activation ResNet-152"),
    "resnet18_cifar": _tv("basic", (2, 2, 2, 2), stem="cifar", num_classes=10, input_shape=(3, 32, 32),
                          description="ResNet-18 with a 3x3 stem and no max-pool, for 32x32 CIFAR images"),
    "preact_resnet18_cifar": _tv("basic", (2, 2, 2, 2), unit="preact", stem="cifar", num_classes=10,
                                 input_shape=(3, 32, 32),
                                 description="pre-activation ResNet-18 with a 3x3 stem, for CIFAR"),
    **{f"resnet{6 * n + 2}_cifar": _tv("basic", (n, n, n, 0), stem="cifar", base_width=16, num_classes=10,
                                       input_shape=(3, 32, 32), shortcut="zero_pad",
                                       description=f"He et al.'s CIFAR-10 ResNet-{6 * n + 2} (3 stages of {n} basic "
                                                   f"blocks, 16/32/64 channels, option A; {count:,} parameters)")
       for n, count in ((3, 269_722), (9, 853_018), (18, 1_727_962))},
}

resnet_space = SearchSpace(
    name="resnet",
    variables=VARIABLES,
    build=build_resnet,
    presets=PRESETS,
    input_shape=(1, 8, 8),
    num_classes=10,
    description=__doc__.split("\n\n")[0].replace("\n", " "),
)
