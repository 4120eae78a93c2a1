"""The spatial transformer (op ``stn``, `nas.ops_spatial`) as an op choice any image space can use.

A space writes the choice with `insert_stn` (a node that is either ``stn`` or ``identity``, marked as the
op choice of a `stn_variable`, so DARTS can relax it too) where it wants a transformer, e.g. before a
stage; `with_stn` adds the choice to an existing space without editing it: the node goes after node
`after` of every graph the space builds (default ``input``: before the first stage, which works for every
image space), and every node that read `after` reads the transformer instead.

The built-in ``vgg_stn`` is the ``vgg`` space with the choice before its first stage. Its presets are the
two networks of ``benchmarks/stn_digits.py`` on the ``rts_digits`` data set (digits randomly rotated, scaled and
translated on a 32x32 canvas, `workers.data.generated`): ``rts_cnn`` (three conv stages of 16/32/64 channels
with batch norm, average-pooled to 4x4, a 64-unit classifier) and ``rts_cnn_stn``, the same with the
transformer in front. vgg_stn's transformer is the op's defaults (batch norm in its localisation network) but
for ``downsample`` 2: its localisation network reads the input average-pooled 2x (16x16 of the 32x32 canvas).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import networkx as nx

from nas.graph import ArchGraph
from nas.space import Categorical, Preset, SearchSpace, SpaceError

STN_CHOICES = ("identity", "stn")


def stn_variable(name: str = "stn", default: str = "identity") -> Categorical:
    """The op-choice variable: ``identity`` (no transformer) or ``stn``."""
    return Categorical(name, STN_CHOICES, default=default, op_choice=True)


def insert_stn(g: ArchGraph, after: str, node: str, value: str, variable: str = "stn",
               **params: Any) -> str:
    """Insert node `node` (op `value`: ``stn`` with `params`, or ``identity``), marked as variable
    `variable`'s choice, reading `after`; every node that read `after` reads `node` instead. Returns `node`."""
    if value not in STN_CHOICES:
        raise SpaceError(f"variable {variable!r}: value {value!r} is not one of {STN_CHOICES}")
    if after not in g:
        raise SpaceError(f"the spatial transformer goes after node {after!r}, which this architecture lacks")
    if node in g:
        raise SpaceError(f"node {node!r} (the spatial transformer) already exists in the architecture")
    consumers = [(v, dict(d)) for _, v, d in g.out_edges(after, data=True)]
    g.remove_edges_from([(after, v) for v, _ in consumers])
    g.add_node(node, op=value, params=dict(params) if value == "stn" else {}, choice=variable)
    g.add_edge(after, node, order=0)
    for v, d in consumers:
        g.add_edge(node, v, **d)
    return node


class WithStn:
    """The build function of `with_stn`: the base space's build, then `insert_stn` (picklable)."""

    def __init__(self, base: Any, after: str, variable: str, node: str, params: dict[str, Any] | None = None):
        self.base, self.after, self.variable, self.node = base, after, variable, node
        self.params = dict(params or {})

    def __call__(self, a: dict[str, Any], **kwargs: Any) -> nx.DiGraph:
        a = dict(a)
        value = a.pop(self.variable)
        g = self.base(a, **kwargs)
        insert_stn(g, self.after, self.node, value, self.variable, **getattr(self, "params", {}))
        return g


def with_stn(space: SearchSpace, *, after: str = "input", variable: str = "stn", node: str = "stn",
             name: str | None = None, presets: dict[str, Preset] | None = None,
             inherit_presets: bool = True, stn_params: dict[str, Any] | None = None) -> SearchSpace:
    """`space` with an op choice ``variable`` (identity or stn, with op params `stn_params`, by default the
    op's defaults) on node `node` after node `after`.

    Its presets are `presets`, after the base space's (with the transformer off) if `inherit_presets`."""
    if variable in space.names:
        raise SpaceError(f"space {space.name!r} already has a variable {variable!r}; choose another name")
    base_presets = {k: replace(p, assignment={**p.assignment, variable: "identity"})
                    for k, p in space.presets.items()} if inherit_presets else {}
    return SearchSpace(
        name or f"{space.name}_stn", [*space.variables, stn_variable(variable)],
        WithStn(space.build, after, variable, node, stn_params), presets={**base_presets, **(presets or {})},
        input_shape=space.input_shape, num_classes=space.num_classes, options=dict(space.options),
        description=f"{space.description} With a spatial transformer choice ({variable}) after node {after!r}.",
        task=space.task,
    )


RTS_SHAPE = (1, 32, 32)
VGG_STN_PARAMS = {"downsample": 2}  # vgg_stn's transformer: its localisation network reads a 2x-pooled input
RTS_CNN = {"depth1": 1, "depth2": 1, "depth3": 1, "depth4": 0, "depth5": 0, "width1": 16, "width2": 32,
           "width3": 64, "batch_norm": True, "kernel_size": 3, "avgpool_size": 4, "classifier_width": 64,
           "dropout": 0.0, "last_1x1": False, "lrn": False, "stn": "identity"}


def vgg_stn_space() -> SearchSpace:
    from search_spaces.vgg import vgg_space

    presets = {
        "rts_cnn": Preset(RTS_CNN, num_classes=10, input_shape=RTS_SHAPE,
                          description="rts_digits: three conv stages (16/32/64, BN), 4x4 average pool, 64-unit "
                                      "classifier, no transformer"),
        "rts_cnn_stn": Preset({**RTS_CNN, "stn": "stn"}, num_classes=10, input_shape=RTS_SHAPE,
                              description="rts_cnn with a spatial transformer before its first stage"),
    }
    return with_stn(vgg_space, name="vgg_stn", presets=presets, inherit_presets=False, stn_params=VGG_STN_PARAMS)
