"""The VGG space: torchvision presets to the parameter, the paper's configurations C and A-LRN counted by
hand-written references, FLOPs, equivalence with a hand-written torchvision layout after a weight copy,
every preset trains a step, random points build and round-trip."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

import nas
from nas.cli import main
from nas.registry import get_space
from search_spaces.vgg import vgg_space

# torchvision's published parameter counts (1000 classes)
TORCHVISION_PARAMS = {
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
}
# the paper's configurations C and A-LRN (not in torchvision), counted by the references below
PAPER_PARAMS = {"vgg_c": 133_638_952, "vgg_a_lrn": 132_863_336}
# Simonyan & Zisserman, Table 2: parameters in millions
TABLE_2 = {"vgg11": 133, "vgg_a_lrn": 133, "vgg13": 133, "vgg_c": 134, "vgg16": 138, "vgg19": 144}
# Table 1, in torchvision's list notation; (c, 1) is a 1x1 conv of c channels, "LRN" a local response norm
CONFIGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
           "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
           "vgg_c": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
                     512, 512, (512, 1), "M"],
           "vgg_a_lrn": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}


def reference_vgg(cfg: list, batch_norm: bool, num_classes: int, pool: int = 7, hidden: int = 4096) -> nn.Module:
    """torchvision's VGG, written out (`pool` and `hidden` are 7 and 4096 there), with the paper's 1x1 convs
    and LRN (AlexNet's: size 5, alpha 1e-4, beta 0.75, k 2)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        if v == "LRN":
            layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
            continue
        v, k = v if isinstance(v, tuple) else (v, 3)
        layers.append(nn.Conv2d(cin, v, k, padding=k // 2))
        layers += [nn.BatchNorm2d(v), nn.ReLU()] if batch_norm else [nn.ReLU()]
        cin = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                         nn.Linear(512 * pool * pool, hidden), nn.ReLU(), nn.Dropout(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, num_classes))

# the 100M-parameter classifier is pinned by the counts above; runs below shrink it to stay fast
SMALL_HEAD = {"avgpool_size": 2, "classifier_width": 256}

def _randomize_batch_norms(model: nn.Module) -> None:
    """Fresh BNs are identities in eval mode; give them distinct statistics so a mix-up shows."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)



@pytest.fixture(autouse=True)
def _one_thread():
    """Batches of two gain nothing from intra-op threads, and on a shared machine waiting threads cost
    several-fold; restored afterwards so other test files keep their setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_finds_the_space():
    assert get_space("vgg") is vgg_space


@pytest.mark.parametrize("preset", sorted(TORCHVISION_PARAMS))
def test_presets_have_torchvision_parameter_counts(preset):
    assert nas.count_params(vgg_space.graph(preset=preset)) == TORCHVISION_PARAMS[preset]


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS))
def test_paper_presets_match_the_written_out_reference(preset):
    with torch.device("meta"):
        expected = sum(p.numel() for p in reference_vgg(CONFIGS[preset], False, 1000).parameters())
    assert expected == PAPER_PARAMS[preset]
    assert nas.count_params(vgg_space.graph(preset=preset)) == expected


def test_presets_have_the_papers_table_2_counts():
    counts = {p: nas.count_params(vgg_space.graph(preset=p)) for p in TABLE_2}
    assert {p: round(c / 1e6) for p, c in counts.items()} == TABLE_2
    assert counts["vgg_a_lrn"] == counts["vgg11"]


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMS))
def test_describe_json_prints_the_count(preset, capsys):
    assert main(["describe", "vgg", "--preset", preset, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == PAPER_PARAMS[preset] and out["output_shape"] == [1000]


def test_vgg16_flops_match_torchvision():
    flops = nas.count_flops(vgg_space.graph(preset="vgg16"))
    assert abs(flops / 1e9 - 15.47) / 15.47 < 0.01


@pytest.mark.parametrize("preset, cfg, batch_norm", [("vgg11_bn", "vgg11", True), ("vgg16", "vgg16", False),
                                                     ("vgg_c", "vgg_c", False), ("vgg_a_lrn", "vgg_a_lrn", False)])
def test_built_network_computes_what_torchvision_layout_computes(preset, cfg, batch_norm):
    torch.manual_seed(0)
    reference = reference_vgg(CONFIGS[cfg], batch_norm, 10, pool=2, hidden=256).eval()
    for m in reference.modules():  # He init, so the signal survives 13 layers without batch norm
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.uniform_(m.bias, -0.1, 0.1)
    _randomize_batch_norms(reference)
    model = nas.build(vgg_space.graph(SMALL_HEAD, preset=preset, num_classes=10, input_shape=(3, 64, 64))).eval()
    theirs, ours = reference.state_dict(), model.state_dict()
    assert [v.shape for v in theirs.values()] == [v.shape for v in ours.values()]
    model.load_state_dict(dict(zip(ours, theirs.values(), strict=True)))  # a chain: same order
    x = torch.randn(2, 3, 64, 64)  # 2x2 before the average pool, so the flatten order counts
    with torch.no_grad():
        expected = reference(x)
        assert (expected[0] - expected[1]).abs().max() > 0.1  # the output depends on the input
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", sorted(vgg_space.presets))
def test_every_preset_runs_forward_and_backward(preset):
    torch.manual_seed(0)
    model = nas.build(vgg_space.graph(SMALL_HEAD, preset=preset, num_classes=10, input_shape=(3, 32, 32)))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert model.conv1_1.weight.grad.abs().sum() > 0


def test_default_is_a_small_network_for_digits():
    g = vgg_space.graph(vgg_space.defaults())
    assert tuple(g.graph["input_shape"]) == (1, 8, 8)
    assert nas.count_params(g) < 100_000
    assert nas.build(g)(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("seed", range(8))
def test_random_points_build_train_and_round_trip(seed):
    torch.manual_seed(seed)
    a = vgg_space.sample(random.Random(seed))
    g = vgg_space.graph(a)
    model = nas.build(g)
    out = model(torch.randn(2, *vgg_space.input_shape))
    assert out.shape == (2, vgg_space.num_classes)
    out.square().mean().backward()
    again = nas.from_json(nas.to_json(g))
    assert nas.arch_id(again) == nas.arch_id(g)
    assert again.graph["assignment"] == a


def test_pooling_stops_at_one_and_empty_stages_are_dropped():
    a = {**vgg_space.defaults(), "depth2": 0, "depth4": 2, "depth5": 1}
    g = vgg_space.graph(a)
    shapes = nas.infer_shapes(g)  # 8 -> pool1 4 -> (stage 2 dropped) -> pool3 2 -> pool4 1 -> no pool5
    assert "conv2_1" not in g and "pool2" not in g and "pool5" not in g
    assert shapes["pool4"][1:] == (1, 1) and shapes["relu5_1"][1:] == (1, 1)
    nas.build(vgg_space.graph(a, input_shape=(1, 1, 1)))(torch.randn(2, 1, 1, 1))


def test_config_c_ends_stages_3_to_5_with_a_1x1_conv():
    g = vgg_space.graph(preset="vgg_c")
    kernels = {n: d["params"]["kernel_size"] for n, d in g.nodes(data=True) if d["op"] == "conv"}
    assert {n for n, k in kernels.items() if k == 1} == {"conv3_3", "conv4_3", "conv5_3"}
    assert len(kernels) == 13  # + 3 fully connected layers: 16 weight layers
    # the choice needs a spatial conv before it: one-conv stages keep their conv
    a = {**vgg_space.defaults(), "last_1x1": True, "depth3": 1, "depth4": 2}
    g = vgg_space.graph(a)
    assert g.nodes["conv3_1"]["params"]["kernel_size"] == 3 and g.nodes["conv4_2"]["params"]["kernel_size"] == 1
    assert nas.infer_shapes(g) == nas.infer_shapes(vgg_space.graph({**a, "last_1x1": False}))


def test_lrn_follows_the_first_convs_relu():
    g = vgg_space.graph(preset="vgg_a_lrn")
    assert list(g.predecessors("norm1")) == ["relu1_1"] and list(g.successors("norm1")) == ["pool1"]
    assert g.nodes["norm1"]["op"] == "lrn" and [d["op"] for _, d in g.nodes(data=True)].count("lrn") == 1
    g = vgg_space.graph({**vgg_space.defaults(), "lrn": True, "depth1": 0})  # the first conv is conv2_1
    assert list(g.predecessors("norm1")) == ["relu2_1"]


def test_dropout_zero_leaves_out_the_dropout_nodes():
    g = vgg_space.graph({**vgg_space.defaults(), "dropout": 0.0})
    assert not [n for n, d in g.nodes(data=True) if d["op"] == "dropout"]


def test_kernel_size_keeps_the_shape():
    shapes = [nas.infer_shapes(vgg_space.graph({**vgg_space.defaults(), "kernel_size": k}))
              for k in vgg_space.variable("kernel_size").values]
    assert all(s == shapes[0] for s in shapes)


@pytest.mark.parametrize("name, value", [("depth3", 7), ("width1", 100), ("batch_norm", "yes"),
                                         ("classifier_width", 100), ("last_1x1", "C"), ("lrn", 1)])
def test_value_outside_its_domain_names_the_variable(name, value):
    with pytest.raises(nas.SpaceError, match=name):
        vgg_space.graph({**vgg_space.defaults(), name: value})
