"""Cell ops: inferred shapes equal the modules' real outputs; bad inputs name the op."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.graph import ArchGraph

CASES = [
    ("zero", {"stride": 1}), ("zero", {"stride": 2}), ("zero", {"stride": 2, "out_channels": 12}),
    ("relu_conv_bn", {"out_channels": 6, "kernel_size": 3}), ("relu_conv_bn", {"out_channels": 6, "kernel_size": 1}),
    ("relu_conv_bn", {"out_channels": 6, "kernel_size": 3, "stride": 2}),
    ("sep_conv", {"out_channels": 8, "kernel_size": 3}),
    ("sep_conv", {"out_channels": 8, "kernel_size": 5, "stride": 2}),
    ("dil_conv", {"out_channels": 8, "kernel_size": 3}),
    ("dil_conv", {"out_channels": 8, "kernel_size": 5, "stride": 2}),
    ("factorized_reduce", {"out_channels": 8}), ("factorized_reduce", {"out_channels": 7}),
]


@pytest.mark.parametrize("op,params", CASES)
def test_inferred_shape_is_the_real_shape(op, params):
    g = ArchGraph((4, 10, 10))
    g.add_op("x", op, "input", **params)
    model = nas.build(g)
    out = model(torch.randn(2, 4, 10, 10))
    assert tuple(out.shape[1:]) == nas.infer_shapes(g)["x"]
    if op != "zero":
        out.sum().backward()
    else:
        assert float(out.abs().sum()) == 0.0 and nas.count_params(g) == 0


def test_factorized_reduce_rejects_odd_sizes():
    g = ArchGraph((4, 9, 9))
    g.add_op("x", "factorized_reduce", "input", out_channels=4)
    with pytest.raises(nas.ArchitectureError, match="'x'.*even"):
        nas.infer_shapes(g)


def test_sep_conv_param_count_matches_darts():
    # DARTS SepConv(C, C, 3): 2 x (depthwise 9C + pointwise C^2 + BN 2C)
    g = ArchGraph((16, 8, 8))
    g.add_op("x", "sep_conv", "input", out_channels=16, kernel_size=3)
    assert nas.count_params(g) == 2 * (9 * 16 + 16 * 16 + 2 * 16)
