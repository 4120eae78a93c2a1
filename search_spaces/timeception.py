"""Timeception layers (Hussein, Gavves & Smeulders, "Timeception for Complex Action Recognition", CVPR
2019) on top of a small backbone, or on a backbone's features.

Input: a clip (C, T, H, W). Network: backbone -> ``n_layers`` Timeception layers -> global pooling over
time and space -> the authors' classifier (dropout 0.5, linear ``hidden``, batch norm, leaky ReLU 0.2,
dropout 0.25, linear; ``hidden=0``: dropout 0.5 and one linear layer).

A Timeception layer on C input channels, with G groups and expansion e, follows the authors' PyTorch
module (``nets/timeception_pytorch.py`` of github.com/noureldien/timeception): the channels are split
into G groups (``channel_slice``); each group has five branches, each starting with a 1x1x1 convolution
(with bias) down to ``b = int(C * e / (5 G))`` channels:

1. the 1x1x1 reduction alone;
2.-4. a temporal depthwise convolution (kernel (k, 1, 1), ``groups=b``, bias, 'same' padding) with
   k = 3, 5, 7 (``multiscale="kernels"``) or k = 3 at dilations 1, 2, 3 (``"dilations"``; the authors'
   Keras code has it, their PyTorch module only the kernels);
5. temporal max pooling, kernel 2 at stride 1, then the first time step repeated (replication padding);

each branch ends in batch norm. The 5G branch outputs are concatenated (group by group, branch by
branch) into ``5 G b`` channels, then ReLU, a channel shuffle over G groups, and temporal max pooling
(kernel 2, stride 2) halve T. Node ids: ``tc{l}_g{g}_b{i}_conv`` / ``_dw`` / ``_bn`` / ``_pool`` /
``_pad``, ``tc{l}_g{g}_slice``, ``tc{l}_relu``, ``tc{l}_shuffle``, ``tc{l}_pool`` (1-based, as the
authors' ``conv_b{i}_g{g}_tc{l}``).

Variables: ``backbone`` (``frame2d``: a per-frame 2D CNN written as 1x3x3 3D convolutions, conv-BN-ReLU
and 1x2x2 max pooling twice, ``width`` then ``2 width`` channels; ``stem3d``: the same with 3x3x3
convolutions; ``none``: the input already is backbone features), ``n_layers`` (0: no Timeception layers,
the backbone's features are only averaged or maxed over time and space: the temporal-pooling baseline),
``groups``, ``multiscale``, ``expansion``, and the op choice ``pool`` (the global pooling node ``pool``:
``max``, the authors' classifier, or ``avg``), which DARTS can relax.

Limits (a build outside them raises a `SpaceError` naming the variable): T >= 2 ** n_layers (every layer
halves T; its max-pool branch needs T >= 2); the Timeception input's channels divisible by ``groups`` and
``b >= 1``. With ``backbone="none"`` that means the input must be features (e.g. 1024 channels of I3D), not
raw 1- or 3-channel clips: on raw clips the ``none`` assignments fail to build (and a search records
them as failed candidates). The default input (1, 20, 16, 16) is the ``moving_digits`` data set's clip.

Options: ``width`` (backbone channels, default 16), ``hidden`` (classifier hidden units, default 512, the
authors'; 0 for a single linear layer).

Presets:
- ``tc4_i3d``: 4 layers on 1024-channel I3D features (1024, 128, 7, 7) (1024 frames, the authors'
  ``charades_i3d_tc4_f1024``), 8 groups, kernels 3/5/7, expansion 1.25, 157 classes (Charades). Its
  Timeception layers have 1,488,416 parameters, as the authors' PyTorch module (the classifier is not
  counted in that figure; the whole network has 2,840,253 with ``hidden=512`` and 157 classes);
- ``tc4_i3d_dilated``: the same with kernel 3 at dilations 1, 2, 3;
- ``i3d_avgpool``: the I3D features averaged over time and space, no Timeception layers;
- ``digits_tc`` and ``digits_avgpool``: the ``moving_digits`` experiment's two networks
  (benchmarks/video_temporal.py): the frame2d backbone with 2 Timeception layers (4 groups), or with
  temporal average pooling only.
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

BRANCHES = 5
BACKBONES = ("frame2d", "stem3d", "none")
MULTISCALE = {"kernels": ((3, 1), (5, 1), (7, 1)), "dilations": ((3, 1), (3, 2), (3, 3))}

VARIABLES = [
    Categorical("backbone", BACKBONES, default="frame2d"),
    Ordinal("n_layers", (0, 1, 2, 3, 4), default=2),
    Ordinal("groups", (2, 4, 8), default=4),
    Categorical("multiscale", tuple(MULTISCALE), default="kernels"),
    Ordinal("expansion", (1.0, 1.25, 1.5), default=1.25),
    Categorical("pool", ("max", "avg"), default="max", op_choice=True),
]
OPTIONS = {"width": 16, "hidden": 512}


def branch_channels(c_in: int, groups: int, expansion: float) -> int:
    """Channels of each branch: the authors' ``int(C * e / (5 G))``."""
    return int(c_in * expansion / float(BRANCHES * groups))


def timeception_layer(g: ArchGraph, name: str, x: str, c_in: int, groups: int, expansion: float,
                      multiscale: str) -> tuple[str, int]:
    """Write one Timeception layer reading node `x` (C = `c_in`); returns (last node, output channels)."""
    b = branch_channels(c_in, groups, expansion)
    per_group = c_in // groups
    scales = MULTISCALE[multiscale]
    outs = []
    for gi in range(1, groups + 1):
        s = g.add_op(f"{name}_g{gi}_slice", "channel_slice", x, start=(gi - 1) * per_group, stop=gi * per_group)
        for i in range(1, BRANCHES + 1):
            p = f"{name}_g{gi}_b{i}"
            y = g.add_op(f"{p}_conv", "conv", s, out_channels=b, kernel_size=1, bias=True)
            if 2 <= i <= 4:
                k, d = scales[i - 2]
                y = g.add_op(f"{p}_dw", "conv", y, out_channels=b, kernel_size=[k, 1, 1], dilation=[d, 1, 1],
                             groups=b, bias=True)
            elif i == 5:
                y = g.add_op(f"{p}_pool", "maxpool", y, kernel_size=[2, 1, 1], stride=1)
                y = g.add_op(f"{p}_pad", "pad", y, padding=[[1, 0], [0, 0], [0, 0]], mode="replicate")
            outs.append(g.add_op(f"{p}_bn", "bn", y))
    y = g.add_op(f"{name}_relu", "relu", outs, merge="concat")
    y = g.add_op(f"{name}_shuffle", "channel_shuffle", y, groups=groups)
    y = g.add_op(f"{name}_pool", "maxpool", y, kernel_size=[2, 1, 1])
    return y, BRANCHES * groups * b


def _backbone(g: ArchGraph, kind: str, x: str, shape: tuple[int, ...], width: int) -> tuple[str, int]:
    if kind == "none":
        return x, shape[0]
    k = [1, 3, 3] if kind == "frame2d" else [3, 3, 3]
    c, (h, w) = shape[0], shape[2:]
    for i, c_out in enumerate((width, 2 * width), start=1):
        x = g.add_op(f"backbone_conv{i}", "conv", x, out_channels=c_out, kernel_size=k)
        x = g.add_op(f"backbone_bn{i}", "bn", x)
        x = g.add_op(f"backbone_relu{i}", "relu", x)
        if min(h, w) >= 2:  # small frames shrink to 1x1 and then stop shrinking
            x = g.add_op(f"backbone_pool{i}", "maxpool", x, kernel_size=[1, 2, 2])
            h, w = h // 2, w // 2
        c = c_out
    return x, c


def _check(a: dict, input_shape: tuple[int, ...], width: Any, hidden: Any) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise SpaceError(f"timeception: option 'width' must be an int >= 1, got {width!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise SpaceError(f"timeception: option 'hidden' must be an int >= 0, got {hidden!r}")
    if len(input_shape) != 4:
        raise SpaceError(f"timeception: the space needs a video input (C, T, H, W), got {tuple(input_shape)}")
    t, n = input_shape[1], a["n_layers"]
    if n and t < 2 ** n:
        raise SpaceError(f"timeception: variable 'n_layers' = {n} halves T {n} times and needs T >= {2 ** n}; "
                         f"the input has T = {t}")


def build_timeception(a: dict, *, num_classes: int, input_shape: tuple, width: int = 16,
                      hidden: int = 512) -> ArchGraph:
    """The network of assignment `a` (see the module docstring)."""
    _check(a, input_shape, width, hidden)
    g = ArchGraph(input_shape)
    x, c = _backbone(g, a["backbone"], "input", tuple(input_shape), width)
    for layer in range(1, a["n_layers"] + 1):
        groups, expansion = a["groups"], a["expansion"]
        if c % groups or branch_channels(c, groups, expansion) < 1:
            source = "the input" if a["backbone"] == "none" and layer == 1 else f"layer {layer}'s input"
            raise SpaceError(
                f"timeception: variable 'groups' = {groups} with 'expansion' = {expansion} does not fit {source} "
                f"of {c} channels (needs channels divisible by groups and int(C * e / (5 * groups)) >= 1)"
                + ("; 'backbone' = 'none' expects backbone features, not raw clips" if a["backbone"] == "none"
                   else ""))
        x, c = timeception_layer(g, f"tc{layer}", x, c, groups, expansion, a["multiscale"])
    x = g.add_op("pool", "global_maxpool" if a["pool"] == "max" else "global_avgpool", x, choice="pool")
    x = g.add_op("head_dropout1", "dropout", x, p=0.5)
    if hidden:
        x = g.add_op("head_fc1", "linear", x, out_features=hidden)
        x = g.add_op("head_bn1", "bn", x)
        x = g.add_op("head_act1", "leaky_relu", x, negative_slope=0.2)
        x = g.add_op("head_dropout2", "dropout", x, p=0.25)
    g.add_op("classifier", "linear", x, out_features=num_classes)
    return g


TC4_I3D = {"backbone": "none", "n_layers": 4, "groups": 8, "multiscale": "kernels", "expansion": 1.25,
           "pool": "max"}
I3D_SHAPE = (1024, 128, 7, 7)
DIGITS_SHAPE = (1, 20, 16, 16)
DIGITS_TC = {"backbone": "frame2d", "n_layers": 2, "groups": 4, "multiscale": "kernels", "expansion": 1.25,
             "pool": "avg"}

PRESETS = {
    "tc4_i3d": Preset(TC4_I3D, num_classes=157, input_shape=I3D_SHAPE,
                      description="4 Timeception layers on I3D features (1024, 128, 7, 7), 8 groups, kernels 3/5/7, "
                                  "expansion 1.25: 1,488,416 parameters in the Timeception layers (classifier "
                                  "not counted), as the authors' PyTorch module"),
    "tc4_i3d_dilated": Preset({**TC4_I3D, "multiscale": "dilations"}, num_classes=157, input_shape=I3D_SHAPE,
                              description="tc4_i3d with kernel 3 at dilations 1, 2, 3"),
    "i3d_avgpool": Preset({**TC4_I3D, "n_layers": 0, "pool": "avg"}, num_classes=157, input_shape=I3D_SHAPE,
                          description="the baseline: I3D features averaged over time and space, then the classifier"),
    "digits_tc": Preset(DIGITS_TC, num_classes=10, input_shape=DIGITS_SHAPE,
                        description="moving_digits: frame2d backbone, 2 Timeception layers, average pooling"),
    "digits_avgpool": Preset({**DIGITS_TC, "n_layers": 0}, num_classes=10, input_shape=DIGITS_SHAPE,
                             description="moving_digits: the same backbone, temporal (and spatial) average pooling"),
}


def timeception_space() -> SearchSpace:
    return SearchSpace("timeception", list(VARIABLES), build_timeception, presets=dict(PRESETS),
                       input_shape=DIGITS_SHAPE, num_classes=10, options=dict(OPTIONS), description=__doc__ or "")
