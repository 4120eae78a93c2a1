"""The video ops (nas.ops_video): shapes and their errors, modules against plain torch, export source."""

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.graph import ArchGraph, ArchitectureError
from nas.ops import OpError, get_op, resolve_params


def _run(op: str, x: torch.Tensor, **params) -> torch.Tensor:
    p = resolve_params(op, params)
    shape = tuple(x.shape[1:])
    out_shape = get_op(op).shape(p, shape)
    y = get_op(op).build(p, shape)(x)
    assert tuple(y.shape[1:]) == tuple(out_shape)
    return y


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1, 1).expand(2, 6, 3, 2, 2)
    y = _run("channel_shuffle", x, groups=2)
    assert y[0, :, 0, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]  # (2 groups of 3) -> (3 of 2)
    assert torch.equal(_run("channel_shuffle", y, groups=3), x)  # shuffling back with the other factor
    assert _run("channel_shuffle", torch.randn(2, 8, 5), groups=4).shape == (2, 8, 5)


def test_channel_shuffle_errors():
    with pytest.raises(OpError, match=r"groups=4 needs the channels \(6\) divisible"):
        get_op("channel_shuffle").shape({"groups": 4}, (6, 2, 3, 3))
    with pytest.raises(OpError, match="channel_shuffle.groups must be an int >= 1"):
        get_op("channel_shuffle").shape({"groups": 0}, (6, 2, 3, 3))
    with pytest.raises(OpError, match=r"\(C, T, H, W\) input, got shape \(6,\)"):
        get_op("channel_shuffle").shape({"groups": 2}, (6,))


def test_channel_slices_split_and_concat_back():
    g = ArchGraph((6, 4, 3, 3))
    parts = [g.add_op(f"g{i}", "channel_slice", "input", start=2 * i, stop=2 * i + 2) for i in range(3)]
    g.add_op("out", "identity", parts, merge="concat")
    assert nas.infer_shapes(g)["g1"] == (2, 4, 3, 3)
    x = torch.randn(2, 6, 4, 3, 3)
    assert torch.equal(nas.build(g)(x), x)
    assert torch.equal(_run("channel_slice", x, start=1, stop=4), x[:, 1:4])


@pytest.mark.parametrize("start, stop", [(0, 0), (3, 2), (0, 7), (-1, 2)])
def test_channel_slice_errors(start, stop):
    with pytest.raises(OpError, match="channel_slice"):
        get_op("channel_slice").shape({"start": start, "stop": stop}, (6, 4, 3, 3))


def test_pad_replicates_the_first_time_step():
    x = torch.randn(2, 3, 5, 4, 4)
    y = _run("pad", x, padding=[[1, 0], [0, 0], [0, 0]], mode="replicate")
    assert y.shape == (2, 3, 6, 4, 4) and torch.equal(y[:, :, 0], x[:, :, 0]) and torch.equal(y[:, :, 1:], x)
    y = _run("pad", x, padding=[[0, 2], [1, 1], [0, 0]], value=-1.0)
    assert torch.equal(y, F.pad(x, (0, 0, 1, 1, 0, 2), value=-1.0))
    y = _run("pad", x, padding=[[2, 1], [0, 0], [1, 0]], mode="reflect")
    assert torch.equal(y, F.pad(x, (1, 0, 0, 0, 2, 1), mode="reflect"))
    assert _run("pad", torch.randn(2, 3, 7), padding=[[1, 2]]).shape == (2, 3, 10)


def test_pad_errors():
    spec = get_op("pad")
    with pytest.raises(OpError, match=r"\[before, after\] for each of the input's 3 dimension\(s\) T, H, W"):
        spec.shape(resolve_params("pad", {"padding": [[1, 0]]}), (3, 5, 4, 4))
    with pytest.raises(OpError, match="pad.mode must be one of"):
        spec.shape(resolve_params("pad", {"padding": [[1, 0]], "mode": "wrap"}), (3, 5))
    with pytest.raises(OpError, match="smaller than its dimension"):
        spec.shape(resolve_params("pad", {"padding": [[5, 0]], "mode": "reflect"}), (3, 5))
    with pytest.raises(OpError, match="pad.padding must be an int >= 0"):
        spec.shape(resolve_params("pad", {"padding": [[-1, 0]]}), (3, 5))


def test_global_maxpool_and_leaky_relu():
    x = torch.randn(3, 4, 5, 2, 2)
    assert torch.equal(_run("global_maxpool", x), x.amax(dim=(2, 3, 4)))
    assert torch.equal(_run("leaky_relu", x, negative_slope=0.2), F.leaky_relu(x, 0.2))
    with pytest.raises(OpError, match="negative_slope"):
        get_op("leaky_relu").shape({"negative_slope": 2}, (4,))
    with pytest.raises(OpError, match="global_maxpool"):
        get_op("global_maxpool").shape({}, (4,))


def test_graph_errors_name_the_node():
    g = ArchGraph((6, 4, 3, 3))
    g.add_op("tc1_shuffle", "channel_shuffle", "input", groups=4)
    with pytest.raises(ArchitectureError, match="node 'tc1_shuffle'.*divisible"):
        nas.infer_shapes(g)


def test_temporal_convs_are_core_ops_with_macs():
    """Temporal depthwise conv (k, 1, 1) and temporal max pooling are the core ops, rank-generic."""
    g = ArchGraph((8, 10, 3, 3))
    y = g.add_op("dw", "conv", "input", out_channels=8, kernel_size=[3, 1, 1], dilation=[2, 1, 1], groups=8,
                 bias=True)
    g.add_op("pool", "maxpool", y, kernel_size=[2, 1, 1])
    assert nas.infer_shapes(g)["pool"] == (8, 5, 3, 3)
    assert nas.count_flops(g) == 8 * 10 * 3 * 3 * 3  # one MAC per output and kernel tap
    assert nas.count_params(g) == 8 * 3 + 8


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_ops_export_as_python(tmp_path):
    g = ArchGraph((6, 5, 3, 3))
    s = g.add_op("shuffle", "channel_shuffle", "input", groups=3)
    a = g.add_op("a", "channel_slice", s, start=0, stop=2)
    b = g.add_op("b", "channel_slice", s, start=2, stop=6)
    b = g.add_op("b_pool", "maxpool", b, kernel_size=[2, 1, 1], stride=1)
    b = g.add_op("b_pad", "pad", b, padding=[[1, 0], [0, 0], [0, 0]], mode="replicate")
    x = g.add_op("cat", "leaky_relu", [a, b], merge="concat", negative_slope=0.2)
    x = g.add_op("gmp", "global_maxpool", x)
    g.add_op("fc", "linear", x, out_features=3)
    torch.manual_seed(0)
    model = nas.build(g).eval()
    path = nas.export(g, "python", tmp_path / "net.py", weights=model)[0]
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    net = namespace["Net"]()
    net.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 5, 3, 3)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model(x))
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x))
