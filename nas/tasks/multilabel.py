"""Multi-label classification (Charades-style: several actions per video, as Timeception is trained): binary
cross entropy over the labels and mean average precision. Torch only (an exported train.py copies this file).

The network gives (N, K) scores (logits), the data (N, K) 0/1 targets (several may be 1). The loss is the
mean over examples and labels of the binary cross entropy of sigmoid(score) (`multilabel_bce`). The metric
is mAP (`mean_average_precision`): for each label with at least one positive example, the average
precision of ranking the examples by score, AP = sum over thresholds of (R_n - R_{n-1}) P_n, examples with
equal scores taking one threshold (as scikit-learn's ``average_precision_score``), averaged over labels.
"""

from __future__ import annotations

import torch


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross entropy of (N, K) logits against (N, K) 0/1 targets."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float())


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of one label: (N,) scores, (N,) 0/1 targets; NaN without a positive."""
    scores, targets = scores.double().flatten(), targets.double().flatten()
    n_pos = float(targets.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    s, t = scores[order], targets[order]
    tp = torch.cumsum(t, 0)
    seen = torch.arange(1, len(t) + 1, dtype=torch.float64)
    last = torch.ones_like(s, dtype=torch.bool)  # the last example of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    precision, recall = (tp / seen)[last], (tp / n_pos)[last]
    previous = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over labels with a positive example of their AP, for (N, K) scores and targets."""
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])
           if float(targets[:, k].sum()) > 0]
    return sum(aps) / len(aps) if aps else float("nan")
