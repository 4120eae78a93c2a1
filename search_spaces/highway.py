"""Highway network search space (Srivastava, Greff & Schmidhuber 2015, "Highway Networks" and "Training
Very Deep Networks"): fully connected and convolutional highway networks.

A highway layer computes ``y = H(x) * T(x) + x * (1 - T(x))`` with block state ``H(x) = act(W_H x + b_H)``
and transform gate ``T(x) = sigmoid(W_T x + b_T)``; ``b_T`` starts at ``gate_bias`` (negative, so the
layer starts close to carrying its input: the paper suggests -1 to -3 and searched -1 to -10 for its
deep MNIST nets; the released CIFAR code uses -2, the MNIST code -1). In the graph: ``*_h_linear`` /
``*_h_conv`` + an activation node, ``*_t_linear`` / ``*_t_conv`` (op param ``bias_init=gate_bias``) + a
``sigmoid`` node, and a ``gate`` merge node ``stage{i}_hw{j}`` with inputs ordered (h, t, x).

Layout: ``num_stages`` stages; stage ``i`` is one plain layer that sets the width to ``stage{i}_width``
(``fc``: linear + act; ``conv``: 3x3 conv with bias + act) followed by ``stage{i}_layers`` highway layers
of that width. ``fc`` networks flatten the input first (the paper's MNIST nets: a plain layer then 9, 19,
49 or 99 highway layers of 50 blocks). ``conv`` networks max-pool 2x2/2 between stages (the paper's CIFAR
nets); H's conv has kernel ``kernel_size`` and T's ``gate_kernel_size`` (the released Caffe layer allows
them to differ), both 'same'-padded with bias. Head: optional plain layer of ``head_channels`` (option;
``conv``: 1x1 conv + act, as the paper's CIFAR net following Lin et al.'s network-in-network), global
average pool (``conv``), linear classifier. Option ``dropout`` puts dropout of that rate before every
stage (on the input for stage 1) and before the classifier, as the released CIFAR network. Variables of
stages beyond ``num_stages`` are ignored (the space has a fixed dimensionality); ``kernel_size`` and
``gate_kernel_size`` do not affect ``fc`` networks.

Small inputs: a max-pool between stages is written only while every spatial side is at least 2, so every
assignment builds on any input down to 1x1, e.g. the default 1x8x8 digits (fc by default; conv: 8x8 -> 4x4
-> 2x2).

Not presets: the paper's Table 2 "Highway A" (11 layers, ~236K) and "Highway C" (32 layers alternating 3x3
and 1x1 fields, ~1.25M) and the MNIST pilot nets of Table 1, because the paper gives no layer list for
them (A follows Fitnet A of Romero et al., which uses maxout layers).
"""

from __future__ import annotations

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

MAX_STAGES = 3
LAYERS = (1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 19, 24, 32, 49, 64, 99)
WIDTHS = (8, 16, 32, 50, 64, 80, 128)

VARIABLES = [
    Categorical("kind", ("fc", "conv")),
    Ordinal("num_stages", tuple(range(1, MAX_STAGES + 1)), default=2),
    *(Ordinal(f"stage{i}_layers", LAYERS, default=2) for i in range(1, MAX_STAGES + 1)),
    *(Ordinal(f"stage{i}_width", WIDTHS, default=16) for i in range(1, MAX_STAGES + 1)),
    Categorical("activation", ("relu", "tanh")),
    Ordinal("kernel_size", (1, 3, 5), default=3),
    Ordinal("gate_kernel_size", (1, 3, 5), default=3),
    Ordinal("gate_bias", (-1.0, -2.0, -3.0, -4.0, -6.0, -10.0), default=-2.0),
]


def _affine(g: ArchGraph, name: str, x: str, kind: str, width: int, k: int, **params: float) -> str:
    """A linear layer (fc) or a 'same'-padded conv with bias (conv) of `width` outputs."""
    if kind == "fc":
        return g.add_op(f"{name}_linear", "linear", x, out_features=width, **params)
    return g.add_op(f"{name}_conv", "conv", x, out_channels=width, kernel_size=k, bias=True, **params)


def _highway(g: ArchGraph, name: str, x: str, a: dict, width: int) -> str:
    """One highway layer on `x` (which has `width` channels / features); returns the gate node."""
    act = a["activation"]
    h = _affine(g, f"{name}_h", x, a["kind"], width, a["kernel_size"])
    h = g.add_op(f"{name}_h_{act}", act, h)
    t = _affine(g, f"{name}_t", x, a["kind"], width, a["gate_kernel_size"], bias_init=a["gate_bias"])
    t = g.add_op(f"{name}_t_sigmoid", "sigmoid", t)
    return g.add_op(name, "identity", [h, t, x], merge="gate")


def _check_options(dropout: float, head_channels: int) -> None:
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise SpaceError(f"option 'dropout' must be a number in [0, 1), got {dropout!r}")
    if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 0:
        raise SpaceError(f"option 'head_channels' must be an int >= 0 (0: no head layer), got {head_channels!r}")


def build_highway(a: dict, *, num_classes: int, input_shape: tuple, dropout: float = 0.0,
                  head_channels: int = 0) -> ArchGraph:
    _check_options(dropout, head_channels)
    g = ArchGraph(input_shape)
    kind, act = a["kind"], a["activation"]
    x = g.add_op("flatten", "flatten", "input") if kind == "fc" else "input"
    spatial = tuple(input_shape[1:])
    for i in range(1, a["num_stages"] + 1):
        if kind == "conv" and i > 1 and spatial and min(spatial) >= 2:
            x = g.add_op(f"pool{i - 1}", "maxpool", x, kernel_size=2, stride=2)
            spatial = tuple(s // 2 for s in spatial)
        if dropout > 0:
            x = g.add_op(f"stage{i}_dropout", "dropout", x, p=dropout)
        width = a[f"stage{i}_width"]
        x = _affine(g, f"stage{i}_plain", x, kind, width, 3)
        x = g.add_op(f"stage{i}_plain_{act}", act, x)
        for j in range(1, a[f"stage{i}_layers"] + 1):
            x = _highway(g, f"stage{i}_hw{j}", x, a, width)
    if head_channels:
        x = _affine(g, "head", x, kind, head_channels, 1)
        x = g.add_op(f"head_{act}", act, x)
    if kind == "conv":
        x = g.add_op("pool", "global_avgpool", x)
    if dropout > 0:
        x = g.add_op("head_dropout", "dropout", x, p=dropout)
    g.add_op("classifier", "linear", x, out_features=num_classes)
    return g


def _fc_preset(depth: int) -> Preset:
    return Preset(
        {"kind": "fc", "num_stages": 1, "stage1_layers": depth - 1, "stage1_width": 50, "activation": "relu",
         "gate_bias": -2.0},
        num_classes=10, input_shape=(1, 28, 28),
        description=f"the paper's {depth}-layer MNIST optimisation net (Fig. 1): a plain fully connected "
                    f"layer of 50 units, {depth - 1} highway layers of 50 blocks, softmax output. The paper "
                    "searched H's activation (relu/tanh) and the gate bias (-1 to -10) per depth and does not "
                    "state the winners: relu and -2 here are our choices",
    )


PRESETS = {
    **{f"highway_fc_{d}": _fc_preset(d) for d in (10, 20, 50, 100)},
    "highway_cifar10_19": Preset(
        {"kind": "conv", "num_stages": 3, "stage1_layers": 4, "stage2_layers": 5, "stage3_layers": 5,
         "stage1_width": 32, "stage2_width": 80, "stage3_width": 128, "activation": "relu", "kernel_size": 3,
         "gate_kernel_size": 3, "gate_bias": -2.0},
        options={"dropout": 0.2, "head_channels": 100}, num_classes=10, input_shape=(3, 32, 32),
        description="the 19-layer convolutional highway network of the authors' released Caffe definition "
                    "(github.com/flukeskywalker/highway-networks, examples/highways/cifar10-19layers): 3x3 conv "
                    "32 + 4 highway 32, max-pool, 3x3 conv 80 + 5 highway 80, max-pool, 3x3 conv 128 + 5 "
                    "highway 128, 1x1 conv 100, global average pool, softmax; dropout 0.2; gate bias -2; "
                    "2,256,838 parameters. The paper itself gives no layer table: Table 2 lists a 19-layer "
                    "'Highway B' of ~2.3M parameters and Sec. 3.3.2 describes this 1x1-conv + average-pool head, "
                    "but it does not say that they are this exact network",
    ),
}


def highway_space() -> SearchSpace:
    return SearchSpace(
        "highway", list(VARIABLES), build_highway, presets=dict(PRESETS), input_shape=(1, 8, 8), num_classes=10,
        options={"dropout": 0.0, "head_channels": 0}, description=__doc__ or "",
    )
