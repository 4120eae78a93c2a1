"""DenseNet space: torchvision's parameter counts and FLOPs, equivalence with an independent reference
implementation, the small-input pooling rule, random assignments, and errors."""

from __future__ import annotations

import math
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn

import nas
from search_spaces.densenet import densenet_space

SPACE = densenet_space()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one thread is faster, and far faster on a shared, busy machine (two
    threads spin-waiting on each other's many small ops)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# torchvision's published parameter counts (torchvision.models docs, 1000 classes)
TORCHVISION_PARAMS = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
}
# the paper's Table 2 (rounded to 0.1M)
PAPER_PARAMS_M = {"densenet40_k12": 1.0, "densenet_bc100_k12": 0.8}


# ---------------------------------------------------------------------------------------------------
# an independent DenseNet written the way torchvision writes it (module names included), with the
# space's documented rule for small inputs: a transition pools only while both sides are >= 2


class _RefLayer(nn.Module):
    def __init__(self, c_in: int, growth: int, bn_size: int, bottleneck: bool):
        super().__init__()
        if bottleneck:
            self.norm1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
            self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)
        else:
            self.norm, self.relu = nn.BatchNorm2d(c_in), nn.ReLU()
            self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        if hasattr(self, "conv1"):
            return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return self.conv(self.relu(self.norm(x)))


class _RefBlock(nn.ModuleDict):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _RefTransition(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.relu(self.norm(x)))
        return self.pool(x) if min(x.shape[2:]) >= 2 else x


class _RefDenseNet(nn.Module):
    def __init__(self, a: dict, in_channels: int, num_classes: int):
        super().__init__()
        c = a["init_features"]
        if a["stem"] == "imagenet":
            stem = [("conv0", nn.Conv2d(in_channels, c, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(c)),
                    ("relu0", nn.ReLU()), ("pool0", nn.MaxPool2d(3, 2, 1))]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, c, 3, 1, 1, bias=False))]
        self.features = nn.Sequential(OrderedDict(stem))
        for b in range(1, a["num_blocks"] + 1):
            n = a[f"block{b}_layers"]
            self.features.add_module(f"denseblock{b}", _RefBlock({
                f"denselayer{i + 1}": _RefLayer(c + i * a["growth_rate"], a["growth_rate"], a["bn_size"],
                                                a["bottleneck"]) for i in range(n)}))
            c += n * a["growth_rate"]
            if b < a["num_blocks"]:
                out = int(c * a["compression"])
                self.features.add_module(f"transition{b}", _RefTransition(OrderedDict(
                    norm=nn.BatchNorm2d(c), relu=nn.ReLU(), conv=nn.Conv2d(c, out, 1, bias=False),
                    pool=nn.AvgPool2d(2, 2))))
                c = out
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.features(x))
        return self.classifier(x.mean((2, 3)))


def _our_key(ref_key: str) -> str:
    """torchvision key -> graphnas key: drop 'features.', '.' -> '_' in the module path."""
    path, leaf = ref_key.removeprefix("features.").rsplit(".", 1)
    return f"{path.replace('.', '_')}.{leaf}"


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(TORCHVISION_PARAMS))
def test_imagenet_presets_have_torchvision_parameter_counts(preset):
    g = SPACE.graph(preset=preset)
    assert nas.infer_shapes(g)["classifier"] == (1000,)
    assert nas.count_params(g) == TORCHVISION_PARAMS[preset]


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS_M))
def test_cifar_presets_match_the_reference_and_the_paper(preset):
    p = SPACE.preset(preset)
    with torch.device("meta"):
        ref = _RefDenseNet(SPACE.complete(p.assignment), 3, 10)
    n = nas.count_params(SPACE.graph(preset=preset))
    assert n == _count(ref)
    assert round(n / 1e6, 1) == PAPER_PARAMS_M[preset]


def test_densenet121_flops_match_torchvision():
    macs = nas.count_flops(SPACE.graph(preset="densenet121"))
    assert abs(macs / 2.834e9 - 1) < 0.01, macs


@pytest.mark.parametrize("preset", sorted(SPACE.presets))
def test_presets_train_at_small_resolution(preset):
    torch.manual_seed(0)
    model = nas.build(SPACE.graph(preset=preset, num_classes=10, input_shape=(3, 64, 64)))
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("assignment, input_shape", [
    ({"stem": "imagenet", "bottleneck": True, "growth_rate": 8, "num_blocks": 4, "block1_layers": 2,
      "block2_layers": 3, "block3_layers": 1, "block4_layers": 2, "init_features": 16, "bn_size": 2,
      "compression": 0.5}, (3, 32, 32)),
    ({"stem": "small", "bottleneck": False, "growth_rate": 4, "num_blocks": 3, "block1_layers": 3,
      "block2_layers": 1, "block3_layers": 2, "compression": 0.75}, (1, 8, 8)),
    ({"stem": "small", "num_blocks": 4, "compression": 1.0}, (2, 2, 2)),  # 2x2 -> 1x1, then no pooling
])
def test_same_network_as_an_independent_reference(assignment, input_shape):
    torch.manual_seed(0)
    g = SPACE.graph(assignment, partial=True, input_shape=input_shape)
    ours = nas.build(g)
    ref = _RefDenseNet(SPACE.complete(assignment), input_shape[0], 10)
    for m in ref.modules():  # non-trivial BN affine parameters and running statistics
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                nn.init.uniform_(t, -0.5, 0.5)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
    ref_state = ref.state_dict()
    assert {_our_key(k) for k in ref_state} == set(ours.state_dict())
    ours.load_state_dict({_our_key(k): v for k, v in ref_state.items()})
    x = torch.randn(3, *input_shape)
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        torch.testing.assert_close(ours(x), ref(x))


def test_small_input_pooling_rule():
    a = {"stem": "imagenet", "num_blocks": 4}
    g = SPACE.graph(a, partial=True)  # 8x8 -> conv0 4x4 -> pool0 2x2 -> transition1 1x1, then no pool
    shapes = nas.infer_shapes(g)
    assert shapes["pool0"][1:] == (2, 2)
    assert shapes["transition1_pool"][1:] == (1, 1)
    assert "transition2_pool" not in g and "transition3_pool" not in g
    assert shapes["norm5"][1:] == (1, 1)
    nas.build(SPACE.graph(a, partial=True, input_shape=(1, 1, 1)))(torch.randn(2, 1, 1, 1))


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
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_random_assignments_build_run_and_round_trip():
    for seed in range(8):
        a = SPACE.sample(random.Random(seed))
        g = SPACE.graph(a)
        assert g.graph["assignment"] == a
        model = nas.build(g).eval()
        with torch.no_grad():
            out = model(torch.randn(2, *SPACE.input_shape))
        assert out.shape == (2, SPACE.num_classes) and torch.isfinite(out).all()
        back = nas.from_json(nas.to_json(g))
        assert nas.arch_id(back) == nas.arch_id(g)
        assert back.graph["assignment"] == a


def test_compression_floors_and_drop_rate_adds_dropout():
    g = SPACE.graph({"growth_rate": 4, "block1_layers": 3, "init_features": 16, "compression": 0.75},
                    partial=True, drop_rate=0.2)
    assert g.nodes["transition1_conv"]["params"]["out_channels"] == math.floor(0.75 * (16 + 3 * 4))
    assert g.nodes["denseblock1_denselayer1_dropout"]["params"] == {"p": 0.2}
    assert not any(d["op"] == "dropout" for _, d in SPACE.graph(partial=True).nodes(data=True))


def test_bad_values_raise_space_errors_naming_the_variable():
    with pytest.raises(nas.SpaceError, match="'growth_rate'"):
        SPACE.graph({"growth_rate": 7}, partial=True)
    with pytest.raises(nas.SpaceError, match="'stem'"):
        SPACE.graph({"stem": "cifar"}, partial=True)
    with pytest.raises(nas.SpaceError, match="'drop_rate'"):
        SPACE.graph(partial=True, drop_rate=1.5)
    with pytest.raises(nas.SpaceError, match="lacks variable"):
        SPACE.graph({"growth_rate": 8})


def test_registered_under_its_name():
    assert nas.get_space("densenet").names == SPACE.names
