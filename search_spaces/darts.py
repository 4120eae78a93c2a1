"""The DARTS CNN cell space (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019).

A network is a 3x3 conv stem (``stem_multiplier * C`` channels) + BN, then ``layers`` cells; the cells at
``layers // 3`` and ``2 * layers // 3`` are reduction cells (stride 2, channels doubled), the rest normal
cells; then global average pooling and a linear classifier (no auxiliary head). Every normal cell shares
one genotype and every reduction cell another, as in the paper.

A cell takes the outputs of the two previous cells, preprocesses each with ReLU-1x1 conv-BN to the cell's
C channels (``factorized_reduce`` for the older one when the previous cell reduced, so it has twice the
resolution), and computes 4 intermediate nodes 2..5 (0 and 1 are the preprocessed inputs). Node i sums
two edges; each edge applies one of the 8 DARTS ops to one earlier node. The cell's output concatenates
nodes 2..5 (4C channels). In a reduction cell, edges from nodes 0 and 1 have stride 2.

Variables, in the genotype's form (for ``t`` in normal, reduce; ``i`` in 2..5; slot ``s`` in 0, 1):
``{t}_n{i}_in{s}`` (categorical over the earlier nodes 0..i-1) and ``{t}_n{i}_op{s}`` (op choice over
none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5).
Op choices are per (node, slot), so every op-choice variable always decides exactly one edge node (the
first cell of its type marks it with ``choice=``; the other cells of that type repeat it). The two
slots may name the same input, as the NASNet and AmoebaNet genotypes do.

Options: ``C`` (initial channels, default 16 as the DARTS search network), ``layers`` (cells, default 8,
at least 3 so both cell types occur), ``stem_multiplier`` (3).

Ops (``nas.ops_cells`` and ``nas.ops``): none = ``zero`` (strided in reduction edges); pools 3x3 with
padding 1 (average pooling without the padding in its count); skip_connect = ``identity``, or
``factorized_reduce`` on a stride-2 edge; sep_conv = (ReLU, depthwise, pointwise, BN) twice; dil_conv =
ReLU, depthwise dilation-2 conv, pointwise, BN.

Inputs: two reductions halve the resolution twice and ``factorized_reduce`` needs even sides, so height
and width must be multiples of 4 (digits' 8x8 works: 8 -> 4 -> 2).

DARTS relaxation: `darts_edges_space` is the same network with one op-choice variable per candidate
edge ``{t}_n{i}_e{j}`` (every earlier node j of node i), whose node sums all its edges; it is declared
as this space's relaxation (``relaxation=darts_relaxation``, a `nas.relaxation.Relaxation`), so DARTS'
supernet mixes all 14 edges of a cell and derivation keeps each node's two strongest non-none edges.

Presets: ``darts_v1`` and ``darts_v2``, the first- and second-order genotypes published with the paper's
code (quark0/darts, cnn/genotypes.py), at the paper's CIFAR-10 evaluation size (C=36, 20 cells, 3x32x32,
no auxiliary head): 3,349,342 parameters for DARTS_V2, the figure the paper's code prints.
"""

from __future__ import annotations

from nas.graph import ArchGraph
from nas.relaxation import InputChoice, Relaxation
from nas.space import Categorical, Preset, SearchSpace, SpaceError

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
CELL_TYPES = ("normal", "reduce")
NODES = (2, 3, 4, 5)
SLOTS = (0, 1)


def _in_var(t: str, i: int, s: int) -> str:
    return f"{t}_n{i}_in{s}"


def _op_var(t: str, i: int, s: int) -> str:
    return f"{t}_n{i}_op{s}"


def _edge_var(t: str, i: int, j: int) -> str:
    return f"{t}_n{i}_e{j}"


VARIABLES = [
    var
    for t in CELL_TYPES
    for i in NODES
    for s in SLOTS
    for var in (Categorical(_in_var(t, i, s), tuple(range(i)), default=s),
                Categorical(_op_var(t, i, s), PRIMITIVES, default="sep_conv_3x3", op_choice=True))
]

EDGE_VARIABLES = [
    Categorical(_edge_var(t, i, j), PRIMITIVES, default="sep_conv_3x3", op_choice=True)
    for t in CELL_TYPES for i in NODES for j in range(i)
]


def _edge(g: ArchGraph, node: str, op: str, src: str, c: int, stride: int, choice: str | None) -> str:
    """One DARTS op on one edge, as one node."""
    if op == "none":
        return g.add_op(node, "zero", src, choice=choice, stride=stride)
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        extra = {"count_include_pad": False} if op == "avg_pool_3x3" else {}
        return g.add_op(node, op[:3] + "pool", src, choice=choice, kernel_size=3, stride=stride, padding=1, **extra)
    if op == "skip_connect":
        if stride == 1:
            return g.add_op(node, "identity", src, choice=choice)
        return g.add_op(node, "factorized_reduce", src, choice=choice, out_channels=c)
    kind, size = op.rsplit("_", 1)
    k = int(size[0])
    if kind == "sep_conv":
        return g.add_op(node, "sep_conv", src, choice=choice, out_channels=c, kernel_size=k, stride=stride)
    if kind == "dil_conv":
        return g.add_op(node, "dil_conv", src, choice=choice, out_channels=c, kernel_size=k, stride=stride,
                        dilation=2)
    raise SpaceError(f"unknown DARTS op {op!r}; known: {PRIMITIVES}")


def _check_options(C: int, layers: int, stem_multiplier: int, input_shape: tuple) -> None:
    for name, v, least in (("C", C, 1), ("layers", layers, 3), ("stem_multiplier", stem_multiplier, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise SpaceError(f"option {name!r} must be an int >= {least}, got {v!r}")
    if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4:
        raise SpaceError(f"the DARTS space needs a (C, H, W) input with H and W multiples of 4 (two reductions, "
                         f"factorized_reduce needs even sides), got {tuple(input_shape)}")


def _network(edges_of, *, num_classes: int, input_shape: tuple, C: int, layers: int, stem_multiplier: int,
             marks) -> ArchGraph:
    """The network; ``edges_of(t, i)`` lists node i's edges as (name suffix, input j, op, variable)."""
    _check_options(C, layers, stem_multiplier, input_shape)
    g = ArchGraph(input_shape)
    c_curr = stem_multiplier * C
    g.add_op("stem_conv", "conv", "input", out_channels=c_curr, kernel_size=3, padding=1)
    s0 = s1 = g.add_op("stem_bn", "bn", "stem_conv")
    c_curr = C
    reductions = {layers // 3, 2 * layers // 3}
    reduction_prev = False
    marked: set[str] = set()
    for cell in range(layers):
        reduction = cell in reductions
        if reduction:
            c_curr *= 2
        t = "reduce" if reduction else "normal"
        p = f"cell{cell}"
        if reduction_prev:
            pre0 = g.add_op(f"{p}_pre0", "factorized_reduce", s0, out_channels=c_curr)
        else:
            pre0 = g.add_op(f"{p}_pre0", "relu_conv_bn", s0, out_channels=c_curr, kernel_size=1, padding=0)
        pre1 = g.add_op(f"{p}_pre1", "relu_conv_bn", s1, out_channels=c_curr, kernel_size=1, padding=0)
        states = [pre0, pre1]
        for i in NODES:
            ins = []
            for suffix, j, op, var in edges_of(t, i):
                choice = var if marks and var not in marked else None
                marked.add(var)
                stride = 2 if reduction and j < 2 else 1
                ins.append(_edge(g, f"{p}_n{i}_{suffix}", op, states[j], c_curr, stride, choice))
            states.append(g.add_op(f"{p}_n{i}", "identity", ins, merge="sum"))
        out = g.add_op(p, "identity", states[2:], merge="concat")
        s0, s1 = s1, out
        reduction_prev = reduction
    g.add_op("global_pool", "global_avgpool", s1)
    g.add_op("classifier", "linear", "global_pool", out_features=num_classes)
    return g


def build_darts(a: dict, *, num_classes: int, input_shape: tuple, C: int = 16, layers: int = 8,
                stem_multiplier: int = 3) -> ArchGraph:
    """The discrete network of a genotype-form assignment (see the module docstring)."""
    def edges_of(t: str, i: int):
        return [(f"s{s}", a[_in_var(t, i, s)], a[_op_var(t, i, s)], _op_var(t, i, s)) for s in SLOTS]

    return _network(edges_of, num_classes=num_classes, input_shape=input_shape, C=C, layers=layers,
                    stem_multiplier=stem_multiplier, marks=True)


def build_darts_edges(a: dict, *, num_classes: int, input_shape: tuple, C: int = 16, layers: int = 8,
                      stem_multiplier: int = 3) -> ArchGraph:
    """The all-edges network (DARTS' supernet shape): node i sums one edge from every earlier node."""
    def edges_of(t: str, i: int):
        return [(f"e{j}", j, a[_edge_var(t, i, j)], _edge_var(t, i, j)) for j in range(i)]

    return _network(edges_of, num_classes=num_classes, input_shape=input_shape, C=C, layers=layers,
                    stem_multiplier=stem_multiplier, marks=True)


def genotype_assignment(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> dict:
    """An assignment from DARTS' genotype lists: [(op, input)] * 8, two per node, nodes 2..5 in order."""
    a = {}
    for t, gene in (("normal", normal), ("reduce", reduce)):
        if len(gene) != 2 * len(NODES):
            raise SpaceError(f"a {t} genotype needs {2 * len(NODES)} (op, input) pairs, got {len(gene)}")
        for k, (op, j) in enumerate(gene):
            i, s = NODES[k // 2], k % 2
            a[_op_var(t, i, s)], a[_in_var(t, i, s)] = op, j
    return a


# quark0/darts cnn/genotypes.py
DARTS_V1 = genotype_assignment(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
)
DARTS_V2 = genotype_assignment(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
)

_CIFAR = {"options": {"C": 36, "layers": 20}, "num_classes": 10, "input_shape": (3, 32, 32)}
PRESETS = {
    "darts_v1": Preset(DARTS_V1, **_CIFAR, description="DARTS (first order) genotype, CIFAR-10 evaluation network "
                       "(C=36, 20 cells, no auxiliary head)"),
    "darts_v2": Preset(DARTS_V2, **_CIFAR, description="DARTS (second order) genotype, CIFAR-10 evaluation network "
                       "(C=36, 20 cells, no auxiliary head): 3,349,342 parameters"),
}
OPTIONS = {"C": 16, "layers": 8, "stem_multiplier": 3}


def darts_space() -> SearchSpace:
    return SearchSpace("darts", list(VARIABLES), build_darts, presets=dict(PRESETS), input_shape=(1, 8, 8),
                       num_classes=10, options=dict(OPTIONS), description=__doc__ or "",
                       relaxation=darts_relaxation)


def darts_edges_space() -> SearchSpace:
    """The all-edges form: one op choice per (node, earlier node) edge; 'none' drops an edge."""
    return SearchSpace("darts_edges", list(EDGE_VARIABLES), build_darts_edges, input_shape=(1, 8, 8),
                       num_classes=10, options=dict(OPTIONS),
                       description="DARTS cells with every edge (node i sums an op on each earlier node); the "
                                   "relaxation of the 'darts' space")


def darts_relaxation() -> Relaxation:
    """The all-edges relaxation of `darts_space` (see the module docstring)."""
    nodes = tuple(
        InputChoice(input_vars=tuple(_in_var(t, i, s) for s in SLOTS), op_vars=tuple(_op_var(t, i, s) for s in SLOTS),
                    edges={j: _edge_var(t, i, j) for j in range(i)})
        for t in CELL_TYPES for i in NODES
    )
    return Relaxation(space=darts_edges_space(), nodes=nodes)
