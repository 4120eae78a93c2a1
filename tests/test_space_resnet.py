"""The ResNet space: torchvision presets to the parameter, FLOPs, equivalence with hand-written reference
networks after a weight copy (torchvision's, pre-activation, and He et al.'s CIFAR ResNets with option-A,
option-B and no shortcuts), every preset trains a step, random points build and round-trip."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

import nas
from nas.cli import main
from nas.registry import get_space
from search_spaces.resnet import resnet_space

# torchvision's published parameter counts (1000 classes)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
DEFAULT_PARAMS = 308_538  # the space's default (digits, 10 classes), as before the shortcut variable

# He et al.'s CIFAR-10 ResNets (6n + 2 layers), counted by `CifarResNet` below: option A (the presets),
# option B (projection shortcuts where the shape changes) and plain (no shortcuts; A's count, A being
# parameter-free). The paper rounds them to 0.27M, 0.85M, 1.7M.
CIFAR_N = {"resnet20_cifar": 3, "resnet56_cifar": 9, "resnet110_cifar": 18}
CIFAR_PARAMS = {
    "A": {"resnet20_cifar": 269_722, "resnet56_cifar": 853_018, "resnet110_cifar": 1_727_962},
    "B": {"resnet20_cifar": 272_474, "resnet56_cifar": 855_770, "resnet110_cifar": 1_730_714},
}
SHORTCUT = {"A": "zero_pad", "B": "projection", "none": "none"}


# ---------------------------------------------------------------------------------------------------
# hand-written references: torchvision's ResNet, and a full pre-activation ResNet (He et al. 2016)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, groups=1, wpg=64, preact=False):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin if preact else planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride, preact)

    def forward(self, x):
        return _residual(self, x, 2)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, groups=1, wpg=64, preact=False):
        super().__init__()
        self.preact = preact
        width = int(planes * (wpg / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin if preact else width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width if preact else planes * 4)
        self.downsample = _downsample(cin, planes * 4, stride, preact)

    def forward(self, x):
        return _residual(self, x, 3)


def _downsample(cin, cout, stride, preact):
    if stride == 1 and cin == cout:
        return None
    layers = [nn.Conv2d(cin, cout, 1, stride, bias=False)]
    return nn.Sequential(*layers) if preact else nn.Sequential(*layers, nn.BatchNorm2d(cout))


def _residual(block, x, n):
    convs = [getattr(block, f"conv{i}") for i in range(1, n + 1)]
    bns = [getattr(block, f"bn{i}") for i in range(1, n + 1)]
    if block.preact:  # BN-ReLU before each conv; the projection takes the pre-activated input
        pre = torch.relu(bns[0](x))
        shortcut = block.downsample(pre) if block.downsample is not None else x
        y = convs[0](pre)
        for conv, bn in zip(convs[1:], bns[1:], strict=True):
            y = conv(torch.relu(bn(y)))
        return y + shortcut
    shortcut = block.downsample(x) if block.downsample is not None else x
    y = x
    for i, (conv, bn) in enumerate(zip(convs, bns, strict=True)):
        y = bn(conv(y))
        if i < n - 1:
            y = torch.relu(y)
    return torch.relu(y + shortcut)


class RefResNet(nn.Module):
    def __init__(self, block, layers, groups=1, wpg=64, preact=False, stem="imagenet", num_classes=1000):
        super().__init__()
        self.preact, self.stem = preact, stem
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        self.conv1 = nn.Conv2d(3, 64, k, s, k // 2, bias=False)
        if not preact:
            self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, n in enumerate(layers):
            blocks = []
            for b in range(n):
                blocks.append(block(cin, 64 * 2**i, 2 if i > 0 and b == 0 else 1, groups, wpg, preact))
                cin = 64 * 2**i * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        if preact:
            self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        if not self.preact:
            x = torch.relu(self.bn1(x))
        if self.stem == "imagenet":
            x = nn.functional.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.preact:
            x = torch.relu(self.final_bn(x))
        return self.fc(x.mean((2, 3)))


class CifarBlock(nn.Module):
    """The basic block of He et al.'s CIFAR networks (akamaster/pytorch_resnet_cifar10's layout): option A
    subsamples the identity and appends zero channels (akamaster's pads planes // 4 on both sides instead,
    a fixed permutation of the channels: the same family of functions, the same count), option B projects
    (1x1 conv + BN), 'none' has no shortcut."""

    def __init__(self, cin, planes, stride, option):
        super().__init__()
        self.option, self.stride, self.extra = option, stride, planes - cin
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if option == "B" and (stride != 1 or cin != planes):
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if self.option == "none":
            return torch.relu(y)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        elif self.stride != 1 or self.extra:
            shortcut = nn.functional.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        else:
            shortcut = x
        return torch.relu(y + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, n, option="A", num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = [CifarBlock(cin if b == 0 else planes, planes, 2 if i > 0 and b == 0 else 1, option)
                      for b in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He init (akamaster's), so the signal survives 20 plain layers
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def _graph_state_dict(reference: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision-style keys ('layer1.0.conv1.weight') -> graph keys ('layer1_0_conv1.weight')."""
    out = {}
    for key, value in reference.state_dict().items():
        path, leaf = key.rsplit(".", 1)
        out[f"{path.replace('.', '_')}.{leaf}"] = value
    return out


def _meta_params(make) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def _randomize_batch_norms(model: nn.Module) -> None:
    """Fresh BNs are identities in eval mode; give them distinct statistics so a mix-up shows."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)


# ---------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    """Batches of two gain nothing from intra-op threads, and on a shared machine waiting threads cost
    several-fold; restored afterwards so other test files keep their setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_finds_the_space():
    assert get_space("resnet") is resnet_space


@pytest.mark.parametrize("preset", sorted(TORCHVISION_PARAMS))
def test_torchvision_presets_have_torchvision_parameter_counts(preset):
    assert nas.count_params(resnet_space.graph(preset=preset)) == TORCHVISION_PARAMS[preset]


@pytest.mark.parametrize("preset, block, layers", [
    ("preact_resnet18", Basic, (2, 2, 2, 2)),
    ("preact_resnet34", Basic, (3, 4, 6, 3)),
    ("preact_resnet50", Bottleneck, (3, 4, 6, 3)),
    ("preact_resnet101", Bottleneck, (3, 4, 23, 3)),
    ("preact_resnet152", Bottleneck, (3, 8, 36, 3)),
])
def test_preact_presets_match_the_reference_parameter_count(preset, block, layers):
    expected = _meta_params(lambda: RefResNet(block, layers, preact=True))
    assert nas.count_params(resnet_space.graph(preset=preset)) == expected


def test_cifar_presets_match_the_reference_parameter_count():
    assert nas.count_params(resnet_space.graph(preset="resnet18_cifar")) == 11_173_962  # kuangliu's ResNet18
    for preset, preact in (("resnet18_cifar", False), ("preact_resnet18_cifar", True)):
        expected = _meta_params(lambda p=preact: RefResNet(Basic, (2, 2, 2, 2), preact=p, stem="cifar",
                                                           num_classes=10))
        assert nas.count_params(resnet_space.graph(preset=preset)) == expected


def test_default_and_every_existing_preset_keep_their_count():
    assert nas.count_params(resnet_space.graph(resnet_space.defaults())) == DEFAULT_PARAMS
    assert resnet_space.defaults()["shortcut"] == "projection"
    for preset, p in resnet_space.presets.items():
        assert p.assignment["shortcut"] == ("zero_pad" if preset in CIFAR_N else "projection"), preset


@pytest.mark.parametrize("option", sorted(CIFAR_PARAMS))
@pytest.mark.parametrize("preset", sorted(CIFAR_N))
def test_cifar_resnets_match_the_written_out_reference_count(preset, option):
    expected = _meta_params(lambda: CifarResNet(CIFAR_N[preset], option))
    assert expected == CIFAR_PARAMS[option][preset]
    g = resnet_space.graph({"shortcut": SHORTCUT[option]}, preset=preset)
    assert nas.count_params(g) == expected
    plain = resnet_space.graph({"shortcut": "none"}, preset=preset)
    assert nas.count_params(plain) == _meta_params(lambda: CifarResNet(CIFAR_N[preset], "none"))
    assert nas.count_params(plain) == CIFAR_PARAMS["A"][preset]


def test_cifar_presets_are_the_papers_networks():
    for preset, n in CIFAR_N.items():
        g = resnet_space.graph(preset=preset)
        assert tuple(g.graph["input_shape"]) == (3, 32, 32) and g.graph["num_classes"] == 10
        shapes = nas.infer_shapes(g)
        assert [shapes[f"layer{i}_{n - 1}_relu"] for i in (1, 2, 3)] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
        assert "layer4_0_relu" not in g and f"layer1_{n}_relu" not in g
        weighted = [x for x, d in g.nodes(data=True) if d["op"] in ("conv", "linear")]
        assert len(weighted) == 6 * n + 2  # the layer count in the name: no projection convs
        pads = sorted(x for x, d in g.nodes(data=True) if d["op"] == "pad_shortcut")
        assert pads == ["layer2_0_shortcut", "layer3_0_shortcut"]


@pytest.mark.parametrize("preset", sorted(CIFAR_N))
def test_describe_json_prints_the_count(preset, capsys):
    assert main(["describe", "resnet", "--preset", preset, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == CIFAR_PARAMS["A"][preset] and out["output_shape"] == [10]


@pytest.mark.parametrize("preset, gmacs", [("resnet18", 1.814), ("resnet50", 4.089)])
def test_flops_match_torchvision(preset, gmacs):
    flops = nas.count_flops(resnet_space.graph(preset=preset))
    assert abs(flops / 1e9 - gmacs) / gmacs < 0.01


@pytest.mark.parametrize("preset, make", [
    ("resnet18", lambda: RefResNet(Basic, (2, 2, 2, 2), num_classes=10)),
    ("resnext50_32x4d", lambda: RefResNet(Bottleneck, (3, 4, 6, 3), groups=32, wpg=4, num_classes=10)),
    ("preact_resnet50", lambda: RefResNet(Bottleneck, (3, 4, 6, 3), preact=True, num_classes=10)),
    ("preact_resnet18_cifar", lambda: RefResNet(Basic, (2, 2, 2, 2), preact=True, stem="cifar", num_classes=10)),
    ("resnet20_cifar", lambda: CifarResNet(3, "A")),
    ("resnet20_cifar shortcut=projection", lambda: CifarResNet(3, "B")),
    ("resnet20_cifar shortcut=none", lambda: CifarResNet(3, "none")),
])
def test_built_network_computes_what_the_reference_computes(preset, make):
    torch.manual_seed(0)
    reference = make().eval()
    _randomize_batch_norms(reference)
    preset, _, choice = preset.partition(" ")
    a = dict([choice.split("=")]) if choice else {}
    model = nas.build(resnet_space.graph(a, preset=preset, num_classes=10, input_shape=(3, 32, 32))).eval()
    model.load_state_dict(_graph_state_dict(reference))  # strict: same names, same shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert (expected[0] - expected[1]).abs().max() > 1e-3  # the output depends on the input
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(resnet_space.presets))
def test_every_preset_runs_forward_and_backward(preset):
    torch.manual_seed(0)
    model = nas.build(resnet_space.graph(preset=preset, num_classes=10, input_shape=(3, 32, 32)))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert model.fc.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_default_is_a_small_network_for_digits():
    g = resnet_space.graph(resnet_space.defaults())
    assert tuple(g.graph["input_shape"]) == (1, 8, 8)
    assert nas.count_params(g) < 1_000_000
    assert nas.build(g)(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("seed", range(8))
def test_random_points_build_train_and_round_trip(seed):
    torch.manual_seed(seed)
    a = resnet_space.sample(random.Random(seed))
    g = resnet_space.graph(a)
    model = nas.build(g)
    out = model(torch.randn(2, *resnet_space.input_shape))
    assert out.shape == (2, resnet_space.num_classes)
    out.square().mean().backward()
    again = nas.from_json(nas.to_json(g))
    assert nas.arch_id(again) == nas.arch_id(g)
    assert again.graph["assignment"] == a


def test_spatial_size_stops_halving_at_one():
    a = {**resnet_space.defaults(), "stem": "imagenet", "depth1": 1, "depth2": 2, "depth3": 1, "depth4": 1}
    shapes = nas.infer_shapes(resnet_space.graph(a))  # 8 -> conv 4 -> pool 2 -> stage2 1 -> 1 -> 1
    assert shapes["maxpool"][1:] == (2, 2)
    assert shapes["layer2_0_relu"][1:] == (1, 1)
    assert shapes["layer3_0_relu"][1:] == (1, 1) and shapes["layer4_0_relu"][1:] == (1, 1)
    assert resnet_space.graph(a, input_shape=(1, 1, 1)).graph["input_shape"] == [1, 1, 1]


def test_preact_unit_has_no_activation_after_the_addition():
    g = resnet_space.graph({**resnet_space.defaults(), "unit": "preact"})
    assert g.nodes["layer1_0_add"]["op"] == "identity" and g.nodes["layer1_0_add"]["merge"] == "sum"
    assert list(g.successors("layer1_0_add")) == ["layer2_0_bn1"]
    assert "final_relu" in g and "bn1" not in g


@pytest.mark.parametrize("unit", ["original", "preact"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_shortcut_choices(block, unit):
    base = {**resnet_space.defaults(), "block": block, "unit": unit, "depth2": 2}
    graphs = {s: resnet_space.graph({**base, "shortcut": s}) for s in ("projection", "zero_pad", "none")}
    ops = {s: [d["op"] for _, d in g.nodes(data=True)] for s, g in graphs.items()}
    sums = {s: sum(d.get("merge") == "sum" for _, d in g.nodes(data=True)) for s, g in graphs.items()}
    blocks = sum(base[f"depth{i}"] for i in range(1, 5))
    assert sums["projection"] == sums["zero_pad"] == blocks and sums["none"] == 0
    assert "pad_shortcut" not in ops["projection"] and "pad_shortcut" not in ops["none"]
    # a block whose stride or width changes: layer2_0, 3_0 and 4_0, and layer1_0 of bottlenecks
    assert ops["zero_pad"].count("pad_shortcut") == (4 if block == "bottleneck" else 3)
    assert nas.count_params(graphs["zero_pad"]) == nas.count_params(graphs["none"]) < nas.count_params(
        graphs["projection"])
    out = {s: nas.infer_shapes(g)[nas.graph.output_node(g)] for s, g in graphs.items()}
    assert len(set(out.values())) == 1
    if unit == "preact":  # the zero-padded shortcut takes the block's input, as the identity does
        assert list(graphs["zero_pad"].predecessors("layer2_0_shortcut")) == ["layer1_0_add"]
    for g in graphs.values():
        nas.build(g)(torch.randn(2, 1, 8, 8)).square().mean().backward()


def test_resnext_width_is_rounded_up_to_a_multiple_of_cardinality():
    a = {**resnet_space.defaults(), "block": "bottleneck", "base_width": 8, "cardinality": 64,
         "bottleneck_width": 16}
    g = resnet_space.graph(a)
    conv2 = g.nodes["layer1_0_conv2"]["params"]
    assert conv2["out_channels"] == 64 and conv2["groups"] == 64


def test_kernel_size_keeps_the_shape():
    shapes = [nas.infer_shapes(resnet_space.graph({**resnet_space.defaults(), "kernel_size": k}))
              for k in resnet_space.variable("kernel_size").values]
    assert all(s == shapes[0] for s in shapes)


@pytest.mark.parametrize("name, value", [("depth1", 10), ("block", "dense"), ("base_width", 12),
                                         ("cardinality", 3), ("shortcut", "A")])
def test_value_outside_its_domain_names_the_variable(name, value):
    with pytest.raises(nas.SpaceError, match=name):
        resnet_space.graph({**resnet_space.defaults(), name: value})
