"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 5^6 = 15,625 cells, each one row of the benchmark.

("NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search".)

A cell has 4 nodes 0..3 (0 is the cell's input, 3 its output) and one edge j -> i for every j < i, six in
all. Each edge applies one of 5 ops to node j, and node i is the sum of its incoming edges. One
op-choice variable per edge, named and ordered as the edges appear in the benchmark's architecture
strings ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (the op on the edge from node ``~j`` into nodes 1, 2, 3):

    edge_1_0, edge_2_0, edge_2_1, edge_3_0, edge_3_1, edge_3_2       (edge_{i}_{j}: node j -> node i)

Ops (``nas.ops_cells`` and ``nas.ops``): none = ``zero``; skip_connect = ``identity``; nor_conv_1x1 /
nor_conv_3x3 = ``relu_conv_bn`` (ReLU, conv without bias, BN) with kernel 1 / 3; avg_pool_3x3 = ``avgpool``
kernel 3, stride 1, padding 1, without the padding in its count. A cell whose output is cut off from its
input (every path through a ``none`` edge) still builds: it outputs zeros, as in the benchmark.

The network (the benchmark's ``TinyNetwork``): a 3x3 conv stem with C channels + BN; three stages of N
cells with C, 2C, 4C channels, separated by residual reduction blocks (the benchmark's
``ResNetBasicblock``: ReLU-conv3x3 stride 2-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2 average pooling and
a 1x1 conv, summed without a ReLU); then BN, ReLU, global average pooling and a linear classifier. Every
cell shares one genotype: the first cell marks the op-choice nodes with ``choice=``, the others repeat
them. Node ids follow the benchmark's module list: ``cell0`` .. ``cell{3N+1}``, where ``cell{N}`` and
``cell{2N+1}`` are the reduction blocks.

Options: ``C`` (channels of the first stage, default 16) and ``N`` (cells per stage, default 5): the
benchmark's network. At 3x32x32 with 10 classes it has 1,531,546 parameters with every edge nor_conv_3x3
and 73,306 with no convolution in the cells (the table's ``c10valid_params_MB``). A small version for
digits: ``--option C=8 --option N=1``.

Inputs: the reductions halve the resolution twice with a stride-2 conv beside a 2x2 pooling, which agree
only on even sides, so height and width must be multiples of 4 (digits' 8x8 works: 8 -> 4 -> 2).

Strings: `nb201_string(assignment)` and `nb201_assignment_from_string(text)` convert between assignments
and the benchmark's strings (`nas describe nb201 --arch STRING`). Tabular search on the benchmark's
results: ``nas search --space nb201 --table nb201.csv`` and ``nas bench`` (`workers.tabular`, `nas.bench`).

Presets (3x32x32, 10 classes): ``best_cifar10`` (the table's best CIFAR-10 test accuracy, 94.37, index
6111), ``resnet`` (two 3x3 convs and a skip: the paper's ResNet baseline, index 11472) and ``all_conv3x3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Preset, SearchSpace, SpaceError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = (1, 2, 3)
EDGES = tuple((i, j) for i in NODES for j in range(i))  # the string's order: (1,0) (2,0) (2,1) (3,0) (3,1) (3,2)


def edge_var(i: int, j: int) -> str:
    """The variable of the edge from node j into node i."""
    return f"edge_{i}_{j}"


EDGE_VARS = tuple(edge_var(i, j) for i, j in EDGES)
VARIABLES = [Categorical(name, OPS, default="nor_conv_3x3", op_choice=True) for name in EDGE_VARS]


# -- strings ---------------------------------------------------------------------------------------------


def nb201_string(assignment: Mapping[str, Any]) -> str:
    """The benchmark's architecture string of `assignment`, e.g.
    ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|``."""
    parts = []
    for i in NODES:
        ops = []
        for j in range(i):
            name = edge_var(i, j)
            if name not in assignment:
                raise SpaceError(f"nb201: the assignment lacks variable {name!r}")
            op = assignment[name]
            if op not in OPS:
                raise SpaceError(f"nb201: variable {name!r} has value {op!r}; ops: {list(OPS)}")
            ops.append(f"{op}~{j}")
        parts.append("|" + "|".join(ops) + "|")
    return "+".join(parts)


def nb201_assignment_from_string(arch_str: str) -> dict[str, str]:
    """The assignment of a benchmark string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; a malformed string
    raises `SpaceError` naming the part at fault."""
    if not isinstance(arch_str, str):
        raise SpaceError(f"nb201: an architecture string must be a str, got {type(arch_str).__name__}")
    text = arch_str.strip()
    nodes = text.split("+")
    if len(nodes) != len(NODES):
        raise SpaceError(f"nb201: {arch_str!r} must have {len(NODES)} node parts joined by '+' "
                         f"(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), got {len(nodes)}")
    out: dict[str, str] = {}
    for i, part in zip(NODES, nodes, strict=True):
        if not (part.startswith("|") and part.endswith("|")) or len(part) < 2:
            raise SpaceError(f"nb201: node {i}'s part {part!r} of {arch_str!r} must look like |op~0|...|")
        edges = part[1:-1].split("|")
        if len(edges) != i:
            raise SpaceError(f"nb201: node {i}'s part {part!r} must list {i} edge(s) (from nodes 0..{i - 1}), "
                             f"got {len(edges)}")
        for j, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep or src != str(j):
                raise SpaceError(f"nb201: edge {edge!r} of node {i} must be 'op~{j}' (edges in order of their "
                                 "source node)")
            if op not in OPS:
                raise SpaceError(f"nb201: unknown op {op!r} in edge {edge!r} of node {i}; ops: {list(OPS)}")
            out[edge_var(i, j)] = op
    return out


# -- the network -------------------------------------------------------------------------------------------


def _edge(g: ArchGraph, node: str, op: str, src: str, c: int, choice: str | None) -> str:
    """One cell edge as one node (the cell's input and output channels are equal, stride 1)."""
    if op == "none":
        return g.add_op(node, "zero", src, choice=choice)
    if op == "skip_connect":
        return g.add_op(node, "identity", src, choice=choice)
    if op == "nor_conv_1x1":
        return g.add_op(node, "relu_conv_bn", src, choice=choice, out_channels=c, kernel_size=1, padding=0)
    if op == "nor_conv_3x3":
        return g.add_op(node, "relu_conv_bn", src, choice=choice, out_channels=c, kernel_size=3, padding=1)
    if op == "avg_pool_3x3":
        return g.add_op(node, "avgpool", src, choice=choice, kernel_size=3, stride=1, padding=1,
                        count_include_pad=False)
    raise SpaceError(f"nb201: unknown op {op!r}; ops: {list(OPS)}")


def _cell(g: ArchGraph, p: str, x: str, a: Mapping[str, Any], c: int, mark: bool) -> str:
    nodes = [x]
    for i in NODES:
        ins = [_edge(g, f"{p}_edge_{i}_{j}", a[edge_var(i, j)], nodes[j], c, edge_var(i, j) if mark else None)
               for j in range(i)]
        nodes.append(ins[0] if len(ins) == 1 else g.add_op(f"{p}_node{i}", "identity", ins, merge="sum"))
    return nodes[-1]


def _reduction(g: ArchGraph, p: str, x: str, c: int) -> str:
    """The benchmark's ResNetBasicblock at stride 2: conv branch + (avgpool 2, conv 1x1) shortcut, summed."""
    a = g.add_op(f"{p}_conv_a", "relu_conv_bn", x, out_channels=c, kernel_size=3, stride=2, padding=1)
    b = g.add_op(f"{p}_conv_b", "relu_conv_bn", a, out_channels=c, kernel_size=3, padding=1)
    d = g.add_op(f"{p}_down_pool", "avgpool", x, kernel_size=2, stride=2, padding=0)
    d = g.add_op(f"{p}_down_conv", "conv", d, out_channels=c, kernel_size=1, padding=0)
    return g.add_op(p, "identity", [b, d], merge="sum")


def _check(C: Any, N: Any, input_shape: tuple) -> None:
    for name, v in (("C", C), ("N", N)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpaceError(f"nb201: option {name!r} must be an int >= 1, got {v!r}")
    if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4:
        raise SpaceError(f"nb201: the space needs a (C, H, W) input with H and W multiples of 4 (two stride-2 "
                         f"reductions whose conv and pooling branches must agree), got {tuple(input_shape)}")


def build_nb201(a: dict, *, num_classes: int, input_shape: tuple, C: int = 16, N: int = 5) -> ArchGraph:
    """The benchmark's network for cell assignment `a` (see the module docstring)."""
    _check(C, N, input_shape)
    g = ArchGraph(input_shape)
    g.add_op("stem_conv", "conv", "input", out_channels=C, kernel_size=3, padding=1)
    x = g.add_op("stem_bn", "bn", "stem_conv")
    channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
    reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
    marked = False
    for k, (c, reduction) in enumerate(zip(channels, reductions, strict=True)):
        if reduction:
            x = _reduction(g, f"cell{k}", x, c)
        else:
            x = _cell(g, f"cell{k}", x, a, c, mark=not marked)
            marked = True
    g.add_op("lastact_bn", "bn", x)
    g.add_op("lastact_relu", "relu", "lastact_bn")
    g.add_op("global_pool", "global_avgpool", "lastact_relu")
    g.add_op("classifier", "linear", "global_pool", out_features=num_classes)
    return g


# -- presets and the space ---------------------------------------------------------------------------------

BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
ALL_CONV3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"

_CIFAR = {"num_classes": 10, "input_shape": (3, 32, 32)}
PRESETS = {
    "best_cifar10": Preset(nb201_assignment_from_string(BEST_CIFAR10), **_CIFAR,
                           description="the table's best CIFAR-10 test accuracy (94.37, index 6111)"),
    "resnet": Preset(nb201_assignment_from_string(RESNET), **_CIFAR,
                     description="the ResNet cell: two 3x3 convs plus a skip (the paper's ResNet baseline, 93.91)"),
    "all_conv3x3": Preset(nb201_assignment_from_string(ALL_CONV3X3), **_CIFAR,
                          description="every edge nor_conv_3x3: 1,531,546 parameters"),
}
OPTIONS = {"C": 16, "N": 5}


def nb201_space() -> SearchSpace:
    return SearchSpace("nb201", list(VARIABLES), build_nb201, presets=dict(PRESETS), input_shape=(1, 8, 8),
                       num_classes=10, options=dict(OPTIONS), description=__doc__ or "")
