"""Siamese networks (SINT: Tao, Gavves & Smeulders, "Siamese Instance Search for Tracking", CVPR 2016): two
inputs, one branch, built once and applied to both (shared weights).

The graph holds the branch as its subgraph ``branch`` (`nas.graph`): nodes ``embed1`` and ``embed2`` apply
it to inputs ``input`` and ``input2``, and the output ``embeddings`` concatenates the two embeddings,
(2 E,): the first E values are f(x_1), the last E f(x_2). The ``contrastive`` task (`nas.tasks.contrastive`)
trains it with the marginal contrastive loss on pairs and matches with f(x_j) . f(x_k); the weights are
stored once, under ``branch.``.

The branch, searchable: optionally a spatial transformer (``stn``; a plain choice here, not a DARTS op
choice, since it lives in the subgraph), ``stages`` stages of ``depth`` conv(-BN)-ReLU layers with
``width``, 2x ``width``, ... channels and a 2x2 max-pool each, then ``pooling`` (``flatten``: the
position-sensitive features a tracker needs, or ``avg``: global average pooling), a linear layer to
``embedding`` values and, with ``l2_normalize``, unit length (SINT's normalised features, so the matching
function is the cosine). The input's sides must be at least 2 ** stages. Default input (1, 16, 16): the
``digit_pairs`` data set's crops.
"""

from __future__ import annotations

from typing import Any

from nas.graph import ArchGraph
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError
from search_spaces._blocks import conv_stages

INPUT_SHAPE = (1, 16, 16)
VARIABLES = [
    Categorical("stn", ("identity", "stn"), default="identity"),
    Ordinal("stages", (1, 2, 3), default=2),
    Ordinal("width", (8, 16, 32, 64), default=16),
    Ordinal("depth", (1, 2), default=1),
    Ordinal("kernel_size", (3, 5), default=3),
    Categorical("batch_norm", (False, True), default=True),
    Categorical("pooling", ("flatten", "avg"), default="flatten"),
    Ordinal("embedding", (16, 32, 64, 128), default=32),
    Categorical("l2_normalize", (False, True), default=True),
]


def build_branch(a: dict[str, Any], input_shape: tuple[int, ...]) -> ArchGraph:
    """The branch of assignment `a`: one image (C, H, W) -> its embedding (E,)."""
    if len(input_shape) != 3:
        raise SpaceError(f"siamese: the branch takes images (C, H, W), got input shape {tuple(input_shape)}")
    if min(input_shape[1:]) < 2 ** a["stages"]:
        raise SpaceError(f"siamese: variable 'stages' = {a['stages']} halves the input {a['stages']} times and needs "
                         f"sides >= {2 ** a['stages']}; the input is {tuple(input_shape)}")
    g = ArchGraph(input_shape)
    x = "input"
    if a["stn"] == "stn":
        x = g.add_op("stn", "stn", x)
    x = conv_stages(g, x, a["stages"], a["width"], a["depth"], a["kernel_size"], bn=a["batch_norm"])[-1][0]
    x = g.add_op("pool", "flatten" if a["pooling"] == "flatten" else "global_avgpool", x)
    x = g.add_op("fc", "linear", x, out_features=a["embedding"])
    if a["l2_normalize"]:
        g.add_op("normalize", "l2_normalize", x)
    return g


def build_siamese(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    """The pair network of assignment `a` (`num_classes` is not used: the output is two embeddings)."""
    g = ArchGraph(input_shape)
    g.add_input("input2", input_shape)
    g.add_subgraph("branch", build_branch(a, tuple(input_shape)))
    g.add_op("embed1", "call", "input", graph="branch")
    g.add_op("embed2", "call", "input2", graph="branch")
    g.add_op("embeddings", "identity", ["embed1", "embed2"], merge="concat")
    return g


PRESETS = {
    "sint_small": Preset({"stages": 2, "width": 16, "embedding": 32}, input_shape=INPUT_SHAPE,
                         description="two conv stages (16, 32 channels, BN), flattened, a 32-value unit-length "
                                     "embedding: a small SINT-style branch for digit_pairs"),
}


def siamese_space() -> SearchSpace:
    return SearchSpace("siamese", list(VARIABLES), build_siamese, presets=dict(PRESETS), input_shape=INPUT_SHAPE,
                       num_classes=2, description=__doc__.split("\n\n")[0].replace("\n", " "), task="contrastive")
