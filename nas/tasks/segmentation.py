"""Semantic segmentation (FCN, Long et al. 2015): per-pixel cross entropy and mean IoU. Torch only (an
exported train.py copies this file).

The network gives (N, K, H, W) class scores, the data (N, H, W) class indices (class 0 the background in
the generated ``digit_segmentation``). `pixel_cross_entropy` averages the cross entropy over every pixel
(pixels labelled `ignore_index` left out). The metrics add up over batches in a K x K `confusion_matrix`
(rows: true class, columns: predicted); `mean_iou` is the mean over classes of TP / (TP + FP + FN), over
the classes that occur in the truth or the prediction (a class absent from both has no IoU), and
`pixel_accuracy` the fraction of pixels right.
"""

from __future__ import annotations

import torch


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross entropy over the pixels of (N, K, H, W) scores and (N, H, W) labels."""
    return torch.nn.functional.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index)


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts of (true class, predicted class) over every pixel labelled 0..K-1."""
    pred = logits.argmax(1).flatten()
    true = target.long().flatten()
    keep = (true >= 0) & (true < num_classes)
    index = true[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean over classes present in the truth or the prediction of TP / (TP + FP + FN); NaN if none is."""
    c = confusion.double()
    tp = torch.diagonal(c)
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    if not bool(present.any()):
        return float("nan")
    return float((tp[present] / union[present]).mean())


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """The fraction of pixels whose predicted class is the true one."""
    c = confusion.double()
    return float(torch.diagonal(c).sum() / c.sum().clamp(min=1))
