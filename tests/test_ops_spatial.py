"""The ops of nas.ops_spatial (stn, upsample, conv_transpose), nas.ops_roi (roi_pool) and l2_normalize:
inferred shapes are the modules' real outputs, each computes what its definition says (ROI pooling against
a direct loop implementation), parameters and multiply-accumulates are counted, bad hyperparameters name
the op, and a network using them exports to TorchScript and ONNX with the built model's outputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.export import export
from nas.graph import ArchGraph, ArchitectureError
from nas.ops import resolve_params
from nas.ops_roi import roi_pool_loop

ONE_INPUT = [
    ("stn", {}, (1, 12, 12)), ("stn", {"channels": 4, "hidden": 8, "grad_scale": 1.0}, (3, 9, 7)),
    ("stn", {}, (2, 1, 3)), ("stn", {"norm": False, "downsample": 2}, (1, 12, 12)),
    ("stn", {"norm": True, "downsample": 3}, (2, 7, 4)),
    ("upsample", {"scale_factor": 2}, (3, 5)), ("upsample", {"scale_factor": [2, 3]}, (3, 5, 4)),
    ("upsample", {"scale_factor": 2, "mode": "linear"}, (3, 5, 4)),
    ("upsample", {"scale_factor": [1, 2, 2], "mode": "linear"}, (2, 3, 4, 5)),
    ("conv_transpose", {"out_channels": 5, "kernel_size": 3}, (3, 6)),
    ("conv_transpose", {"out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1, "bias": True}, (3, 5, 6)),
    ("conv_transpose", {"out_channels": 3, "kernel_size": 16, "stride": 8, "padding": 4, "init": "bilinear"},
     (3, 4, 4)),
    ("conv_transpose", {"out_channels": 6, "kernel_size": 3, "stride": 2, "output_padding": 1, "groups": 3},
     (3, 5, 6)),
    ("conv_transpose", {"out_channels": 2, "kernel_size": [1, 4, 4], "stride": [1, 2, 2], "padding": [0, 1, 1]},
     (2, 3, 4, 5)),
    ("l2_normalize", {}, (7,)), ("l2_normalize", {}, (4, 3, 3)),
]


def _one_node(op: str, params: dict, shape: tuple[int, ...]) -> ArchGraph:
    g = ArchGraph(shape)
    g.add_op("n", op, "input", **params)
    return g


def _roi_graph(shape=(3, 9, 11), boxes=5, output_size=(2, 3), stride=2) -> ArchGraph:
    g = ArchGraph(shape)
    g.add_input("boxes", (boxes, 4))
    g.add_op("pool", "roi_pool", ["input", "boxes"], output_size=list(output_size), stride=stride)
    return g


@pytest.mark.parametrize("op, params, shape", ONE_INPUT)
def test_inferred_shape_is_the_real_shape_and_the_source_builds_the_same_module(op, params, shape):
    import nas.ops_classic
    import nas.ops_spatial

    g = _one_node(op, params, shape)
    y = nas.build(g)(torch.randn(2, *shape))
    assert tuple(y.shape[1:]) == nas.infer_shapes(g)["n"]
    spec = nas.ops.get_op(op)
    full = resolve_params(op, params)
    src = spec.source(full, shape)
    expr = src if isinstance(src, str) else src[0]
    built = eval(expr, {"nn": nn, "torch": torch, **vars(nas.ops_spatial), **vars(nas.ops_classic)})
    assert repr(built) == repr(spec.build(full, shape))


def test_stn_starts_as_the_identity_and_learns_a_transform():
    g = _one_node("stn", {}, (1, 16, 16))
    model = nas.build(g)
    x = torch.rand(4, 1, 16, 16)
    stn = model.n
    torch.testing.assert_close(stn.theta(x), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3))
    torch.testing.assert_close(model(x), x, atol=1e-5, rtol=0)  # the identity grid samples pixel centres
    # a shift of the bias shifts the image: theta's translation is in units of half the side
    with torch.no_grad():
        stn.fc[-1].bias.copy_(torch.tensor([1.0, 0, 0.25, 0, 1.0, 0]))
    moved = model(x)
    torch.testing.assert_close(moved[..., :-2], x[..., 2:], atol=1e-5, rtol=0)  # 0.25 * 8 = 2 pixels
    weights = torch.rand_like(moved)
    (moved * weights).sum().backward()  # the output's gradient reaches the transform's layer, scaled
    assert stn.fc[-1].weight.grad.abs().sum() > 0
    scaled = stn.fc[-1].weight.grad.clone()
    stn.zero_grad()
    stn.grad_scale = 1.0
    (model(x) * weights).sum().backward()
    torch.testing.assert_close(scaled, 0.1 * stn.fc[-1].weight.grad)


def test_stn_counts_its_localisation_network():
    g = _one_node("stn", {"channels": 8, "hidden": 32, "norm": False}, (1, 32, 32))
    # conv 1->8 5x5 (+bias), conv 8->8 5x5 (+bias), two 2x2 pools: 8x8x8 -> fc 32 -> fc 6
    assert nas.count_params(g) == (25 * 8 + 8) + (25 * 64 + 8) + (512 * 32 + 32) + (32 * 6 + 6)
    assert nas.count_flops(g) == 32 * 32 * 8 * 25 + 16 * 16 * 8 * 8 * 25 + 512 * 32 + 32 * 6
    # batch norm instead of the convolutions' and the hidden layer's biases, on a 2x average-pooled input:
    # 16x16 -> 8x8 -> 4x4
    g = _one_node("stn", {"channels": 8, "hidden": 32, "norm": True, "downsample": 2}, (1, 32, 32))
    assert nas.count_params(g) == (25 * 8 + 16) + (25 * 64 + 16) + (128 * 32 + 64) + (32 * 6 + 6)
    assert nas.count_flops(g) == 16 * 16 * 8 * 25 + 8 * 8 * 8 * 8 * 25 + 128 * 32 + 32 * 6


def test_upsample_is_interpolate():
    x = torch.randn(2, 3, 5, 4)
    for mode, torch_mode in (("nearest", "nearest"), ("linear", "bilinear")):
        got = nas.build(_one_node("upsample", {"scale_factor": [2, 3], "mode": mode}, (3, 5, 4)))(x)
        kw = {} if mode == "nearest" else {"align_corners": False}
        torch.testing.assert_close(got, F.interpolate(x, scale_factor=(2.0, 3.0), mode=torch_mode, **kw))


def test_conv_transpose_bilinear_init_interpolates_and_counts():
    g = _one_node("conv_transpose", {"out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1,
                                     "init": "bilinear"}, (3, 6, 7))
    x = torch.randn(2, 3, 6, 7)
    got = nas.build(g)(x)
    want = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-6, rtol=0)  # borders differ
    assert nas.count_params(g) == 3 * 3 * 16
    assert nas.count_flops(g) == 3 * 6 * 7 * 3 * 16  # every input value scatters into 3 channels x 4x4
    grouped = _one_node("conv_transpose", {"out_channels": 6, "kernel_size": 3, "groups": 3}, (3, 5, 6))
    assert nas.count_flops(grouped) == 3 * 5 * 6 * 2 * 9


def test_l2_normalize_gives_unit_vectors():
    x = torch.randn(5, 7) * 3
    y = nas.build(_one_node("l2_normalize", {}, (7,)))(x)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(y * x.norm(dim=1, keepdim=True), x)


def _random_boxes(n: int, r: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """Boxes of every kind: inside, partly and wholly outside the image, degenerate (x2 < x1), fractional."""
    xy = torch.rand(n, r, 2, generator=gen) * (side + 10) - 5
    wh = torch.rand(n, r, 2, generator=gen) * side * 0.8 - 2
    return torch.cat([xy, xy + wh], -1)


@pytest.mark.parametrize("shape, output_size, stride", [((3, 9, 11), (2, 3), 2), ((2, 16, 16), (4, 4), 1),
                                                        ((4, 5, 7), (3, 2), 4), ((1, 6, 6), (7, 7), 1)])
def test_roi_pool_equals_the_loop_definition(shape, output_size, stride):
    gen = torch.Generator().manual_seed(sum(shape) + stride)
    g = _roi_graph(shape, 6, output_size, stride)
    x = torch.randn(3, *shape, generator=gen)
    boxes = _random_boxes(3, 6, shape[1] * stride, gen)
    got = nas.build(g)(x, boxes)
    want = roi_pool_loop(x.numpy(), boxes.numpy(), *output_size, stride)
    assert tuple(got.shape[1:]) == nas.infer_shapes(g)["pool"] == (shape[0], 6, *output_size)
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want == 0).any() and (want != 0).any()  # some cells empty (boxes outside), most not


def test_roi_pool_by_hand_and_its_gradient():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).requires_grad_()
    boxes = torch.tensor([[[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]]])  # the whole map; its lower right 2x2
    y = nas.build(_roi_graph((1, 4, 4), 2, (2, 2), 1))(x, boxes)
    assert y[0, 0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert y[0, 0, 1].tolist() == [[10.0, 11.0], [14.0, 15.0]]
    y.sum().backward()
    assert x.grad.flatten().tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 2]


def test_bad_hyperparameters_and_inputs_name_the_op():
    cases = [
        (("stn", {}, (3, 8)), "op 'stn' needs an image input"),
        (("stn", {"hidden": 0}, (1, 8, 8)), "stn.hidden must be an int >= 1"),
        (("stn", {"grad_scale": 0}, (1, 8, 8)), r"stn.grad_scale must be a number in \(0, 1\]"),
        (("stn", {"norm": 1}, (1, 8, 8)), "stn.norm must be true or false"),
        (("stn", {"downsample": 9}, (1, 8, 8)), "stn.downsample 9 is larger than the input's side"),
        (("upsample", {"scale_factor": 0}, (1, 8, 8)), "upsample.scale_factor must be >= 1"),
        (("upsample", {"scale_factor": 2, "mode": "cubic"}, (1, 8, 8)), "upsample.mode must be one of"),
        (("conv_transpose", {"out_channels": 4, "kernel_size": 4, "init": "bilinear"}, (3, 8, 8)),
         "init='bilinear' needs as many out_channels as input channels"),
        (("conv_transpose", {"out_channels": 3, "kernel_size": 3, "output_padding": 1}, (3, 8, 8)),
         "output_padding must be >= 0 and smaller than stride"),
        (("l2_normalize", {"eps": -1}, (4,)), "l2_normalize.eps must be a positive number"),
    ]
    for (op, params, shape), message in cases:
        with pytest.raises(ArchitectureError, match=message):
            nas.infer_shapes(_one_node(op, params, shape))
    g = ArchGraph((3, 8, 8))
    g.add_input("boxes", (5, 3))
    g.add_op("pool", "roi_pool", ["input", "boxes"], output_size=2)
    with pytest.raises(ArchitectureError, match=r"second input must be boxes \(R, 4\)"):
        nas.infer_shapes(g)
    g = ArchGraph((3, 8, 8))
    g.add_input("boxes", (5, 4))
    g.add_op("pool", "roi_pool", ["input", "boxes"], merge="concat", output_size=2)
    with pytest.raises(ArchitectureError, match="node 'pool'.*takes 2 inputs as separate arguments"):
        nas.infer_shapes(g)
    g = ArchGraph((3, 8, 8))
    g.add_op("pool", "roi_pool", "input", output_size=2)
    with pytest.raises(ArchitectureError, match=r"takes 2 inputs .* got 1 input"):
        nas.infer_shapes(g)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_network_of_the_new_ops_exports_to_torchscript_and_onnx(tmp_path):
    """stn, conv, upsample, conv_transpose and l2_normalize on an image, and ROI pooling of its features."""
    g = ArchGraph((1, 16, 16))
    g.add_input("boxes", (3, 4))
    x = g.add_op("stn", "stn", "input", channels=4, hidden=8, downsample=2)
    x = g.add_op("conv", "conv", x, out_channels=4, kernel_size=3, stride=2)
    x = g.add_op("up", "upsample", x, scale_factor=2, mode="linear")
    x = g.add_op("deconv", "conv_transpose", x, out_channels=4, kernel_size=4, stride=2, padding=1,
                 init="bilinear")
    x = g.add_op("norm", "l2_normalize", x)
    g.add_op("pool", "roi_pool", [x, "boxes"], output_size=2, stride=2)
    torch.manual_seed(0)
    model = nas.build(g).eval()
    with torch.no_grad():
        model.stn.fc[-1].weight.normal_(0, 0.1)  # a transform that is not the identity
    gen = torch.Generator().manual_seed(1)
    image, boxes = torch.randn(3, 1, 16, 16, generator=gen), _random_boxes(3, 3, 32, gen)
    with torch.no_grad():
        want = model(image, boxes)
    script = export(g, "torchscript", tmp_path / "net.pt", weights=model)[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(script))(image, boxes), want, atol=1e-5, rtol=0)
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        import onnxruntime as ort

        path = export(g, "onnx", tmp_path / "net.onnx", weights=model)[0]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": image.numpy(), "boxes": boxes.numpy()})[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
