"""Architectures with several inputs and with shared subgraphs (nas.graph, nas.builder, the export):
inputs in index order, one branch built once and applied twice, a canonical arch_id (names do not count,
sharing does), the JSON round trip, and clear errors for malformed graphs."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.export import python_source
from nas.graph import ArchGraph, ArchitectureError, input_nodes, input_shapes, subgraphs


def branch(width: int = 4, embedding: int = 5) -> ArchGraph:
    g = ArchGraph((1, 8, 8))
    g.add_op("conv", "conv", "input", out_channels=width, kernel_size=3)
    g.add_op("bn", "bn", "conv")
    g.add_op("relu", "relu", "bn")
    g.add_op("gap", "global_avgpool", "relu")
    g.add_op("fc", "linear", "gap", out_features=embedding)
    return g


def pair(shared: bool = True, names: tuple[str, str] = ("a", "b"), second: str = "input2") -> ArchGraph:
    g = ArchGraph((1, 8, 8))
    g.add_input(second, (1, 8, 8))
    g.add_subgraph(names[0], branch())
    if not shared:
        g.add_subgraph(names[1], branch())
    g.add_op("e1", "call", "input", graph=names[0])
    g.add_op("e2", "call", second, graph=names[0] if shared else names[1])
    g.add_op("out", "identity", ["e1", "e2"], merge="concat")
    return g


def test_a_shared_branch_is_built_once_and_applied_to_each_input():
    g = pair()
    assert input_nodes(g) == ["input", "input2"] and input_shapes(g) == [(1, 8, 8), (1, 8, 8)]
    assert nas.infer_shapes(g)["out"] == (10,)
    model = nas.build(g).eval()
    assert list(model.state_dict()) == [f"a.{k}" for k in nas.build(branch()).state_dict()]
    assert nas.count_params(g) == nas.count_params(branch())  # one set of weights
    assert nas.count_flops(g) == 2 * nas.count_flops(branch())  # applied twice
    x1, x2 = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    out = model(x1, x2)
    torch.testing.assert_close(out, torch.cat([model.a(x1), model.a(x2)], 1))
    with pytest.raises(TypeError, match="takes 2 input"):
        model(x1)
    # gradients of both applications reach the one weight
    model.train()
    model(x1, x2)[:, 5:].sum().backward()
    assert model.a.conv.weight.grad.abs().sum() > 0


def test_two_equal_branches_with_their_own_weights_are_another_network():
    shared, separate = pair(shared=True), pair(shared=False)
    assert nas.count_params(separate) == 2 * nas.count_params(shared)
    assert nas.arch_id(shared) != nas.arch_id(separate)
    # names are not the identity: subgraph, call and input node names
    assert nas.arch_id(pair(names=("branch", "other"))) == nas.arch_id(shared)
    assert nas.arch_id(pair(second="boxes")) == nas.arch_id(shared)
    assert nas.arch_id(pair(shared=False, names=("q", "p"))) == nas.arch_id(separate)
    # a different branch architecture is another network
    other = pair()
    other.graph["subgraphs"]["a"] = nas.graph.to_dict(branch(width=6))
    assert nas.arch_id(other) != nas.arch_id(shared)


def test_which_calls_share_a_subgraph_is_part_of_the_identity():
    """Four calls on two equal subgraphs: calls 1, 2 -> s and 3, 4 -> t differs from 1, 3 -> s and 2, 4 -> t."""
    def four(groups: tuple[str, str, str, str]) -> ArchGraph:
        g = ArchGraph((1, 8, 8))
        g.add_input("input2", (1, 8, 8))
        g.add_subgraph("s", branch())
        g.add_subgraph("t", branch())
        g.add_op("c1", "call", "input", graph=groups[0])
        g.add_op("c2", "call", "input2", graph=groups[1])
        g.add_op("r1", "relu", "input")
        g.add_op("c3", "call", "r1", graph=groups[2])
        g.add_op("r2", "relu", "input2")
        g.add_op("c4", "call", "r2", graph=groups[3])
        g.add_op("out", "identity", ["c1", "c2", "c3", "c4"], merge="concat")
        return g

    ids = {nas.arch_id(four(grouping)) for grouping in (("s", "s", "t", "t"), ("s", "t", "s", "t"))}
    assert len(ids) == 2
    assert nas.arch_id(four(("t", "t", "s", "s"))) == nas.arch_id(four(("s", "s", "t", "t")))


def test_the_order_of_inputs_is_part_of_the_identity():
    def two(first: tuple[int, ...], second: tuple[int, ...]) -> ArchGraph:
        g = ArchGraph(first)
        g.add_input("other", second)
        g.add_op("a", "global_avgpool", "input")
        g.add_op("b", "global_avgpool", "other")
        g.add_op("out", "identity", ["a", "b"], merge="concat")
        return g

    assert nas.arch_id(two((2, 4, 4), (2, 6, 6))) != nas.arch_id(two((2, 6, 6), (2, 4, 4)))


def test_json_round_trip_keeps_inputs_subgraphs_and_identity():
    g = pair()
    again = nas.from_json(nas.to_json(g))
    assert nas.arch_id(again) == nas.arch_id(g)
    assert set(subgraphs(again)) == {"a"} and input_shapes(again) == input_shapes(g)
    torch.manual_seed(0)
    a = nas.build(g)
    torch.manual_seed(0)
    b = nas.build(again)
    x = (torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8))
    torch.testing.assert_close(a.eval()(*x), b.eval()(*x))


def test_the_exported_source_defines_the_branch_once():
    src = python_source(pair())
    assert src.count("class A(nn.Module):") == 1 and src.count("self.a = A()") == 1
    assert "def forward(self, x: torch.Tensor, input2: torch.Tensor) -> torch.Tensor:" in src
    assert "self.a(x)" in src and "self.a(input2)" in src
    # an input whose id could clash with the generated locals is renamed
    assert "def forward(self, x: torch.Tensor, input_x1: torch.Tensor)" in python_source(pair(second="x1"))


def test_malformed_graphs_are_clear_errors():
    g = pair()
    g.nodes["e2"]["params"]["graph"] = "missing"
    with pytest.raises(ArchitectureError, match="node 'e2'.*no subgraph 'missing'"):
        nas.infer_shapes(g)
    g = pair()
    g.nodes["input2"]["params"]["shape"] = [1, 9, 9]
    with pytest.raises(ArchitectureError, match=r"subgraph 'a' takes inputs of shape \(1, 8, 8\), got \(1, 9, 9\)"):
        nas.infer_shapes(g)
    g = pair()
    g.nodes["input2"]["params"]["index"] = 2
    with pytest.raises(ArchitectureError, match=r"input indices must be 0..1, got \[0, 2\]"):
        nas.infer_shapes(g)
    g = pair()
    g.nodes["input"]["params"] = {"index": 0, "shape": [1, 8, 8]}
    with pytest.raises(ArchitectureError, match="the first input takes no params"):
        nas.infer_shapes(g)
    with pytest.raises(ArchitectureError, match="subgraph name 'a' is taken"):
        pair().add_subgraph("a", branch())
    two = ArchGraph((1, 8, 8))
    two.add_input("input2", (1, 8, 8))
    two.add_op("sum", "identity", ["input", "input2"], merge="sum")
    with pytest.raises(ArchitectureError, match=r"subgraph 'outer' must have one input; it has 2"):
        ArchGraph((1, 8, 8)).add_subgraph("outer", two)
    nested = branch()
    nested.add_subgraph("inner", branch())
    with pytest.raises(ArchitectureError, match="subgraph 'outer' holds subgraphs of its own"):
        ArchGraph((1, 8, 8)).add_subgraph("outer", nested)
    with_aux = branch()
    with_aux.add_op("aux_fc", "linear", "gap", out_features=3, aux=True)
    g = pair()
    g.graph["subgraphs"]["a"] = nas.graph.to_dict(with_aux)
    with pytest.raises(ArchitectureError, match="subgraph 'a' has auxiliary nodes"):
        nas.infer_shapes(g)
    g = pair()
    g.graph["subgraphs"]["e1"] = g.graph["subgraphs"]["a"]
    with pytest.raises(ArchitectureError, match="subgraph name 'e1' is also a node id"):
        nas.infer_shapes(g)
    # steps that take one input say so
    with pytest.raises(ArchitectureError, match="this step takes architectures with one input; this one has 2"):
        nas.graph.input_node(pair())
    with pytest.raises(nas.InflateError, match="inflate takes networks with one input and no subgraphs"):
        nas.inflate(pair(), frames=4)
