"""Object detection with given proposals (Fast R-CNN, Girshick 2015): proposal labels and box targets, the
loss, detections and mAP at IoU 0.5. Torch only (an exported train.py copies this file).

Boxes are (x1, y1, x2, y2) in image pixels. The network (space ``detection``) gives, for each of R
proposals, K + 1 class scores (class 0 the background) and 4 box deltas per class, as (N, K + 1 + 4K, R, 1, 1)
(`split_output`). Training (`fast_rcnn_loss`): a proposal whose best IoU with a ground-truth box is at
least 0.5 takes that box's class (1..K) and regresses towards it, any other is background
(`assign_proposals`); the loss is the cross entropy of the scores over every proposal plus the smooth-L1
loss (transition at 1, as the paper) of the true class's deltas against the targets, summed over the
positive proposals' coordinates and divided by the number of proposals. Deltas are Fast R-CNN's
(`encode_boxes`): (dx, dy) the centre's shift in units of the proposal's width and height, (dw, dh) the log
of the size ratio, divided by the usual standard deviations (0.1, 0.1, 0.2, 0.2).

Evaluation (`detect`, `map_at_50`): each proposal's box for class k is decoded from its deltas; per image
and class, boxes scoring above 0.05 go through non-maximum suppression at IoU 0.3 (`nms`); mAP at IoU 0.5
is PASCAL VOC's: per class, detections in descending score each match the unmatched ground-truth box of
their image and class with the highest IoU if that IoU is at least 0.5 (a true positive), else count as
false positives; AP is the area under the precision envelope (all points, VOC 2010 on); mAP the mean over
classes with a ground-truth box.
"""

from __future__ import annotations

import math

import torch

STDS = (0.1, 0.1, 0.2, 0.2)
FG_IOU = 0.5
MAX_LOG_RATIO = math.log(1000.0 / 16)


def split_output(out: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K + 1 + 4K, R, 1, 1) -> scores (N, R, K + 1), deltas (N, R, K, 4)."""
    n, c, r = out.shape[:3]
    if c != num_classes + 1 + 4 * num_classes:
        raise ValueError(f"a detection output for {num_classes} classes has {num_classes + 1 + 4 * num_classes} "
                         f"channels, got {c}")
    flat = out.reshape(n, c, r).transpose(1, 2)
    return flat[..., :num_classes + 1], flat[..., num_classes + 1:].reshape(n, r, num_classes, 4)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of `a` (..., A, 4) with every box of `b` (..., B, 4): (..., A, B)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1.0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0)
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Fast R-CNN deltas (..., 4) taking `proposals` to `gt` (both (..., 4)), divided by `STDS`."""
    px, py, pw, ph = _centre_size(proposals)
    gx, gy, gw, gh = _centre_size(gt)
    d = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
    return d / d.new_tensor(STDS)


def decode_boxes(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """The boxes (..., 4) that `deltas` (..., 4, scaled by `STDS`) make of `proposals` (broadcast)."""
    d = deltas * deltas.new_tensor(STDS)
    px, py, pw, ph = _centre_size(proposals)
    cx, cy = px + d[..., 0] * pw, py + d[..., 1] * ph
    w = pw * torch.exp(d[..., 2].clamp(max=MAX_LOG_RATIO))
    h = ph * torch.exp(d[..., 3].clamp(max=MAX_LOG_RATIO))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def assign_proposals(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, R) (0 background, k + 1 for class k) and box targets (N, R, 4) of `proposals` (N, R, 4)
    against ground truth `gt_boxes` (N, G, 4), G >= 1, with `gt_labels` (N, G) in 0..K-1 (-1: padding)."""
    iou = box_iou(proposals.float(), gt_boxes.float())  # (N, R, G)
    iou = torch.where((gt_labels >= 0)[:, None, :], iou, torch.full_like(iou, -1.0))
    best, which = iou.max(-1)
    matched_labels = torch.gather(gt_labels.long(), 1, which)
    labels = torch.where(best >= FG_IOU, matched_labels + 1, torch.zeros_like(matched_labels))
    matched = torch.gather(gt_boxes.float(), 1, which[..., None].expand(-1, -1, 4))
    return labels, encode_boxes(proposals.float(), matched)


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    """0.5 x^2 where |x| < 1, |x| - 0.5 elsewhere (elementwise)."""
    a = x.abs()
    return torch.where(a < 1.0, 0.5 * a * a, a - 0.5)


def fast_rcnn_loss(out: torch.Tensor, proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   num_classes: int, box_weight: float = 1.0) -> torch.Tensor:
    """Cross entropy over every proposal + box_weight * smooth L1 of the positives' true-class deltas
    (summed over coordinates and positives, divided by the number of proposals)."""
    scores, deltas = split_output(out.float(), num_classes)
    labels, targets = assign_proposals(proposals, gt_boxes, gt_labels)
    cls = torch.nn.functional.cross_entropy(scores.reshape(-1, num_classes + 1), labels.reshape(-1))
    pos = labels > 0
    chosen = deltas[pos, (labels[pos] - 1)]  # (P, 4): each positive's deltas for its own class
    box = smooth_l1(chosen - targets[pos]).sum() / labels.numel()
    return cls + box_weight * box


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, in descending score."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    overlap = box_iou(boxes[order], boxes[order])
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= overlap[i] > iou
    return torch.tensor(keep, dtype=torch.long)


@torch.no_grad()
def detect(out: torch.Tensor, proposals: torch.Tensor, num_classes: int, image_size: tuple[int, int],
           score_threshold: float = 0.05, nms_iou: float = 0.3) -> list[torch.Tensor]:
    """Per image, its detections (D, 6): x1, y1, x2, y2, score, class (0..K-1), boxes clipped to the image
    (height, width) = `image_size`."""
    scores, deltas = split_output(out.float(), num_classes)
    probs = torch.softmax(scores, -1)
    boxes = decode_boxes(proposals.float()[:, :, None, :], deltas)  # (N, R, K, 4)
    h, w = image_size
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                         boxes[..., 3].clamp(0, h)], -1)
    result = []
    for i in range(len(out)):
        found = []
        for k in range(num_classes):
            p = probs[i, :, k + 1]
            keep = torch.nonzero(p > score_threshold).flatten()
            if len(keep) == 0:
                continue
            b, s = boxes[i, keep, k], p[keep]
            kept = nms(b, s, nms_iou)
            found.append(torch.cat([b[kept], s[kept, None], torch.full((len(kept), 1), float(k))], 1))
        result.append(torch.cat(found) if found else torch.zeros((0, 6)))
    return result


def voc_ap(recall: torch.Tensor, precision: torch.Tensor) -> float:
    """Area under the precision envelope (PASCAL VOC 2010 on: every point)."""
    r = torch.cat([torch.zeros(1, dtype=torch.float64), recall.double(), torch.ones(1, dtype=torch.float64)])
    p = torch.cat([torch.zeros(1, dtype=torch.float64), precision.double(), torch.zeros(1, dtype=torch.float64)])
    p = torch.flip(torch.cummax(torch.flip(p, [0]), 0).values, [0])  # the envelope: max precision to the right
    steps = torch.nonzero(r[1:] != r[:-1]).flatten()
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def map_at_50(detections: list[torch.Tensor], gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
              num_classes: int, iou: float = 0.5) -> float:
    """mAP at IoU `iou` of per-image `detections` (each (D, 6), as `detect` gives) against `gt_boxes`
    (N, G, 4) and `gt_labels` (N, G) (-1 padding); NaN without any ground-truth box."""
    aps = []
    for k in range(num_classes):
        gts = [gt_boxes[i][gt_labels[i] == k].double() for i in range(len(detections))]
        n_gt = sum(len(g) for g in gts)
        if n_gt == 0:
            continue
        found = [(float(d[4]), i, d[:4].double()) for i, dets in enumerate(detections) for d in dets if int(d[5]) == k]
        found.sort(key=lambda f: -f[0])
        used = [torch.zeros(len(g), dtype=torch.bool) for g in gts]
        tp = torch.zeros(len(found), dtype=torch.float64)
        for j, (_, i, box) in enumerate(found):
            if len(gts[i]) == 0:
                continue
            overlaps = box_iou(box[None], gts[i])[0]
            best = int(torch.argmax(overlaps))
            if overlaps[best] >= iou and not used[i][best]:
                used[i][best] = True
                tp[j] = 1.0
        hits = torch.cumsum(tp, 0)
        recall = hits / n_gt
        precision = hits / torch.arange(1, len(found) + 1, dtype=torch.float64)
        aps.append(voc_ap(recall, precision))
    return sum(aps) / len(aps) if aps else float("nan")
