"""The Inception space: torchvision presets to the parameter (with and without auxiliary heads), Inception-v4
and Inception-ResNet-v2 to the parameter of timm's (Cadene's) ports, the GoogLeNet paper's stage sizes,
FLOPs, equivalence with torchvision's and timm's layouts written out here after a weight copy, every
preset trains a step with its heads, random points build and round-trip, the small-input rule."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.cli import main
from nas.registry import get_space
from search_spaces.inception import inception_space

SPACE = inception_space

# torchvision's parameter counts (1000 classes); "googlenet" is torchvision's layout with the paper's 5x5
# branches, i.e. torchvision's count + 16 * sum(#5x5 reduce * #5x5) over the nine modules
PARAMS = {
    ("googlenet", False): 6_624_904 + 16 * 23_808,
    ("googlenet", True): 13_004_888 + 16 * 23_808,
    ("googlenet_torchvision", False): 6_624_904,
    ("googlenet_torchvision", True): 13_004_888,
    ("inception_v3", False): 23_834_568,
    ("inception_v3", True): 27_161_264,
    # timm's inception_v4 and inception_resnet_v2 (= Cadene's pretrainedmodels), which have no auxiliary heads
    ("inception_v4", False): 42_679_816,
    ("inception_v4", True): 42_679_816,
    ("inception_resnet_v2", False): 55_843_464,
    ("inception_resnet_v2", True): 55_843_464,
}
NO_HEADS = ("inception_v4", "inception_resnet_v2")

# GoogLeNet paper, Table 1: output size after each module at 224x224
TABLE_1 = {
    "inception3a": (256, 28, 28), "inception3b": (480, 28, 28),
    "inception4a": (512, 14, 14), "inception4b": (512, 14, 14), "inception4c": (512, 14, 14),
    "inception4d": (528, 14, 14), "inception4e": (832, 14, 14),
    "inception5a": (832, 7, 7), "inception5b": (1024, 7, 7),
}

# small inputs at which each preset's reference network runs (batch 2 keeps train-mode BN defined)
SMALL_SIDE = {"googlenet": 64, "googlenet_torchvision": 64, "inception_v3": 75, "inception_v4": 75,
              "inception_resnet_v2": 75}


# ---------------------------------------------------------------------------------------------------
# torchvision's GoogLeNet and Inception3, written out (module names as there)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _cat(*branches):
    return lambda x: torch.cat([b(x) for b in branches], 1)


class V1Module(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, proj, k5):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, r3, kernel_size=1),
                                     BasicConv2d(r3, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, r5, kernel_size=1),
                                     BasicConv2d(r5, c5, kernel_size=k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(cin, proj, kernel_size=1))

    def forward(self, x):
        return _cat(self.branch1, self.branch2, self.branch3, self.branch4)(x)


class V1Aux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.drop = nn.Dropout(0.7)

    def forward(self, x):
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


GOOGLENET = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
             "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
             "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
             "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
             "5b": (832, 384, 192, 384, 48, 128, 128)}


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, k5: int, aux: bool):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        for name, widths in GOOGLENET.items():
            setattr(self, f"inception{name}", V1Module(*widths, k5))
        if aux:
            self.aux1, self.aux2 = V1Aux(512, num_classes), V1Aux(528, num_classes)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)
        self.aux = aux

    def forward(self, x):
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        x = pool(self.conv3(self.conv2(pool(self.conv1(x)))))
        x = pool(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux = [self.aux1(x)] if self.aux and self.training else []
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux += [self.aux2(x)] if self.aux and self.training else []
        x = nn.MaxPool2d(2, 2, ceil_mode=True)(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(x.mean((2, 3)))), aux


def _c(cin, cout, k, **kw):
    return BasicConv2d(cin, cout, kernel_size=k, **kw)


def _avg(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = _c(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _c(cin, 48, 1), _c(48, 64, 5, padding=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _c(cin, 64, 1), _c(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _c(96, 96, 3, padding=1)
        self.branch_pool = _c(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _c(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _c(cin, 64, 1), _c(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _c(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        h, v = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = _c(cin, 192, 1)
        self.branch7x7_1 = _c(cin, c7, 1)
        self.branch7x7_2, self.branch7x7_3 = BasicConv2d(c7, c7, **h), BasicConv2d(c7, 192, **v)
        self.branch7x7dbl_1 = _c(cin, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = BasicConv2d(c7, c7, **v), BasicConv2d(c7, c7, **h)
        self.branch7x7dbl_4, self.branch7x7dbl_5 = BasicConv2d(c7, c7, **v), BasicConv2d(c7, 192, **h)
        self.branch_pool = _c(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([self.branch1x1(x), b7, dbl, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _c(cin, 192, 1), _c(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _c(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _c(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        h, v = {"kernel_size": (1, 3), "padding": (0, 1)}, {"kernel_size": (3, 1), "padding": (1, 0)}
        self.branch1x1 = _c(cin, 320, 1)
        self.branch3x3_1 = _c(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = BasicConv2d(384, 384, **h), BasicConv2d(384, 384, **v)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _c(cin, 448, 1), _c(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = BasicConv2d(384, 384, **h), BasicConv2d(384, 384, **v)
        self.branch_pool = _c(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl), self.branch_pool(_avg(x))], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv0, self.conv1 = _c(cin, 128, 1), _c(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.fc(self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3))).mean((2, 3)))


class Inception3(nn.Module):
    def __init__(self, num_classes: int, aux: bool):
        super().__init__()
        self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = _c(3, 32, 3, stride=2), _c(32, 32, 3)
        self.Conv2d_2b_3x3, self.Conv2d_3b_1x1 = _c(32, 64, 3, padding=1), _c(64, 80, 1)
        self.Conv2d_4a_3x3 = _c(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c = InceptionA(192, 32), InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux else None
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = InceptionD(768), InceptionE(1280), InceptionE(2048)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
            x = getattr(self, f"Mixed_{name}")(x)
        aux = [self.AuxLogits(x)] if self.AuxLogits is not None and self.training else []
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return self.fc(self.dropout(x.mean((2, 3)))), aux


# ---------------------------------------------------------------------------------------------------
# timm's InceptionV4 and InceptionResnetV2, written out (module names as there; ConvNormAct = BasicConv2d)


def _same(cin, *layers):
    """A chain of 'same'-padded BasicConv2d: layers = (out, kernel), ..."""
    mods = []
    for cout, k in layers:
        kh, kw = (k, k) if isinstance(k, int) else k
        mods.append(BasicConv2d(cin, cout, kernel_size=(kh, kw), padding=(kh // 2, kw // 2)))
        cin = cout
    return nn.Sequential(*mods)


def _pool_branch(cin, cout):
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _c(cin, cout, 1))


def _max(x):
    return F.max_pool2d(x, kernel_size=3, stride=2)


class V4Mixed3a(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _c(64, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([_max(x), self.conv(x)], 1)


class V4Mixed4a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(_c(160, 64, 1), _c(64, 96, 3))
        self.branch1 = nn.Sequential(*_same(160, (64, 1), (64, (1, 7)), (64, (7, 1))), _c(64, 96, 3))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class V4Mixed5a(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _c(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.conv(x), _max(x)], 1)


class _Branches(nn.Module):
    """Concatenation of the branches `names` (a max-pool where the name is 'pool')."""

    names: tuple[str, ...] = ()

    def forward(self, x):
        return torch.cat([_max(x) if n == "pool" else getattr(self, n)(x) for n in self.names], 1)


class V4A(_Branches):
    names = ("branch0", "branch1", "branch2", "branch3")

    def __init__(self):
        super().__init__()
        self.branch0 = _c(384, 96, 1)
        self.branch1 = _same(384, (64, 1), (96, 3))
        self.branch2 = _same(384, (64, 1), (96, 3), (96, 3))
        self.branch3 = _pool_branch(384, 96)


class V4ReductionA(_Branches):
    names = ("branch0", "branch1", "pool")

    def __init__(self):
        super().__init__()
        self.branch0 = _c(384, 384, 3, stride=2)
        self.branch1 = nn.Sequential(*_same(384, (192, 1), (224, 3)), _c(224, 256, 3, stride=2))


class V4B(_Branches):
    names = ("branch0", "branch1", "branch2", "branch3")

    def __init__(self):
        super().__init__()
        self.branch0 = _c(1024, 384, 1)
        self.branch1 = _same(1024, (192, 1), (224, (1, 7)), (256, (7, 1)))
        self.branch2 = _same(1024, (192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7)))
        self.branch3 = _pool_branch(1024, 128)


class V4ReductionB(_Branches):
    names = ("branch0", "branch1", "pool")

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(_c(1024, 192, 1), _c(192, 192, 3, stride=2))
        self.branch1 = nn.Sequential(*_same(1024, (256, 1), (256, (1, 7)), (320, (7, 1))),
                                     _c(320, 320, 3, stride=2))


class V4C(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _c(1536, 256, 1)
        self.branch1_0 = _c(1536, 384, 1)
        self.branch1_1a, self.branch1_1b = _same(384, (256, (1, 3)))[0], _same(384, (256, (3, 1)))[0]
        self.branch2_0 = _c(1536, 384, 1)
        self.branch2_1, self.branch2_2 = _same(384, (448, (3, 1)))[0], _same(448, (512, (1, 3)))[0]
        self.branch2_3a, self.branch2_3b = _same(512, (256, (1, 3)))[0], _same(512, (256, (3, 1)))[0]
        self.branch3 = _pool_branch(1536, 256)

    def forward(self, x):
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1), self.branch2_3a(b2),
                          self.branch2_3b(b2), self.branch3(x)], 1)


class InceptionV4(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            _c(3, 32, 3, stride=2), _c(32, 32, 3), _c(32, 64, 3, padding=1), V4Mixed3a(), V4Mixed4a(), V4Mixed5a(),
            *(V4A() for _ in range(4)), V4ReductionA(), *(V4B() for _ in range(7)), V4ReductionB(),
            *(V4C() for _ in range(3)))
        self.last_linear = nn.Linear(1536, num_classes)

    def forward(self, x):
        return self.last_linear(self.features(x).mean((2, 3))), []


class IRMixed5b(_Branches):
    names = ("branch0", "branch1", "branch2", "branch3")

    def __init__(self):
        super().__init__()
        self.branch0 = _c(192, 96, 1)
        self.branch1 = _same(192, (48, 1), (64, 5))
        self.branch2 = _same(192, (64, 1), (96, 3), (96, 3))
        self.branch3 = _pool_branch(192, 64)


class _ResidualBlock(_Branches):
    """out = act(conv2d(concat(branches)) * scale + x)"""

    def __init__(self, cin: int, cat: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale, self.relu = scale, relu
        self.conv2d = nn.Conv2d(cat, cin, kernel_size=1)

    def forward(self, x):
        out = self.conv2d(super().forward(x)) * self.scale + x
        return torch.relu(out) if self.relu else out


class Block35(_ResidualBlock):
    names = ("branch0", "branch1", "branch2")

    def __init__(self, scale):
        super().__init__(320, 128, scale)
        self.branch0 = _c(320, 32, 1)
        self.branch1 = _same(320, (32, 1), (32, 3))
        self.branch2 = _same(320, (32, 1), (48, 3), (64, 3))


class Block17(_ResidualBlock):
    names = ("branch0", "branch1")

    def __init__(self, scale):
        super().__init__(1088, 384, scale)
        self.branch0 = _c(1088, 192, 1)
        self.branch1 = _same(1088, (128, 1), (160, (1, 7)), (192, (7, 1)))


class Block8(_ResidualBlock):
    names = ("branch0", "branch1")

    def __init__(self, scale, relu=True):
        super().__init__(2080, 448, scale, relu)
        self.branch0 = _c(2080, 192, 1)
        self.branch1 = _same(2080, (192, 1), (224, (1, 3)), (256, (3, 1)))


class IRMixed6a(_Branches):
    names = ("branch0", "branch1", "pool")

    def __init__(self):
        super().__init__()
        self.branch0 = _c(320, 384, 3, stride=2)
        self.branch1 = nn.Sequential(*_same(320, (256, 1), (256, 3)), _c(256, 384, 3, stride=2))


class IRMixed7a(_Branches):
    names = ("branch0", "branch1", "branch2", "pool")

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(_c(1088, 256, 1), _c(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(_c(1088, 256, 1), _c(256, 288, 3, stride=2))
        self.branch2 = nn.Sequential(*_same(1088, (256, 1), (288, 3)), _c(288, 320, 3, stride=2))


class InceptionResnetV2(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv2d_1a, self.conv2d_2a = _c(3, 32, 3, stride=2), _c(32, 32, 3)
        self.conv2d_2b, self.conv2d_3b, self.conv2d_4a = _c(32, 64, 3, padding=1), _c(64, 80, 1), _c(80, 192, 3)
        self.mixed_5b = IRMixed5b()
        self.repeat = nn.Sequential(*(Block35(0.17) for _ in range(10)))
        self.mixed_6a = IRMixed6a()
        self.repeat_1 = nn.Sequential(*(Block17(0.10) for _ in range(20)))
        self.mixed_7a = IRMixed7a()
        self.repeat_2 = nn.Sequential(*(Block8(0.20) for _ in range(9)))
        self.block8 = Block8(1.0, relu=False)
        self.conv2d_7b = _c(2080, 1536, 1)
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x):
        x = _max(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = _max(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.mixed_7a(self.repeat_1(self.mixed_6a(self.repeat(self.mixed_5b(x)))))
        x = self.conv2d_7b(self.block8(self.repeat_2(x)))
        return self.classif(x.mean((2, 3))), []


# ---------------------------------------------------------------------------------------------------
# helpers


def _graph_state_dict(reference: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision-style keys ('inception3a.branch2.0.conv.weight') -> graph keys
    ('inception3a_branch2_0_conv.weight')."""
    out = {}
    for key, value in reference.state_dict().items():
        path, leaf = key.rsplit(".", 1)
        out[f"{path.replace('.', '_')}.{leaf}"] = value
    return out


def _randomize(model: nn.Module) -> None:
    """He-initialised convs (PyTorch's default init fades to a constant output over 50 layers), and BNs
    with distinct statistics (fresh ones are identities in eval mode), so a mix-up shows."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def _heads_only_in_training(model: nn.Module) -> None:
    """Training mode (so auxiliary heads run) with every layer in eval mode (running BN statistics, no
    dropout), so two networks can be compared on their side outputs too."""
    model.train()
    for m in model.children():
        m.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """Batches of two gain nothing from intra-op threads, and on a shared machine waiting threads cost
    several-fold; restored afterwards so other test files keep their setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------
# presets


def test_registry_finds_the_space():
    assert get_space("inception") is SPACE


@pytest.mark.parametrize("preset, aux", sorted(PARAMS))
def test_presets_have_torchvision_parameter_counts(preset, aux):
    assert nas.count_params(SPACE.graph(preset=preset, aux_logits=aux)) == PARAMS[(preset, aux)]


@pytest.mark.parametrize("preset, k5, aux", [("googlenet", 5, False), ("googlenet", 5, True),
                                              ("googlenet_torchvision", 3, True)])
def test_googlenet_counts_match_the_written_out_reference(preset, k5, aux):
    with torch.device("meta"):
        expected = sum(p.numel() for p in GoogLeNet(1000, k5, aux).parameters())
    assert nas.count_params(SPACE.graph(preset=preset, aux_logits=aux)) == expected


@pytest.mark.parametrize("preset, make", [("inception_v4", InceptionV4), ("inception_resnet_v2", InceptionResnetV2)])
def test_v4_and_resnet_v2_counts_match_the_written_out_reference(preset, make):
    with torch.device("meta"):
        reference = make(1000)
    assert sum(p.numel() for p in reference.parameters()) == PARAMS[(preset, False)]
    g = SPACE.graph(preset=preset)
    assert nas.count_params(g) == PARAMS[(preset, False)]
    with torch.device("meta"):  # and the names: timm's with '.' -> '_'
        assert nas.build(g).state_dict().keys() == _graph_state_dict(reference).keys()


@pytest.mark.parametrize("preset", NO_HEADS)
def test_describe_json_prints_the_count(preset, capsys):
    assert main(["describe", "inception", "--preset", preset, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == PARAMS[(preset, False)] and out["output_shape"] == [1000]
    assert out["input_shape"] == [3, 299, 299]


def test_v4_and_resnet_v2_stage_sizes_at_299():
    shapes = nas.infer_shapes(SPACE.graph(preset="inception_v4"))
    assert [shapes[f"features_{i}_out"] for i in (3, 4, 5, 9, 10, 17, 18, 21)] == [
        (160, 73, 73), (192, 71, 71), (384, 35, 35), (384, 35, 35), (1024, 17, 17), (1024, 17, 17),
        (1536, 8, 8), (1536, 8, 8)]
    shapes = nas.infer_shapes(SPACE.graph(preset="inception_resnet_v2"))
    assert [shapes[n] for n in ("mixed_5b_out", "repeat_9_relu", "mixed_6a_out", "repeat_1_19_relu",
                                "mixed_7a_out", "repeat_2_8_relu", "block8_add", "conv2d_7b_relu")] == [
        (320, 35, 35), (320, 35, 35), (1088, 17, 17), (1088, 17, 17), (2080, 8, 8), (2080, 8, 8), (2080, 8, 8),
        (1536, 8, 8)]


def test_resnet_v2_blocks_scale_their_residual_and_the_last_has_no_relu():
    g = SPACE.graph(preset="inception_resnet_v2")
    factors = {n: d["params"]["factor"] for n, d in g.nodes(data=True) if d["op"] == "scale"}
    assert len(factors) == 10 + 20 + 9 and "block8_scale" not in factors
    assert {factors["repeat_0_scale"], factors["repeat_1_0_scale"], factors["repeat_2_0_scale"]} == {0.17, 0.1, 0.2}
    assert g.nodes["block8_add"]["op"] == "identity" and list(g.successors("block8_add")) == ["conv2d_7b_conv"]
    assert sorted(g.predecessors("repeat_0_relu")) == ["mixed_5b_out", "repeat_0_scale"]
    assert g.nodes["repeat_0_conv2d"]["params"]["bias"] is True


def test_googlenet_stage_sizes_are_those_of_table_1():
    for preset in ("googlenet", "googlenet_torchvision"):
        shapes = nas.infer_shapes(SPACE.graph(preset=preset))
        assert {m: shapes[f"{m}_out"] for m in TABLE_1} == TABLE_1


# timm's benchmark tables (results/benchmark-infer-*.csv, infer_gmacs) for inception_v4 and inception_resnet_v2
@pytest.mark.parametrize("preset, gmacs", [("googlenet_torchvision", 1.498), ("inception_v3", 5.713),
                                           ("inception_v4", 12.28), ("inception_resnet_v2", 13.18)])
def test_flops_match_torchvision(preset, gmacs):
    g = SPACE.graph(preset=preset, aux_logits=True)
    flops = nas.count_flops(g)
    assert abs(flops / 1e9 - gmacs) / gmacs < 0.02
    if preset not in NO_HEADS:
        assert nas.count_flops(g, include_aux=True) > flops


@pytest.mark.parametrize("preset, make", [
    ("googlenet", lambda: GoogLeNet(10, 5, aux=True)),
    ("googlenet_torchvision", lambda: GoogLeNet(10, 3, aux=True)),
    ("inception_v3", lambda: Inception3(10, aux=False)),
    ("inception_v4", lambda: InceptionV4(10)),
    ("inception_resnet_v2", lambda: InceptionResnetV2(10)),
])
def test_built_network_computes_what_the_reference_computes(preset, make):
    torch.manual_seed(0)
    reference = make()
    _randomize(reference)
    side = SMALL_SIDE[preset]
    aux = isinstance(reference, GoogLeNet)  # the v3 head needs 299x299 in torchvision's layout
    model = nas.build(SPACE.graph(preset=preset, num_classes=10, input_shape=(3, side, side), aux_logits=aux))
    model.load_state_dict(_graph_state_dict(reference))  # strict: same names, same shapes
    _heads_only_in_training(reference)
    _heads_only_in_training(model)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, expected_aux = reference(x)
        assert (expected[0] - expected[1]).abs().max() > 1e-3  # the output depends on the input
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        assert len(model.aux_outputs) == len(expected_aux) == (2 if aux else 0)
        for got, want in zip(model.aux_outputs, expected_aux, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_inception_v3_aux_head_computes_what_the_reference_computes_at_299():
    torch.manual_seed(0)
    reference = Inception3(10, aux=True)
    _randomize(reference)
    model = nas.build(SPACE.graph(preset="inception_v3", num_classes=10, aux_logits=True))
    model.load_state_dict(_graph_state_dict(reference))
    _heads_only_in_training(reference)
    _heads_only_in_training(model)
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        expected, expected_aux = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        assert len(model.aux_outputs) == 1
        torch.testing.assert_close(model.aux_outputs[0], expected_aux[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(SPACE.presets))
def test_every_preset_trains_a_step_with_its_auxiliary_heads(preset):
    torch.manual_seed(0)
    side = SMALL_SIDE[preset]
    g = SPACE.graph(preset=preset, num_classes=10, input_shape=(3, side, side), aux_logits=True)
    model = nas.build(g)
    out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, 10)
    n_heads = 2 if preset.startswith("googlenet") else 0 if preset in NO_HEADS else 1
    assert len(model.aux_outputs) == n_heads
    assert all(a.shape == (2, 10) for a in model.aux_outputs)
    (out.square().mean() + 0.3 * sum(a.square().mean() for a in model.aux_outputs)).backward()
    heads = {2: ("aux1_fc2", "aux2_fc2"), 1: ("AuxLogits_fc",), 0: ()}[n_heads]
    first, fc = {"inception_v4": ("features_0_conv", "last_linear"),
                 "inception_resnet_v2": ("conv2d_1a_conv", "classif")}.get(
        preset, ("conv1_conv" if n_heads == 2 else "Conv2d_1a_3x3_conv", "fc"))
    for name in (*heads, fc, first):
        assert getattr(model, name).weight.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, side, side)).shape == (2, 10)
    assert model.aux_outputs == []


# ---------------------------------------------------------------------------------------------------
# the search range


def test_default_is_a_small_network_for_digits():
    g = SPACE.graph(SPACE.defaults())
    assert tuple(g.graph["input_shape"]) == (1, 8, 8)
    assert nas.count_params(g) < 300_000
    assert nas.build(g)(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("seed", range(6))
def test_random_points_build_train_and_round_trip(seed):
    torch.manual_seed(seed)
    a = SPACE.sample(random.Random(seed))
    g = SPACE.graph(a, aux_logits=seed % 2 == 1)
    model = nas.build(g)
    out = model(torch.randn(2, *SPACE.input_shape))
    assert out.shape == (2, SPACE.num_classes)
    (out.square().mean() + sum(x.square().mean() for x in model.aux_outputs)).backward()
    again = nas.from_json(nas.to_json(g))
    assert nas.arch_id(again) == nas.arch_id(g)
    assert again.graph["assignment"] == a


@pytest.mark.parametrize("name, value", [("family", "v2"), ("stem", "cifar"), ("width", 0.3), ("depth2", 9),
                                         ("stage1_0_5x5", "7x7"), ("stage2_3_nxn", "1x7"), ("stage2_n", 4)])
def test_value_outside_its_domain_names_the_variable(name, value):
    with pytest.raises(nas.SpaceError, match=name):
        SPACE.graph({**SPACE.defaults(), name: value})


def test_bad_options_and_inputs_are_named():
    with pytest.raises(nas.SpaceError, match="aux_logits"):
        SPACE.graph(SPACE.defaults(), aux_logits="yes")
    with pytest.raises(nas.SpaceError, match="auxlogits"):
        SPACE.graph(SPACE.defaults(), auxlogits=True)
    with pytest.raises(nas.SpaceError, match=r"\(C, H, W\)"):
        SPACE.graph(SPACE.defaults(), input_shape=(1, 64))


def test_5x5_branch_choices_keep_the_module_output():
    base = {**SPACE.defaults(), "depth1": 1}
    graphs = {c: SPACE.graph({**base, "stage1_0_5x5": c}) for c in ("5x5", "3x3", "double3x3")}
    shapes = {c: nas.infer_shapes(g) for c, g in graphs.items()}
    assert len({s["inception3a_out"] for s in shapes.values()}) == 1
    assert graphs["5x5"].nodes["inception3a_branch3_1_conv"]["params"]["kernel_size"] == 5
    assert graphs["3x3"].nodes["inception3a_branch3_1_conv"]["params"]["kernel_size"] == 3
    assert "inception3a_branch3_2_conv" in graphs["double3x3"]
    assert "inception3a_branch3_2_conv" not in graphs["3x3"]
    assert len({nas.arch_id(g) for g in graphs.values()}) == 3


def test_nxn_factorisation_keeps_the_module_output():
    base = {**SPACE.defaults(), "family": "v3", "depth2": 1}
    square = SPACE.graph({**base, "stage2_0_nxn": "nxn"})
    factorised = SPACE.graph({**base, "stage2_0_nxn": "1xn_nx1"})
    assert nas.infer_shapes(square)["Mixed_6b_out"] == nas.infer_shapes(factorised)["Mixed_6b_out"]
    assert square.nodes["Mixed_6b_branch7x7_2_conv"]["params"]["kernel_size"] == 7
    assert factorised.nodes["Mixed_6b_branch7x7_2_conv"]["params"]["kernel_size"] == [1, 7]
    assert factorised.nodes["Mixed_6b_branch7x7_3_conv"]["params"]["kernel_size"] == [7, 1]
    assert nas.count_params(square) > nas.count_params(factorised)


@pytest.mark.parametrize("family, module, branch, reduce", [("v4", "features_6", "branch2_", 64),
                                                            ("resnet_v2", "repeat_0", "branch2_", 32)])
def test_5x5_choice_applies_to_stage_1_of_v4_and_resnet_v2(family, module, branch, reduce):
    base = {**SPACE.defaults(), "family": family, "depth1": 1, "width": 1.0}
    graphs = {c: SPACE.graph({**base, "stage1_0_5x5": c}) for c in ("5x5", "3x3", "double3x3")}
    assert len({nas.infer_shapes(g)[f"{module}_out"] for g in graphs.values()}) == 1
    kernels = {c: [g.nodes[f"{module}_{branch}{i}_conv"]["params"]["kernel_size"] for i in range(3)
                   if f"{module}_{branch}{i}_conv" in g] for c, g in graphs.items()}
    assert kernels == {"5x5": [1, 5], "3x3": [1, 3], "double3x3": [1, 3, 3]}
    assert graphs["5x5"].nodes[f"{module}_{branch}0_conv"]["params"]["out_channels"] == reduce
    if family == "resnet_v2":  # the reference's double 3x3 is 48 then 64 wide
        assert graphs["double3x3"].nodes[f"{module}_{branch}1_conv"]["params"]["out_channels"] == 48


@pytest.mark.parametrize("family, module, convs", [
    ("v4", "features_11", {"branch1": ([1, 7], [7, 1]), "branch2": ([7, 1], [1, 7], [7, 1], [1, 7])}),
    ("resnet_v2", "repeat_1_0", {"branch1": ([1, 7], [7, 1])}),
])
def test_nxn_choice_applies_to_stage_2_of_v4_and_resnet_v2(family, module, convs):
    base = {**SPACE.defaults(), "family": family, "depth1": 1, "depth2": 1, "width": 1.0}
    if family == "v4":
        module = "features_8"  # 6: the one stage-1 module, 7: Reduction-A
    factorised = SPACE.graph({**base, "stage2_0_nxn": "1xn_nx1"})
    square = SPACE.graph({**base, "stage2_0_nxn": "nxn", "stage2_n": 5})
    assert nas.infer_shapes(square)[f"{module}_out"] == nas.infer_shapes(factorised)[f"{module}_out"]
    for branch, kernels in convs.items():
        got = [factorised.nodes[f"{module}_{branch}_{i}_conv"]["params"]["kernel_size"]
               for i in range(1, len(kernels) + 1)]
        assert got == list(kernels)
        squares = [square.nodes[f"{module}_{branch}_{i}_conv"]["params"]["kernel_size"]
                   for i in range(1, len(kernels) // 2 + 1)]
        assert squares == [5] * (len(kernels) // 2) and f"{module}_{branch}_{len(kernels) // 2 + 1}_conv" not in square


def test_modules_beyond_their_variables_repeat_the_last_choice():
    a = {**SPACE.defaults(), "family": "resnet_v2", "depth1": 10, "depth2": 8, "depth3": 1}
    a.update({"stage1_2_5x5": "3x3", "stage1_3_5x5": "5x5", "stage2_4_nxn": "1xn_nx1", "stage2_5_nxn": "nxn"})
    g = SPACE.graph(a)
    assert [g.nodes[f"repeat_{i}_branch2_1_conv"]["params"]["kernel_size"] for i in (2, 3, 4, 9)] == [3, 5, 5, 5]
    assert [g.nodes[f"repeat_1_{i}_branch1_1_conv"]["params"]["kernel_size"] for i in (4, 5, 6, 7)] == [
        [1, 7], 7, 7, 7]


def test_v4_and_resnet_v2_have_no_auxiliary_heads():
    for preset in NO_HEADS:
        g = SPACE.graph(preset=preset, aux_logits=True)
        assert not nas.graph.aux_nodes(g)
        assert nas.arch_id(g) == nas.arch_id(SPACE.graph(preset=preset))


def test_variables_that_do_not_apply_leave_the_graph_alone():
    a = SPACE.defaults()  # v1, depth2 = 2
    same = [a, {**a, "stage2_0_nxn": "nxn"}, {**a, "stage2_n": 3}, {**a, "stage2_5_5x5": "double3x3"}]
    assert len({nas.arch_id(SPACE.graph(x)) for x in same}) == 1
    v3 = {**a, "family": "v3"}
    assert nas.arch_id(SPACE.graph(v3)) == nas.arch_id(SPACE.graph({**v3, "stage2_0_5x5": "3x3"}))
    assert nas.arch_id(SPACE.graph(v3)) != nas.arch_id(SPACE.graph({**v3, "stage1_0_5x5": "3x3"}))


def test_extra_modules_repeat_the_last_reference_module():
    g = SPACE.graph({**SPACE.defaults(), "depth2": 6, "width": 1.0})
    shapes = nas.infer_shapes(g)
    assert shapes["inception4f_out"][0] == shapes["inception4e_out"][0] == 832


@pytest.mark.parametrize("depth2, heads", [(1, ["aux1_fc2"]), (2, ["aux1_fc2", "aux2_fc2"]),
                                           (5, ["aux1_fc2", "aux2_fc2"])])
def test_googlenet_heads_follow_4a_and_4d_or_the_last_stage_2_module(depth2, heads):
    g = SPACE.graph({**SPACE.defaults(), "depth2": depth2}, aux_logits=True)
    assert [n for n in heads if n in g] == heads and "aux3_fc2" not in g
    last = f"inception4{'abcde'[min(3, depth2 - 1)]}_out"
    assert ("aux2_avgpool" in g) == (depth2 > 1)
    if depth2 > 1:
        assert list(g.predecessors("aux2_avgpool")) == [last]
    assert list(g.predecessors("aux1_avgpool")) == ["inception4a_out"]
    assert all(g.nodes[n].get("aux") for n in g if n.startswith("aux"))


# ---------------------------------------------------------------------------------------------------
# the small-input rule


def _fitted_paddings(g) -> dict[str, object]:
    """Padding of every layer the reference runs unpadded (all but the modules' stride-1 pool branches)."""
    out = {}
    for n, d in g.nodes(data=True):
        p = d.get("params", {})
        if "padding" in p and not (d["op"] in ("maxpool", "avgpool") and p.get("stride") == 1):
            out[n] = p["padding"]
    return out


def test_small_input_rule_changes_nothing_where_the_reference_runs():
    for preset in ("googlenet", "inception_v3", "inception_v4", "inception_resnet_v2"):
        pads = _fitted_paddings(SPACE.graph(preset=preset, aux_logits=True))
        assert len(pads) >= 4 and set(pads.values()) == {0}
    for preset in NO_HEADS:
        assert set(_fitted_paddings(SPACE.graph(preset=preset, input_shape=(3, 75, 75))).values()) == {0}
        assert set(_fitted_paddings(SPACE.graph(preset=preset, input_shape=(3, 74, 74))).values()) == {0, 1}
    at_299 = _fitted_paddings(SPACE.graph(preset="inception_v3"))
    assert _fitted_paddings(SPACE.graph(preset="inception_v3", input_shape=(3, 75, 75))) == at_299
    at_74 = _fitted_paddings(SPACE.graph(preset="inception_v3", input_shape=(3, 74, 74)))
    assert at_74["Mixed_7a_pool"] == 1  # 2x2 -> 1x1 instead of no output
    assert {n for n, p in at_74.items() if p != 0} == {"Mixed_7a_pool", "Mixed_7a_branch3x3_2_conv",
                                                        "Mixed_7a_branch7x7x3_4_conv"}


@pytest.mark.parametrize("family", ["v1", "v3", "v4", "resnet_v2"])
@pytest.mark.parametrize("side", [1, 2, 8, 33])
def test_spatial_size_never_collapses(family, side):
    a = {**SPACE.defaults(), "family": family, "stem": "imagenet", "width": 0.125}
    g = SPACE.graph(a, input_shape=(1, side, side), aux_logits=True)
    shapes = nas.infer_shapes(g)
    assert all(min(s[1:]) >= 1 for s in shapes.values() if len(s) == 3)
    model = nas.build(g)
    model(torch.randn(2, 1, side, side)).sum().backward()


def test_small_stem_keeps_digits_at_full_resolution():
    modules = {"v1": ("inception3a", "inception4a", "inception5a"), "v3": ("Mixed_5b", "Mixed_6b", "Mixed_7b"),
               "v4": ("features_6", "features_8", "features_10"), "resnet_v2": ("repeat_0", "repeat_1_0", "block8")}
    for family, sides in (("v1", (8, 4, 2)), ("v3", (8, 3, 1)), ("v4", (8, 3, 1)), ("resnet_v2", (8, 3, 1))):
        a = {**SPACE.defaults(), "family": family, "depth1": 1, "depth2": 1, "depth3": 1}
        shapes = nas.infer_shapes(SPACE.graph(a))
        names = modules[family]
        assert tuple(shapes[f"{n}_out"][1] for n in names) == sides


def test_description_states_the_small_input_rule():
    assert "Small inputs:" in SPACE.description and "below 1" in SPACE.description
