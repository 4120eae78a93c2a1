"""The losses and metrics of nas.tasks, each checked against a direct implementation (loops over pairs,
pixels, boxes and labels, or scikit-learn's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from nas.tasks import contrastive, detection, multilabel, segmentation

GEN = torch.Generator().manual_seed(0)


# -- contrastive -------------------------------------------------------------------------------------------


def test_contrastive_loss_matching_and_pair_metrics():
    f1, f2 = torch.randn(12, 5, generator=GEN), torch.randn(12, 5, generator=GEN)
    same = torch.tensor([1, 0] * 6)
    margin = 7.0
    want = []
    for a, b, y in zip(f1.tolist(), f2.tolist(), same.tolist(), strict=True):
        d2 = sum((u - v) ** 2 for u, v in zip(a, b, strict=True))
        want.append(0.5 * y * d2 + 0.5 * (1 - y) * max(0.0, margin - d2))
    assert contrastive.contrastive_loss(f1, f2, same, margin).item() == pytest.approx(sum(want) / 12, rel=1e-6)
    assert any(w == 0 for w, y in zip(want, same.tolist(), strict=True) if y == 0)  # the margin is reached
    score = contrastive.matching_score(f1, f2)
    assert score.tolist() == pytest.approx([sum(u * v for u, v in zip(a, b, strict=True))
                                            for a, b in zip(f1.tolist(), f2.tolist(), strict=True)], rel=1e-6)
    right = sum((sum((u - v) ** 2 for u, v in zip(a, b, strict=True)) < margin / 2) == bool(y)
                for a, b, y in zip(f1.tolist(), f2.tolist(), same.tolist(), strict=True))
    assert int(contrastive.pair_accuracy(f1, f2, same, margin)) == right
    assert contrastive.pair_auc(score, same) == pytest.approx(roc_auc_score(same.numpy(), score.numpy()))
    tied = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.5, 0.1])
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    assert contrastive.pair_auc(tied, labels) == pytest.approx(roc_auc_score(labels.numpy(), tied.numpy()))
    assert torch.equal(torch.cat(contrastive.split_pair(torch.cat([f1, f2], 1))), torch.cat([f1, f2]))


def test_tracking_follows_a_moving_square_and_scores_success():
    """Frames with one bright square moving 1-3 pixels a frame; raw pixels as the embedding track it
    exactly, so the success rate is 1; a tracker that stays put loses it."""
    t, side, size = 8, 40, 8
    frames = torch.zeros(t, 1, side, side)
    truth, x, y = [], 10, 12
    rng = np.random.default_rng(0)
    for i in range(t):
        frames[i, 0, y + 2:y + 6, x + 2:x + 6] = 1.0
        truth.append([x, y, x + size, y + size])
        x, y = x + int(rng.integers(1, 4)), y + int(rng.integers(-2, 3))
    truth = torch.tensor(truth, dtype=torch.float32)

    def embed(crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(crops.flatten(1), dim=1)

    boxes = contrastive.track(embed, frames, truth[0], size, radius=4, step=1)
    assert torch.equal(boxes.float(), truth)
    assert contrastive.success_rate(boxes, truth) == 1.0
    still = truth[:1].expand(t, 4)
    by_hand = sum(_iou(still[i].tolist(), truth[i].tolist()) > 0.5 for i in range(1, t)) / (t - 1)
    assert contrastive.success_rate(still, truth) == pytest.approx(by_hand) and by_hand < 1


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


# -- segmentation ------------------------------------------------------------------------------------------


def test_pixel_cross_entropy_and_mean_iou():
    k = 4
    logits = torch.randn(2, k, 5, 6, generator=GEN)
    target = torch.randint(0, k - 1, (2, 5, 6), generator=GEN)  # class 3 never true
    logp = torch.log_softmax(logits, 1)
    want = -sum(logp[n, target[n, i, j], i, j].item() for n in range(2) for i in range(5) for j in range(6)) / 60
    assert segmentation.pixel_cross_entropy(logits, target).item() == pytest.approx(want, rel=1e-6)
    conf = segmentation.confusion_matrix(logits, target, k)
    pred = logits.argmax(1)
    ious = []
    for c in range(k):
        t, p = (target == c), (pred == c)
        union = int((t | p).sum())
        if union:
            ious.append(int((t & p).sum()) / union)
    assert segmentation.mean_iou(conf) == pytest.approx(sum(ious) / len(ious))
    assert segmentation.pixel_accuracy(conf) == pytest.approx(float((pred == target).float().mean()))
    # the confusion matrix adds up over batches
    halves = segmentation.confusion_matrix(logits[:1], target[:1], k) + segmentation.confusion_matrix(
        logits[1:], target[1:], k)
    assert torch.equal(halves, conf) and int(conf.sum()) == 60


# -- multi-label -------------------------------------------------------------------------------------------


def test_multilabel_bce_and_map_equal_the_definitions():
    logits = torch.randn(30, 5, generator=GEN)
    targets = (torch.rand(30, 5, generator=GEN) < 0.3).float()
    targets[:, 4] = 0  # a label without positives is left out of the mean
    want = 0.0
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-z))
        want -= y * math.log(p) + (1 - y) * math.log(1 - p)
    assert multilabel.multilabel_bce(logits, targets).item() == pytest.approx(want / 150, rel=1e-5)
    aps = [average_precision_score(targets[:, k].numpy(), logits[:, k].numpy()) for k in range(4)]
    assert multilabel.mean_average_precision(logits, targets) == pytest.approx(sum(aps) / 4)
    tied = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.1, 0.1])
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    assert multilabel.average_precision(tied, labels) == pytest.approx(average_precision_score(labels, tied))


# -- detection ---------------------------------------------------------------------------------------------


def _boxes(n: int, side: float = 40.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=GEN) * side
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=GEN) * side / 2], 1)


def test_box_iou_encoding_and_assignment():
    a, b = _boxes(7), _boxes(5)
    iou = detection.box_iou(a, b)
    assert iou.tolist() == [[pytest.approx(_iou(x, y), abs=1e-6) for y in b.tolist()] for x in a.tolist()]
    deltas = detection.encode_boxes(a[:5], b)
    torch.testing.assert_close(detection.decode_boxes(a[:5], deltas), b, atol=1e-4, rtol=0)
    proposals = torch.stack([a, _boxes(7)])
    gt = torch.stack([b[:3], torch.cat([b[3:], torch.zeros(1, 4)])])
    gt_labels = torch.tensor([[2, 0, 1], [4, 3, -1]])
    gt[0, 1] = proposals[0, 2] + 0.1  # a near-perfect match, so some proposals are positive
    labels, targets = detection.assign_proposals(proposals, gt, gt_labels)
    for n in range(2):
        for r in range(7):
            overlaps = [(_iou(proposals[n, r].tolist(), gt[n, g].tolist()), g) for g in range(3)
                        if gt_labels[n, g] >= 0]
            best, g = max(overlaps)
            assert int(labels[n, r]) == (int(gt_labels[n, g]) + 1 if best >= 0.5 else 0)
            if best >= 0.5:
                torch.testing.assert_close(targets[n, r], detection.encode_boxes(proposals[n, r], gt[n, g]))
    assert int((labels > 0).sum()) >= 1


def test_fast_rcnn_loss_is_cross_entropy_plus_smooth_l1_of_the_positives():
    k, r = 3, 6
    proposals = torch.stack([_boxes(r), _boxes(r)])
    gt = proposals[:, :2] + 0.5  # the first two proposals of each image are positives
    gt_labels = torch.tensor([[0, 2], [1, 1]])
    out = torch.randn(2, k + 1 + 4 * k, r, 1, 1, generator=GEN)
    labels, targets = detection.assign_proposals(proposals, gt, gt_labels)
    want = 0.0
    for n in range(2):
        for j in range(r):
            scores = out[n, :k + 1, j, 0, 0]
            want -= torch.log_softmax(scores, 0)[labels[n, j]].item() / (2 * r)
            if labels[n, j] > 0:
                c = int(labels[n, j]) - 1
                deltas = out[n, k + 1 + 4 * c:k + 1 + 4 * c + 4, j, 0, 0]
                for d, t in zip(deltas.tolist(), targets[n, j].tolist(), strict=True):
                    e = abs(d - t)
                    want += (0.5 * e * e if e < 1 else e - 0.5) / (2 * r)
    assert int((labels > 0).sum()) == 4
    got = detection.fast_rcnn_loss(out, proposals, gt, gt_labels, k)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_nms_and_detect():
    boxes, scores = _boxes(20, side=20.0), torch.rand(20, generator=GEN)
    keep = detection.nms(boxes, scores, 0.3).tolist()
    want, order = [], sorted(range(20), key=lambda i: -float(scores[i]))
    for i in order:  # the definition: keep a box unless it overlaps a kept one by more than 0.3
        if all(_iou(boxes[i].tolist(), boxes[j].tolist()) <= 0.3 for j in want):
            want.append(i)
    assert keep == want and len(want) < 20
    # detect: with confident scores and zero deltas, each proposal becomes one detection of its class
    k = 2
    proposals = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.5]]])
    out = torch.zeros(1, k + 1 + 4 * k, 3, 1, 1)
    out[0, 1, 0] = out[0, 2, 1] = out[0, 1, 2] = 10.0
    dets = detection.detect(out, proposals, k, (32, 32))[0]
    assert sorted((int(d[5]), round(float(d[4]), 3)) for d in dets) == [(0, 1.0), (1, 1.0)]  # one suppressed


def _voc_map(dets: list[list[tuple]], gts: list[list[tuple]], k: int) -> float:
    """PASCAL VOC's evaluation (py-faster-rcnn's voc_eval, all-point AP), written with plain lists."""
    aps = []
    for c in range(k):
        gt_c = [[g[:4] for g in img if g[4] == c] for img in gts]
        n_gt = sum(len(g) for g in gt_c)
        if n_gt == 0:
            continue
        found = sorted([(d[4], i, d[:4]) for i, img in enumerate(dets) for d in img if d[5] == c], key=lambda f: -f[0])
        used = [[False] * len(g) for g in gt_c]
        tp, fp = [], []
        for _, i, box in found:
            overlaps = [_iou(box, g) for g in gt_c[i]]
            best = max(range(len(overlaps)), key=lambda j: overlaps[j]) if overlaps else None
            if best is not None and overlaps[best] >= 0.5 and not used[i][best]:
                used[i][best] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        ctp = np.cumsum(tp)
        rec = ctp / n_gt
        prec = ctp / np.maximum(np.cumsum(tp) + np.cumsum(fp), 1e-12)
        mrec, mpre = np.concatenate([[0], rec, [1]]), np.concatenate([[0], prec, [0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return sum(aps) / len(aps)


def test_map_at_50_equals_pascal_vocs_evaluation():
    k, images = 3, 6
    rng = np.random.default_rng(1)
    gt_boxes, gt_labels, dets = torch.zeros(images, 3, 4), torch.full((images, 3), -1), []
    for i in range(images):
        g = int(rng.integers(1, 4))
        gt_boxes[i, :g] = _boxes(g)
        gt_labels[i, :g] = torch.from_numpy(rng.integers(0, k, g))
        found = []
        for j in range(g):  # a jittered copy of each truth (most match), plus random false ones
            box = gt_boxes[i, j] + torch.from_numpy(rng.normal(0, 2.0, 4)).float()
            found.append([*box.tolist(), float(rng.random()), float(gt_labels[i, j])])
        for _ in range(int(rng.integers(0, 3))):
            found.append([*_boxes(1)[0].tolist(), float(rng.random()), float(rng.integers(0, k))])
        dets.append(torch.tensor(found))
    want = _voc_map([d.tolist() for d in dets],
                    [[[*gt_boxes[i, j].tolist(), int(gt_labels[i, j])] for j in range(3) if gt_labels[i, j] >= 0]
                     for i in range(images)], k)
    assert detection.map_at_50(dets, gt_boxes, gt_labels, k) == pytest.approx(want)
    assert 0 < want < 1
    perfect = [torch.cat([gt_boxes[i][gt_labels[i] >= 0], torch.ones(int((gt_labels[i] >= 0).sum()), 1),
                          gt_labels[i][gt_labels[i] >= 0, None].float()], 1) for i in range(images)]
    assert detection.map_at_50(perfect, gt_boxes, gt_labels, k) == pytest.approx(1.0)
