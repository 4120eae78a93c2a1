"""The classic ops (nas.ops_classic): lrn, pad_shortcut, scale. Inferred shapes equal the modules' real
outputs on every input rank, the modules compute what plain torch computes, they have no parameters and
no multiply-accumulates, bad hyperparameters name the op, and a network using all three exports to Python,
TorchScript (scripted, not traced) and ONNX with the built model's outputs."""

from __future__ import annotations

import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.export import export
from nas.graph import ArchGraph
from nas.ops import resolve_params

CASES = [
    ("lrn", {}), ("lrn", {"size": 3, "alpha": 1e-3, "beta": 0.5, "k": 1.0}),
    ("pad_shortcut", {}), ("pad_shortcut", {"stride": 2}), ("pad_shortcut", {"stride": 2, "out_channels": 12}),
    ("pad_shortcut", {"out_channels": 9}),
    ("scale", {"factor": 0.17}), ("scale", {"factor": -2}),
]
SHAPES = [(4, 9), (4, 7, 10), (4, 3, 5, 6)]  # (C, L), (C, H, W), (C, T, H, W), odd sides included


def _one_node(op: str, params: dict, shape: tuple[int, ...]) -> ArchGraph:
    g = ArchGraph(shape)
    g.add_op("x", op, "input", **params)
    return g


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op, params", CASES)
def test_inferred_shape_is_the_real_shape_and_nothing_is_learned(op, params, shape):
    g = _one_node(op, params, shape)
    out = nas.build(g)(torch.randn(2, *shape))
    assert tuple(out.shape[1:]) == nas.infer_shapes(g)["x"]
    assert nas.count_params(g) == 0 and nas.count_flops(g) == 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op, params", CASES)
def test_source_constructs_the_builders_module(op, params, shape):
    """repr lists every constructor argument (PadShortcut's and Scale's extra_repr too)."""
    import nas.ops_classic

    spec = nas.ops.get_op(op)
    full = resolve_params(op, params)
    expr = spec.source(full, shape)
    built = eval(expr, {"nn": nn, **vars(nas.ops_classic)})
    assert repr(built) == repr(spec.build(full, shape))
    assert "=" in repr(built)  # the arguments show, so equal reprs mean equal modules


def test_lrn_is_torchs_local_response_norm_with_alexnets_constants():
    g = _one_node("lrn", {}, (8, 5, 5))
    assert g.nodes["x"]["params"] == {} and resolve_params("lrn", {}) == {
        "size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    x = torch.randn(2, 8, 5, 5) * 30
    want = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(x)
    torch.testing.assert_close(nas.build(g)(x), want, rtol=0, atol=0)
    assert (want - x / 2 ** 0.75).abs().max() > 1e-3  # the squares count, not only k


@pytest.mark.parametrize("stride", [1, 2, 3, [1, 2, 2]])
def test_pad_shortcut_subsamples_and_appends_zero_channels(stride):
    shape = (3, 5, 7, 8) if isinstance(stride, list) else (3, 7, 8)
    g = _one_node("pad_shortcut", {"stride": stride, "out_channels": 5}, shape)
    x = torch.randn(2, *shape)
    s = stride if isinstance(stride, list) else [stride, stride]
    sub = x[:, :, :: s[0], :: s[1]] if len(shape) == 3 else x[:, :, :: s[0], :: s[1], :: s[2]]
    got = nas.build(g)(x)
    assert torch.equal(got[:, :3], sub) and torch.equal(got[:, 3:], torch.zeros_like(got[:, 3:]))
    # the spatial size is a 'same'-padded conv's at that stride, so the shortcut meets the residual branch
    conv = ArchGraph(shape)
    conv.add_op("x", "conv", "input", out_channels=5, kernel_size=3, stride=stride)
    assert nas.infer_shapes(conv)["x"] == nas.infer_shapes(g)["x"]


def test_scale_multiplies_by_its_factor():
    g = _one_node("scale", {"factor": 0.1}, (3, 4, 4))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(nas.build(g)(x), x * 0.1)


@pytest.mark.parametrize("op, params, shape, needle", [
    ("pad_shortcut", {"out_channels": 2}, (4, 6, 6), "pad_shortcut.out_channels"),
    ("pad_shortcut", {"stride": 0}, (4, 6, 6), "pad_shortcut.stride"),
    ("pad_shortcut", {"stride": [2, 2]}, (4, 6, 6, 6), "pad_shortcut.stride"),
    ("pad_shortcut", {}, (4,), "pad_shortcut"),
    ("pad_shortcut", {"padding": 1}, (4, 6, 6), "takes no parameter"),
    ("lrn", {"size": 0}, (4, 6, 6), "lrn.size"),
    ("lrn", {"k": "two"}, (4, 6, 6), "lrn.k"),
    ("lrn", {}, (4,), "lrn"),
    ("scale", {}, (4, 6, 6), "needs parameter"),
    ("scale", {"factor": True}, (4, 6, 6), "scale.factor"),
])
def test_bad_hyperparameters_name_the_op(op, params, shape, needle):
    with pytest.raises(nas.ArchitectureError, match=needle):
        nas.infer_shapes(_one_node(op, params, shape))


# ---------------------------------------------------------------------------------------------------
# export


def _network() -> ArchGraph:
    """conv-ReLU-LRN, then a residual block whose shortcut is option A and whose branch is scaled."""
    g = ArchGraph((3, 15, 15))
    x = g.add_op("conv1", "conv", "input", out_channels=4, kernel_size=3)
    x = g.add_op("relu1", "relu", x)
    x = g.add_op("norm1", "lrn", x)
    y = g.add_op("conv2", "conv", x, out_channels=8, kernel_size=3, stride=2)
    y = g.add_op("bn2", "bn", y)
    y = g.add_op("scale2", "scale", y, factor=0.3)
    s = g.add_op("shortcut", "pad_shortcut", x, stride=2, out_channels=8)
    x = g.add_op("add", "relu", [y, s], merge="sum")
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=5)
    return g


def _model(g: ArchGraph) -> nn.Module:
    torch.manual_seed(0)
    model = nas.build(g).eval()
    with torch.no_grad():
        model.conv1.weight.mul_(20.0)  # large activations, so LRN's squares matter
        model.bn2.running_mean.normal_(0, 0.2)
        model.bn2.running_var.uniform_(0.5, 1.5)
    return model


def _x() -> torch.Tensor:
    return torch.randn(3, 3, 15, 15, generator=torch.Generator().manual_seed(1))


def test_python_export_round_trips(tmp_path):
    g = _network()
    model = _model(g)
    files = export(g, "python", tmp_path / "net.py", weights=model)
    spec = importlib.util.spec_from_file_location("exported_classic_net", files[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = files[0].read_text()
    assert "class PadShortcut" in source and "class Scale" in source and "nn.LocalResponseNorm(5" in source
    assert "import nas" not in source
    net = module.Net()
    net.load_state_dict(torch.load(files[1], weights_only=True))
    assert net.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(_x()), model(_x()), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_is_scripted_and_matches(tmp_path):
    g = _network()
    model = _model(g)
    path = export(g, "torchscript", tmp_path / "net.pt", weights=model)[0]
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("graphnas_export.json"))))
    assert meta["method"] == "script"
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(_x()), model(_x()), rtol=1e-5, atol=1e-6)


def test_onnx_export_matches(tmp_path):
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(mod)
    import onnxruntime as ort

    g = _network()
    model = _model(g)
    path = export(g, "onnx", tmp_path / "net.onnx", weights=model)[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(np.asarray(session.run(None, {"input": _x().numpy()})[0]))
    with torch.no_grad():
        want = model(_x())
    assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-5


def test_reference_semantics_of_the_test_network():
    """The network above is what it says: the block's output is relu(0.3 * bn(conv(x)) + padded x)."""
    g = _network()
    model = _model(g)
    x = _x()
    with torch.no_grad():
        h = model.norm1(torch.relu(model.conv1(x)))
        y = 0.3 * model.bn2(model.conv2(h))
        s = F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, 0, 4))
        want = model.fc(torch.relu(y + s).mean((2, 3)))
        torch.testing.assert_close(model(x), want)
