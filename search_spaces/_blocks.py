"""Small helpers that write conv-bn-relu sequences into an `ArchGraph`, shared by the built-in spaces.

Node naming: ``{name}_conv{suffix}``, ``{name}_bn{suffix}``, ``{name}_relu{suffix}``; with an empty
`name` the prefix is dropped (``conv{suffix}``), so ``conv_bn(g, "layer1_0", x, ..., suffix="1")`` writes
``layer1_0_conv1``, ``layer1_0_bn1``, ``layer1_0_relu1`` (torchvision's module names with '.' -> '_').
"""

from __future__ import annotations

from nas.graph import ArchGraph


def node_id(name: str, kind: str, suffix: str = "") -> str:
    return f"{name}_{kind}{suffix}" if name else f"{kind}{suffix}"


def conv_bn(g: ArchGraph, name: str, x: str, out: int, k: int, stride: int = 1, padding: int | None = None,
            groups: int = 1, relu: bool = True, bn: bool = True, bn_eps: float = 1e-5,
            suffix: str = "", bias: bool | None = None) -> str:
    """conv -> bn -> relu (unless ``relu=False``); returns the last node.

    ``bn=False`` writes the pre-batch-norm layout instead: conv -> relu. The conv has a bias only without
    batch norm, unless `bias` says otherwise (torchvision's VGG-BN keeps it). Padding defaults to 'same'
    (k // 2).
    """
    conv_params = {"out_channels": out, "kernel_size": k}
    if stride != 1:
        conv_params["stride"] = stride
    if padding is not None:
        conv_params["padding"] = padding
    if groups != 1:
        conv_params["groups"] = groups
    if (not bn) if bias is None else bias:
        conv_params["bias"] = True
    y = g.add_op(node_id(name, "conv", suffix), "conv", x, **conv_params)
    if bn:
        y = g.add_op(node_id(name, "bn", suffix), "bn", y, **({} if bn_eps == 1e-5 else {"eps": bn_eps}))
    if relu:
        y = g.add_op(node_id(name, "relu", suffix), "relu", y)
    return y


def bn_relu(g: ArchGraph, name: str, x: str, suffix: str = "", bn_eps: float = 1e-5) -> str:
    """bn -> relu (a pre-activation); returns the relu node."""
    y = g.add_op(node_id(name, "bn", suffix), "bn", x, **({} if bn_eps == 1e-5 else {"eps": bn_eps}))
    return g.add_op(node_id(name, "relu", suffix), "relu", y)


def downsample_stride(spatial: tuple[int, ...], stride: int = 2) -> int:
    """`stride` while every spatial side is at least `stride`, else 1: the rule the built-in spaces use so
    that small inputs (8x8 digits) shrink to 1x1 and then stop shrinking instead of failing."""
    return stride if spatial and min(spatial) >= stride else 1


def strided(spatial: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Spatial size after a 'same'-padded window op with odd kernel (or a k=3/pad=1 max-pool) at `stride`."""
    return tuple((s - 1) // stride + 1 for s in spatial)
