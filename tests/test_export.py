"""Export of architectures (nas.export): standalone PyTorch source checked in a fresh interpreter without
graphnas, JSON, TorchScript, ONNX, weights files that never unpickle code, and the generated train.py.

The graphs here are written by hand to cover every merge and construct: a residual block (sum), dense
concatenation, highway gates (gate, bias_init), a squeeze-excitation style product (mul), an auxiliary
head, 1D and 3D inputs, and the DARTS cell ops (including the Zero op that TorchScript cannot script).
"""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas import ArchGraph
from nas.export import ExportError, WeightsError, export, load_weights, python_source, save_weights
from nas.export.verify import FreshInterpreter, isolated_command, reference_outputs
from nas.graph import aux_nodes, node_input_shape, topological_order
from nas.ops import OPS, get_op, resolve_params

TOL = 1e-5


# -- hand-written graphs ------------------------------------------------------------------------------


def resnet_graph(num_classes: int = 5) -> ArchGraph:
    g = ArchGraph((3, 16, 16))
    g.add_op("stem_conv", "conv", "input", out_channels=8, kernel_size=3)
    g.add_op("stem_bn", "bn", "stem_conv")
    g.add_op("stem_relu", "relu", "stem_bn")
    g.add_op("b1_conv1", "conv", "stem_relu", out_channels=8, kernel_size=3)
    g.add_op("b1_bn1", "bn", "b1_conv1")
    g.add_op("b1_relu1", "relu", "b1_bn1")
    g.add_op("b1_conv2", "conv", "b1_relu1", out_channels=8, kernel_size=3)
    g.add_op("b1_bn2", "bn", "b1_conv2")
    g.add_op("b1_out", "relu", ["b1_bn2", "stem_relu"], merge="sum")
    g.add_op("b2_conv1", "conv", "b1_out", out_channels=16, kernel_size=3, stride=2)
    g.add_op("b2_bn1", "bn", "b2_conv1", eps=1e-3, momentum=0.01)
    g.add_op("b2_relu1", "relu", "b2_bn1")
    g.add_op("b2_conv2", "conv", "b2_relu1", out_channels=16, kernel_size=3, groups=4)
    g.add_op("b2_bn2", "bn", "b2_conv2")
    g.add_op("b2_down", "conv", "b1_out", out_channels=16, kernel_size=1, stride=2, padding=0)
    g.add_op("b2_down_bn", "bn", "b2_down")
    g.add_op("b2_out", "relu", ["b2_bn2", "b2_down_bn"], merge="sum")
    g.add_op("pool", "global_avgpool", "b2_out")
    g.add_op("fc", "linear", "pool", out_features=num_classes)
    g.graph.update({"space": "handmade", "assignment": {"depth": 2}, "num_classes": num_classes})
    return g


def dense_graph() -> ArchGraph:
    g = ArchGraph((3, 12, 12))
    g.add_op("conv0", "conv", "input", out_channels=6, kernel_size=3, dilation=2)
    feats = ["conv0"]
    for i in range(3):
        src = feats[0] if len(feats) == 1 else g.add_op(f"l{i}_cat", "bn", feats, merge="concat")
        if len(feats) == 1:
            src = g.add_op(f"l{i}_bn", "bn", src)
        g.add_op(f"l{i}_relu", "relu", src)
        feats.append(g.add_op(f"l{i}_conv", "conv", f"l{i}_relu", out_channels=4, kernel_size=3))
    g.add_op("trans_cat", "identity", feats, merge="concat")
    g.add_op("trans_pool", "avgpool", "trans_cat", kernel_size=3, stride=2, padding=1, count_include_pad=False)
    g.add_op("trans_max", "maxpool", "trans_pool", kernel_size=3, stride=2, ceil_mode=True)
    g.add_op("adapt", "adaptive_avgpool", "trans_max", output_size=[2, 1])
    g.add_op("flat", "flatten", "adapt")
    g.add_op("drop", "dropout", "flat", p=0.3)
    g.add_op("fc", "linear", "drop", out_features=4)
    return g


def highway_graph() -> ArchGraph:
    g = ArchGraph((2, 6, 6))
    g.add_op("flat", "flatten", "input")
    g.add_op("proj", "linear", "flat", out_features=24)
    x = g.add_op("proj_act", "tanh", "proj")
    for i in range(2):
        g.add_op(f"hw{i}_h", "linear", x, out_features=24)
        g.add_op(f"hw{i}_h_act", "relu", f"hw{i}_h")
        g.add_op(f"hw{i}_t", "linear", x, out_features=24, bias_init=-2.0)
        g.add_op(f"hw{i}_t_act", "sigmoid", f"hw{i}_t")
        x = g.add_op(f"hw{i}", "identity", [f"hw{i}_h_act", f"hw{i}_t_act", x], merge="gate")
    g.add_op("se_gate", "linear", x, out_features=24, bias=False)
    g.add_op("se_sig", "sigmoid", "se_gate")
    g.add_op("se", "bn", [x, "se_sig"], merge="mul")
    g.add_op("out", "linear", "se", out_features=3, bias_init=0.5)
    return g


def conv_highway_graph() -> ArchGraph:
    """A convolutional highway layer whose gate conv has a bias initialised to -1."""
    g = ArchGraph((3, 8, 8))
    g.add_op("plain", "conv", "input", out_channels=4, kernel_size=3, bias=True)
    g.add_op("h", "conv", "plain", out_channels=4, kernel_size=3, bias=True)
    g.add_op("t", "conv", "plain", out_channels=4, kernel_size=3, bias=True, bias_init=-1.0)
    g.add_op("t_act", "sigmoid", "t")
    g.add_op("hw", "relu", ["h", "t_act", "plain"], merge="gate")
    g.add_op("pool", "global_avgpool", "hw")
    g.add_op("fc", "linear", "pool", out_features=6)
    return g


def aux_graph(num_classes: int = 5) -> ArchGraph:
    g = ArchGraph((3, 16, 16))
    g.add_op("conv1", "conv", "input", out_channels=8, kernel_size=3)
    g.add_op("bn1", "bn", "conv1")
    g.add_op("relu1", "relu", "bn1")
    g.add_op("conv2", "conv", "relu1", out_channels=12, kernel_size=3, stride=2)
    g.add_op("relu2", "relu", "conv2")
    g.add_op("pool", "global_avgpool", "relu2")
    g.add_op("drop", "dropout", "pool", p=0.2)
    g.add_op("fc", "linear", "drop", out_features=num_classes)
    # the auxiliary head reads relu1 (its node ids sort before the main path's on purpose)
    g.add_op("a_pool", "avgpool", "relu1", aux=True, kernel_size=4)
    g.add_op("a_conv", "conv", "a_pool", aux=True, out_channels=6, kernel_size=1)
    g.add_op("a_bn", "bn", "a_conv", aux=True)
    g.add_op("a_relu", "relu", "a_bn", aux=True)
    g.add_op("a_gap", "global_avgpool", "a_relu", aux=True)
    g.add_op("a_fc", "linear", "a_gap", aux=True, out_features=num_classes)
    g.add_op("b_fc", "linear", "a_gap", aux=True, out_features=2)  # a second head, of another width
    return g


def seq_graph() -> ArchGraph:
    """1D input (C, L), BatchNorm1d on a flat vector."""
    g = ArchGraph((2, 20))
    g.add_op("conv", "conv", "input", out_channels=5, kernel_size=5, stride=2)
    g.add_op("pool", "maxpool", "conv", kernel_size=2)
    g.add_op("gap", "global_avgpool", "pool")
    g.add_op("bn", "bn", "gap")
    g.add_op("fc", "linear", "bn", out_features=3)
    return g


def video_graph() -> ArchGraph:
    """3D input (C, T, H, W)."""
    g = ArchGraph((2, 4, 6, 6))
    g.add_op("conv", "conv", "input", out_channels=4, kernel_size=[1, 3, 3])
    g.add_op("bn", "bn", "conv")
    g.add_op("relu", "relu", "bn")
    g.add_op("pool", "avgpool", "relu", kernel_size=2)
    g.add_op("gap", "global_avgpool", "pool")
    g.add_op("fc", "linear", "gap", out_features=3)
    return g


def cell_graph(zero_changes_channels: bool = False) -> ArchGraph:
    """DARTS cell ops, a one-input identity (an alias), a three-input sum and the Zero op."""
    g = ArchGraph((3, 8, 8))
    g.add_op("stem", "conv", "input", out_channels=8, kernel_size=3)
    g.add_op("stem_bn", "bn", "stem")
    g.add_op("pre", "relu_conv_bn", "stem_bn", out_channels=8, kernel_size=1, padding=0)
    g.add_op("e_sep", "sep_conv", "pre", out_channels=8, kernel_size=3)
    g.add_op("e_dil", "dil_conv", "pre", out_channels=8, kernel_size=3)
    g.add_op("e_skip", "identity", "pre")
    g.add_op("n0", "identity", ["e_sep", "e_dil", "e_skip"], merge="sum")
    zero_params = {"out_channels": 4} if zero_changes_channels else {}
    g.add_op("e_zero", "zero", "n0", **zero_params)
    g.add_op("e_conv", "conv", "n0", out_channels=4 if zero_changes_channels else 8, kernel_size=1)
    g.add_op("n1", "identity", ["e_zero", "e_conv"], merge="sum")
    g.add_op("cat", "identity", ["n0", "n1"], merge="concat")
    g.add_op("reduce", "factorized_reduce", "cat", out_channels=8)
    g.add_op("gap", "global_avgpool", "reduce")
    g.add_op("fc", "linear", "gap", out_features=4)
    return g


GRAPHS = {
    "resnet": resnet_graph, "dense": dense_graph, "highway": highway_graph, "conv_highway": conv_highway_graph,
    "aux": aux_graph, "seq": seq_graph, "video": video_graph, "cell": cell_graph,
    "cell_zero_to": lambda: cell_graph(zero_changes_channels=True),
}


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so that evaluation mode is tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _import_source(path: Path, name: str = "exported"):
    spec = importlib.util.spec_from_file_location(f"{name}_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _x(g: ArchGraph, n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *g.graph["input_shape"]), generator=torch.Generator().manual_seed(seed))


# -- the python format, in a fresh interpreter ------------------------------------------------------------


def test_exported_modules_match_the_builder_in_a_fresh_interpreter(tmp_path):
    with FreshInterpreter(tmp_path / "fresh") as fresh:
        assert fresh.hello["graphnas_importable"] == [], fresh.hello
        expected = {}
        for name, make in GRAPHS.items():
            g = make()
            torch.manual_seed(3)
            model = nas.build(g)
            _randomise_bn(model)
            files = export(g, "python", tmp_path / name / "net.py", weights=model)
            assert [f.name for f in files] == ["net.py", "net.weights.pt"]
            ref = reference_outputs(model, _x(g), training=bool(aux_nodes(g)) or name == "resnet")
            torch.save(ref, tmp_path / name / "ref.pt")
            fresh.submit(id=name, model=files[0], weights=files[1], reference=tmp_path / name / "ref.pt")
            expected[name] = (nas.count_params(g), len(ref.get("aux", [])))
        for name, (params, n_aux) in expected.items():
            r = fresh.result()
            assert r["id"] == name and "error" not in r, r
            assert r["imports_graphnas"] == [] and r["keys_equal"], r
            assert r["params"] == params, (name, r["params"], params)
            assert r["eval_diff"] <= TOL, r
            assert r["aux_in_eval"] == 0, r
            if "train_diff" in r:
                assert r["train_diff"] <= TOL and r["aux_count"] == n_aux and r["aux_diff"] <= TOL, r
        assert expected["aux"][1] == 2


def test_same_seed_draws_the_same_initial_weights(tmp_path):
    for name in ("resnet", "aux", "highway", "cell"):
        g = GRAPHS[name]()
        export(g, "python", tmp_path / f"{name}.py")
        module = _import_source(tmp_path / f"{name}.py")
        torch.manual_seed(11)
        built = nas.build(g).state_dict()
        torch.manual_seed(11)
        net = module.Net().state_dict()
        assert list(net) == list(built), name
        assert all(torch.equal(net[k], built[k]) for k in net), name
    # bias_init is applied in __init__
    hw = _import_source(tmp_path / "highway.py").Net()
    assert torch.all(hw.hw0_t.bias == -2.0) and torch.all(hw.out.bias == 0.5)


def test_weights_load_both_ways(tmp_path):
    g = aux_graph()
    export(g, "python", tmp_path / "net.py")
    net = _import_source(tmp_path / "net.py").Net()
    _randomise_bn(net, seed=4)
    built = nas.build(g)
    built.load_state_dict(net.state_dict())  # exported -> built
    x = _x(g)
    net.eval(), built.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), built(x), atol=TOL, rtol=0)
    save_weights(built, tmp_path / "w.pt")  # built -> file -> exported
    net2 = _import_source(tmp_path / "net.py").Net()
    net2.load_state_dict(load_weights(tmp_path / "w.pt"))
    with torch.no_grad():
        assert torch.allclose(net2.eval()(x), built(x), atol=TOL, rtol=0)


# -- readability and determinism -------------------------------------------------------------------------


def test_source_reads_as_a_hand_written_network():
    g = resnet_graph()
    src = python_source(g)
    assert f"arch_id: {nas.arch_id(g)}" in src
    assert f"# params: {nas.count_params(g):,}" in src and f"{nas.count_flops(g):,}" in src
    assert "# space: handmade" in src and '"depth": 2' in src
    imports = [line for line in src.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import torch", "from torch import nn"]
    assert "class Net(nn.Module):" in src and "def __init__(self, num_classes: int = 5, in_channels: int = 3):" in src
    assert ("self.stem_conv = nn.Conv2d(in_channels, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
            "bias=False)") in src
    assert "self.b2_conv2 = nn.Conv2d(16, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=4, " \
           "bias=False)" in src
    assert "self.b2_bn1 = nn.BatchNorm2d(16, eps=0.001, momentum=0.01)" in src
    assert "self.fc = nn.Linear(16, num_classes)" in src
    forward = src.split("def forward(self, x: torch.Tensor) -> torch.Tensor:\n")[-1].splitlines()
    body = [line.strip() for line in forward if line.strip() and not line.strip().startswith("#")]
    assert len(body) == g.number_of_nodes() - 1 + 1  # one line per node but the input, and the return
    assert "x1 = self.b1_out(x1 + x)  # 8x16x16" in body  # the sum written out, the residual kept in x
    assert body[-1].startswith("return ")
    # merges of the other graphs
    assert "torch.cat([x, x1, x2, x3], 1)  # trans_cat: 18x12x12" in python_source(dense_graph())
    hw = python_source(highway_graph())
    assert "* (1.0 - " in hw and "nn.init.constant_(self.hw0_t.bias, -2.0)" in hw and "self.se(x * x1)" in hw
    cell = python_source(cell_graph())
    assert "x2 = x2 + x1 + x  # n0: 8x8x8" in cell  # a three-input sum, in input order (e_sep, e_dil, e_skip)
    assert "class SepConv(nn.Sequential):" in cell and "class DilConv(nn.Sequential):" in cell
    assert cell.index("class DilConv") < cell.index("class SepConv")  # dependencies first
    assert "self.e_skip" not in cell  # a one-input identity is an alias, not a module


def test_source_is_byte_identical_across_exports_and_processes(tmp_path):
    for make in GRAPHS.values():
        g = make()
        assert python_source(g) == python_source(g)
        assert python_source(nas.from_json(nas.to_json(g))) == python_source(g)
    g = aux_graph()
    nas.save_architecture(g, tmp_path / "arch.json")
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"net{seed}.py"
        code = (f"import nas; nas.export({str(tmp_path / 'arch.json')!r}, 'python', {str(out)!r}, with_train=True)")
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == python_source(g).encode()


def test_num_classes_and_in_channels_arguments(tmp_path):
    export(aux_graph(), "python", tmp_path / "aux.py")
    net = _import_source(tmp_path / "aux.py").Net(num_classes=7, in_channels=1)
    x = torch.randn(2, 1, 16, 16)
    assert net.eval()(x).shape == (2, 7)
    net.train()
    net(x)
    assert [tuple(a.shape) for a in net.aux_outputs] == [(2, 7), (2, 2)]  # the head of another width stays
    assert nas.count_params(aux_graph(num_classes=7)) - nas.count_params(aux_graph()) == \
        sum(p.numel() for p in net.parameters()) - sum(
            p.numel() for p in _import_source(tmp_path / "aux.py").Net(in_channels=1).parameters())
    # the input feeds a flatten (highway) or a merge: no in_channels argument
    assert "in_channels" not in python_source(highway_graph())
    g = ArchGraph((3, 4, 4))
    g.add_op("c", "conv", "input", out_channels=3, kernel_size=1)
    g.add_op("s", "relu", ["c", "input"], merge="sum")
    g.add_op("gap", "global_avgpool", "s")
    g.add_op("fc", "linear", "gap", out_features=2)
    assert "def __init__(self, num_classes: int = 2):" in python_source(g)
    # no linear classifier at the end: no num_classes argument
    g = ArchGraph((3, 4, 4))
    g.add_op("c", "conv", "input", out_channels=2, kernel_size=1)
    g.add_op("gap", "global_avgpool", "c")
    assert "def __init__(self, in_channels: int = 3):" in python_source(g)


def test_op_sources_construct_the_builders_modules():
    """repr of a module lists every constructor argument: the source and the builder must agree on all."""
    import nas.ops
    import nas.ops_cells
    import nas.ops_classic
    import nas.ops_video

    graphs = [make() for make in GRAPHS.values()]
    for name in nas.list_spaces():
        try:
            space = nas.get_space(name)
        except Exception:
            continue
        graphs.append(space.graph(space.defaults()))
    # the classic ops (nas.ops_classic) appear in no default: lrn, pad_shortcut, scale
    graphs += [nas.get_space(name).graph(a, partial=True) for name, a in (
        ("vgg", {"lrn": True}), ("resnet", {"shortcut": "zero_pad"}), ("inception", {"family": "resnet_v2"}))]
    # the ops of issue 20 (stn, upsample, conv_transpose, roi_pool, l2_normalize in a siamese branch)
    graphs += [nas.get_space(name).graph(a, partial=True) for name, a in (
        ("vgg_stn", {"stn": "stn"}), ("fcn", {"upsampling": "bilinear"}), ("fcn", {"upsampling": "deconv"}),
        ("detection", {}))]
    graphs += list(nas.graph.subgraphs(nas.get_space("siamese").graph({}, partial=True)).values())
    # the input preprocessing an export from a search adds (nas.preprocessing)
    from nas.preprocessing import with_input_normalization

    first = graphs[0]
    c = nas.infer_shapes(first)["input"][0]
    graphs.append(with_input_normalization(first, {"scale": 1 / 255, "mean": [0.5] * c, "std": [0.25] * c}))
    namespace = {"torch": torch, "nn": torch.nn, **vars(nas.ops), **vars(nas.ops_cells), **vars(nas.ops_video),
                 **vars(nas.ops_classic), **vars(nas.ops_spatial), **vars(nas.ops_roi)}
    seen = set()
    for g in graphs:
        shapes = nas.infer_shapes(g)
        for n in topological_order(g):
            d = g.nodes[n]
            if d["op"] in ("input", "call"):
                continue
            in_shape = node_input_shape(g, n, shapes)
            params = resolve_params(d["op"], d.get("params", {}))
            spec = get_op(d["op"])
            src = spec.source(params, in_shape)
            expr = src if isinstance(src, str) else src[0]
            assert repr(eval(expr, namespace)) == repr(spec.build(params, in_shape)), (n, expr)
            seen.add(d["op"])
    missing = {op for op in OPS if OPS[op].source is not None} - seen
    assert not missing, f"ops with a source that no test graph uses: {missing}"


def test_an_op_without_source_is_a_clear_error():
    g = cell_graph()
    g.nodes["e_sep"]["op"], g.nodes["e_sep"]["params"] = "mixed", {
        "variable": "v", "candidates": [{"op": "sep_conv", "params": {"out_channels": 8, "kernel_size": 3}},
                                        {"op": "identity"}], "values": ["sep", "skip"]}
    with pytest.raises(ExportError, match="node 'e_sep': op 'mixed' has no source template"):
        python_source(g)


def test_bad_requests_are_clear_errors(tmp_path):
    g = resnet_graph()
    with pytest.raises(ExportError, match="unknown export format 'keras'"):
        export(g, "keras", tmp_path / "x")
    with pytest.raises(ExportError, match="with_train needs format 'python'"):
        export(g, "onnx", tmp_path / "x.onnx", with_train=True)
    with pytest.raises(ExportError, match="class_name must be a Python identifier"):
        export(g, "python", tmp_path / "x.py", class_name="my net")
    with pytest.raises(ExportError, match="clashes with a class"):
        python_source(g, class_name="GlobalAvgPool")
    with pytest.raises(ExportError, match="is a folder"):
        export(g, "python", tmp_path)
    with pytest.raises(ExportError, match=r"train_config: 'optimizer' must be one of"):
        export(g, "python", tmp_path / "x.py", with_train=True, train_config={"optimizer": "adam"})
    with pytest.raises(ExportError, match=r"unknown setting\(s\) \['warmup'\]"):
        export(g, "python", tmp_path / "x.py", with_train=True, train_config={"warmup": 3})
    other = nas.build(resnet_graph(num_classes=6)).state_dict()
    with pytest.raises(WeightsError, match=r"shape mismatch .*fc.weight: \(6, 16\) vs \(5, 16\)"):
        export(g, "python", tmp_path / "x.py", weights=other)
    del other["fc.bias"]
    other["extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"missing \['fc.bias'\]; unexpected \['extra'\]"):
        export(g, "json", tmp_path / "x.json", weights=other)
    bad = ArchGraph((3, 4, 4))
    bad.add_op("c", "conv", "input", out_channels=2, kernel_size=1)
    bad.add_op("lambda", "global_avgpool", "c")
    with pytest.raises(ExportError, match="node id 'lambda' is a Python keyword"):
        python_source(bad)
    assert not list(tmp_path.glob("x*")), "a failed export left files behind"


# -- json and weights ---------------------------------------------------------------------------------


def test_json_export_reloads_and_builds(tmp_path):
    g = aux_graph()
    torch.manual_seed(0)
    model = nas.build(g)
    _randomise_bn(model)
    files = export(g, "json", tmp_path / "arch.json", weights=model.state_dict())
    assert [f.name for f in files] == ["arch.json", "arch.weights.pt"]
    g2 = nas.load_architecture(files[0])
    assert nas.arch_id(g2) == nas.arch_id(g) and g2.graph == g.graph
    rebuilt = nas.build(g2)
    rebuilt.load_state_dict(load_weights(files[1]))
    x = _x(g)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    # an architecture file is accepted as `arch` too
    assert export(files[0], "python", tmp_path / "net.py")[0].read_text() == python_source(g)


class _Payload:
    """Unpickling this runs `open(marker, 'w')`: what a malicious weights file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("kind", ["torch_save", "plain_pickle"])
def test_weights_with_a_pickled_payload_are_refused_unexecuted(tmp_path, kind):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    state = {"fc.weight": torch.zeros(5, 16), "payload": _Payload(marker)}
    if kind == "torch_save":
        torch.save(state, evil)
    else:
        evil.write_bytes(pickle.dumps(state))
    with pytest.raises(WeightsError, match=r"evil.pt holds Python objects other than tensors, which are never "
                                           r"unpickled"):
        load_weights(evil)
    with pytest.raises(WeightsError, match="never unpickled"):
        export(resnet_graph(), "python", tmp_path / "net.py", weights=evil)
    assert not marker.exists()
    assert not (tmp_path / "net.py").exists()
    # the control: an unsafe load of the same file does run the payload, so the test above can fail
    if kind == "torch_save":
        torch.load(evil, weights_only=False)
    else:
        pickle.loads(evil.read_bytes())
    assert marker.read_text() == "pwned"


def test_weights_file_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_weights(tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"list.pt does not hold a state dict"):
        load_weights(tmp_path / "list.pt")


# -- TorchScript and ONNX ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name,method", [("resnet", "script"), ("aux", "script"), ("conv_highway", "script"),
                                         ("cell_zero_to", "trace")])
def test_torchscript_matches_the_builder(tmp_path, name, method):
    g = GRAPHS[name]()
    torch.manual_seed(2)
    model = nas.build(g)
    _randomise_bn(model)
    files = export(g, "torchscript", tmp_path / "net.pt", weights=model)
    assert files == [tmp_path / "net.pt"]
    extra = {"graphnas_arch.json": "", "graphnas_export.json": ""}
    ts = torch.jit.load(str(files[0]), _extra_files=extra)
    assert json.loads(extra["graphnas_export.json"])["method"] == method
    assert nas.arch_id(nas.from_json(extra["graphnas_arch.json"])) == nas.arch_id(g)
    for n in (1, 4):
        x = _x(g, n)
        with torch.no_grad():
            assert (ts(x) - model.eval()(x)).abs().max().item() <= TOL
    if name == "aux":  # scripted: training mode still computes the auxiliary heads
        ref = reference_outputs(model, _x(g), training=True)
        ts.train()
        for m in ts.modules():
            if m.original_name == "Dropout":
                m.eval()
        with torch.no_grad():
            assert (ts(ref["x"]) - ref["train"]).abs().max().item() <= TOL
        assert len(ts.aux_outputs) == 2
        assert all((a - b).abs().max() <= TOL for a, b in zip(ts.aux_outputs, ref["aux"], strict=True))


@pytest.mark.parametrize("name", ["resnet", "aux", "dense", "highway", "cell"])
def test_onnx_matches_the_builder_with_a_dynamic_batch(tmp_path, name):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = GRAPHS[name]()
    torch.manual_seed(2)
    model = nas.build(g)
    _randomise_bn(model)
    files = export(g, "onnx", tmp_path / "net.onnx", weights=model)
    assert files[0] == tmp_path / "net.onnx"
    proto = onnx.load(str(files[0]))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in proto.metadata_props}["graphnas_arch_id"] == nas.arch_id(g)
    session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = _x(g, n)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            want = model.eval()(x).numpy()
        assert got.shape == want.shape and np.abs(got - want).max() <= TOL


# -- train.py ---------------------------------------------------------------------------------------------


def _npy_folder(folder: Path, shape: tuple[int, ...], classes: int, n: int = 48) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, size in (("train", n), ("val", 16), ("test", 16)):
        y = rng.integers(0, classes, size)
        x = rng.integers(0, 256, (size, *shape)).astype(np.uint8)
        x[np.arange(size), 0] = (y[:, None, None] * 60).astype(np.uint8)  # learnable: channel 0 encodes y
        np.save(folder / f"x_{split}.npy", x)
        np.save(folder / f"y_{split}.npy", y)
    return folder


def test_generated_train_script_retrains_from_scratch(tmp_path):
    g = aux_graph(num_classes=4)
    config = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "lr": 0.02, "momentum": 0.8,
              "weight_decay": 1e-4, "label_smoothing": 0.1, "schedule": "cosine", "seed": 3, "amp": None}
    files = export(g, "python", tmp_path / "model" / "net.py", with_train=True, train_config=config)
    assert [f.name for f in files] == ["net.py", "train.py"]
    text = files[1].read_text()
    assert "'lr': 0.02," in text and "'momentum': 0.8," in text and "'epochs': 2," in text
    data = _npy_folder(tmp_path / "data", (3, 16, 16), classes=4)
    run = subprocess.run(isolated_command(files[1], "--data", str(data)), cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], run.stdout
    assert all("train_accuracy" in line and "val_accuracy" in line for line in epochs)
    assert any(line.startswith("test_loss") and "test_accuracy" in line for line in lines)
    assert "lr 0.02" in lines[0] and "sgd" in lines[0]
    assert "note: auxiliary output 1 has shape (2,), not (4,): left out of the loss" in lines  # b_fc's 2 outputs
    assert lines[-1] == "graphnas modules imported: []"
    trained = load_weights(tmp_path / "model" / "net.trained.pt")
    net = _import_source(files[0]).Net()
    torch.manual_seed(3)
    fresh = _import_source(files[0]).Net().state_dict()
    net.load_state_dict(trained)
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh), "training changed no weight"
    # other settings from the command line; an output path of our own; a resized classifier
    data2 = tmp_path / "data2"
    data2.mkdir()
    for f in ("x_train.npy", "y_train.npy"):  # no val/test: a validation split is held out
        (data2 / f).write_bytes((data / f).read_bytes())
    run = subprocess.run(isolated_command(files[1], "--data", str(data2), "--epochs", "1", "--optimizer", "adamw",
                                          "--schedule", "constant", "--lr", "0.001", "--num-classes", "6",
                                          "--out", str(tmp_path / "w6.pt")),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "epoch 1/1" in run.stdout and "val_accuracy" in run.stdout and "adamw lr 0.001" in run.stdout
    assert load_weights(tmp_path / "w6.pt")["fc.weight"].shape == (6, 12)
    # labels beyond the classifier: a clear message
    y = np.load(data2 / "y_train.npy")
    y[0] = 9
    np.save(data2 / "y_train.npy", y)
    run = subprocess.run(isolated_command(files[1], "--data", str(data2)), cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0 and "labels go up to 9 but the model has 4 outputs; pass --num-classes" in run.stderr


def test_train_py_runs_the_searchs_recipe_with_the_workers_own_code(tmp_path):
    """A recipe's augmentation, drop-path, warm-up and plateau schedule, RMSprop and clipping reach train.py, whose
    augmentation, schedule and drop-path code is the worker's (copied verbatim at export)."""
    from nas.export.train_script import shared_code

    g = ArchGraph((3, 16, 16))
    x = g.add_op("conv0", "conv", "input", out_channels=8, kernel_size=3)
    x = g.add_op("relu0", "relu", x)
    y = g.add_op("conv1", "conv", x, out_channels=8, kernel_size=3)
    y = g.add_op("bn1", "bn", y)
    x = g.add_op("add", "relu", [y, x], merge="sum")
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=4)
    config = {"dataset": "cifar10", "recipe": "darts", "epochs": 2, "batch_size": 16, "optimizer": "rmsprop",
              "lr": 0.01, "schedule": "plateau", "plateau_patience": 0, "warmup_epochs": 0.5}
    files = export(g, "python", tmp_path / "model" / "net.py", with_train=True, train_config=config,
                   preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3})
    text = files[1].read_text()
    assert shared_code() in text and "DROP_PATH_NODES = ['bn1']" in text
    assert "'augment': 'crop:4,flip,cutout:16'," in text and "'drop_path': 0.2," in text and "'grad_clip': 5.0," in text
    plain = export(g, "python", tmp_path / "plain" / "net.py", with_train=True, train_config={"dataset": "cifar10"})
    assert "'augment': 'crop:4,flip'," in plain[1].read_text()  # the data set's default, resolved at export
    data = _npy_folder(tmp_path / "data", (3, 16, 16), classes=4)
    run = subprocess.run(isolated_command(files[1], "--data", str(data)), cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "augmentation of training batches: crop:4,flip,cutout:16" in run.stdout and "rmsprop" in run.stdout
    assert run.stdout.splitlines()[-1] == "graphnas modules imported: []"
