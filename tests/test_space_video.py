"""The 'video' space: exact preset counts, the same outputs as independent implementations of
torchvision's video ResNets, C3D and the pytorch-i3d port (written here from their published structure),
'SAME' padding, op choices that DARTS relaxes, small clips, errors."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.cli import main
from nas.darts.supernet import build_supernet
from nas.graph import infer_shapes
from nas.space import SpaceError
from search_spaces.video import midplanes, same_padding

SPACE = nas.get_space("video")
COUNTS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325, "c3d": 79_991_015,
          "i3d": 12_697_264}


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_preset_parameter_counts(preset):
    assert nas.count_params(SPACE.graph(preset=preset)) == COUNTS[preset]


def test_describe_json_prints_the_exact_count(capsys):
    assert main(["describe", "video", "--preset", "r3d_18", "--num-classes", "400", "--input-shape",
                 "3,16,112,112", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == COUNTS["r3d_18"]


# -- independent implementations -----------------------------------------------------------------------


class Conv2Plus1D(nn.Sequential):
    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1) -> None:
        super().__init__(nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(),
                         nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


def conv_simple(cin, cout, mid, stride=1):
    return nn.Conv3d(cin, cout, 3, stride, 1, bias=False)


def conv_no_temporal(cin, cout, mid, stride=1):
    return nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)


class BasicBlock(nn.Module):
    """torchvision.models.video.resnet.BasicBlock."""

    def __init__(self, cin: int, planes: int, builder, stride: int, temporal_stride: bool) -> None:
        super().__init__()
        mid = (cin * planes * 27) // (cin * 9 + 3 * planes)
        self.conv1 = nn.Sequential(builder(cin, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU())
        self.conv2 = nn.Sequential(builder(planes, planes, mid), nn.BatchNorm3d(planes))
        self.downsample = None
        if stride != 1 or cin != planes:
            s = (stride if temporal_stride else 1, stride, stride)
            self.downsample = nn.Sequential(nn.Conv3d(cin, planes, 1, s, bias=False), nn.BatchNorm3d(planes))

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + res)


class VideoResNet(nn.Module):
    def __init__(self, kind: str, base: int, num_classes: int) -> None:
        super().__init__()
        if kind == "r2plus1d":
            m = 45 * base // 64
            self.stem = nn.Sequential(nn.Conv3d(3, m, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(m),
                                      nn.ReLU(), nn.Conv3d(m, base, (3, 1, 1), 1, (1, 0, 0), bias=False),
                                      nn.BatchNorm3d(base), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv3d(3, base, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                      nn.BatchNorm3d(base), nn.ReLU())
        builders = {"r3d": [conv_simple] * 4, "mc3": [conv_simple] + [conv_no_temporal] * 3,
                    "r2plus1d": [Conv2Plus1D] * 4}[kind]
        cin = base
        for i, builder in enumerate(builders, start=1):
            planes, stride = base * 2 ** (i - 1), 1 if i == 1 else 2
            first = BasicBlock(cin, planes, builder, stride, kind != "mc3")
            setattr(self, f"layer{i}", nn.Sequential(first, BasicBlock(planes, planes, builder, 1, True)))
            cin = planes
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean((2, 3, 4)))


class C3D(nn.Module):
    def __init__(self, base: int, fc: int, num_classes: int, flat: int) -> None:
        super().__init__()
        w = (base, 2 * base, 4 * base, 8 * base, 8 * base)
        self.names = ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
        chans = [3, w[0], w[1], w[2], w[2], w[3], w[3], w[4], w[4]]
        for i, n in enumerate(self.names):
            setattr(self, n, nn.Conv3d(chans[i], chans[i + 1], 3, padding=1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(flat, fc), nn.Linear(fc, fc), nn.Linear(fc, num_classes)

    def forward(self, x):
        pools = {"conv1": ((1, 2, 2), 0), "conv2": (2, 0), "conv3b": (2, 0), "conv4b": (2, 0), "conv5b": (2, (0, 1, 1))}
        for n in self.names:
            x = F.relu(getattr(self, n)(x))
            if n in pools:
                k, p = pools[n]
                x = F.max_pool3d(x, k, k, p)
        x = F.relu(self.fc6(x.flatten(1)))
        return self.fc8(F.relu(self.fc7(x)))


class Unit3D(nn.Module):
    """pytorch-i3d's Unit3D: padding computed from the input at run time ('SAME')."""

    def __init__(self, cin, cout, k=(1, 1, 1), s=(1, 1, 1), bn=True, relu=True, bias=False):
        super().__init__()
        self.k, self.s, self.relu = k, s, relu
        self.conv3d = nn.Conv3d(cin, cout, k, s, 0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x):
        pads = []
        for size, k, s in zip(reversed(x.shape[2:]), reversed(self.k), reversed(self.s), strict=True):
            total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
            pads += [total // 2, total - total // 2]
        x = self.conv3d(F.pad(x, pads))
        x = self.bn(x) if self.bn is not None else x
        return F.relu(x) if self.relu else x


class SamePool(nn.MaxPool3d):
    def forward(self, x):
        pads = []
        for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class Inception(nn.Module):
    def __init__(self, cin, o):
        super().__init__()
        self.b0, self.b1a, self.b1b = Unit3D(cin, o[0]), Unit3D(cin, o[1]), Unit3D(o[1], o[2], (3, 3, 3))
        self.b2a, self.b2b, self.b3b = Unit3D(cin, o[3]), Unit3D(o[3], o[4], (3, 3, 3)), Unit3D(cin, o[5])
        self.b3a = SamePool((3, 3, 3), (1, 1, 1))

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3D(nn.Module):
    MODULES = [("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)), "MaxPool3d_4a_3x3",
               ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
               ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
               ("Mixed_4f", (256, 160, 320, 32, 128, 128)), "MaxPool3d_5a_2x2",
               ("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128))]

    def __init__(self, scale: int, num_classes: int) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64 // scale, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePool((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64 // scale, 64 // scale)
        self.Conv3d_2c_3x3 = Unit3D(64 // scale, 192 // scale, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = SamePool((1, 3, 3), (1, 2, 2))
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        cin = 192 // scale
        for m in self.MODULES:
            if isinstance(m, str):
                setattr(self, m, SamePool((3, 3, 3) if m.endswith("3x3") else (2, 2, 2), (2, 2, 2)))
                self.order.append(m)
                continue
            o = [c // scale for c in m[1]]
            setattr(self, m[0], Inception(cin, o))
            self.order.append(m[0])
            cin = o[0] + o[2] + o[4] + o[5]
        self.logits = Unit3D(cin, num_classes, bn=False, relu=False, bias=True)

    def forward(self, x):
        for n in self.order:
            x = getattr(self, n)(x)
        k = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        return self.logits(F.avg_pool3d(x, k, 1)).mean((2, 3, 4))


def _load_and_compare(graph: nas.ArchGraph, reference: nn.Module, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    reference.eval()
    for m in reference.modules():  # batch-norm statistics away from (0, 1), so they are tested too
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    state = {}
    for key, value in reference.state_dict().items():
        module, _, attr = key.rpartition(".")
        state[f"{module.replace('.', '_')}.{attr}"] = value
    model = nas.build(graph).eval()
    assert set(state) == set(model.state_dict()), set(state) ^ set(model.state_dict())
    model.load_state_dict(state)
    with torch.no_grad():
        want, got = reference(x), model(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("preset,kind", [("r3d_18", "r3d"), ("mc3_18", "mc3"), ("r2plus1d_18", "r2plus1d")])
def test_resnets_compute_what_torchvision_s_layout_computes(preset, kind):
    shape = (3, 4, 32, 32)
    g = SPACE.graph({"base_width": 16}, preset=preset, num_classes=7, input_shape=shape)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    _load_and_compare(g, VideoResNet(kind, 16, 7), x)


def test_c3d_computes_what_the_c3d_layout_computes():
    shape = (3, 16, 32, 32)  # pool5 leaves 512/4 channels x 1 x 2 x 2
    g = SPACE.graph({"base_width": 16, "fc_width": 256}, preset="c3d", num_classes=5, input_shape=shape)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    _load_and_compare(g, C3D(16, 256, 5, flat=128 * 1 * 2 * 2), x)


def test_i3d_computes_what_the_pytorch_i3d_port_computes():
    shape = (3, 16, 64, 64)  # odd and even sizes on the way: uneven 'SAME' pads appear
    g = SPACE.graph({"base_width": 16}, preset="i3d", num_classes=6, input_shape=shape)
    assert any(d["op"] == "pad" for _, d in g.nodes(data=True))
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    _load_and_compare(g, I3D(4, 6), x)


def test_i3d_port_shapes_at_the_published_clip():
    shapes = infer_shapes(SPACE.graph(preset="i3d"))
    assert shapes["MaxPool3d_2a_3x3"] == (64, 32, 56, 56)
    assert shapes["MaxPool3d_4a_3x3"] == (480, 16, 14, 14)
    assert shapes["Mixed_5c_concat"] == (1024, 8, 7, 7)
    assert shapes["logits_mean"] == (400,)


@pytest.mark.parametrize("size,k,s", [(16, 7, 2), (15, 7, 2), (112, 3, 2), (7, 2, 2), (5, 3, 1), (1, 3, 2)])
def test_same_padding_keeps_ceil_of_size_over_stride(size, k, s):
    before, after = same_padding(size, k, s)
    assert (size + before + after - k) // s + 1 == math.ceil(size / s)


def test_midplanes_is_torchvision_s():
    assert midplanes(64, 64) == 144 and midplanes(64, 128) == 230


# -- search range ---------------------------------------------------------------------------------------


def test_op_choices_mark_one_node_in_every_family_and_darts_relaxes_a_stage():
    assert [v.name for v in SPACE.op_choices] == ["temporal1", "temporal2", "temporal3", "temporal4"]
    for family in ("resnet", "c3d", "i3d"):
        for factorise in ("no", "yes"):
            a = {"family": family, "factorise": factorise, "depth2": 2}
            net = build_supernet(SPACE, a)
            assert set(net.values) == {"temporal1", "temporal2", "temporal3", "temporal4"}
            if family == "c3d" or (family == "resnet"):
                assert len(net.nodes["temporal2"]) >= 2, (family, factorise, net.nodes)
            x = torch.randn(2, *SPACE.input_shape)
            assert nas.build(net.graph)(x).shape == (2, 10)


def test_temporal_kernel_changes_only_the_temporal_extent():
    base = SPACE.graph({"temporal2": 3}, partial=True)
    for t in (1, 5):
        g = SPACE.graph({"temporal2": t}, partial=True)
        assert g.nodes["layer2_0_conv1_0"]["params"]["kernel_size"] == [t, 3, 3]
        assert infer_shapes(g)["fc"] == infer_shapes(base)["fc"]


@pytest.mark.parametrize("seed", range(12))
def test_random_assignments_build_and_run_on_digit_clips(seed):
    a = SPACE.sample(random.Random(seed))
    if a["family"] == "c3d":
        a["fc_width"] = 256
    g = SPACE.graph(a)
    model = nas.build(g)
    assert model(torch.randn(2, *SPACE.input_shape)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 2, 5, 7)])
def test_every_family_builds_on_tiny_clips(shape):
    for family in ("resnet", "c3d", "i3d"):
        for td in ("yes", "no"):
            g = SPACE.graph({"family": family, "time_downsample": td, "factorise": "yes", "stem": "2plus1d"},
                            input_shape=shape, num_classes=3, partial=True)
            assert nas.build(g)(torch.randn(2, *shape)).shape == (2, 3)


def test_time_downsample_no_keeps_every_frame():
    shapes = infer_shapes(SPACE.graph({"time_downsample": "no", "depth4": 2}, partial=True))
    assert shapes["layer4_1_relu"][1] == SPACE.input_shape[1]
    shapes = infer_shapes(SPACE.graph({"time_downsample": "yes"}, partial=True))
    assert shapes["layer4_0_relu"][1] == 3  # 20 -> 10 -> 5 -> 3


def test_non_clip_input_is_refused_with_its_shape():
    with pytest.raises(SpaceError, match=r"video.*\(C, T, H, W\).*\(3, 32, 32\)"):
        SPACE.graph(input_shape=(3, 32, 32), partial=True)


def test_inflated_inception_v1_has_the_i3d_preset_s_count(capsys):
    """I3D is Inception-v1 inflated: the inception space's GoogLeNet (3x3 'double' branches, as
    torchvision's) inflated k x k -> k x k x k has the i3d preset's parameter count."""
    assert main(["describe", "inception", "--preset", "googlenet_torchvision", "--num-classes", "400",
                 "--inflate", "16", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == COUNTS["i3d"] and summary["input_shape"] == [3, 16, 224, 224]


def test_inflating_a_video_network_is_refused(capsys):
    assert main(["describe", "video", "--preset", "r3d_18", "--inflate", "4"]) == 2
    assert "already a (C, T, H, W) video" in capsys.readouterr().err
