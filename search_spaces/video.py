"""Video search space 'video': C3D, 3D ResNets (R3D, MC3, R(2+1)D) and I3D, on clips (C, T, H, W).

Families (variable ``family``):

- ``resnet``: torchvision's video ResNets (Tran et al. 2018, "A Closer Look at Spatiotemporal
  Convolutions"), layer for layer, so its presets match torchvision parameter for parameter and the
  node ids are torchvision's module names with '.' -> '_' (``layer1.0.conv1.0`` -> ``layer1_0_conv1_0``).
  Stem (``stem``): ``3d``, a 3x7x7 conv at stride (1, 2, 2), or ``2plus1d``, a 1x7x7 conv to 45/64 of the
  width then a 3x1x1 conv. Four stages of basic residual blocks (``depth1..4`` blocks of ``base_width *
  2**(i-1)`` channels), the first block of stages 2..4 strided (2 in time too where ``time_downsample``
  is ``yes``, as R3D and R(2+1)D; ``no`` as MC3), a 1x1x1 projection shortcut where the shape changes,
  global average pooling, a linear layer.
- ``c3d``: Tran et al. 2015. Five stages of 3x3x3 convs (with bias, ReLU, no batch norm) of ``base_width
  * (1, 2, 4, 8, 8)`` channels: one conv, then ``depth1..4`` convs (ids ``conv1``, ``conv2``, ``conv3a``,
  ``conv3b``, ... as the authors' Caffe model), each stage followed by max pooling (1x2x2 after the first,
  2x2x2 after the others; the last padded (0, 1, 1)); then fc6, fc7 (``fc_width`` units, ReLU, dropout
  0.5) and fc8.
- ``i3d``: Carreira & Zisserman 2017: Inception-v1 inflated to 3D, as the public PyTorch port of the
  authors' model (github.com/piergiaj/pytorch-i3d, ``InceptionI3d``): node ids are its module names
  (``Mixed_4b_b1b_conv3d``), batch norm with eps 1e-3 and momentum 0.01, and TensorFlow's 'SAME' padding
  (a ``pad`` node before a conv or pool whose padding is uneven). Stem (7x7x7 conv at stride 2, 1x3x3 max
  pool, 1x1x1 and 3x3x3 convs, 1x3x3 max pool), then Inception modules: ``depth2`` in stage 3 (3b, 3c),
  ``depth3`` in stage 4 (4b..4f), ``depth4`` in stage 5 (5b, 5c), with the published widths (a stage
  deeper than published repeats its last module), 3x3x3 max pools between the stages; the head is the
  port's (2x7x7 average pool at stride 1, dropout, 1x1x1 conv with bias) followed by the mean over the
  remaining positions. Widths scale with ``base_width / 64``; ``depth1`` is unused.

Search variables shared by the families: ``base_width``, the depths, ``time_downsample`` (``no``: no
stride or pooling in time anywhere), ``factorise`` (``yes``: every conv whose temporal kernel is one of
the ``temporal{i}`` choices becomes a (2+1)D pair: a 1xkxk conv (with the spatial stride) to
``midplanes = (in * out * 27) // (in * 9 + 3 * out)`` channels, batch norm (not in C3D) and ReLU, then a
tx1x1 conv (with the temporal stride); torchvision's ``Conv2Plus1D``, whose midplanes keep the pair's
parameter count near the 3x3x3 conv's), and the op choices ``temporal1..4``: the temporal kernel (3, 1
or 5, padded to keep the length) of the convs of stage i (resnet: stage i; c3d: stages 2..5; i3d: the
stem's 3x3x3 conv, then stages 3, 4, 5). They mark the stage's first such conv; DARTS relaxes every conv
of the stage. ``fc_width`` is C3D's fc6/fc7 width; ``stem`` is the ResNets'.

Small inputs: every stride-2 conv or pool halves a dimension only while that dimension is >= 2, so the
default 20x16x16 digits clips and any larger clip build.

Presets: ``r3d_18`` (33,371,472 parameters at 400 classes), ``mc3_18`` (11,695,440), ``r2plus1d_18``
(31,505,325), all at 3x16x112x112 as torchvision's; ``c3d`` (79,991,015 at 487 classes, 3x16x112x112);
``i3d`` (12,697,264 at 400 classes, RGB, 3x64x224x224).
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.ops import get_op, merge_shape, resolve_params
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

FAMILIES = ("resnet", "c3d", "i3d")
TEMPORAL = (3, 1, 5)
DEPTHS = (1, 2, 3, 4, 5, 6)

VARIABLES = [
    Categorical("family", FAMILIES, default="resnet"),
    Categorical("stem", ("3d", "2plus1d"), default="3d"),
    Categorical("factorise", ("no", "yes"), default="no"),
    Categorical("time_downsample", ("yes", "no"), default="yes"),
    *(Ordinal(f"depth{i}", DEPTHS, default=1) for i in range(1, 5)),
    Ordinal("base_width", (8, 16, 32, 64), default=16),
    Ordinal("fc_width", (256, 512, 1024, 2048, 4096), default=512),
    *(Categorical(f"temporal{i}", TEMPORAL, default=3, op_choice=True) for i in range(1, 5)),
]

I3D_STAGES = {  # Inception modules (b0, b1a, b1b, b2a, b2b, b3b) per stage, as InceptionI3d
    3: [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)],
    4: [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)],
    5: [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)],
}
I3D_BN = {"eps": 1e-3, "momentum": 0.01}


class _Clip:
    """The builder's cursor: the current node, and every node's shape, computed by the op table as each
    node is added (the strides and 'SAME' pads depend on the sizes reached)."""

    def __init__(self, g: ArchGraph, node: str, shape: tuple[int, ...]) -> None:
        self.g, self.node = g, node
        self.shapes: dict[str, tuple[int, ...]] = {node: tuple(shape)}

    @property
    def shape(self) -> tuple[int, ...]:
        return self.shapes[self.node]

    @property
    def c(self) -> int:
        return self.shape[0]

    def strides(self, time: int, space: int) -> tuple[int, int, int]:
        """(time, H, W) strides: each only while that dimension is at least the stride."""
        _, t, h, w = self.shape
        return tuple(s if size >= s else 1 for size, s in ((t, time), (h, space), (w, space)))

    def add(self, node: str, op: str, inputs: str | list[str] | None = None, *, merge: str | None = None,
            choice: str | None = None, **params: Any) -> str:
        inputs = self.node if inputs is None else inputs
        self.g.add_op(node, op, inputs, merge=merge, choice=choice, **params)
        ins = [self.shapes[i] for i in ([inputs] if isinstance(inputs, str) else inputs)]
        x = ins[0] if len(ins) == 1 else merge_shape(merge, ins, node)
        self.shapes[node] = tuple(get_op(op).shape(resolve_params(op, params), x))
        self.node = node
        return node


def midplanes(c_in: int, c_out: int) -> int:
    """torchvision's (2+1)D inner width: the 1xkxk + tx1x1 pair's parameters near the 3x3x3 conv's."""
    return (c_in * c_out * 27) // (c_in * 9 + 3 * c_out)


def _conv(x: _Clip, name: str, out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int], *,
          factorise: bool = False, bias: bool = False, mid_names: tuple = (), mid: int | None = None,
          choice: str | None = None) -> None:
    """A 'same'-padded conv (symmetric padding), or its (2+1)D pair. `mid_names`: ids of the pair's spatial
    conv, its batch norm (None: none) and ReLU; `mid` its width (default `midplanes`); `name` is the
    (temporal) conv, which carries `choice`."""
    extra = {"bias": True} if bias else {}
    t, kh, kw = kernel
    if factorise:
        conv_s, bn_s, relu_s = mid_names
        mid = mid if mid is not None else midplanes(x.c, out)
        x.add(conv_s, "conv", out_channels=mid, kernel_size=[1, kh, kw], stride=[1, stride[1], stride[2]],
              padding=[0, kh // 2, kw // 2], **extra)
        if bn_s is not None:
            x.add(bn_s, "bn")
        x.add(relu_s, "relu")
        x.add(name, "conv", out_channels=out, kernel_size=[t, 1, 1], stride=[stride[0], 1, 1],
              padding=[t // 2, 0, 0], choice=choice, **extra)
        return
    pad = [k // 2 for k in kernel]
    x.add(name, "conv", out_channels=out, kernel_size=list(kernel), stride=list(stride), padding=pad, choice=choice,
          **extra)


# -- 3D ResNets (torchvision.models.video) -------------------------------------------------------------


def _resnet_stem(x: _Clip, a: dict) -> None:
    base = a["base_width"]
    st = x.strides(1, 2)
    if a["stem"] == "3d":
        _conv(x, "stem_0", base, (3, 7, 7), st)
        x.add("stem_1", "bn")
        x.add("stem_2", "relu")
    else:  # R2Plus1dStem: 1x7x7 to 45/64 of the width, then 3x1x1
        _conv(x, "stem_3", base, (3, 7, 7), st, factorise=True, mid=45 * base // 64,
              mid_names=("stem_0", "stem_1", "stem_2"))
        x.add("stem_4", "bn")
        x.add("stem_5", "relu")


def _resnet_block(x: _Clip, name: str, planes: int, stride: tuple[int, int, int], a: dict, temporal: int,
                  choice: str | None) -> None:
    factorise = a["factorise"] == "yes"
    block_in, in_ch = x.node, x.c
    mid = midplanes(in_ch, planes)  # torchvision computes it once per block, from the block's input
    for i, s in ((1, stride), (2, (1, 1, 1))):
        conv = f"{name}_conv{i}_0_3" if factorise else f"{name}_conv{i}_0"
        pair = (f"{name}_conv{i}_0_0", f"{name}_conv{i}_0_1", f"{name}_conv{i}_0_2")
        _conv(x, conv, planes, (temporal, 3, 3), s, factorise=factorise, mid_names=pair, mid=mid,
              choice=choice if i == 1 else None)
        x.add(f"{name}_conv{i}_1", "bn")
        if i == 1:
            x.add(f"{name}_conv{i}_2", "relu")
    y = x.node
    shortcut = block_in
    if stride != (1, 1, 1) or in_ch != planes:
        shortcut = x.add(f"{name}_downsample_0", "conv", block_in, out_channels=planes, kernel_size=1,
                         stride=list(stride))
        shortcut = x.add(f"{name}_downsample_1", "bn")
    x.add(f"{name}_relu", "relu", [y, shortcut], merge="sum")


def _build_resnet(x: _Clip, a: dict, num_classes: int) -> None:
    _resnet_stem(x, a)
    time = 2 if a["time_downsample"] == "yes" else 1
    for stage in range(1, 5):
        planes = a["base_width"] * 2 ** (stage - 1)
        for b in range(a[f"depth{stage}"]):
            stride = x.strides(time, 2) if stage > 1 and b == 0 else (1, 1, 1)
            _resnet_block(x, f"layer{stage}_{b}", planes, stride, a, a[f"temporal{stage}"],
                          f"temporal{stage}" if b == 0 else None)
    x.add("avgpool", "global_avgpool")
    x.add("fc", "linear", out_features=num_classes)


# -- C3D -------------------------------------------------------------------------------------------------


def _max_pool(x: _Clip, name: str, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              padding: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Max pooling; a dimension whose stride the small-input rule dropped to 1 is not pooled."""
    k = [ki if si > 1 else 1 for ki, si in zip(kernel, stride, strict=True)]
    p = [pi if si > 1 else 0 for pi, si in zip(padding, stride, strict=True)]
    x.add(name, "maxpool", kernel_size=k, stride=list(stride), padding=p)


def _build_c3d(x: _Clip, a: dict, num_classes: int) -> None:
    base, factorise = a["base_width"], a["factorise"] == "yes"
    time = 2 if a["time_downsample"] == "yes" else 1
    widths = (base, 2 * base, 4 * base, 8 * base, 8 * base)
    depths = (1, *(a[f"depth{i}"] for i in range(1, 5)))
    for stage in range(1, 6):
        var = f"temporal{stage - 1}" if stage > 1 else None
        t = a[var] if var else 3
        for j in range(depths[stage - 1]):
            name = f"conv{stage}" + (chr(ord("a") + j) if depths[stage - 1] > 1 else "")
            _conv(x, name, widths[stage - 1], (t, 3, 3), (1, 1, 1), factorise=factorise and var is not None,
                  bias=True, mid_names=(f"{name}_s", None, f"{name}_s_relu"), choice=var if j == 0 else None)
            x.add(f"{name}_relu", "relu")
        if stage == 1:
            _max_pool(x, "pool1", (1, 2, 2), x.strides(1, 2))
        else:
            _max_pool(x, f"pool{stage}", (2, 2, 2), x.strides(time, 2), (0, 1, 1) if stage == 5 else (0, 0, 0))
    x.add("flatten", "flatten")
    for fc in ("fc6", "fc7"):
        x.add(fc, "linear", out_features=a["fc_width"])
        x.add(f"{fc}_relu", "relu")
        x.add(f"{fc}_dropout", "dropout", p=0.5)
    x.add("fc8", "linear", out_features=num_classes)


# -- I3D (piergiaj/pytorch-i3d InceptionI3d) -------------------------------------------------------------


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding of one dimension, as the port computes it: (before, after)."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _padded(x: _Clip, name: str, kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """'SAME' padding for a window op at the cursor: the op's own (symmetric) padding, or a pad node for an
    uneven one (then the op pads nothing)."""
    pads = [same_padding(n, k, s) for n, k, s in zip(x.shape[1:], kernel, stride, strict=True)]
    if all(a == b for a, b in pads):
        return [a for a, _ in pads]
    x.add(f"{name}_pad", "pad", padding=[list(p) for p in pads])
    return [0, 0, 0]


def _unit3d(x: _Clip, name: str, out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
            *, factorise: bool = False, choice: str | None = None) -> None:
    """The port's Unit3D: 'SAME' padding, conv without bias, batch norm, ReLU (or its (2+1)D pair)."""
    if factorise:
        spatial = (1, *kernel[1:])
        pad = _padded(x, f"{name}_s", spatial, (1, *stride[1:]))
        x.add(f"{name}_conv3d_s", "conv", out_channels=midplanes(x.c, out), kernel_size=list(spatial),
              stride=[1, *stride[1:]], padding=pad)
        x.add(f"{name}_bn_s", "bn", **I3D_BN)
        x.add(f"{name}_relu_s", "relu")
        kernel, stride = (kernel[0], 1, 1), (stride[0], 1, 1)
    pad = _padded(x, name, kernel, stride)
    x.add(f"{name}_conv3d", "conv", out_channels=out, kernel_size=list(kernel), stride=list(stride), padding=pad,
          choice=choice)
    x.add(f"{name}_bn", "bn", **I3D_BN)
    x.add(f"{name}_relu", "relu")


def _same_pool(x: _Clip, name: str, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
    """The port's MaxPool3dSamePadding (zero padding: its inputs follow a ReLU, so zeros never win)."""
    pad = _padded(x, name, kernel, stride)
    x.add(name, "maxpool", kernel_size=list(kernel), stride=list(stride), padding=pad)


def _inception(x: _Clip, name: str, outs: tuple[int, ...], t: int, factorise: bool, choice: str | None) -> None:
    start = x.node
    b0, b1a, b1b, b2a, b2b, b3b = outs
    ends = []
    for branch in (("b0", b0), ("b1a", b1a, "b1b", b1b), ("b2a", b2a, "b2b", b2b)):
        x.node = start
        _unit3d(x, f"{name}_{branch[0]}", branch[1], (1, 1, 1))
        if len(branch) > 2:
            _unit3d(x, f"{name}_{branch[2]}", branch[3], (t, 3, 3), factorise=factorise,
                    choice=choice if branch[2] == "b1b" else None)
        ends.append(x.node)
    x.node = start
    _same_pool(x, f"{name}_b3a", (3, 3, 3), (1, 1, 1))
    _unit3d(x, f"{name}_b3b", b3b, (1, 1, 1))
    ends.append(x.node)
    x.add(f"{name}_concat", "identity", ends, merge="concat")


def _build_i3d(x: _Clip, a: dict, num_classes: int) -> None:
    scale = a["base_width"] / 64
    factorise = a["factorise"] == "yes"
    time = 2 if a["time_downsample"] == "yes" else 1

    def w(c: int) -> int:
        return max(1, int(c * scale))

    _unit3d(x, "Conv3d_1a_7x7", w(64), (7, 7, 7), x.strides(time, 2))
    _same_pool(x, "MaxPool3d_2a_3x3", (1, 3, 3), x.strides(1, 2))
    _unit3d(x, "Conv3d_2b_1x1", w(64), (1, 1, 1))
    _unit3d(x, "Conv3d_2c_3x3", w(192), (a["temporal1"], 3, 3), factorise=factorise, choice="temporal1")
    _same_pool(x, "MaxPool3d_3a_3x3", (1, 3, 3), x.strides(1, 2))
    for stage, var in ((3, "temporal2"), (4, "temporal3"), (5, "temporal4")):
        if stage == 4:
            _same_pool(x, "MaxPool3d_4a_3x3", (3, 3, 3), x.strides(time, 2))
        elif stage == 5:
            _same_pool(x, "MaxPool3d_5a_2x2", (2, 2, 2), x.strides(time, 2))
        configs = I3D_STAGES[stage]
        for j in range(a[f"depth{stage - 1}"]):
            outs = tuple(w(c) for c in configs[min(j, len(configs) - 1)])
            _inception(x, f"Mixed_{stage}{chr(ord('b') + j)}", outs, a[var], factorise, var if j == 0 else None)
    _, t, h, w = x.shape
    k = (min(2, t), min(7, h), min(7, w))
    x.add("logits_avgpool", "avgpool", kernel_size=list(k), stride=1)
    x.add("logits_dropout", "dropout", p=0.5)
    x.add("logits_conv3d", "conv", out_channels=num_classes, kernel_size=1, bias=True)
    x.add("logits_mean", "global_avgpool")


BUILDERS = {"resnet": _build_resnet, "c3d": _build_c3d, "i3d": _build_i3d}


def build_video(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    """The network of assignment `a` (see the module docstring)."""
    if len(input_shape) != 4:
        raise SpaceError(f"space 'video' needs a clip input (C, T, H, W), got {tuple(input_shape)}")
    g = ArchGraph(input_shape)
    x = _Clip(g, "input", tuple(input_shape))
    BUILDERS[a["family"]](x, a, num_classes)
    return g


def _preset(family: str, depths: tuple[int, int, int, int], num_classes: int, input_shape: tuple[int, ...],
            description: str, **assignment: Any) -> Preset:
    a = {"family": family, "base_width": 64, **{f"depth{i}": d for i, d in enumerate(depths, start=1)}}
    a.update(assignment)
    return Preset(assignment=a, num_classes=num_classes, input_shape=input_shape, description=description)


KINETICS_112 = (3, 16, 112, 112)
PRESETS = {
    "r3d_18": _preset("resnet", (2, 2, 2, 2), 400, KINETICS_112,
                      "torchvision r3d_18: 3D ResNet-18 (33,371,472 parameters at 400 classes)"),
    "mc3_18": _preset("resnet", (2, 2, 2, 2), 400, KINETICS_112,
                      "torchvision mc3_18: 3D convs in stage 1, 2D (1x3x3) after it (11,695,440 parameters)",
                      temporal2=1, temporal3=1, temporal4=1, time_downsample="no"),
    "r2plus1d_18": _preset("resnet", (2, 2, 2, 2), 400, KINETICS_112,
                           "torchvision r2plus1d_18: (2+1)D convs (31,505,325 parameters at 400 classes)",
                           stem="2plus1d", factorise="yes"),
    "c3d": _preset("c3d", (1, 2, 2, 2), 487, KINETICS_112,
                   "C3D, Tran et al. 2015: 8 convs of 3x3x3, fc 4096, Sports-1M's 487 classes (79,991,015 parameters)",
                   fc_width=4096),
    "i3d": _preset("i3d", (1, 2, 5, 2), 400, (3, 64, 224, 224),
                   "I3D RGB, Carreira & Zisserman 2017, as the pytorch-i3d port "
                   "(12,697,264 parameters at 400 classes)"),
}


def video_space() -> SearchSpace:
    return SearchSpace("video", list(VARIABLES), build_video, presets=dict(PRESETS), input_shape=(1, 20, 16, 16),
                       num_classes=10, description=__doc__ or "")
