"""ROI pooling (Girshick, "Fast R-CNN", ICCV 2015) in plain torch: the op ``roi_pool``.

Two inputs (an op of arity 2): a feature map (C, H, W) and boxes (R, 4), each ``x1, y1, x2, y2`` in the
coordinates of the network's input image; the map is the image downsampled ``stride`` times. Output
(C, R, T_h, T_w): for every box, the maximum of each channel over each cell of a T_h x T_w grid laid on
the box. The box dimension stands where a clip's time would be, so a Fast R-CNN head is made of the
rank-generic core ops: ``conv`` with kernel [1, T_h, T_w] is fc6 applied to every box, 1x1x1 convs after
it are fc7 and the class and box outputs.

The grid follows Caffe's ROIPooling (and torchvision's ``roi_pool``): a box's corners are scaled by
1/stride and rounded (half up); it covers ``round(x2) - round(x1) + 1`` columns (at least 1); cell j
spans columns ``floor(j * w / T)`` to ``ceil((j + 1) * w / T)`` from its left, clipped to the map; an
empty cell (a box outside the map) gives 0. Boxes are given per image, the same number R for each
(pad with any box; its rows of the output are simply ignored by the loss).

`roi_pool_loop` is the same computation written as plain loops, the definition the tests check against.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from nas.ops import OpError, OpSpec, Shape, _tuple, call_source, register_op


class RoIPool(nn.Module):
    """Max over a (out_h x out_w) grid of every box: (N, C, H, W), (N, R, 4) -> (N, C, R, out_h, out_w)."""

    def __init__(self, out_h: int, out_w: int, stride: int):
        super().__init__()
        self.out_h = out_h
        self.out_w = out_w
        self.scale = 1.0 / stride

    def extra_repr(self) -> str:
        return f"out_h={self.out_h}, out_w={self.out_w}, scale={self.scale}"

    def _cells(self, start: torch.Tensor, end: torch.Tensor, bins: int, size: int) -> torch.Tensor:
        """(N, R, bins, size) mask of the positions in each cell along one axis."""
        length = torch.clamp(end - start + 1.0, min=1.0)
        step = (length / bins).unsqueeze(-1)  # (N, R, 1)
        j = torch.arange(bins, device=start.device, dtype=start.dtype)
        lo = torch.clamp(torch.floor(j * step) + start.unsqueeze(-1), min=0.0, max=float(size))
        hi = torch.clamp(torch.ceil((j + 1.0) * step) + start.unsqueeze(-1), min=0.0, max=float(size))
        pos = torch.arange(size, device=start.device, dtype=start.dtype)
        return (pos >= lo.unsqueeze(-1)) & (pos < hi.unsqueeze(-1))

    def forward(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        b = torch.floor(boxes.to(x.dtype) * self.scale + 0.5)
        rows = self._cells(b[..., 1], b[..., 3], self.out_h, x.shape[2])  # (N, R, out_h, H)
        cols = self._cells(b[..., 0], b[..., 2], self.out_w, x.shape[3])  # (N, R, out_w, W)
        low = float("-inf")  # an empty cell's maximum, replaced by 0 below
        # the maximum over each cell's columns, then over its rows
        xw = torch.where(cols[:, :, :, None, None, :], x[:, None, None, :, :, :], low).amax(-1)  # (N,R,ow,C,H)
        xhw = torch.where(rows[:, :, :, None, None, :], xw[:, :, None], low).amax(-1)  # (N, R, oh, ow, C)
        empty = ~(rows.any(-1)[:, :, :, None] & cols.any(-1)[:, :, None, :])  # (N, R, oh, ow)
        out = torch.where(empty[..., None], torch.zeros_like(xhw), xhw)
        return out.permute(0, 4, 1, 2, 3)


def roi_pool_loop(x: np.ndarray, boxes: np.ndarray, out_h: int, out_w: int, stride: int) -> np.ndarray:
    """ROI pooling by its definition, one box, cell and pixel at a time: (N, C, H, W), (N, R, 4) ->
    (N, C, R, out_h, out_w). float32 arithmetic, as the op's."""
    n, c, h, w = x.shape
    r = boxes.shape[1]
    out = np.zeros((n, c, r, out_h, out_w), dtype=x.dtype)
    scale = np.float32(1.0 / stride)
    for i in range(n):
        for k in range(r):
            x1, y1, x2, y2 = (np.floor(np.float32(v) * scale + np.float32(0.5)) for v in boxes[i, k])
            bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(out_h)
            bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(out_w)
            for ph in range(out_h):
                h0 = int(min(max(math.floor(np.float32(ph) * bin_h) + y1, 0), h))
                h1 = int(min(max(math.ceil(np.float32(ph + 1) * bin_h) + y1, 0), h))
                for pw in range(out_w):
                    w0 = int(min(max(math.floor(np.float32(pw) * bin_w) + x1, 0), w))
                    w1 = int(min(max(math.ceil(np.float32(pw + 1) * bin_w) + x1, 0), w))
                    if h1 <= h0 or w1 <= w0:
                        continue  # an empty cell stays 0
                    for ch in range(c):
                        best = -np.inf
                        for yy in range(h0, h1):
                            for xx in range(w0, w1):
                                best = max(best, x[i, ch, yy, xx])
                        out[i, ch, k, ph, pw] = best
    return out


def _roi_check(p: dict, in_shapes: tuple[Shape, ...]) -> tuple[tuple[int, int], int]:
    features, boxes = in_shapes
    if len(features) != 3:
        raise OpError(f"op 'roi_pool': its first input must be a feature map (C, H, W), got shape {tuple(features)}")
    if len(boxes) != 2 or boxes[1] != 4:
        raise OpError(f"op 'roi_pool': its second input must be boxes (R, 4), got shape {tuple(boxes)}")
    size = _tuple(p["output_size"], 2, "roi_pool.output_size")
    stride = p["stride"]
    if min(size) < 1:
        raise OpError(f"roi_pool.output_size must be >= 1, got {list(size)}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise OpError(f"roi_pool.stride must be an int >= 1, got {stride!r}")
    return size, stride


def _roi_shape(p: dict, in_shapes: tuple[Shape, ...]) -> Shape:
    (oh, ow), _ = _roi_check(p, in_shapes)
    return (in_shapes[0][0], in_shapes[1][0], oh, ow)


def _roi_build(p: dict, in_shapes: tuple[Shape, ...]) -> nn.Module:
    (oh, ow), stride = _roi_check(p, in_shapes)
    return RoIPool(oh, ow, stride)


def _roi_source(p: dict, in_shapes: tuple[Shape, ...]) -> str:
    (oh, ow), stride = _roi_check(p, in_shapes)
    return call_source("RoIPool", oh, ow, stride)


register_op(OpSpec(
    "roi_pool", _roi_shape, _roi_build, required=("output_size",), defaults={"stride": 1},
    doc="ROI max pooling (Fast R-CNN): inputs a feature map (C, H, W) and boxes (R, 4) in image coordinates; "
        "output (C, R, T, T)", source=_roi_source, source_classes=(RoIPool,), arity=2,
))
