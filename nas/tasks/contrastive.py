"""Siamese pairs (SINT: Tao, Gavves & Smeulders 2016): the marginal contrastive loss, the matching function,
pair metrics and the tracking evaluation. Torch only (an exported train.py copies this file).

A Siamese network (space ``siamese``) gives a pair's two embeddings side by side, (N, 2E): `split_pair`.
With D = ||f(x_j) - f(x_k)|| and y = 1 for a pair of the same class (positive), 0 otherwise, the loss of a
pair is the lecture's marginal contrastive loss

    L = 1/2 y D^2 + 1/2 (1 - y) max(0, sigma - D^2)

(`contrastive_loss`, averaged over pairs): positives are pulled together, negatives pushed until their
squared distance reaches the margin sigma. Matching is f(x_j) . f(x_k) (`matching_score`), the cosine when
the branch normalises its output (the space's ``l2_normalize``). `pair_accuracy` calls a pair positive when
D^2 < sigma / 2; `pair_auc` is the ROC AUC of the matching score (threshold-free).

Tracking (`track`): the target's crop in the first frame is the query; in every later frame, candidate
boxes of the same size are laid on a grid around the previous position, and the one whose crop matches the
query best is the new position. `success_rate` is the fraction of frames (after the first) whose box
overlaps the truth with IoU above 0.5 (OTB's success at 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EmbedFn = Callable[[torch.Tensor], torch.Tensor]


def split_pair(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2E) -> f(x_1), f(x_2), each (N, E)."""
    if out.dim() != 2 or out.shape[1] % 2:
        raise ValueError(f"a Siamese network's output must be (N, 2E), got {tuple(out.shape)}")
    e = out.shape[1] // 2
    return out[:, :e], out[:, e:]


def squared_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """D^2 of every pair: (N,)."""
    return ((f1 - f2) ** 2).sum(1)


def contrastive_loss(f1: torch.Tensor, f2: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean over pairs of 1/2 y D^2 + 1/2 (1 - y) max(0, margin - D^2); `same` is y (1 = same class)."""
    d2 = squared_distance(f1.float(), f2.float())
    y = same.to(d2.dtype)
    return (0.5 * y * d2 + 0.5 * (1.0 - y) * torch.clamp(margin - d2, min=0.0)).mean()


def matching_score(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """f(x_j) . f(x_k) of every pair: (N,)."""
    return (f1 * f2).sum(1)


def pair_accuracy(f1: torch.Tensor, f2: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The number of pairs called right (positive when D^2 < margin / 2), as a 0-dim tensor."""
    predicted = squared_distance(f1.float(), f2.float()) < margin / 2
    return (predicted == same.bool()).sum()


def pair_auc(score: torch.Tensor, same: torch.Tensor) -> float:
    """ROC AUC of `score` for telling positive pairs (same = 1) from negative ones: the probability that a
    random positive scores above a random negative, ties counting one half (the Mann-Whitney statistic).
    NaN without both kinds."""
    score, same = score.double().flatten(), same.bool().flatten()
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(score)
    ranks = torch.empty_like(score)
    ranks[order] = torch.arange(1, len(score) + 1, dtype=score.dtype)
    values, inverse = torch.unique(score, return_inverse=True)  # ties share their mean rank
    mean_rank = torch.zeros_like(values).index_add_(0, inverse, ranks) / torch.bincount(inverse).to(score.dtype)
    rank_sum = mean_rank[inverse][same].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def crop(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops (K, C, size, size) of `frames` (C, H, W) at integer `boxes` (K, 4) x1, y1, x2, y2 with
    x2 - x1 = y2 - y1 = size; outside the frame is zero."""
    c, h, w = frames.shape
    padded = torch.nn.functional.pad(frames, (size, size, size, size))
    out = []
    for x1, y1, _, _ in boxes.long().tolist():
        out.append(padded[:, y1 + size:y1 + 2 * size, x1 + size:x1 + 2 * size])
    return torch.stack(out)


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i], both (K, 4) x1, y1, x2, y2."""
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def candidate_offsets(radius: int, step: int) -> torch.Tensor:
    """(K, 2) integer (dx, dy) on a grid of `step` within `radius` of (0, 0), (0, 0) included."""
    r = torch.arange(-(radius // step) * step, radius + 1, step)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], 1)


@torch.no_grad()
def track(embed: EmbedFn, frames: torch.Tensor, first_box: torch.Tensor, size: int, radius: int = 8,
          step: int = 2) -> torch.Tensor:
    """Boxes (T, 4) of the target through `frames` (T, C, H, W), starting at `first_box` (4,) (side `size`):
    in each frame the candidate around the last box whose crop's embedding best matches the first crop's
    (candidates at offsets of `step` up to `radius`, kept at least half on the frame). `embed` maps crops
    (K, C, size, size) to embeddings (K, E)."""
    box = first_box.long().clone()
    query = embed(crop(frames[0], box[None], size).float())  # (1, E)
    offsets = candidate_offsets(radius, step)
    out = [box.clone()]
    h, w = frames.shape[-2:]
    for t in range(1, len(frames)):  # candidates keep at least half their crop on the frame
        corner = box[None, :2] + offsets
        corner = torch.stack([corner[:, 0].clamp(-(size // 2), w - size // 2),
                              corner[:, 1].clamp(-(size // 2), h - size // 2)], 1)
        candidates = torch.cat([corner, corner + size], 1)
        scores = matching_score(embed(crop(frames[t], candidates, size).float()), query)
        box = candidates[int(torch.argmax(scores))]
        out.append(box.clone())
    return torch.stack(out)


def success_rate(predicted: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> float:
    """The fraction of frames after the first (the given one) where IoU(predicted, truth) > threshold;
    `predicted` and `truth` are (T, 4) or (M, T, 4)."""
    p, t = predicted.reshape(-1, predicted.shape[-2], 4)[:, 1:], truth.reshape(-1, truth.shape[-2], 4)[:, 1:]
    iou = box_iou_pairs(p.reshape(-1, 4).double(), t.reshape(-1, 4).double())
    return float((iou > threshold).double().mean())
