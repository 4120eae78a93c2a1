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


def conv_stages(g: ArchGraph, x: str, stages: int, width: int, depth: int, kernel_size: int = 3,
                bn: bool = True, max_width: int = 512, last_pool: bool = True) -> list[tuple[str, int]]:
    """A VGG-style backbone written into `g` from node `x`: `stages` stages of `depth` conv(-BN)-ReLU layers
    (``conv{s}_{j}``, 'same' padding) and a 2x2/2 max-pool ``pool{s}`` (not after the last stage unless
    `last_pool`); stage s has ``width * 2**(s-1)`` channels (at most `max_width`). Returns (last node,
    channels) of every stage, so stage s's output is downsampled 2**s times (the skips of an FCN)."""
    out = []
    for s in range(1, stages + 1):
        c = min(width * 2 ** (s - 1), max_width)
        for j in range(1, depth + 1):
            x = conv_bn(g, "", x, c, kernel_size, bn=bn, suffix=f"{s}_{j}")
        if s < stages or last_pool:
            x = g.add_op(f"pool{s}", "maxpool", x, kernel_size=2, stride=2)
        out.append((x, c))
    return out
