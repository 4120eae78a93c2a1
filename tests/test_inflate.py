"""I3D-style inflation (nas.inflate): a clip of identical frames through the inflated network with inflated
weights gives the 2D network's output (small resnet, vgg, inception, densenet, highway networks), temporal
variation matters, padding rules, parameter counts of every preset, metadata round trip, export, errors."""

import functools

import pytest
import torch

import nas
from nas.graph import ArchGraph, ArchitectureError, aux_nodes
from nas.inflate import InflateError, inflate, inflate_model, inflate_state_dict

TOL = 1e-5
FRAMES = 4


def _calibrate_bn(model: torch.nn.Module, shape, seed: int) -> None:
    """Random affine BN parameters, running statistics from a training-mode pass on random inputs, then
    perturbed at random: activations keep their scale through deep networks (at the default initialisation
    with unit running variance, a GoogLeNet's output hardly depends on its input, which would make the
    equality with the 2D network trivial)."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = 1.0
        if m.affine:
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    if bns:
        with torch.no_grad():
            model.train()(torch.randn((8, *shape), generator=gen))
    for m in bns:
        m.running_mean.add_(torch.randn(m.num_features, generator=gen) * 0.1 * m.running_var.sqrt())
        m.running_var.mul_(torch.rand(m.num_features, generator=gen) + 0.5)
    model.eval()


def _resnet(block: str, unit: str, stem: str = "imagenet", **kw) -> nas.ArchGraph:
    a = {"block": block, "unit": unit, "stem": stem, "base_width": 8, "cardinality": 1, "bottleneck_width": 64,
         "depth1": 1, "depth2": 1, "depth3": 1, "depth4": 1, **kw}
    return nas.get_space("resnet").graph(a, num_classes=5, input_shape=(3, 32, 32), partial=True)


def _small(space: str, assignment: dict, shape=(3, 32, 32), **options) -> nas.ArchGraph:
    return nas.get_space(space).graph(assignment, num_classes=5, input_shape=shape, partial=True, **options)


GOOGLENET_SMALL = {"family": "v1", "stem": "imagenet", "width": 0.0625, "depth1": 2, "depth2": 5, "depth3": 2,
                   **{f"stage{s}_{i}_5x5": "5x5" for s, n in ((1, 2), (2, 5), (3, 2)) for i in range(n)}}

CASES = {
    "resnet basic original": lambda: _resnet("basic", "original"),
    "resnet basic preact": lambda: _resnet("basic", "preact"),
    "resnet bottleneck original": lambda: _resnet("bottleneck", "original", cardinality=2, bottleneck_width=32),
    "resnet bottleneck preact": lambda: _resnet("bottleneck", "preact"),
    "resnet basic cifar k5": lambda: _resnet("basic", "original", stem="cifar", kernel_size=5),
    "vgg bn": lambda: _small("vgg", {"batch_norm": True, "depth1": 2, "width1": 8, "width2": 16, "width3": 16,
                                     "avgpool_size": 2, "dropout": 0.5}, (3, 16, 16)),
    "inception v1 (googlenet-like)": lambda: _small("inception", GOOGLENET_SMALL, (3, 32, 32)),
    "inception v3 small": lambda: _small("inception", {"family": "v3", "stem": "small", "width": 0.0625,
                                                       "stage2_n": 3}, (3, 16, 16)),
    "densenet bc imagenet stem": lambda: _small("densenet", {"growth_rate": 4, "num_blocks": 3, "bottleneck": True,
                                                             "init_features": 8, "stem": "imagenet"}),
    "densenet small stem": lambda: _small("densenet", {"growth_rate": 4, "num_blocks": 2, "bottleneck": False,
                                                       "compression": 1.0, "init_features": 8}, (3, 16, 16)),
    "highway conv": lambda: _small("highway", {"kind": "conv", "num_stages": 2, "stage1_width": 8,
                                               "stage2_width": 8}, (3, 16, 16), dropout=0.2, head_channels=8),
    "highway fc": lambda: _small("highway", {"kind": "fc", "num_stages": 1, "stage1_width": 16}, (1, 8, 8)),
}


@functools.cache
def _case(label: str) -> nas.ArchGraph:
    return CASES[label]()


def _model2d(g: nas.ArchGraph, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = nas.build(g)
    for name, p in model.named_parameters():  # He initialisation (signal kept without BN), non-zero biases
        if name.endswith(".bias"):
            p.data.copy_(torch.randn_like(p) * 0.1)
        elif p.dim() > 1:
            torch.nn.init.kaiming_normal_(p)
    _calibrate_bn(model, g.graph["input_shape"], seed)
    return model


def _clip(x: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    return x.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _outputs(g2: nas.ArchGraph, frames: int = FRAMES, seed: int = 0, dtype=torch.float64, **kw):
    """(3D graph, 2D output on x, 3D output on x repeated over `frames` frames), weights inflated in `dtype`."""
    model2 = _model2d(g2, seed).to(dtype)
    g3 = inflate(g2, frames, **kw)
    model3 = nas.build(g3).to(dtype)
    model3.load_state_dict(inflate_state_dict(g2, model2.state_dict(), g3))
    x = torch.randn((2, *g2.graph["input_shape"]), generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    with torch.no_grad():
        y2, y3 = model2(x), model3.eval()(_clip(x, frames))
    assert _max_diff(y2[0], y2[1]) > 1e-2 * y2.abs().max()  # the output depends on the input: not trivial
    return g3, y2, y3


@pytest.mark.parametrize("label", list(CASES))
def test_identical_frames_give_the_2d_output(label):
    """In float64 the two agree to rounding (1e-12 relative here); in float32 to float32 rounding, which BN's
    small running variances amplify to about 1e-5 relative."""
    g2 = _case(label)
    g3, y2, y3 = _outputs(g2)
    assert _max_diff(y3, y2) <= 1e-9 * max(1.0, y2.abs().max().item()), label
    assert g3.graph["input_shape"] == [g2.graph["input_shape"][0], FRAMES, *g2.graph["input_shape"][1:]]
    _, y2, y3 = _outputs(g2, dtype=torch.float32)
    assert _max_diff(y3, y2) <= 1e-4 * max(1.0, y2.abs().max().item()), label


@pytest.mark.parametrize("label", ["resnet bottleneck original", "densenet bc imagenet stem", "vgg bn",
                                   "inception v1 (googlenet-like)"])
def test_temporal_pooling_and_kernels_keep_the_equality(label):
    """pool_time=3 (max and average pools over 3 frames) and time_kernel=3 for every conv (1x1 too)."""
    g3, y2, y3 = _outputs(_case(label), frames=5, seed=3, time_kernel=3, pool_time=3)
    pools = [d["params"]["kernel_size"] for _, d in g3.nodes(data=True) if d["op"] in ("maxpool", "avgpool")]
    assert pools and all(k[0] == 3 for k in pools)
    assert all(d["params"]["kernel_size"][0] == 3 for _, d in g3.nodes(data=True) if d["op"] == "conv")
    assert _max_diff(y3, y2) <= 1e-9 * max(1.0, y2.abs().max().item())


def test_temporal_variation_changes_the_output():
    g2 = _case("resnet basic original")
    model2 = _model2d(g2).double()
    _, model3 = inflate_model(g2, model2, FRAMES)
    model3.double()
    clip = torch.randn((2, 3, FRAMES, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        y = model3.eval()(clip)
        y_rev = model3(clip.flip(2))
        y_shuffled = model3(clip[:, :, [2, 0, 3, 1]])
        per_frame = torch.stack([model2(clip[:, :, i]) for i in range(FRAMES)]).mean(0)
    scale = y.abs().max().item()
    # a frame-averaging network would be invariant to the frames' order and equal to the mean over frames
    assert _max_diff(y, y_shuffled) > 1e-3 * scale
    assert _max_diff(y, per_frame) > 1e-3 * scale
    # but inflated weights are the same at every time offset and the padding is symmetric (odd t), so the
    # network commutes with reversing time, and after global pooling reversal changes nothing (until trained)
    assert _max_diff(y, y_rev) <= TOL * max(1.0, scale)

    # time_kernel=1: every layer works frame by frame, global pooling averages: the mean of 2D outputs
    _, flat = inflate_model(g2, model2, FRAMES, time_kernel=1)
    with torch.no_grad():
        y1 = flat.double().eval()(clip)
        assert _max_diff(y1, per_frame) <= TOL * max(1.0, scale)
        assert _max_diff(y1, flat(clip.flip(2))) <= TOL * max(1.0, scale)


def _single_conv(k: int = 3) -> nas.ArchGraph:
    g = ArchGraph((2, 6, 6))
    g.add_op("conv", "conv", "input", out_channels=3, kernel_size=k, bias=True)
    return g


@pytest.mark.parametrize("time_padding", ["replicate", "reflect"])
@pytest.mark.parametrize("time_kernel", ["same", 2, 5])
def test_padding_gives_the_2d_output_at_every_frame(time_padding, time_kernel):
    g2 = _single_conv()
    model2 = _model2d(g2)
    g3, model3 = inflate_model(g2, model2, 6, time_kernel=time_kernel, time_padding=time_padding)
    t = 3 if time_kernel == "same" else time_kernel
    conv = g3.nodes["conv"]["params"]
    assert conv["kernel_size"] == [t, 3, 3] and conv["stride"] == [1, 1, 1] and conv["padding"] == [0, 1, 1]
    pad = g3.nodes["conv_tpad"]
    assert pad["op"] == "pad" and pad["params"] == {"padding": [[(t - 1) // 2, t // 2], [0, 0], [0, 0]],
                                                    "mode": time_padding}
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        y2, y3 = model2(x), model3(_clip(x, 6))
    assert y3.shape == (2, 3, 6, 6, 6)
    for i in range(6):
        assert _max_diff(y3[:, :, i], y2) <= TOL


def test_zero_padding_is_i3d_exact_away_from_the_ends_only():
    g2 = _single_conv()
    model2 = _model2d(g2)
    g3, model3 = inflate_model(g2, model2, 6, time_padding="zeros")
    assert g3.nodes["conv"]["params"]["padding"] == [1, 1, 1] and "conv_tpad" not in g3
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        y2, y3 = model2(x), model3(_clip(x, 6))
    for i in range(1, 5):
        assert _max_diff(y3[:, :, i], y2) <= TOL
    assert _max_diff(y3[:, :, 0], y2) > 1e-3 and _max_diff(y3[:, :, 5], y2) > 1e-3
    g_even = inflate(g2, 6, time_kernel=2, time_padding="zeros")  # even t: a constant pad node keeps T
    assert g_even.nodes["conv_tpad"]["params"]["mode"] == "constant"
    assert nas.infer_shapes(g_even)["conv"] == (3, 6, 6, 6)


def _conv_weights(g: nas.ArchGraph) -> tuple[dict[str, torch.Size], int]:
    """Each conv's weight shape and the parameter count (one build on the meta device)."""
    with torch.device("meta"):
        model = nas.build(g)
    sd = model.state_dict()
    convs = {n: sd[f"{n}.weight"].shape for n, d in g.nodes(data=True) if d["op"] == "conv"}
    return convs, sum(p.numel() for p in model.parameters())


def _check_conv_params(label: str, g2: nas.ArchGraph, g3: nas.ArchGraph) -> None:
    """Each inflated conv weight is the 2D one with a time axis of t (t = k, min(k) if not square); every
    other parameter is unchanged."""
    (w2, params2), (w3, params3) = _conv_weights(g2), _conv_weights(g3)
    assert set(w2) == set(w3), label
    extra = 0
    for n, shape in w2.items():
        t, k = g3.nodes[n]["params"]["kernel_size"][0], shape[2:]
        assert t == (k[0] if k[0] == k[1] else min(k)), (label, n)
        assert w3[n] == (*shape[:2], t, *k), (label, n)
        extra += (t - 1) * shape.numel()
    assert params3 == params2 + extra, label


PRESETS = [(space, preset) for space in ("vgg", "resnet", "inception", "densenet", "highway")
           for preset in nas.get_space(space).presets]
COUNTED = {("vgg", "vgg16_bn"), ("resnet", "resnet50"), ("resnet", "preact_resnet18"), ("inception", "googlenet"),
           ("inception", "inception_v3"), ("densenet", "densenet121"), ("highway", "highway_cifar10_19"),
           ("highway", "highway_fc_10")}


def test_every_preset_inflates():
    """Every preset of the image spaces (and inception's with aux heads) inflates to a valid graph with the 2D
    output shape and conv kernels t x k x k; the parameter rule is checked on a few of each space (building
    all of them, even on the meta device, takes seconds)."""
    assert len(PRESETS) >= 8 + 17 + 3 + 6 + 5
    inception = nas.get_space("inception")
    graphs = [(f"{space} {preset}", (space, preset), nas.get_space(space).graph(preset=preset))
              for space, preset in PRESETS]
    graphs += [(f"inception {p} aux", None, inception.graph(preset=p, aux_logits=True))
               for p in ("googlenet", "inception_v3")]
    for label, key, g2 in graphs:
        g3 = inflate(g2, 8)
        s2, s3 = nas.infer_shapes(g2), nas.infer_shapes(g3)
        assert s3[g3.output_node] == s2[g2.output_node], label
        for n, d in g2.nodes(data=True):
            assert g3.nodes[n]["op"] == d["op"] and bool(g3.nodes[n].get("aux")) == bool(d.get("aux")), (label, n)
            if len(s2[n]) == 3:
                # T frames everywhere, 1 after an adaptive pool (VGG's head, GoogLeNet's aux heads)
                assert s3[n][:1] + s3[n][2:] == s2[n] and s3[n][1] in (1, 8), (label, n)
            else:
                assert s3[n] == s2[n], (label, n)
        if "highway_fc" in label:  # flattens its input: the clip's mean over time first
            assert g3.nodes["flatten_tmean"]["params"] == {"output_size": [1, 28, 28]}, label
        if key in COUNTED or key is None and "googlenet" in label:
            _check_conv_params(label, g2, g3)


@pytest.mark.parametrize("label", ["resnet bottleneck preact", "inception v3 small", "densenet small stem"])
def test_conv_params_grow_by_t_on_small_networks(label):
    _check_conv_params(label, _case(label), inflate(_case(label), FRAMES))


def test_metadata_and_round_trip(tmp_path):
    g2 = nas.get_space("inception").graph(preset="googlenet", num_classes=7, input_shape=(3, 64, 64))
    g3 = inflate(g2, 8)
    origin = g3.graph["inflated_from"]
    assert origin["space"] == "inception" and origin["preset"] == "googlenet"
    assert origin["assignment"] == g2.graph["assignment"] and origin["input_shape"] == [3, 64, 64]
    assert origin["arch_id"] == nas.arch_id(g2)
    assert g3.graph["inflation"] == {"method": "i3d", "frames": 8, "time_kernel": "same",
                                     "time_padding": "replicate", "pool_time": 1}
    assert g3.graph["num_classes"] == 7 and "space" not in g3.graph and "assignment" not in g3.graph
    assert g3.graph["input_shape"] == [3, 8, 64, 64]
    path = nas.save_architecture(g3, tmp_path / "i3d.json")
    back = nas.load_architecture(path)
    assert nas.arch_id(back) == nas.arch_id(g3) and back.graph == nas.from_json(nas.to_json(g3)).graph
    assert nas.to_json(back) == nas.to_json(g3)
    assert nas.arch_id(inflate(g2, 8)) == nas.arch_id(g3)  # deterministic
    assert nas.arch_id(inflate(g2, 4)) != nas.arch_id(g3)
    assert "space" in g2.graph and g2.graph["input_shape"] == [3, 64, 64]  # the 2D graph is untouched


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    from nas.export.verify import FreshInterpreter

    with FreshInterpreter(tmp_path_factory.mktemp("fresh")) as interpreter:
        yield interpreter


def test_export_python_matches_in_a_fresh_interpreter(fresh, tmp_path):
    from nas.export import export
    from nas.export.verify import reference_outputs

    cases = [("resnet", _case("resnet bottleneck preact")),
             ("googlenet aux", _small("inception", GOOGLENET_SMALL, (3, 32, 32), aux_logits=True))]
    for i, (label, g2) in enumerate(cases):
        g3, model3 = inflate_model(g2, _model2d(g2, seed=i), FRAMES, pool_time=3 if i else 1)
        folder = tmp_path / f"case{i}"
        files = export(g3, "python", folder / "net.py", weights=model3)
        assert "nn.ReplicationPad3d" in files[0].read_text() and "nn.Conv3d" in files[0].read_text()
        x = torch.randn((2, *g3.graph["input_shape"]), generator=torch.Generator().manual_seed(i))
        torch.save(reference_outputs(model3, x, training=bool(aux_nodes(g3))), folder / "ref.pt")
        fresh.submit(id=f"inflated-{i}", model=files[0], weights=files[1], reference=folder / "ref.pt")
        r = fresh.result()
        assert "error" not in r, (label, r)
        assert r["keys_equal"] and r["params"] == nas.count_params(g3) and r["eval_diff"] <= TOL, (label, r)
        if aux_nodes(g3):
            assert r["aux_count"] == 2 and r["train_diff"] <= TOL and r["aux_diff"] <= TOL, (label, r)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_torchscript(tmp_path):
    """(ONNX: the same graph exports and matches, checked by hand; it is left out because the exporter takes
    seconds to start. A non-global adaptive_avgpool, as in VGG's head, does not export to ONNX in 3D.)"""
    from nas.export import export

    g2 = ArchGraph((3, 12, 12))  # every kind of inflated node
    x = g2.add_op("conv1", "conv", "input", out_channels=4, kernel_size=3, stride=2, bias=True)
    x = g2.add_op("relu1", "relu", g2.add_op("bn1", "bn", x))
    y = g2.add_op("conv2", "conv", x, out_channels=4, kernel_size=5)
    x = g2.add_op("pool", "maxpool", [x, y], merge="sum", kernel_size=3, stride=2, padding=1)
    x = g2.add_op("avg", "avgpool", x, kernel_size=3, stride=1, padding=1)
    g2.add_op("fc", "linear", g2.add_op("gap", "global_avgpool", x), out_features=3)
    g3, model3 = inflate_model(g2, _model2d(g2), FRAMES, pool_time=2)
    assert {"conv1_tpad", "conv2_tpad", "pool_tpad", "avg_tpad"} <= set(g3)
    x = torch.randn((2, *g3.graph["input_shape"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model3.eval()(x)
        export(g3, "torchscript", tmp_path / "net.pt", weights=model3)
        assert _max_diff(torch.jit.load(str(tmp_path / "net.pt"))(x), want) <= TOL


# -- errors --------------------------------------------------------------------------------------------


def test_a_graph_that_is_not_2d_raises():
    g3 = inflate(_single_conv(), 4)
    with pytest.raises(InflateError, match=r"input_shape \[2, 4, 6, 6\] is already a \(C, T, H, W\) video"):
        inflate(g3, 4)
    seq = ArchGraph((2, 10))
    seq.add_op("conv", "conv", "input", out_channels=3, kernel_size=3)
    with pytest.raises(InflateError, match=r"\(C, L\) sequence"):
        inflate(seq, 4)
    clip = nas.get_space("timeception").graph(preset="digits_avgpool")
    with pytest.raises(InflateError, match="already a"):
        inflate(clip, 4)
    assert issubclass(InflateError, ArchitectureError)


def test_ops_without_a_rule_name_the_node_and_op():
    darts = nas.get_space("darts").graph(preset="darts_v2", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(InflateError, match=r"node '[A-Za-z0-9_]+' \(op '(sep_conv|dil_conv|factorized_reduce|"
                                           r"relu_conv_bn)'\) cannot be inflated.*nas.ops_cells"):
        inflate(darts, 4)
    g = ArchGraph((4, 8, 8))
    g.add_op("cell_edge", "relu_conv_bn", "input", out_channels=4, kernel_size=3)
    with pytest.raises(InflateError, match=r"node 'cell_edge' \(op 'relu_conv_bn'\) cannot be inflated"):
        inflate(g, 4)
    g = ArchGraph((4, 8, 8))
    g.add_op("skip", "zero", "input", stride=2)
    with pytest.raises(InflateError, match=r"node 'skip' \(op 'zero'\).*strided"):
        inflate(g, 4)
    g = ArchGraph((4, 8, 8))
    g.add_op("none", "zero", "input")  # stride 1 zeros are rank-generic
    assert nas.infer_shapes(inflate(g, 4))["none"] == (4, 4, 8, 8)


def test_bad_arguments_and_mismatched_weights():
    g2 = _single_conv()
    for kw, msg in (({"frames": 0}, "frames must be an int >= 1"),
                    ({"frames": 4, "time_kernel": 0}, "time_kernel must be an int >= 1"),
                    ({"frames": 4, "time_padding": "circular"}, "time_padding must be one of"),
                    ({"frames": 4, "pool_time": 0}, "pool_time must be an int >= 1"),
                    ({"frames": 4, "time_kernel": lambda n, k: 0}, "time_kernel returned 0 for node 'conv'")):
        with pytest.raises(InflateError, match=msg):
            inflate(g2, **kw)
    with pytest.raises(InflateError, match="reflect"):  # reflect padding needs more frames than it pads
        inflate(_single_conv(7), 2, time_padding="reflect")
    g3 = inflate(g2, 4, time_kernel=lambda n, k: 2)
    assert g3.nodes["conv"]["params"]["kernel_size"] == [2, 3, 3] and g3.graph["inflation"]["time_kernel"] == "custom"
    state = _model2d(g2).state_dict()
    with pytest.raises(InflateError, match=r"missing keys \['conv.bias'\]"):
        inflate_state_dict(g2, {"conv.weight": state["conv.weight"]}, g3)
    with pytest.raises(InflateError, match="inflated from architecture"):
        inflate_state_dict(_single_conv(5), state, g3)
    assert set(inflate_state_dict(g2, state, g3)) == {"conv.weight", "conv.bias"}
