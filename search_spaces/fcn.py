"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell, "Fully Convolutional
Networks for Semantic Segmentation", CVPR 2015) over a VGG-style backbone.

Layout: ``stages`` stages of ``depth`` conv(-BN)-ReLU layers (``width``, 2x ``width``, ... channels, at most
512) each followed by a 2x2 max-pool ``pool{s}``, so the last map is 2 ** stages times smaller than the
input; the classifier as convolutions (FCN's fc6 / fc7: ``head_width`` channels, fc6 with kernel
``head_kernel`` 'same'-padded, fc7 1x1, each with ReLU and optional dropout); ``score_fr``, a 1x1 conv to one
score per class. Then the skip fusion of the paper, the variable ``fusion``:

- ``32s``: the class scores upsampled 2 ** stages times to the input size (FCN-32s with 5 stages);
- ``16s``: the scores upsampled 2x (``upscore2``) and added to a 1x1 class score of the previous stage's
  pool (``score_pool{stages-1}``, ``fuse_pool{stages-1}``), then upsampled 2 ** (stages-1) times (FCN-16s);
- ``8s``: that sum upsampled 2x again and added to the score of the stage before (``score_pool{stages-2}``),
  then upsampled 2 ** (stages-2) times (FCN-8s).

With 5 stages the strides are the paper's 32 / 16 / 8; with fewer, each is smaller by the same factor.
``upsampling``: ``deconv`` (op ``conv_transpose`` per class, kernel 2f, stride f, initialised as bilinear
interpolation, learned: the paper's in-network upsampling) or ``bilinear`` (op ``upsample``, fixed). The
final upsampling is ``upscore``. Output (num_classes, H, W): per-pixel class scores for the
``segmentation`` task (`nas.tasks.segmentation`).

Fully convolutional: no layer depends on the input size, so a network trained at one size runs on larger
images (sides divisible by 2 ** stages) with the same weights, as a module or rebuilt with the larger
``input_shape`` (same state dict). That is why this space offers no spatial transformer: its localisation
network ends in linear layers sized for one input. Default input (1, 32, 32) and 11 classes (background
and ten digits): the ``digit_segmentation`` data set.
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError
from search_spaces._blocks import conv_stages

FUSIONS = {"32s": 0, "16s": 1, "8s": 2}  # skip layers fused
INPUT_SHAPE = (1, 32, 32)
VARIABLES = [
    Ordinal("stages", (3, 4, 5), default=3),
    Ordinal("width", (8, 16, 32, 64), default=16),
    Ordinal("depth", (1, 2, 3), default=1),
    Ordinal("kernel_size", (3, 5), default=3),
    Categorical("batch_norm", (False, True), default=True),
    Ordinal("head_width", (16, 32, 64, 128, 256), default=64),
    Ordinal("head_kernel", (1, 3, 7), default=3),
    Ordinal("dropout", (0.0, 0.5), default=0.0),
    Categorical("fusion", tuple(FUSIONS), default="8s"),
    Categorical("upsampling", ("deconv", "bilinear"), default="deconv"),
]


def _upsample(g: ArchGraph, node: str, x: str, factor: int, channels: int, how: str) -> str:
    if factor == 1:
        return x
    if how == "bilinear":
        return g.add_op(node, "upsample", x, scale_factor=factor, mode="linear")
    return g.add_op(node, "conv_transpose", x, out_channels=channels, kernel_size=2 * factor, stride=factor,
                    padding=factor // 2, init="bilinear")


def build_fcn(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    """The FCN of assignment `a` (see the module docstring)."""
    if len(input_shape) != 3:
        raise SpaceError(f"fcn: the space takes images (C, H, W), got input shape {tuple(input_shape)}")
    stages, skips = a["stages"], FUSIONS[a["fusion"]]
    if any(side % 2 ** stages for side in input_shape[1:]):
        raise SpaceError(f"fcn: variable 'stages' = {stages} downsamples {2 ** stages} times and needs input sides "
                         f"divisible by {2 ** stages}; the input is {tuple(input_shape)}")
    g = ArchGraph(input_shape)
    pools = conv_stages(g, "input", stages, a["width"], a["depth"], a["kernel_size"], bn=a["batch_norm"])
    x = pools[-1][0]
    for i, (k, name) in enumerate(((a["head_kernel"], "fc6"), (1, "fc7")), start=6):
        x = g.add_op(name, "conv", x, out_channels=a["head_width"], kernel_size=k, bias=True)
        x = g.add_op(f"relu{i}", "relu", x)
        if a["dropout"] > 0:
            x = g.add_op(f"drop{i}", "dropout", x, p=a["dropout"])
    x = g.add_op("score_fr", "conv", x, out_channels=num_classes, kernel_size=1, bias=True)
    stride = 2 ** stages
    for s in range(stages - 1, stages - 1 - skips, -1):
        up = _upsample(g, f"upscore{'2' if s == stages - 1 else '_pool' + str(s + 1)}", x, 2, num_classes,
                       a["upsampling"])
        skip = g.add_op(f"score_pool{s}", "conv", pools[s - 1][0], out_channels=num_classes, kernel_size=1,
                        bias=True)
        x = g.add_op(f"fuse_pool{s}", "identity", [up, skip], merge="sum")
        stride //= 2
    _upsample(g, "upscore", x, stride, num_classes, a["upsampling"])
    return g


PRESETS = {
    "fcn8s_digits": Preset({"stages": 3, "width": 16, "fusion": "8s"}, num_classes=11, input_shape=INPUT_SHAPE,
                           description="three stages (16/32/64), FCN-8s-style fusion of pool1 and pool2 scores, "
                                       "learned bilinear-initialised deconvolutions"),
    "fcn32s_digits": Preset({"stages": 3, "width": 16, "fusion": "32s"}, num_classes=11, input_shape=INPUT_SHAPE,
                            description="the same backbone, the coarse scores upsampled 8x at once (no skips)"),
    "fcn8s_vgg16": Preset({"stages": 5, "width": 64, "depth": 3, "batch_norm": False, "head_width": 256,
                           "head_kernel": 7, "dropout": 0.5, "fusion": "8s"}, num_classes=21,
                          input_shape=(3, 224, 224),
                          description="FCN-8s's layout on a VGG-16-like backbone (3 convs per stage, 64-512 channels) "
                                      "with a narrower head (256 channels, not 4096), 21 classes (PASCAL VOC)"),
}


def fcn_space() -> SearchSpace:
    return SearchSpace("fcn", list(VARIABLES), build_fcn, presets=dict(PRESETS), input_shape=INPUT_SHAPE,
                       num_classes=11, description=__doc__.split("\n\n")[0].replace("\n", " "), task="segmentation")
