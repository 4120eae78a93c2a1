"""Fast R-CNN (Girshick, ICCV 2015): a conv backbone, ROI pooling of given proposals, and a head that
classifies each proposal and regresses its box.

Two inputs: the image (C, H, W) (node ``input``) and its ``proposals`` (R, 4) boxes ``x1, y1, x2, y2`` in
image pixels (node ``proposals``; R is the space option ``proposals``, default 16). Layout: an optional
spatial transformer before the backbone (op choice ``stn``, on the image only); ``stages`` stages of
``depth`` conv(-BN)-ReLU layers (``width``, 2x ``width``, ... channels) with a 2x2 max-pool after every stage
but the last, as VGG-16's conv5_3 feeds Fast R-CNN's ROI pooling, so the map is 2 ** (stages - 1) times
smaller than the image; ``roi_pool`` (op ``roi_pool``, a ``roi_size`` x ``roi_size`` grid) -> (C, R, T, T);
fc6 and fc7 of ``fc_width`` units applied to every proposal (convs with kernel [1, T, T] and [1, 1, 1],
ReLU, optional dropout); then ``cls_score`` (num_classes + 1 scores, class 0 the background) and
``bbox_pred`` (4 box deltas for each of the num_classes classes) concatenated into the output
``detections`` of shape (num_classes + 1 + 4 num_classes, R, 1, 1). The ``detection`` task
(`nas.tasks.detection`) reads it: scores, then per class (dx, dy, dw, dh) in Fast R-CNN's encoding.

The image's sides must be divisible by 2 ** (stages - 1). Default input: (1, 48, 48) images with 16
proposals and 10 classes, the ``digit_detection`` data set.
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError
from search_spaces._blocks import conv_stages
from search_spaces.stn import insert_stn, stn_variable

INPUT_SHAPE = (1, 48, 48)
OPTIONS = {"proposals": 16}
VARIABLES = [
    stn_variable("stn"),
    Ordinal("stages", (2, 3, 4), default=3),
    Ordinal("width", (8, 16, 32, 64), default=16),
    Ordinal("depth", (1, 2), default=1),
    Ordinal("kernel_size", (3, 5), default=3),
    Categorical("batch_norm", (False, True), default=True),
    Ordinal("roi_size", (2, 3, 4), default=3),
    Ordinal("fc_width", (64, 128, 256, 512), default=128),
    Ordinal("dropout", (0.0, 0.5), default=0.0),
]


def head_channels(num_classes: int) -> int:
    """Channels of the output: num_classes + 1 scores and 4 deltas per class."""
    return num_classes + 1 + 4 * num_classes


def build_detection(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...],
                    proposals: int = 16) -> ArchGraph:
    """The Fast R-CNN network of assignment `a` (see the module docstring)."""
    if isinstance(proposals, bool) or not isinstance(proposals, int) or proposals < 1:
        raise SpaceError(f"detection: option 'proposals' must be an int >= 1, got {proposals!r}")
    if len(input_shape) != 3:
        raise SpaceError(f"detection: the space takes images (C, H, W), got input shape {tuple(input_shape)}")
    stride = 2 ** (a["stages"] - 1)
    if any(side % stride for side in input_shape[1:]):
        raise SpaceError(f"detection: variable 'stages' = {a['stages']} downsamples {stride} times and needs image "
                         f"sides divisible by {stride}; the image is {tuple(input_shape)}")
    g = ArchGraph(input_shape)
    g.add_input("proposals", (proposals, 4))
    x = insert_stn(g, "input", "stn", a["stn"])
    x = conv_stages(g, x, a["stages"], a["width"], a["depth"], a["kernel_size"], bn=a["batch_norm"],
                    last_pool=False)[-1][0]
    t = a["roi_size"]
    x = g.add_op("roi_pool", "roi_pool", [x, "proposals"], output_size=t, stride=stride)
    for i, k in ((6, [1, t, t]), (7, 1)):
        x = g.add_op(f"fc{i}", "conv", x, out_channels=a["fc_width"], kernel_size=k, padding=0, bias=True)
        x = g.add_op(f"relu{i}", "relu", x)
        if a["dropout"] > 0:
            x = g.add_op(f"drop{i}", "dropout", x, p=a["dropout"])
    cls = g.add_op("cls_score", "conv", x, out_channels=num_classes + 1, kernel_size=1, bias=True)
    box = g.add_op("bbox_pred", "conv", x, out_channels=4 * num_classes, kernel_size=1, bias=True)
    g.add_op("detections", "identity", [cls, box], merge="concat")
    return g


PRESETS = {
    "fast_rcnn_digits": Preset({"stages": 3, "width": 16, "roi_size": 3, "fc_width": 128}, num_classes=10,
                               input_shape=INPUT_SHAPE,
                               description="three stages (16/32/64, BN; stride 4), 3x3 ROI pooling, fc 128-128"),
}


def detection_space() -> SearchSpace:
    return SearchSpace("detection", list(VARIABLES), build_detection, presets=dict(PRESETS),
                       input_shape=INPUT_SHAPE, num_classes=10, options=dict(OPTIONS),
                       description=__doc__.split("\n\n")[0].replace("\n", " "), task="detection")
