"""Highway space: the gate computes H*T + x*(1-T), the gate bias starts where asked, deep nets train,
preset sizes follow from the paper's / the released code's layer lists, random assignments, errors."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nas
from search_spaces.highway import highway_space

SPACE = highway_space()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one thread is faster, and far faster on a shared, busy machine (two
    threads spin-waiting on each other's many small ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _act(name: str):
    return {"relu": torch.relu, "tanh": torch.tanh}[name]


@pytest.mark.parametrize("kind, activation", [("fc", "tanh"), ("conv", "relu")])
def test_gate_computes_h_times_t_plus_x_times_carry(kind, activation):
    a = {"kind": kind, "num_stages": 1, "stage1_layers": 1, "stage1_width": 8, "activation": activation,
         "kernel_size": 3, "gate_kernel_size": 1, "gate_bias": -1.0}
    torch.manual_seed(0)
    model = nas.build(SPACE.graph(a, partial=True)).eval()
    inp = torch.randn(4, *SPACE.input_shape)
    act = _act(activation)
    if kind == "fc":
        def layer(name, x):
            return F.linear(x, model.get_submodule(f"{name}_linear").weight, model.get_submodule(f"{name}_linear").bias)
        x = inp.flatten(1)
    else:
        def layer(name, x):
            conv = model.get_submodule(f"{name}_conv")
            return F.conv2d(x, conv.weight, conv.bias, padding=conv.weight.shape[-1] // 2)
        x = inp
    x = act(layer("stage1_plain", x))
    h = act(layer("stage1_hw1_h", x))
    t = torch.sigmoid(layer("stage1_hw1_t", x))
    y = h * t + x * (1 - t)
    if kind == "conv":
        y = y.mean((2, 3))
    expected = F.linear(y, model.classifier.weight, model.classifier.bias)
    torch.testing.assert_close(model(inp), expected)
    assert 0.05 < t.mean() < 0.5  # sigmoid(-1 + noise): the gate really is partly open and partly closed


@pytest.mark.parametrize("kind", ["fc", "conv"])
@pytest.mark.parametrize("bias", [-1.0, -3.0])
def test_gate_bias_is_initialised_to_the_chosen_value(kind, bias):
    g = SPACE.graph({"kind": kind, "gate_bias": bias, "num_stages": 2}, partial=True)
    model = nas.build(g)
    gates = [n for n in g if n.endswith(("_t_linear", "_t_conv"))]
    assert len(gates) == 4
    for n in gates:
        assert g.nodes[n]["params"]["bias_init"] == bias
        assert torch.equal(model.get_submodule(n).bias, torch.full_like(model.get_submodule(n).bias, bias))
    h = model.get_submodule(gates[0].replace("_t_", "_h_"))
    assert not torch.equal(h.bias, torch.full_like(h.bias, bias))


@pytest.mark.parametrize("kind, width", [("fc", 50), ("conv", 8)])
def test_fifty_layer_highway_net_trains_without_nan(kind, width):
    # the paper's count: a plain first layer + 49 highway layers
    a = {"kind": kind, "num_stages": 1, "stage1_layers": 49, "stage1_width": width}
    torch.manual_seed(0)
    model = nas.build(SPACE.graph(a, partial=True))
    x, y = torch.randn(16, *SPACE.input_shape), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


@pytest.mark.parametrize("depth", [10, 20, 50, 100])
def test_fc_presets_follow_the_paper(depth):
    g = SPACE.graph(preset=f"highway_fc_{depth}")
    # first plain layer 784 -> 50, (depth - 1) highway layers of 50 blocks (H and T: 50x50 + 50 each), softmax
    per_highway_layer = 2 * (50 * 50 + 50)
    assert nas.count_params(g) == (784 * 50 + 50) + (depth - 1) * per_highway_layer + (50 * 10 + 10)
    assert abs(per_highway_layer - 5000) / 5000 < 0.05  # "roughly identical numbers of parameters (~5000)"
    out = nas.build(g)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_cifar_preset_follows_the_released_definition():
    g = SPACE.graph(preset="highway_cifar10_19")

    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    layers = [conv(3, 32, 3), *[2 * conv(32, 32, 3)] * 4, conv(32, 80, 3), *[2 * conv(80, 80, 3)] * 5,
              conv(80, 128, 3), *[2 * conv(128, 128, 3)] * 5, conv(128, 100, 1), 100 * 10 + 10]
    assert len(layers) == 19
    n = nas.count_params(g)
    assert n == sum(layers)
    assert round(n / 1e6, 1) == 2.3  # Table 2: 19-layer Highway B, ~2.3M
    shapes = nas.infer_shapes(g)
    assert shapes["stage3_hw5"] == (128, 8, 8) and shapes["classifier"] == (10,)
    model = nas.build(g)
    F.cross_entropy(model(torch.randn(1, 3, 32, 32)), torch.tensor([3])).backward()


def test_default_is_small_and_learns_digits():
    from sklearn.datasets import load_digits

    g = SPACE.graph(partial=True)
    assert nas.count_params(g) < 50_000
    digits = load_digits()
    x = torch.tensor(digits.images[:256], dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target[:256])
    torch.manual_seed(0)
    model = nas.build(g)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(30):
        idx = torch.arange(step * 64, step * 64 + 64) % 256
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_random_assignments_build_run_and_round_trip():
    for seed in range(8):
        a = SPACE.sample(random.Random(seed))
        g = SPACE.graph(a)
        model = nas.build(g)
        out = model(torch.randn(2, *SPACE.input_shape))
        assert out.shape == (2, SPACE.num_classes) and torch.isfinite(out).all()
        out.sum().backward()
        back = nas.from_json(nas.to_json(g))
        assert nas.arch_id(back) == nas.arch_id(g)
        assert back.graph["assignment"] == a


def test_small_inputs_stop_pooling():
    g = SPACE.graph({"kind": "conv", "num_stages": 3}, partial=True, input_shape=(1, 2, 2))
    assert "pool1" in g and "pool2" not in g
    assert nas.infer_shapes(g)["stage3_hw2"] == (16, 1, 1)


def test_options_add_dropout_and_head():
    g = SPACE.graph({"kind": "conv", "num_stages": 2}, partial=True, dropout=0.3, head_channels=12)
    assert [n for n in nas.graph.topological_order(g) if g.nodes[n]["op"] == "dropout"] == [
        "stage1_dropout", "stage2_dropout", "head_dropout"]
    assert g.nodes["head_conv"]["params"]["kernel_size"] == 1
    assert nas.infer_shapes(g)["pool"] == (12,)


def test_bad_values_raise_space_errors_naming_the_variable():
    with pytest.raises(nas.SpaceError, match="'gate_bias'"):
        SPACE.graph({"gate_bias": -7.0}, partial=True)
    with pytest.raises(nas.SpaceError, match="'kind'"):
        SPACE.graph({"kind": "rnn"}, partial=True)
    with pytest.raises(nas.SpaceError, match="'dropout'"):
        SPACE.graph(partial=True, dropout=1.5)
    with pytest.raises(nas.SpaceError, match="'head_channels'"):
        SPACE.graph(partial=True, head_channels=-1)


def test_registered_under_its_name():
    assert nas.get_space("highway").names == SPACE.names
    assert isinstance(nas.build(SPACE.graph(partial=True)), nn.Module)
