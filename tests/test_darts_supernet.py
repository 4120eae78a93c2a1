"""DARTS supernets built generically from spaces: the mixed op computes the softmax-weighted sum (and its
gradients), op choices shared by cells share one alpha, the darts space's supernet mixes every (node,
input) edge, derivation follows the paper's rules, PC-DARTS and GDAS forwards, and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.darts.derive import derive, op_choice_report, parameter_free_share
from nas.darts.mixed import (
    MixedOp,
    alpha_parameters,
    build_supernet_module,
    mixed_modules,
    set_sampling,
    split_parameters,
)
from nas.darts.supernet import build_supernet
from nas.graph import ordered_inputs
from search_spaces.darts import PRIMITIVES, darts_space

OPS = {
    "none": ("zero", {}),
    "conv3x3": ("conv", {"out_channels": 2, "kernel_size": 3}),
    "pool": ("avgpool", {"kernel_size": 3, "stride": 1, "padding": 1}),
    "skip": ("identity", {}),
}


def chain_space() -> nas.SearchSpace:
    """Two op choices in a chain, a width that is not searched, and a classifier."""

    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        x = g.add_op("stem", "conv", "input", out_channels=2, kernel_size=3)
        for i in (1, 2):
            op, p = OPS[a[f"op{i}"]]
            x = g.add_op(f"edge{i}", op, x, choice=f"op{i}", **p)
        x = g.add_op("head", "conv", x, out_channels=a["width"], kernel_size=1)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    variables = [nas.Categorical(f"op{i}", tuple(OPS), op_choice=True) for i in (1, 2)]
    return nas.SearchSpace("chain", [*variables, nas.Ordinal("width", (4, 8))], build)


def test_mixed_op_is_the_softmax_weighted_sum_with_its_gradients():
    torch.manual_seed(0)
    net = build_supernet(chain_space(), {"width": 8})
    assert [net.graph.nodes[n]["op"] for n in ("edge1", "edge2")] == ["mixed", "mixed"]
    assert net.graph.nodes["head"]["params"]["out_channels"] == 8 and net.zero_values["op1"] == ["none"]
    model = build_supernet_module(net.graph)
    mixed = model.edge1
    with torch.no_grad():
        mixed.alpha.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1]))
    x = torch.randn(3, 2, 8, 8, requires_grad=True)
    out = mixed(x)
    w = F.softmax(mixed.alpha, 0)
    ref = sum(w[i] * mixed.candidates[i](x) for i in range(4))  # the zero op included, as written
    torch.testing.assert_close(out, ref)
    probe = torch.randn_like(out)
    ga, gx = torch.autograd.grad((out * probe).sum(), [mixed.alpha, x])
    ra, rx = torch.autograd.grad((ref * probe).sum(), [mixed.alpha, x])
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gx, rx)


def test_darts_edge_shares_the_leading_relu_and_recomputes_pools_with_unchanged_results():
    torch.manual_seed(0)
    model = build_supernet_module(build_supernet(darts_space(), options={"C": 4, "layers": 3}).graph)
    for name in ("cell0_n3_e2", "cell1_n2_e0"):  # a normal edge and a stride-2 reduction edge
        mixed = model.get_submodule(name)
        with torch.no_grad():
            mixed.alpha.normal_()
        x = torch.randn(4, mixed.candidates[4][0][1].in_channels, 8, 8, requires_grad=True)
        out = mixed(x)
        w = F.softmax(mixed.alpha, 0)
        ref = sum(w[i] * mixed.candidates[i](x) for i in range(8))
        torch.testing.assert_close(out, ref)
        probe = torch.randn_like(out)
        conv = mixed.candidates[5][1][1].weight  # sep_conv_5x5's second depthwise conv
        got = torch.autograd.grad((out * probe).sum(), [mixed.alpha, x, conv])
        want = torch.autograd.grad((ref * probe).sum(), [mixed.alpha, x, conv])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def test_weights_and_alphas_split_by_name_and_identity():
    model = build_supernet_module(build_supernet(chain_space()).graph)
    weights, alphas = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(a)] for a in alphas) == ["edge1.alpha", "edge2.alpha"]
    assert not any(names[id(p)].endswith(".alpha") for p in weights)
    assert len(weights) + len(alphas) == len(list(model.parameters()))


def test_darts_supernet_mixes_every_edge_and_cells_of_a_type_share_alphas():
    net = build_supernet(darts_space(), options={"C": 4, "layers": 5})
    g = net.graph
    assert net.relaxation is not None and net.relaxed.name == "darts_edges"
    for cell in range(5):
        for i in (2, 3, 4, 5):
            edges = ordered_inputs(g, f"cell{cell}_n{i}")
            assert edges == [f"cell{cell}_n{i}_e{j}" for j in range(i)]
            for e in edges:
                d = g.nodes[e]
                assert d["op"] == "mixed" and d["params"]["values"] == list(PRIMITIVES)
    assert net.nodes["normal_n4_e1"] == ["cell0_n4_e1", "cell2_n4_e1", "cell4_n4_e1"]
    model = build_supernet_module(g)
    alphas = alpha_parameters(model)
    assert len(alphas) == 28 and sum(n.endswith(".alpha") for n, _ in model.named_parameters()) == 28
    mods = mixed_modules(model)["normal_n4_e1"]
    assert len(mods) == 3 and all(m.alpha is alphas["normal_n4_e1"] for m in mods)
    # cells at different widths hold differently sized candidates under one alpha
    assert g.nodes["cell0_n4_e1"]["params"]["candidates"][4]["params"]["out_channels"] == 4
    assert g.nodes["cell4_n4_e1"]["params"]["candidates"][4]["params"]["out_channels"] == 16
    # candidates search without affine batch norms, as the paper
    assert g.nodes["cell0_n4_e1"]["params"]["candidates"][4]["params"]["affine"] is False
    y = model(torch.randn(2, 1, 8, 8))
    y.sum().backward()
    assert y.shape == (2, 10) and alphas["reduce_n2_e0"].grad.abs().sum() > 0


def weights_for(net, favour: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    out = {}
    for var, values in net.values.items():
        w = [1.0] * len(values)
        for value, weight in favour.get(var, {}).items():
            w[values.index(value)] = weight
        total = sum(w)
        out[var] = [v / total for v in w]
    return out


def test_derivation_keeps_the_two_strongest_non_none_edges():
    net = build_supernet(darts_space(), options={"C": 4, "layers": 3})
    favour = {
        "normal_n3_e0": {"none": 50.0, "sep_conv_5x5": 2.0},  # none dominates but does not count
        "normal_n3_e1": {"max_pool_3x3": 3.0},
        "normal_n3_e2": {"dil_conv_3x3": 4.0},
        "reduce_n2_e1": {"skip_connect": 9.0},
    }
    a = derive(net, weights_for(net, favour))
    assert (a["normal_n3_in0"], a["normal_n3_op0"]) == (2, "dil_conv_3x3")
    assert (a["normal_n3_in1"], a["normal_n3_op1"]) == (1, "max_pool_3x3")
    assert (a["reduce_n2_in0"], a["reduce_n2_op0"]) == (1, "skip_connect")
    assert a["reduce_n2_in1"] == 0  # ties: the earlier input
    g = darts_space().graph(a, C=4, layers=3)
    report = op_choice_report(darts_space(), g, a)
    assert report["reduce_n2_op0"]["op"] == "factorized_reduce" and report["reduce_n2_op0"]["params"] > 0
    assert report["normal_n3_op1"]["params"] == 0
    free = [v for v, r in report.items() if r["params"] == 0]
    assert parameter_free_share(report) == len(free) / 16


def test_derivation_of_plain_op_choices_keeps_none_unless_excluded():
    net = build_supernet(chain_space())
    w = weights_for(net, {"op1": {"none": 5.0, "conv3x3": 2.0}, "op2": {"pool": 3.0}})
    assert derive(net, w) == {"op1": "none", "op2": "pool", "width": 4}
    assert derive(net, w, exclude_none=True)["op1"] == "conv3x3"


def test_nb201_supernet_derives_a_valid_assignment():
    try:
        space = nas.get_space("nb201")
    except nas.SpaceError:
        pytest.skip("the nb201 space is not registered in this tree")
    net = build_supernet(space)
    assert set(net.values) == {v.name for v in space.op_choices}
    model = build_supernet_module(net.graph)
    torch.manual_seed(0)
    with torch.no_grad():
        for a in alpha_parameters(model).values():
            a.normal_()
    from nas.darts.mixed import architecture_weights

    a = derive(net, architecture_weights(model))
    assert space.validate(a) == a
    nas.infer_shapes(space.graph(a))


NB201_OPS = {
    "none": ("zero", {}),
    "skip_connect": ("identity", {}),
    "nor_conv_1x1": ("relu_conv_bn", {"out_channels": 8, "kernel_size": 1}),
    "nor_conv_3x3": ("relu_conv_bn", {"out_channels": 8, "kernel_size": 3}),
    "avg_pool_3x3": ("avgpool", {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False}),
}
NB201_EDGES = [(i, j) for i in (1, 2, 3) for j in range(i)]


def nb201_like_space() -> nas.SearchSpace:
    """A NAS-Bench-201-shaped cell (6 op-choice edges, node i sums edges from every earlier node), stacked
    twice with one genotype: op choices only, 'none' among them, no relaxation hook."""

    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        x = g.add_op("stem", "conv", "input", out_channels=8, kernel_size=3)
        for c in range(2):
            nodes = [x]
            for i in (1, 2, 3):
                ins = []
                for j in range(i):
                    op, params = NB201_OPS[a[f"edge_{i}_{j}"]]
                    ins.append(g.add_op(f"c{c}_e{i}{j}", op, nodes[j], choice=f"edge_{i}_{j}" if c == 0 else None,
                                        **params))
                nodes.append(g.add_op(f"c{c}_n{i}", "identity", ins, merge="sum") if i > 1 else ins[0])
            x = nodes[-1]
        g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", "pool", out_features=num_classes)
        return g

    return nas.SearchSpace("nb201_like", [nas.Categorical(f"edge_{i}_{j}", tuple(NB201_OPS), op_choice=True)
                                          for i, j in NB201_EDGES], build)


def test_nb201_shaped_cell_space_relaxes_generically_and_derives_a_valid_assignment():
    space = nb201_like_space()
    net = build_supernet(space)
    assert net.relaxation is None and net.nodes["edge_2_1"] == ["c0_e21", "c1_e21"]
    model = build_supernet_module(net.graph)
    assert len(alpha_parameters(model)) == 6
    from nas.darts.mixed import architecture_weights
    from nas.darts.settings import DartsSettings
    from workers.darts_bilevel import BilevelSearch, split_halves

    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    search = BilevelSearch(model, *split_halves(x, y, 0), DartsSettings(epochs=1, batch_size=16), "cpu")
    search.run_epoch()
    a = derive(net, architecture_weights(model))
    assert space.validate(a) == a
    nas.infer_shapes(space.graph(a))


def test_partial_channels_run_a_quarter_of_the_channels_through_the_candidates():
    full = build_supernet(darts_space(), options={"C": 8, "layers": 3})
    pc = build_supernet(darts_space(), options={"C": 8, "layers": 3}, partial_channels=4)
    assert nas.count_params(pc.graph) < nas.count_params(full.graph)
    model = build_supernet_module(pc.graph)
    edge = model.get_submodule("cell1_n2_e0")  # a stride-2 edge: the bypass is max-pooled
    assert isinstance(edge, MixedOp) and edge.partial_channels == 4
    x = torch.randn(2, 16, 8, 8)
    assert edge(x).shape == (2, 16, 4, 4)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    with pytest.raises(nas.ArchitectureError, match="divisible"):
        build_supernet(darts_space(), options={"C": 6, "layers": 3}, partial_channels=4)


def test_gumbel_sampling_runs_one_candidate_and_reaches_every_alpha():
    torch.manual_seed(1)
    model = build_supernet_module(build_supernet(chain_space()).graph)
    set_sampling(model, "gumbel", tau=1.0)
    mixed = model.edge1
    x = torch.randn(2, 2, 8, 8)
    y = mixed(x)
    outs = [c(x) for c in mixed.candidates]
    assert any(torch.equal(y, o) for o in outs)
    y.sum().backward()
    assert mixed.alpha.grad is not None and (mixed.alpha.grad != 0).sum() >= 2
    model.eval()  # evaluation uses the softmax mixture
    w = F.softmax(mixed.alpha, 0)
    torch.testing.assert_close(mixed(x), sum(w[i] * outs[i] for i in range(4)))


def test_errors_name_the_variable():
    with pytest.raises(nas.SpaceError, match="op1"):
        build_supernet(chain_space(), {"op1": "skip"})

    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        x = g.add_op("a", "relu", "input", choice="op")
        if a["op"] == "double":
            x = g.add_op("b", "relu", x)
        g.add_op("pool", "global_avgpool", x)
        return g

    space = nas.SearchSpace("grows", [nas.Categorical("op", ("single", "double"), op_choice=True)], build)
    with pytest.raises(nas.SpaceError, match="'op' = 'double' changes the network's nodes"):
        build_supernet(space)
    with pytest.raises(nas.SpaceError, match="no op-choice variables"):
        build_supernet(nas.SearchSpace("plain", [nas.Ordinal("w", (1, 2))], build))


def test_cli_darts_on_a_space_without_op_choices_or_with_a_wrong_option_fails_clearly(tmp_path, capsys):
    from nas.cli import main

    assert main(["search", "--space", "resnet", "--strategy", "darts", "--out", str(tmp_path / "a")]) == 2
    assert "space 'resnet' has no op-choice variables" in capsys.readouterr().err
    assert main(["search", "--space", "darts", "--strategy", "darts", "--strategy-option", "population_size=4",
                 "--out", str(tmp_path / "b")]) == 2
    assert "strategy 'darts' has no option(s) ['population_size']" in capsys.readouterr().err


def test_find_relaxation_reads_the_space_first_and_falls_back_to_the_registry():
    import dataclasses

    import nas.relaxation
    from nas.darts import relax
    from search_spaces.darts import build_darts, darts_relaxation

    assert relax.Relaxation is nas.relaxation.Relaxation and relax.InputChoice is nas.relaxation.InputChoice
    declared = relax.find_relaxation(darts_space())
    assert declared is not None and declared.space.name == "darts_edges"
    # a plug-in space that declares nothing but registered a factory for its build function (the old hook)
    plugin = dataclasses.replace(darts_space(), name="darts_plugin", relaxation=None)
    assert relax.find_relaxation(plugin) is None
    relax.register_relaxation(build_darts, darts_relaxation)
    try:
        found = relax.find_relaxation(plugin)
        assert found is not None and found.space.name == "darts_edges"
        assert build_supernet(plugin, options={"C": 4, "layers": 3}).relaxed.name == "darts_edges"
        # the space's own declaration wins over the registry
        other = dataclasses.replace(darts_relaxation(), nodes=darts_relaxation().nodes[:1])
        assert len(relax.find_relaxation(dataclasses.replace(plugin, relaxation=lambda: other)).nodes) == 1
    finally:
        relax._RELAXATIONS.pop(build_darts, None)


def test_a_declared_relaxation_that_does_not_fit_the_space_raises():
    import dataclasses

    from search_spaces.darts import darts_relaxation

    good = darts_relaxation()
    node = good.nodes[0]
    bad_edge = dataclasses.replace(node, edges={**node.edges, 0: "no_such_edge"})
    space = dataclasses.replace(darts_space(), relaxation=lambda: dataclasses.replace(good, nodes=(bad_edge,)))
    with pytest.raises(nas.SpaceError, match="'no_such_edge' is not an op-choice variable"):
        build_supernet(space, options={"C": 4, "layers": 3})
