"""The input preprocessing a model was trained with, as plain data, and the graph step that applies it.

A worker trains on inputs it prepared itself (``workers.data``: uint8 divided by 255, digits' 0..16
pixels by 16, then per-channel standardisation with the training split's mean and std). An exported model
must be given the same, so the preprocessing travels with the trained weights as one plain dict that any
data set can fill::

    {"scale": 0.0625, "mean": [0.30], "std": [0.42]}     # x * scale, then (x - mean[c]) / std[c]

(channels on dimension 1 of a batch). The worker writes it beside a checkpoint's weights
(`PREPROCESSING_FILE`), the driver records it in ``checkpoints.jsonl`` and ``best_weights.json``, and
`nas export` inserts it into the exported network as a parameter-free ``normalize`` node at the graph's
input (`with_input_normalization`), whose constants are non-persistent buffers: the state dict keys stay the
search's, so its weights load unchanged, and the exported model takes the data as the data set gives it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from nas.graph import infer_shapes, input_nodes

PREPROCESSING_FILE = "preprocessing.json"  # beside a checkpoint's weights
NORMALIZE_OP = "normalize"


class PreprocessingError(ValueError):
    """A preprocessing description is malformed; the message says which field."""


def check_preprocessing(pre: Any, where: str = "preprocessing") -> dict[str, Any]:
    """`pre` as a checked plain dict ``{"scale": float, "mean": [float, ...], "std": [float, ...]}``."""
    if not isinstance(pre, Mapping):
        raise PreprocessingError(f"{where}: expected a mapping with scale, mean and std, got {type(pre).__name__}")
    unknown = sorted(set(pre) - {"scale", "mean", "std"})
    if unknown:
        raise PreprocessingError(f"{where}: unknown field(s) {unknown}; fields: scale, mean, std")
    scale = pre.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise PreprocessingError(f"{where}: scale must be a positive number, got {scale!r}")
    out: dict[str, Any] = {"scale": float(scale)}
    for key in ("mean", "std"):
        v = pre.get(key)
        if not isinstance(v, list | tuple) or not v or not all(
                isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in v):
            raise PreprocessingError(f"{where}: {key} must be a non-empty list of numbers (one per channel), "
                                     f"got {v!r}")
        out[key] = [float(a) for a in v]
    if len(out["mean"]) != len(out["std"]):
        raise PreprocessingError(f"{where}: {len(out['mean'])} means but {len(out['std'])} stds")
    if any(s <= 0 for s in out["std"]):
        raise PreprocessingError(f"{where}: every std must be positive, got {out['std']}")
    return out


def read_preprocessing(path: str | os.PathLike) -> dict[str, Any] | None:
    """The preprocessing in a `PREPROCESSING_FILE` (None where there is none or it is unreadable)."""
    path = Path(path)
    try:
        return check_preprocessing(json.loads(path.read_text()), str(path))
    except (OSError, ValueError):
        return None


def input_normalization(g: nx.DiGraph) -> dict[str, Any] | None:
    """The preprocessing of the graph's ``normalize`` node right after its input, or None."""
    src = input_nodes(g)[0]
    succ = list(g.successors(src))
    if len(succ) == 1 and g.nodes[succ[0]].get("op") == NORMALIZE_OP:
        return check_preprocessing(g.nodes[succ[0]].get("params", {}), f"node {succ[0]!r}")
    return None


def image_inputs(g: nx.DiGraph) -> list[str]:
    """The inputs the preprocessing applies to: the first, and every further input of its rank and channels (the
    second image of a Siamese pair, not the proposal boxes beside a detector's image)."""
    srcs = input_nodes(g)
    shapes = infer_shapes(g)
    first = tuple(shapes[srcs[0]])
    return [s for s in srcs if len(shapes[s]) == len(first) and shapes[s][0] == first[0]]


def with_input_normalization(g: nx.DiGraph, pre: Mapping[str, Any]) -> nx.DiGraph:
    """A copy of `g` whose input first goes through a ``normalize`` node applying `pre` (every edge that
    left the input leaves that node instead; each of `image_inputs` for a graph of several inputs). A graph that
    already starts with one is returned as a copy, with its own preprocessing kept when it equals `pre` and an
    error otherwise."""
    pre = check_preprocessing(pre)
    have = input_normalization(g)
    if have is not None:
        if have != pre:
            raise PreprocessingError(f"the architecture already normalises its input with {have}, not {pre}")
        return g.copy()
    out = g.copy()
    shapes = infer_shapes(out)
    for k, src in enumerate(image_inputs(out)):
        channels = tuple(shapes[src])[0]
        if len(pre["mean"]) != channels:
            raise PreprocessingError(f"the preprocessing has {len(pre['mean'])} channel(s) but the architecture's "
                                     f"input has {channels}")
        name, i = ("input_normalize" if k == 0 else f"{src}_normalize"), 1
        base = name
        while name in out:
            i += 1
            name = f"{base}{i}"
        edges = [(v, dict(d)) for _, v, d in out.out_edges(src, data=True)]
        out.remove_edges_from([(src, v) for v, _ in edges])
        out.add_node(name, op=NORMALIZE_OP, params=dict(pre))
        out.add_edge(src, name, order=0)
        for v, d in edges:
            out.add_edge(name, v, **d)
    infer_shapes(out)
    return out


def without_input_normalization(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of `g` without the ``normalize`` node right after its input(s) (the searched architecture)."""
    out = g.copy()
    for src in input_nodes(out):
        succ = list(out.successors(src))
        if len(succ) != 1 or out.nodes[succ[0]].get("op") != NORMALIZE_OP:
            continue
        norm = succ[0]
        edges = [(v, dict(d)) for _, v, d in out.out_edges(norm, data=True)]
        out.remove_node(norm)
        for v, d in edges:
            out.add_edge(src, v, **d)
    return out


def describe(pre: Mapping[str, Any] | None) -> str:
    """One line for people: how inputs are normalised."""
    if pre is None:
        return "no input normalisation"
    mean = ", ".join(f"{v:.4g}" for v in pre["mean"])
    std = ", ".join(f"{v:.4g}" for v in pre["std"])
    return f"inputs * {pre['scale']:.6g}, then (x - mean) / std per channel, mean [{mean}], std [{std}]"
