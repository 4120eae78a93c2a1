"""The builder: merges, in-place safety, auxiliary heads, counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.graph import ArchGraph


def test_merges_compute_what_they_say():
    g = ArchGraph((2, 4, 4))
    a = g.add_op("a", "conv", "input", out_channels=2, kernel_size=1)
    b = g.add_op("b", "conv", "input", out_channels=2, kernel_size=3)
    t = g.add_op("t", "sigmoid", b)
    s = g.add_op("s", "identity", [a, b], merge="sum")
    gate = g.add_op("gate", "identity", [a, t, s], merge="gate")
    g.add_op("cat", "identity", [gate, a], merge="concat")
    m = nas.build(g).eval()
    x = torch.randn(3, 2, 4, 4)
    ya, yb = m.a(x), m.b(x)
    tt = torch.sigmoid(yb)
    expected = torch.cat([ya * tt + (ya + yb) * (1 - tt), ya], 1)
    torch.testing.assert_close(m(x), expected)


def test_in_place_relu_gives_the_same_gradients_as_out_of_place():
    g = ArchGraph((3, 8, 8))
    x = g.add_op("c1", "conv", "input", out_channels=4, kernel_size=3)
    x = g.add_op("bn1", "bn", x)
    r = g.add_op("r1", "relu", x)  # in place: bn1 has one reader
    c = g.add_op("c2", "conv", r, out_channels=4, kernel_size=3)
    y = g.add_op("r2", "relu", [c, r], merge="sum")  # in place: fresh sum
    z = g.add_op("r3", "relu", "c2")  # c2 has two readers: must not run in place
    g.add_op("out", "identity", [y, z], merge="sum")
    m = nas.build(g)
    assert m.r1.inplace and m.r2.inplace and not m.r3.inplace
    ref = nas.build(g)
    ref.load_state_dict(m.state_dict())
    for mod in ref.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    inp = torch.randn(2, 3, 8, 8)
    m(inp).square().sum().backward()
    ref(inp).square().sum().backward()
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_input_tensor_is_never_modified():
    g = ArchGraph((4,))
    g.add_op("r", "relu", "input")
    x = torch.randn(5, 4)
    before = x.clone()
    nas.build(g)(x)
    assert torch.equal(x, before)


def test_aux_heads_run_in_training_only():
    g = ArchGraph((3, 8, 8))
    x = g.add_op("c", "conv", "input", out_channels=4, kernel_size=3)
    a = g.add_op("aux_pool", "global_avgpool", x, aux=True)
    g.add_op("aux_fc", "linear", a, out_features=7, aux=True)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    assert nas.graph.output_node(g) == "fc"
    m = nas.build(g)
    out = m(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10) and len(m.aux_outputs) == 1 and m.aux_outputs[0].shape == (2, 7)
    m.eval()
    m(torch.randn(2, 3, 8, 8))
    assert m.aux_outputs == []
    assert nas.count_params(g) == sum(p.numel() for p in m.parameters())


def test_counts_match_closed_forms():
    g = ArchGraph((3, 32, 32))
    g.add_op("c", "conv", "input", out_channels=16, kernel_size=3, stride=2, bias=True)
    g.add_op("p", "global_avgpool", "c")
    g.add_op("fc", "linear", "p", out_features=10)
    assert nas.count_params(g) == 16 * 3 * 9 + 16 + 16 * 10 + 10
    assert nas.count_flops(g) == 16 * 16 * 16 * 3 * 9 + 16 * 10
    g2 = ArchGraph((8, 10, 10))
    g2.add_op("c", "conv", "input", out_channels=8, kernel_size=3, groups=4)
    assert nas.count_flops(g2) == 8 * 100 * 2 * 9


def test_bias_init_and_3d_conv():
    g = ArchGraph((2, 4, 8, 8))
    g.add_op("c", "conv", "input", out_channels=3, kernel_size=[3, 3, 3], bias=True, bias_init=-2.0)
    m = nas.build(g)
    assert isinstance(m.c, nn.Conv3d) and torch.all(m.c.bias == -2.0)
    assert m(torch.randn(1, 2, 4, 8, 8)).shape == (1, 3, 4, 8, 8)


def test_node_names_that_clash_with_module_attributes_are_rejected():
    g = ArchGraph((4,))
    g.add_op("forward", "relu", "input")
    with pytest.raises(nas.ArchitectureError, match="clashes"):
        nas.build(g)
