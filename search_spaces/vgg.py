"""VGG search space: five stages of 3x3 (or 5x5) convolutions with max-pooling, then a three-layer
fully connected classifier (Simonyan & Zisserman 2015, in torchvision's layout).

Layout: stage i (1..5) has ``depth{i}`` convs of ``width{i}`` channels (conv, optional BN, ReLU) followed
by a 2x2/2 max-pool; depth 0 drops the stage, pool included. Then an adaptive average pool to
``avgpool_size`` x ``avgpool_size``, flatten, and the classifier fc6-ReLU-Dropout-fc7-ReLU-Dropout-fc8 with
``classifier_width`` hidden units (dropout 0 leaves the dropout nodes out). Convs have a bias, with batch
norm too, as in torchvision, so the presets vgg11 ... vgg19_bn (configs A, B, D, E; avgpool 7, width 4096,
dropout 0.5) match torchvision parameter for parameter. ``kernel_size`` applies to every conv, padded
k//2 so every choice keeps the shape.

The paper's other two configurations are choices too: ``last_1x1`` makes the last conv of each of stages
3-5 that has at least two convs a 1x1 conv (configuration C: preset ``vgg_c``, 133,638,952 parameters);
``lrn`` puts a local response normalisation (op ``lrn``: size 5, alpha 1e-4, beta 0.75, k 2, as in AlexNet)
after the first conv's ReLU, named ``norm1`` (configuration A-LRN: preset ``vgg_a_lrn``, 132,863,336
parameters, A's count). With the paper's Table 2: A and A-LRN 133M, B 133M, C 134M, D 138M, E 144M.

Small inputs: a stage's max-pool is applied only while both spatial sides are >= 2 and is left out
otherwise, so 8x8 digits go 8-4-2-1 through the first three non-empty stages and later stages run at 1x1;
any input size builds.

Node names follow the paper's Caffe model: ``conv3_2``, ``bn3_2``, ``relu3_2``, ``pool3``, ``fc6`` ...
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError
from search_spaces._blocks import conv_bn, downsample_stride

STAGES = 5
WIDTHS = (8, 16, 32, 64, 128, 256, 512)
DEFAULT_WIDTHS = (16, 32, 64, 128, 128)

VARIABLES = [
    *(Ordinal(f"depth{i}", (0, 1, 2, 3, 4), default=1 if i <= 3 else 0) for i in range(1, STAGES + 1)),
    *(Ordinal(f"width{i}", WIDTHS, default=DEFAULT_WIDTHS[i - 1]) for i in range(1, STAGES + 1)),
    Categorical("batch_norm", (False, True), default=True),
    Ordinal("kernel_size", (3, 5), default=3),
    Ordinal("avgpool_size", (1, 2, 4, 7), default=1),
    Ordinal("classifier_width", (64, 128, 256, 512, 1024, 2048, 4096), default=64),
    Ordinal("dropout", (0.0, 0.25, 0.5), default=0.5),
    Categorical("last_1x1", (False, True), default=False),
    Categorical("lrn", (False, True), default=False),
]
ONE_BY_ONE_STAGES = (3, 4, 5)  # configuration C's 1x1 convs end these stages


def build_vgg(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    """The VGG of assignment `a` (see the module docstring for the layout and the small-input rule)."""
    if len(input_shape) < 2:
        raise SpaceError(f"space 'vgg' needs a (C, H, W) input (or (C, L) / (C, T, H, W)), got {input_shape}")
    g = ArchGraph(input_shape)
    spatial = tuple(input_shape[1:])
    x = "input"
    for stage in range(1, STAGES + 1):
        if a[f"depth{stage}"] == 0:
            continue
        depth = a[f"depth{stage}"]
        for j in range(1, depth + 1):
            one_by_one = a["last_1x1"] and stage in ONE_BY_ONE_STAGES and depth >= 2 and j == depth
            x = conv_bn(g, "", x, a[f"width{stage}"], 1 if one_by_one else a["kernel_size"], bn=a["batch_norm"],
                        bias=True, suffix=f"{stage}_{j}")
            if a["lrn"] and "norm1" not in g:
                x = g.add_op("norm1", "lrn", x, size=5, alpha=1e-4, beta=0.75, k=2.0)
        if downsample_stride(spatial) == 2:
            x = g.add_op(f"pool{stage}", "maxpool", x, kernel_size=2, stride=2)
            spatial = tuple(s // 2 for s in spatial)
    x = g.add_op("avgpool", "adaptive_avgpool", x, output_size=a["avgpool_size"])
    x = g.add_op("flatten", "flatten", x)
    for fc in (6, 7):
        x = g.add_op(f"fc{fc}", "linear", x, out_features=a["classifier_width"])
        x = g.add_op(f"relu{fc}", "relu", x)
        if a["dropout"] > 0:
            x = g.add_op(f"drop{fc}", "dropout", x, p=a["dropout"])
    g.add_op("fc8", "linear", x, out_features=num_classes)
    return g


_CONFIGS = {  # convs per stage; widths are always 64, 128, 256, 512, 512
    "vgg11": (1, 1, 2, 2, 2),  # A
    "vgg13": (2, 2, 2, 2, 2),  # B
    "vgg16": (2, 2, 3, 3, 3),  # D
    "vgg19": (2, 2, 4, 4, 4),  # E
}
_PARAMS = {  # torchvision's counts; vgg_c and vgg_a_lrn (not in torchvision) counted in the tests
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "vgg_c": 133_638_952, "vgg_a_lrn": 132_863_336,
}


def _preset(depths: tuple[int, ...], batch_norm: bool, description: str, **choices: Any) -> Preset:
    assignment: dict[str, Any] = {"batch_norm": batch_norm, "kernel_size": 3, "avgpool_size": 7,
                                  "classifier_width": 4096, "dropout": 0.5, **choices}
    for i, (d, w) in enumerate(zip(depths, (64, 128, 256, 512, 512), strict=True), start=1):
        assignment[f"depth{i}"], assignment[f"width{i}"] = d, w
    return Preset(assignment=assignment, num_classes=1000, input_shape=(3, 224, 224), description=description)


PRESETS = {
    f"{cfg}{suffix}": _preset(depths, bool(suffix),
                              f"torchvision {cfg}{suffix} ({_PARAMS[cfg + suffix]:,} parameters)")
    for cfg, depths in _CONFIGS.items()
    for suffix in ("", "_bn")
}
PRESETS["vgg_c"] = _preset((2, 2, 3, 3, 3), False, "VGG configuration C (16 layers, the last conv of stages 3-5 "
                           f"1x1) in torchvision's layout ({_PARAMS['vgg_c']:,} parameters)", last_1x1=True)
PRESETS["vgg_a_lrn"] = _preset((1, 1, 2, 2, 2), False, "VGG configuration A-LRN (A with a local response "
                               f"normalisation after conv1_1) ({_PARAMS['vgg_a_lrn']:,} parameters)", lrn=True)

vgg_space = SearchSpace(
    name="vgg",
    variables=VARIABLES,
    build=build_vgg,
    presets=PRESETS,
    input_shape=(1, 8, 8),
    num_classes=10,
    description=__doc__.split("\n\n")[0].replace("\n", " "),
)
