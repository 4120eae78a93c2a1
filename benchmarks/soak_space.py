"""A small plug-in space for the soak test: candidates that fail in each way a user's space can
(an exception in the build, NaN loss, a shape error, an allocation far beyond memory), beside good ones.
Loaded by path: `nas search --space benchmarks/soak_space.py:space`."""

from __future__ import annotations

import math

import nas
from nas.graph import ArchGraph

MODES = ("ok", "ok_deep", "build_error", "nan", "shape_error", "oom")


def build(a: dict, *, num_classes: int, input_shape: tuple[int, ...]) -> ArchGraph:
    if a["mode"] == "build_error":
        raise RuntimeError("this candidate cannot be built")
    g = ArchGraph(input_shape)
    x = "input"
    for i in range(a["depth"] + (1 if a["mode"] == "ok_deep" else 0)):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=a["width"], kernel_size=a["kernel_size"])
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    if a["mode"] == "oom":
        x = g.add_op("huge", "linear", x, out_features=10**10)
    n_out = 7 if a["mode"] == "shape_error" else num_classes
    g.add_op("fc", "linear", x, out_features=n_out, bias_init=math.inf if a["mode"] == "nan" else None)
    return g


space = nas.SearchSpace("soak", [nas.Categorical("mode", MODES), nas.Ordinal("width", (4, 8, 16, 32, 64)),
                                 nas.Ordinal("depth", (1, 2, 3, 4)), nas.Ordinal("kernel_size", (1, 3, 5))], build,
                        description="soak-test space with failing candidates")
