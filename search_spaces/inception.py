"""Inception search space: GoogLeNet (Inception v1, Szegedy et al. 2015), Inception v3 (Szegedy et al.
2016, "Rethinking the Inception Architecture"), Inception-v4 and Inception-ResNet-v2 (Szegedy et al. 2016,
"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"), with the v2/v3
factorisations as per-module choices.

Layout: stem, three stages of Inception modules with a down-sampling step between them, global average
pool, dropout, fully connected layer. ``family`` picks the module types and the reference widths:

- ``v1`` (torchvision's GoogLeNet): every module has four branches, 1x1 | 1x1 reduce -> 3x3 |
  1x1 reduce -> "5x5" | 3x3/1 max-pool -> 1x1 projection; widths per module from the paper's Table 1
  (3a-3b, 4a-4e, 5a-5b); 3x3/2 (ceil mode) and 2x2/2 max-pools between the stages; dropout 0.2.
- ``v3`` (torchvision's Inception3): stage 1 = InceptionA (1x1 | 1x1 -> "5x5" | 1x1 -> 3x3 -> 3x3 |
  3x3/1 avg-pool -> 1x1), stage 2 = InceptionC (n x n branches), stage 3 = InceptionE (expanded 1x3 / 3x1
  banks); the reduction modules InceptionB and InceptionD between the stages; dropout 0.5.
- ``v4`` (timm's / Cadene's InceptionV4): stage 1 = Inception-A (1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" |
  avg-pool -> 1x1, all 96 wide), stage 2 = Inception-B (1 x 7 / 7 x 1 banks), stage 3 = Inception-C
  (expanded 1x3 / 3x1 banks); Reduction-A and Reduction-B between the stages; dropout 0.2 (the paper's
  keep probability 0.8). Reference depths 4 / 7 / 3.
- ``resnet_v2`` (timm's InceptionResnetV2): stem + Mixed_5b, stage 1 = Block35 (Inception-ResNet-A),
  stage 2 = Block17 (-B), stage 3 = Block8 (-C): each concatenates its branches, projects them back to
  its input's width with a 1x1 conv (with bias), scales that by 0.17 / 0.10 / 0.20 (op ``scale``) and
  adds the input, then ReLU; the last Block8 of stage 3 (``block8``) has scale 1 and no ReLU; Mixed_6a
  and Mixed_7a between the stages, a 1x1 conv to 1536 (``conv2d_7b``) after them; dropout 0.2. Reference
  depths 10 / 20 / 10 (the tenth Block8 being ``block8``).

Every conv is torchvision's BasicConv2d (timm's ConvNormAct): conv without bias, BN (eps 0.001), ReLU.
A stage holds ``depth{s}`` modules; modules beyond the reference's count repeat its last module's widths.
``width`` multiplies every conv width (rounded, at least 1) and the hidden fc layer of GoogLeNet's
auxiliary heads (not the residual projections, which match their input).

Choices per module: ``stage{s}_{i}_5x5`` is the "5x5" branch of module i of stage s (v1 modules, and the
stage-1 modules of v3, v4 and resnet_v2): ``5x5`` (reduce -> 5x5, the paper's for v1 and v3), ``3x3``
(reduce -> 3x3, torchvision's GoogLeNet, see pytorch/vision#906), ``double3x3`` (reduce -> 3x3 -> 3x3,
the v2 factorisation, both of the branch's width; v4's and resnet_v2's reference, the latter 48 then 64
wide). ``stage2_{i}_nxn`` is the n x n factorisation of stage-2 module i (v3's InceptionC, v4's
Inception-B, resnet_v2's Block17): ``1xn_nx1`` (the reference: 1 x n then n x 1, twice in the double
branches) or ``nxn`` (one n x n conv in each pair's place, of the pair's output width), with n =
``stage2_n``. Modules beyond the 4th / 6th / 3rd of a stage have no variables of their own and repeat
the choice of the last one that has. Variables that do not apply (beyond a stage's depth, or to another
family) are ignored, so two such assignments give the same graph and the same arch id. None is an op
choice: a module may be absent, and double3x3 / 1xn_nx1 change several nodes.

Stems: ``imagenet`` = the family's reference stem (v1: 7x7/2 conv, 3x3/2 max-pool, 1x1 conv, 3x3 conv,
3x3/2 max-pool; v3: Conv2d_1a_3x3 ... Conv2d_4a_3x3 with two 3x3/2 max-pools; v4: three 3x3 convs,
Mixed_3a, Mixed_4a, Mixed_5a; resnet_v2: conv2d_1a ... conv2d_4a with two 3x3/2 max-pools, as v3's);
``small`` = one 3x3 conv to 192 (x width) channels and no pooling, for small images (8x8 digits, 32x32
CIFAR). resnet_v2's Mixed_5b follows either stem.

Auxiliary heads (option ``aux_logits``, not a search variable; nodes marked aux, run only in training):
v1: torchvision's GoogLeNet InceptionAux (adaptive 4x4 avg-pool, 1x1 conv 128, fc 1024, ReLU, dropout
0.7, fc) after stage-2 modules 0 and 3 (4a, 4d); when stage 2 is shorter the second head follows its last
module, and a one-module stage 2 gets one head. v3: torchvision's InceptionAux (5x5/3 avg-pool, 1x1 conv
128, 5x5 conv 768, global pool, fc) after the last stage-2 module (Mixed_6e). v4 and resnet_v2 have no
auxiliary heads (as in timm); the option adds none to them.

Small inputs: every layer the reference runs unpadded (strided convs and pools of the stems and the
reduction modules, the between-stage pools, the unpadded 3x3 convs of the v3, v4 and resnet_v2 stems and
v3's aux head) keeps its reference padding wherever that leaves an output, and gets padding k//2 along a
spatial side that would otherwise shrink below 1. So the spatial size never collapses below 1x1, any (C,
H, W) input builds, and at sizes where the reference network runs (GoogLeNet; Inception v3's main path,
v4 and resnet_v2 from 75x75, v3's aux head from 299x299) nothing changes. With the small stem, 8x8 digits
run the stages at 8/4/2 (v1) or 8/3/1 (v3, v4, resnet_v2).

Node names are torchvision's module paths (timm's for v4 and resnet_v2) with '.' -> '_'
(``inception3a_branch2_1_conv``, ``Mixed_6b_branch7x7_2_bn``, ``aux1_fc2``, ``AuxLogits_conv1_conv``,
``features_11_branch1_2_conv``, ``repeat_1_3_conv2d``, ``last_linear``, ``classif``), so torchvision / timm
weights load after a key rename; each module's concatenation is ``<module>_out`` (``inception3a_out``,
``Mixed_5b_out``, ``features_6_out``, ``repeat_0_out``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.graph import ArchGraph, ArchitectureError
from nas.ops import OpError, get_op, merge_shape, resolve_params
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

FAMILIES = ("v1", "v3", "v4", "resnet_v2")
BRANCH_5X5 = ("5x5", "3x3", "double3x3")
NXN = ("1xn_nx1", "nxn")
DEPTHS = ((1, 2, 3, 4, 5, 6, 8, 10), (1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20), (1, 2, 3, 4, 5, 6, 8, 10))
MAX_CHOICES = (4, 6, 3)  # modules per stage with choice variables of their own; later ones repeat the last
LETTERS = "abcdefghijklmnopqrstuvwxyz"

# GoogLeNet Table 1, per module: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
V1_WIDTHS = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
     (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)
V3_POOL_FEATURES = (32, 64, 64)  # InceptionA's pool projection, Mixed_5b..5d
V3_CHANNELS_7X7 = (128, 160, 160, 192)  # InceptionC's inner width, Mixed_6b..6e
V1_AUX_AFTER = (0, 3)  # stage-2 modules followed by an auxiliary head (4a, 4d)

VARIABLES = [
    Categorical("family", FAMILIES),
    Categorical("stem", ("small", "imagenet")),
    Ordinal("width", (0.0625, 0.125, 0.25, 0.5, 1.0), default=0.25),
    Ordinal("depth1", DEPTHS[0], default=1),
    Ordinal("depth2", DEPTHS[1], default=2),
    Ordinal("depth3", DEPTHS[2], default=1),
    Ordinal("stage2_n", (3, 5, 7), default=7),
    *(Categorical(f"stage{s}_{i}_5x5", BRANCH_5X5) for s in (1, 2, 3) for i in range(MAX_CHOICES[s - 1])),
    *(Categorical(f"stage2_{i}_nxn", NXN) for i in range(MAX_CHOICES[1])),
]


def _choice(a: dict[str, Any], stage: int, i: int, kind: str) -> str:
    """Module i's value of a per-module choice (`kind` '5x5' or 'nxn'); modules beyond the last one with a
    variable of its own repeat that one's."""
    return a[f"stage{stage}_{min(i, MAX_CHOICES[stage - 1] - 1)}_{kind}"]


# ---------------------------------------------------------------------------------------------------
# graph writing with running shapes (the small-input padding rule needs each layer's input size)


def _keeps_output(size: int, k: int, stride: int, pad: int, ceil: bool) -> bool:
    span = size + 2 * pad - k
    return span >= 0 or (ceil and span > -stride)


@dataclass
class _Net:
    g: ArchGraph
    width: float
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def ch(self, c: int) -> int:
        return max(1, int(c * self.width + 0.5))

    def op(self, node: str, op: str, inputs: str | list[str], merge: str | None = None, aux: bool = False,
           **params: Any) -> str:
        self.g.add_op(node, op, inputs, merge=merge, aux=aux, **params)
        ins = [inputs] if isinstance(inputs, str) else inputs
        try:
            x = merge_shape(merge, [self.shapes[i] for i in ins], "merge") if merge else self.shapes[ins[0]]
            self.shapes[node] = tuple(get_op(op).shape(resolve_params(op, params), x))
        except OpError as e:
            raise ArchitectureError(f"space 'inception', node {node!r}: {e}") from None
        return node

    def fit_padding(self, x: str, k: int | list[int], stride: int, ceil: bool = False) -> int | list[int]:
        """0 (the reference's), or k//2 along a spatial side where no padding would leave no output."""
        ks = list(k) if isinstance(k, list) else [k, k]
        pads = [0 if _keeps_output(size, kk, stride, 0, ceil) else kk // 2
                for size, kk in zip(self.shapes[x][1:], ks, strict=True)]
        return pads[0] if pads[0] == pads[1] else pads

    def conv(self, name: str, x: str, out: int, k: int | list[int], stride: int = 1, unpadded: bool = False,
             aux: bool = False, scale: bool = True) -> str:
        """torchvision's BasicConv2d: conv (no bias) -> BN (eps 0.001) -> ReLU. 'same' padding unless the
        reference runs it `unpadded` (then the small-input rule applies)."""
        params: dict[str, Any] = {"out_channels": self.ch(out) if scale else out, "kernel_size": k}
        if stride != 1:
            params["stride"] = stride
        if unpadded:
            params["padding"] = self.fit_padding(x, k, stride)
        y = self.op(f"{name}_conv", "conv", x, aux=aux, **params)
        y = self.op(f"{name}_bn", "bn", y, aux=aux, eps=0.001)
        return self.op(f"{name}_relu", "relu", y, aux=aux)

    def pool(self, name: str, x: str, op: str, k: int, stride: int, ceil: bool = False,
             aux: bool = False) -> str:
        """A strided pool the reference runs unpadded (the small-input rule applies)."""
        params: dict[str, Any] = {"kernel_size": k, "stride": stride,
                                  "padding": self.fit_padding(x, k, stride, ceil)}
        if ceil:
            params["ceil_mode"] = True
        return self.op(name, op, x, aux=aux, **params)

    def concat(self, name: str, branches: list[str]) -> str:
        return self.op(f"{name}_out", "identity", branches, merge="concat")


# ---------------------------------------------------------------------------------------------------
# modules


def _branch_5x5(net: _Net, prefix: str, x: str, reduce: int, out: int, choice: str, first: int,
                mid: int | None = None) -> str:
    """1x1 reduce, then 5x5 | 3x3 | 3x3 (`mid` channels, default `out`) -> 3x3; convs are named `prefix` + a
    number counted from `first` (torchvision counts GoogLeNet's from 0, Inception3's from 1)."""
    y = net.conv(f"{prefix}{first}", x, reduce, 1)
    if choice == "5x5":
        return net.conv(f"{prefix}{first + 1}", y, out, 5)
    if choice == "3x3":
        return net.conv(f"{prefix}{first + 1}", y, out, 3)
    y = net.conv(f"{prefix}{first + 1}", y, out if mid is None else mid, 3)
    return net.conv(f"{prefix}{first + 2}", y, out, 3)


def _v1_module(net: _Net, name: str, x: str, widths: tuple[int, ...], b5: str) -> str:
    c1, r3, c3, r5, c5, proj = widths
    b1 = net.conv(f"{name}_branch1", x, c1, 1)
    b2 = net.conv(f"{name}_branch2_1", net.conv(f"{name}_branch2_0", x, r3, 1), c3, 3)
    b3 = _branch_5x5(net, f"{name}_branch3_", x, r5, c5, b5, first=0)
    b4 = net.op(f"{name}_branch4_0", "maxpool", x, kernel_size=3, stride=1, padding=1, ceil_mode=True)
    b4 = net.conv(f"{name}_branch4_1", b4, proj, 1)
    return net.concat(name, [b1, b2, b3, b4])


def _avg_pool_branch(net: _Net, name: str, x: str, out: int) -> str:
    y = net.op(f"{name}_pool", "avgpool", x, kernel_size=3, stride=1, padding=1)
    return net.conv(f"{name}_branch_pool", y, out, 1)


def _inception_a(net: _Net, name: str, x: str, pool_features: int, b5: str) -> str:
    b1 = net.conv(f"{name}_branch1x1", x, 64, 1)
    b5x5 = _branch_5x5(net, f"{name}_branch5x5_", x, 48, 64, b5, first=1)
    dbl = net.conv(f"{name}_branch3x3dbl_1", x, 64, 1)
    dbl = net.conv(f"{name}_branch3x3dbl_3", net.conv(f"{name}_branch3x3dbl_2", dbl, 96, 3), 96, 3)
    return net.concat(name, [b1, b5x5, dbl, _avg_pool_branch(net, name, x, pool_features)])


def _inception_b(net: _Net, name: str, x: str) -> str:
    b3 = net.conv(f"{name}_branch3x3", x, 384, 3, stride=2, unpadded=True)
    dbl = net.conv(f"{name}_branch3x3dbl_2", net.conv(f"{name}_branch3x3dbl_1", x, 64, 1), 96, 3)
    dbl = net.conv(f"{name}_branch3x3dbl_3", dbl, 96, 3, stride=2, unpadded=True)
    return net.concat(name, [b3, dbl, net.pool(f"{name}_pool", x, "maxpool", 3, 2)])


def _inception_c(net: _Net, name: str, x: str, c7: int, n: int, factor: str) -> str:
    b1 = net.conv(f"{name}_branch1x1", x, 192, 1)
    b7 = net.conv(f"{name}_branch7x7_1", x, c7, 1)
    dbl = net.conv(f"{name}_branch7x7dbl_1", x, c7, 1)
    if factor == "1xn_nx1":
        b7 = net.conv(f"{name}_branch7x7_3", net.conv(f"{name}_branch7x7_2", b7, c7, [1, n]), 192, [n, 1])
        for i, (k, out) in enumerate((([n, 1], c7), ([1, n], c7), ([n, 1], c7), ([1, n], 192)), start=2):
            dbl = net.conv(f"{name}_branch7x7dbl_{i}", dbl, out, k)
    else:
        b7 = net.conv(f"{name}_branch7x7_2", b7, 192, n)
        dbl = net.conv(f"{name}_branch7x7dbl_3", net.conv(f"{name}_branch7x7dbl_2", dbl, c7, n), 192, n)
    return net.concat(name, [b1, b7, dbl, _avg_pool_branch(net, name, x, 192)])


def _inception_d(net: _Net, name: str, x: str) -> str:
    b3 = net.conv(f"{name}_branch3x3_1", x, 192, 1)
    b3 = net.conv(f"{name}_branch3x3_2", b3, 320, 3, stride=2, unpadded=True)
    b7 = net.conv(f"{name}_branch7x7x3_1", x, 192, 1)
    b7 = net.conv(f"{name}_branch7x7x3_3", net.conv(f"{name}_branch7x7x3_2", b7, 192, [1, 7]), 192, [7, 1])
    b7 = net.conv(f"{name}_branch7x7x3_4", b7, 192, 3, stride=2, unpadded=True)
    return net.concat(name, [b3, b7, net.pool(f"{name}_pool", x, "maxpool", 3, 2)])


def _inception_e(net: _Net, name: str, x: str) -> str:
    b1 = net.conv(f"{name}_branch1x1", x, 320, 1)
    b3 = net.conv(f"{name}_branch3x3_1", x, 384, 1)
    b3a = net.conv(f"{name}_branch3x3_2a", b3, 384, [1, 3])
    b3b = net.conv(f"{name}_branch3x3_2b", b3, 384, [3, 1])
    dbl = net.conv(f"{name}_branch3x3dbl_2", net.conv(f"{name}_branch3x3dbl_1", x, 448, 1), 384, 3)
    dbla = net.conv(f"{name}_branch3x3dbl_3a", dbl, 384, [1, 3])
    dblb = net.conv(f"{name}_branch3x3dbl_3b", dbl, 384, [3, 1])
    return net.concat(name, [b1, b3a, b3b, dbla, dblb, _avg_pool_branch(net, name, x, 192)])


# -- Inception-v4 and Inception-ResNet-v2 (Szegedy et al. 2016), in timm's layout ----------------------


def _pool_branch(net: _Net, name: str, x: str, out: int) -> str:
    """3x3/1 average pool without the padding in its count, then a 1x1 conv (timm's ``branch3``)."""
    y = net.op(f"{name}_branch3_0", "avgpool", x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return net.conv(f"{name}_branch3_1", y, out, 1)


def _reduce_pool(net: _Net, name: str, x: str) -> str:
    return net.pool(name, x, "maxpool", 3, 2)


def _factorised(net: _Net, prefix: str, x: str, widths: tuple[int, ...], n: int, factor: str,
                first_vertical: bool = False) -> str:
    """1x1 conv to widths[0], then pairs of 1 x n and n x 1 convs (n x 1 first where `first_vertical`), one
    conv per further width; with factor 'nxn' each pair is one n x n conv of the pair's output width. Convs
    are named `prefix` + 0, 1, ..."""
    y = net.conv(f"{prefix}0", x, widths[0], 1)
    rest = widths[1:]
    if factor == "nxn":
        for j, out in enumerate(rest[1::2], start=1):
            y = net.conv(f"{prefix}{j}", y, out, n)
        return y
    kernels = ([n, 1], [1, n]) if first_vertical else ([1, n], [n, 1])
    for j, out in enumerate(rest, start=1):
        y = net.conv(f"{prefix}{j}", y, out, kernels[(j - 1) % 2])
    return y


def _v4_a(net: _Net, name: str, x: str, b5: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 96, 1)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, 64, 1), 96, 3)
    b2 = _branch_5x5(net, f"{name}_branch2_", x, 64, 96, b5, first=0)
    return net.concat(name, [b0, b1, b2, _pool_branch(net, name, x, 96)])


def _reduction_a(net: _Net, name: str, x: str, k: int, l: int, m: int, n: int) -> str:  # noqa: E741
    """Szegedy et al. 2016's Reduction-A with its filter counts (k, l, m, n): (192, 224, 256, 384) in
    Inception-v4, (256, 256, 384, 384) in Inception-ResNet-v2 (timm's mixed_6a)."""
    b0 = net.conv(f"{name}_branch0", x, n, 3, stride=2, unpadded=True)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, k, 1), l, 3)
    b1 = net.conv(f"{name}_branch1_2", b1, m, 3, stride=2, unpadded=True)
    return net.concat(name, [b0, b1, _reduce_pool(net, f"{name}_branch2", x)])


def _v4_b(net: _Net, name: str, x: str, n: int, factor: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 384, 1)
    b1 = _factorised(net, f"{name}_branch1_", x, (192, 224, 256), n, factor)
    b2 = _factorised(net, f"{name}_branch2_", x, (192, 192, 224, 224, 256), n, factor, first_vertical=True)
    return net.concat(name, [b0, b1, b2, _pool_branch(net, name, x, 128)])


def _v4_reduction_b(net: _Net, name: str, x: str) -> str:
    b0 = net.conv(f"{name}_branch0_0", x, 192, 1)
    b0 = net.conv(f"{name}_branch0_1", b0, 192, 3, stride=2, unpadded=True)
    b1 = _factorised(net, f"{name}_branch1_", x, (256, 256, 320), 7, "1xn_nx1")
    b1 = net.conv(f"{name}_branch1_3", b1, 320, 3, stride=2, unpadded=True)
    return net.concat(name, [b0, b1, _reduce_pool(net, f"{name}_branch2", x)])


def _v4_c(net: _Net, name: str, x: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 256, 1)
    b1 = net.conv(f"{name}_branch1_0", x, 384, 1)
    b1a, b1b = net.conv(f"{name}_branch1_1a", b1, 256, [1, 3]), net.conv(f"{name}_branch1_1b", b1, 256, [3, 1])
    b2 = net.conv(f"{name}_branch2_1", net.conv(f"{name}_branch2_0", x, 384, 1), 448, [3, 1])
    b2 = net.conv(f"{name}_branch2_2", b2, 512, [1, 3])
    b2a, b2b = net.conv(f"{name}_branch2_3a", b2, 256, [1, 3]), net.conv(f"{name}_branch2_3b", b2, 256, [3, 1])
    return net.concat(name, [b0, b1a, b1b, b2a, b2b, _pool_branch(net, name, x, 256)])


def _residual(net: _Net, name: str, x: str, branches: list[str], scale: float, relu: bool = True) -> str:
    """Inception-ResNet's residual: concat the branches, 1x1 conv (with bias) back to x's channels, times
    `scale`, plus x, ReLU (``{name}_relu``; without it the sum is ``{name}_add``)."""
    y = net.op(f"{name}_conv2d", "conv", net.concat(name, branches), out_channels=net.shapes[x][0], kernel_size=1,
               bias=True)
    if scale != 1.0:
        y = net.op(f"{name}_scale", "scale", y, factor=scale)
    if relu:
        return net.op(f"{name}_relu", "relu", [y, x], merge="sum")
    return net.op(f"{name}_add", "identity", [y, x], merge="sum")


def _mixed_5b(net: _Net, name: str, x: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 96, 1)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, 48, 1), 64, 5)
    b2 = _branch_5x5(net, f"{name}_branch2_", x, 64, 96, "double3x3", first=0)
    return net.concat(name, [b0, b1, b2, _pool_branch(net, name, x, 64)])


def _block35(net: _Net, name: str, x: str, b5: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 32, 1)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, 32, 1), 32, 3)
    b2 = _branch_5x5(net, f"{name}_branch2_", x, 32, 64, b5, first=0, mid=48)
    return _residual(net, name, x, [b0, b1, b2], 0.17)


def _block17(net: _Net, name: str, x: str, n: int, factor: str) -> str:
    b0 = net.conv(f"{name}_branch0", x, 192, 1)
    b1 = _factorised(net, f"{name}_branch1_", x, (128, 160, 192), n, factor)
    return _residual(net, name, x, [b0, b1], 0.10)


def _mixed_7a(net: _Net, name: str, x: str) -> str:
    b0 = net.conv(f"{name}_branch0_1", net.conv(f"{name}_branch0_0", x, 256, 1), 384, 3, stride=2, unpadded=True)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, 256, 1), 288, 3, stride=2, unpadded=True)
    b2 = net.conv(f"{name}_branch2_1", net.conv(f"{name}_branch2_0", x, 256, 1), 288, 3)
    b2 = net.conv(f"{name}_branch2_2", b2, 320, 3, stride=2, unpadded=True)
    return net.concat(name, [b0, b1, b2, _reduce_pool(net, f"{name}_branch3", x)])


def _block8(net: _Net, name: str, x: str, last: bool) -> str:
    b0 = net.conv(f"{name}_branch0", x, 192, 1)
    b1 = net.conv(f"{name}_branch1_1", net.conv(f"{name}_branch1_0", x, 192, 1), 224, [1, 3])
    b1 = net.conv(f"{name}_branch1_2", b1, 256, [3, 1])
    return _residual(net, name, x, [b0, b1], 1.0 if last else 0.20, relu=not last)


# ---------------------------------------------------------------------------------------------------
# auxiliary heads


def _v1_aux(net: _Net, name: str, x: str, num_classes: int) -> str:
    y = net.op(f"{name}_avgpool", "adaptive_avgpool", x, aux=True, output_size=4)
    y = net.conv(f"{name}_conv", y, 128, 1, aux=True)
    y = net.op(f"{name}_flatten", "flatten", y, aux=True)
    y = net.op(f"{name}_fc1", "linear", y, aux=True, out_features=net.ch(1024))
    y = net.op(f"{name}_relu", "relu", y, aux=True)
    y = net.op(f"{name}_dropout", "dropout", y, aux=True, p=0.7)
    return net.op(f"{name}_fc2", "linear", y, aux=True, out_features=num_classes)


def _v3_aux(net: _Net, name: str, x: str, num_classes: int) -> str:
    y = net.pool(f"{name}_avgpool", x, "avgpool", 5, 3, aux=True)
    y = net.conv(f"{name}_conv0", y, 128, 1, aux=True)
    y = net.conv(f"{name}_conv1", y, 768, 5, unpadded=True, aux=True)
    y = net.op(f"{name}_gap", "global_avgpool", y, aux=True)
    return net.op(f"{name}_fc", "linear", y, aux=True, out_features=num_classes)


# ---------------------------------------------------------------------------------------------------
# networks


def _stem(net: _Net, family: str, kind: str) -> str:
    if kind == "small":
        return net.conv("stem", "input", 192, 3)
    if family == "v4":
        x = net.conv("features_0", "input", 32, 3, stride=2, unpadded=True)
        x = net.conv("features_2", net.conv("features_1", x, 32, 3, unpadded=True), 64, 3)
        x = net.concat("features_3", [net.pool("features_3_maxpool", x, "maxpool", 3, 2),
                                      net.conv("features_3_conv", x, 96, 3, stride=2, unpadded=True)])
        b0 = net.conv("features_4_branch0_1", net.conv("features_4_branch0_0", x, 64, 1), 96, 3, unpadded=True)
        b1 = _factorised(net, "features_4_branch1_", x, (64, 64, 64), 7, "1xn_nx1")
        b1 = net.conv("features_4_branch1_3", b1, 96, 3, unpadded=True)
        x = net.concat("features_4", [b0, b1])
        return net.concat("features_5", [net.conv("features_5_conv", x, 192, 3, stride=2, unpadded=True),
                                         net.pool("features_5_maxpool", x, "maxpool", 3, 2)])
    if family == "resnet_v2":
        x = net.conv("conv2d_1a", "input", 32, 3, stride=2, unpadded=True)
        x = net.conv("conv2d_2b", net.conv("conv2d_2a", x, 32, 3, unpadded=True), 64, 3)
        x = net.conv("conv2d_3b", net.pool("maxpool_3a", x, "maxpool", 3, 2), 80, 1)
        return net.pool("maxpool_5a", net.conv("conv2d_4a", x, 192, 3, unpadded=True), "maxpool", 3, 2)
    if family == "v1":
        x = net.conv("conv1", "input", 64, 7, stride=2)  # padding 3 = 'same'
        x = net.pool("maxpool1", x, "maxpool", 3, 2, ceil=True)
        x = net.conv("conv3", net.conv("conv2", x, 64, 1), 192, 3)
        return net.pool("maxpool2", x, "maxpool", 3, 2, ceil=True)
    x = net.conv("Conv2d_1a_3x3", "input", 32, 3, stride=2, unpadded=True)
    x = net.conv("Conv2d_2a_3x3", x, 32, 3, unpadded=True)
    x = net.conv("Conv2d_2b_3x3", x, 64, 3)
    x = net.pool("maxpool1", x, "maxpool", 3, 2)
    x = net.conv("Conv2d_3b_1x1", x, 80, 1)
    x = net.conv("Conv2d_4a_3x3", x, 192, 3, unpadded=True)
    return net.pool("maxpool2", x, "maxpool", 3, 2)


def _googlenet(net: _Net, a: dict[str, Any], x: str, num_classes: int, aux_logits: bool) -> str:
    depth2 = a["depth2"]
    aux_after = sorted({min(i, depth2 - 1) for i in V1_AUX_AFTER})
    for s in range(3):
        if s == 1:
            x = net.pool("maxpool3", x, "maxpool", 3, 2, ceil=True)
        elif s == 2:
            x = net.pool("maxpool4", x, "maxpool", 2, 2, ceil=True)
        table = V1_WIDTHS[s]
        for i in range(a[f"depth{s + 1}"]):
            x = _v1_module(net, f"inception{s + 3}{LETTERS[i]}", x, table[min(i, len(table) - 1)],
                           _choice(a, s + 1, i, "5x5"))
            if aux_logits and s == 1 and i in aux_after:
                _v1_aux(net, f"aux{aux_after.index(i) + 1}", x, num_classes)
    return x


def _inception3(net: _Net, a: dict[str, Any], x: str, num_classes: int, aux_logits: bool) -> str:
    for i in range(a["depth1"]):
        pf = V3_POOL_FEATURES[min(i, len(V3_POOL_FEATURES) - 1)]
        x = _inception_a(net, f"Mixed_5{LETTERS[i + 1]}", x, pf, _choice(a, 1, i, "5x5"))
    x = _inception_b(net, "Mixed_6a", x)
    for i in range(a["depth2"]):
        c7 = V3_CHANNELS_7X7[min(i, len(V3_CHANNELS_7X7) - 1)]
        x = _inception_c(net, f"Mixed_6{LETTERS[i + 1]}", x, c7, a["stage2_n"], _choice(a, 2, i, "nxn"))
    if aux_logits:
        _v3_aux(net, "AuxLogits", x, num_classes)
    x = _inception_d(net, "Mixed_7a", x)
    for i in range(a["depth3"]):
        x = _inception_e(net, f"Mixed_7{LETTERS[i + 1]}", x)
    return x


def _inception4(net: _Net, a: dict[str, Any], x: str, num_classes: int, aux_logits: bool) -> str:
    i = 6  # timm's features.<i>: 0-5 are the stem
    for j in range(a["depth1"]):
        x, i = _v4_a(net, f"features_{i}", x, _choice(a, 1, j, "5x5")), i + 1
    x, i = _reduction_a(net, f"features_{i}", x, 192, 224, 256, 384), i + 1
    for j in range(a["depth2"]):
        x, i = _v4_b(net, f"features_{i}", x, a["stage2_n"], _choice(a, 2, j, "nxn")), i + 1
    x, i = _v4_reduction_b(net, f"features_{i}", x), i + 1
    for _ in range(a["depth3"]):
        x, i = _v4_c(net, f"features_{i}", x), i + 1
    return x


def _inception_resnet2(net: _Net, a: dict[str, Any], x: str, num_classes: int, aux_logits: bool) -> str:
    x = _mixed_5b(net, "mixed_5b", x)
    for j in range(a["depth1"]):
        x = _block35(net, f"repeat_{j}", x, _choice(a, 1, j, "5x5"))
    x = _reduction_a(net, "mixed_6a", x, 256, 256, 384, 384)
    for j in range(a["depth2"]):
        x = _block17(net, f"repeat_1_{j}", x, a["stage2_n"], _choice(a, 2, j, "nxn"))
    x = _mixed_7a(net, "mixed_7a", x)
    for j in range(a["depth3"]):
        last = j == a["depth3"] - 1
        x = _block8(net, "block8" if last else f"repeat_2_{j}", x, last)
    return net.conv("conv2d_7b", x, 1536, 1)


BODIES = {"v1": _googlenet, "v3": _inception3, "v4": _inception4, "resnet_v2": _inception_resnet2}
CLASSIFIER = {"v1": "fc", "v3": "fc", "v4": "last_linear", "resnet_v2": "classif"}  # the references' names
DROPOUT = {"v1": 0.2, "v3": 0.5, "v4": 0.2, "resnet_v2": 0.2}


def build_inception(a: dict[str, Any], *, num_classes: int, input_shape: tuple[int, ...],
                    aux_logits: bool = False) -> ArchGraph:
    """The Inception network of assignment `a` (see the module docstring for layout and small-input rule)."""
    if len(input_shape) != 3:
        raise SpaceError(f"space 'inception' needs a (C, H, W) input, got {input_shape}")
    if not isinstance(aux_logits, bool):
        raise SpaceError(f"space 'inception': option 'aux_logits' must be true or false, got {aux_logits!r}")
    net = _Net(ArchGraph(input_shape), float(a["width"]))
    net.shapes["input"] = tuple(input_shape)
    x = _stem(net, a["family"], a["stem"])
    x = BODIES[a["family"]](net, a, x, num_classes, aux_logits)
    x = net.op("avgpool", "global_avgpool", x)
    x = net.op("dropout", "dropout", x, p=DROPOUT[a["family"]])
    net.op(CLASSIFIER[a["family"]], "linear", x, out_features=num_classes)
    return net.g


# ---------------------------------------------------------------------------------------------------
# presets and the space


def _preset(family: str, depths: tuple[int, int, int], b5: str, input_side: int, description: str) -> Preset:
    assignment: dict[str, Any] = {"family": family, "stem": "imagenet", "width": 1.0, "stage2_n": 7}
    assignment.update({f"depth{s}": d for s, d in enumerate(depths, start=1)})
    assignment.update({v.name: b5 for v in VARIABLES if v.name.endswith("_5x5")})
    assignment.update({v.name: "1xn_nx1" for v in VARIABLES if v.name.endswith("_nxn")})
    return Preset(assignment=assignment, num_classes=1000, input_shape=(3, input_side, input_side),
                  description=description)


PRESETS = {
    "googlenet": _preset("v1", (2, 5, 2), "5x5", 224,
                         "GoogLeNet as in the paper (true 5x5 branches) in torchvision's layout (BN, "
                         "no LRN); 7,005,832 parameters, 13,385,816 with aux_logits"),
    "googlenet_torchvision": _preset("v1", (2, 5, 2), "3x3", 224,
                                     "torchvision googlenet, whose '5x5' branches are 3x3 convs; 6,624,904 "
                                     "parameters, 13,004,888 with aux_logits"),
    "inception_v3": _preset("v3", (3, 4, 2), "5x5", 299,
                            "torchvision inception_v3; 23,834,568 parameters, 27,161,264 with aux_logits"),
    "inception_v4": _preset("v4", (4, 7, 3), "double3x3", 299,
                            "Inception-v4 (Szegedy et al. 2016) in timm's / Cadene's layout; 42,679,816 parameters"),
    "inception_resnet_v2": _preset("resnet_v2", (10, 20, 10), "double3x3", 299,
                                   "Inception-ResNet-v2 (Szegedy et al. 2016) in timm's layout; 55,843,464 "
                                   "parameters"),
}

_paragraphs = __doc__.split("\n\n")
DESCRIPTION = "\n\n".join([_paragraphs[0].replace("\n", " "),
                           next(p for p in _paragraphs if p.startswith("Small inputs:"))])

inception_space = SearchSpace(
    name="inception",
    variables=VARIABLES,
    build=build_inception,
    presets=PRESETS,
    input_shape=(1, 8, 8),
    num_classes=10,
    options={"aux_logits": False},
    description=DESCRIPTION,
)
