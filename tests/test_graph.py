"""The architecture graph: validation, shape inference, JSON, canonical identity."""

from __future__ import annotations

import json
import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from nas.graph import ArchGraph, ArchitectureError, from_dict, to_dict


def small_resnet(names: dict[str, str] | None = None, swap_sum: bool = False) -> ArchGraph:
    """A stem and one residual block; `names` renames nodes, `swap_sum` swaps the residual inputs."""
    r = (names or {}).get
    g = ArchGraph((3, 16, 16))
    stem = g.add_op(r("stem", "stem"), "conv", "input", out_channels=8, kernel_size=3)
    a = g.add_op(r("c1", "c1"), "conv", stem, out_channels=8, kernel_size=3)
    a = g.add_op(r("b1", "b1"), "bn", a)
    ins = [stem, a] if swap_sum else [a, stem]
    y = g.add_op(r("add", "add"), "relu", ins, merge="sum")
    p = g.add_op(r("pool", "pool"), "global_avgpool", y)
    g.add_op(r("fc", "fc"), "linear", p, out_features=10)
    return g


def test_shapes_are_inferred():
    shapes = nas.infer_shapes(small_resnet())
    assert shapes["stem"] == (8, 16, 16)
    assert shapes["pool"] == (8,)
    assert shapes["fc"] == (10,)


def test_strided_and_ceil_mode_pooling_shapes_match_torch():
    import torch

    for size in (7, 8, 9, 112, 113):
        g = ArchGraph((3, size, size))
        g.add_op("p", "maxpool", "input", kernel_size=3, stride=2, ceil_mode=True)
        out = nas.build(g)(torch.zeros(1, 3, size, size))
        assert tuple(out.shape[1:]) == nas.infer_shapes(g)["p"]


def test_unknown_op_names_the_node():
    g = small_resnet()
    g.nodes["c1"]["op"] = "conv9000"
    with pytest.raises(ArchitectureError, match="'c1'.*unknown op 'conv9000'"):
        nas.infer_shapes(g)


def test_cycle_is_rejected_naming_edges():
    g = small_resnet()
    g.add_edge("add", "c1", order=1)
    with pytest.raises(ArchitectureError, match="cycle"):
        nas.infer_shapes(g)


def test_shape_mismatch_names_node_and_edges():
    g = small_resnet()
    g.nodes["c1"]["params"]["out_channels"] = 16
    with pytest.raises(ArchitectureError, match=r"node 'add'.*c1|b1.*sum merge needs inputs of one shape"):
        nas.infer_shapes(g)


def test_missing_merge_and_two_outputs_and_unreachable():
    g = small_resnet()
    del g.nodes["add"]["merge"]
    with pytest.raises(ArchitectureError, match="'add'.*no 'merge'"):
        nas.infer_shapes(g)
    g = small_resnet()
    g.add_op("extra", "relu", "stem")
    with pytest.raises(ArchitectureError, match="exactly one output"):
        nas.infer_shapes(g)
    g = small_resnet()
    g.add_node("orphan", op="relu", params={})
    g.add_edge("orphan", "c1", order=1)
    with pytest.raises(ArchitectureError, match="orphan"):
        nas.infer_shapes(g)


def test_bad_params_name_the_node():
    g = small_resnet()
    g.nodes["c1"]["params"]["kernal_size"] = 3
    with pytest.raises(ArchitectureError, match="'c1'.*kernal_size"):
        nas.infer_shapes(g)
    g = small_resnet()
    del g.nodes["fc"]["params"]["out_features"]
    with pytest.raises(ArchitectureError, match="'fc'.*out_features"):
        nas.infer_shapes(g)


def test_node_ids_must_be_identifiers():
    g = small_resnet()
    nx.relabel_nodes(g, {"c1": "layer1.conv"}, copy=False)
    with pytest.raises(ArchitectureError, match="layer1.conv"):
        nas.infer_shapes(g)


def test_json_round_trip_keeps_identity_and_data():
    g = small_resnet()
    g.graph["space"] = "test"
    g2 = nas.from_json(nas.to_json(g))
    assert nas.arch_id(g2) == nas.arch_id(g)
    assert g2.graph["space"] == "test"
    assert to_dict(g2) == to_dict(g)
    # node-link: networkx reads the same file
    h = nx.node_link_graph(json.loads(nas.to_json(g)), edges="edges")
    assert set(h.nodes) == set(g.nodes)


def test_two_spellings_one_id():
    base = nas.arch_id(small_resnet())
    renamed = small_resnet({"stem": "first", "c1": "conv_a", "b1": "norm_a", "add": "res", "fc": "head"})
    assert nas.arch_id(renamed) == base
    assert nas.arch_id(small_resnet(swap_sum=True)) == base
    explicit = small_resnet()
    explicit.nodes["c1"]["params"].update(stride=1, groups=1, bias=False)
    assert nas.arch_id(explicit) == base
    # insertion order of nodes does not matter
    g = small_resnet()
    shuffled = ArchGraph()
    shuffled.graph.update(g.graph)
    nodes = list(g.nodes(data=True))
    random.Random(0).shuffle(nodes)
    shuffled.add_nodes_from(nodes)
    shuffled.add_edges_from(reversed(list(g.edges(data=True))))
    assert nas.arch_id(shuffled) == base


def test_different_networks_get_different_ids():
    base = nas.arch_id(small_resnet())
    g = small_resnet()
    g.nodes["c1"]["params"]["kernel_size"] = 5
    assert nas.arch_id(g) != base
    g = small_resnet()
    g.graph["input_shape"] = [3, 32, 32]
    assert nas.arch_id(g) != base
    # concat order matters, sum order does not
    a, b = ArchGraph((3, 8, 8)), ArchGraph((3, 8, 8))
    for h, order in ((a, ["x", "y"]), (b, ["y", "x"])):
        h.add_op("x", "conv", "input", out_channels=4, kernel_size=1)
        h.add_op("y", "conv", "input", out_channels=4, kernel_size=3)
        h.add_op("cat", "identity", order, merge="concat")
    assert nas.arch_id(a) != nas.arch_id(b)


def test_shared_node_differs_from_two_copies():
    shared, copies = ArchGraph((3, 8, 8)), ArchGraph((3, 8, 8))
    s = shared.add_op("a", "conv", "input", out_channels=4, kernel_size=3)
    shared.add_op("b1", "relu", s)
    shared.add_op("b2", "relu", s)
    shared.add_op("out", "identity", ["b1", "b2"], merge="sum")
    for i in (1, 2):
        copies.add_op(f"a{i}", "conv", "input", out_channels=4, kernel_size=3)
        copies.add_op(f"b{i}", "relu", f"a{i}")
    copies.add_op("out", "identity", ["b1", "b2"], merge="sum")
    assert nas.arch_id(shared) != nas.arch_id(copies)


@pytest.mark.parametrize("text,match", [
    ("{not json", "malformed JSON"),
    ("[]", "expected a JSON object"),
    ('{"format": "other"}', "'format' must be"),
])
def test_malformed_json_is_a_clear_error(text, match):
    with pytest.raises(ArchitectureError, match=match):
        nas.from_json(text)


def test_tampered_json_is_rejected():
    data = to_dict(small_resnet())
    data["nodes"][2]["params"]["out_channels"] = 5  # c1 no longer matches the residual
    with pytest.raises(ArchitectureError, match="sum merge"):
        from_dict(data)
    data = to_dict(small_resnet())
    data["nodes"][1]["__class__"] = "os.system"
    with pytest.raises(ArchitectureError, match="unknown field"):
        from_dict(data)
    data = to_dict(small_resnet())
    data["edges"].append({"source": "nope", "target": "fc"})
    with pytest.raises(ArchitectureError, match=r"edges\[\d+\]"):
        from_dict(data)


# --- property-based: random valid graphs, and random corruptions of them ----------------------------

OPS_1IN = [
    ("conv", {"out_channels": 4, "kernel_size": 3}),
    ("conv", {"out_channels": 4, "kernel_size": 1}),
    ("bn", {}), ("relu", {}), ("identity", {}), ("sigmoid", {}),
]


@st.composite
def random_dag(draw) -> ArchGraph:
    """A random DAG of shape-preserving ops over 4 channels; several inputs merge by sum or concat->conv."""
    g = ArchGraph((4, 6, 6))
    g.add_op("n0", "conv", "input", out_channels=4, kernel_size=1)
    names = ["n0"]
    for i in range(1, draw(st.integers(1, 8))):
        k = draw(st.integers(1, min(3, len(names))))
        ins = draw(st.lists(st.sampled_from(names), min_size=k, max_size=k, unique=True))
        op, params = draw(st.sampled_from(OPS_1IN))
        if len(ins) > 1 and draw(st.booleans()):
            g.add_op(f"n{i}", "conv", ins, merge="concat", out_channels=4, kernel_size=1)
        else:
            g.add_op(f"n{i}", op, ins, merge="sum" if len(ins) > 1 else None, **params)
        names.append(f"n{i}")
    sinks = [n for n in names if g.out_degree(n) == 0]
    if len(sinks) > 1:
        g.add_op("out", "identity", sinks, merge="sum")
    return g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dag(), st.randoms(use_true_random=False))
def test_random_graphs_build_run_and_keep_their_id_when_relabelled(g, rnd):
    import torch

    nas.infer_shapes(g)
    model = nas.build(g)
    out = model(torch.randn(2, 4, 6, 6))
    out.sum().backward()
    ids = [n for n in g.nodes if n != "input"]
    perm = ids[:]
    rnd.shuffle(perm)
    mapping = {a: f"z_{b}" for a, b in zip(ids, perm, strict=True)}
    renamed = nx.relabel_nodes(g, mapping)
    assert nas.arch_id(renamed) == nas.arch_id(g)
    assert nas.arch_id(nas.from_json(nas.to_json(g))) == nas.arch_id(g)


@settings(max_examples=60, deadline=None)
@given(random_dag(), st.data())
def test_corrupted_graphs_raise_architecture_error_or_stay_valid(g, data):
    d = to_dict(g)
    which = data.draw(st.sampled_from(["drop_node", "drop_edge", "bad_param", "bad_op", "bad_order", "shape"]))
    if which == "drop_node":
        d["nodes"].pop(data.draw(st.integers(0, len(d["nodes"]) - 1)))
    elif which == "drop_edge" and d["edges"]:
        d["edges"].pop(data.draw(st.integers(0, len(d["edges"]) - 1)))
    elif which == "bad_param":
        node = d["nodes"][data.draw(st.integers(1, len(d["nodes"]) - 1))]
        node["params"][data.draw(st.sampled_from(["out_channels", "kernel_size", "p", "eps"]))] = \
            data.draw(st.sampled_from([-1, 0, "x", None, [1, 2, 3, 4], 2.5]))
    elif which == "bad_op":
        d["nodes"][data.draw(st.integers(0, len(d["nodes"]) - 1))]["op"] = data.draw(
            st.sampled_from(["", "conv3d_magic", None, 7]))
    elif which == "bad_order" and d["edges"]:
        d["edges"][data.draw(st.integers(0, len(d["edges"]) - 1))]["order"] = data.draw(st.integers(-2, 5))
    else:
        d["graph"]["input_shape"] = data.draw(st.sampled_from([[], [0, 6, 6], [4, -1, 6], "4,6,6", [4, 6.5, 6]]))
    try:
        h = from_dict(d)
    except ArchitectureError:
        return
    nas.build(h)  # whatever survives validation must build
