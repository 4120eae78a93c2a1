"""The generated data sets (workers.data.generated): seeded (same options, same arrays; another seed, others), of
the shapes their table declares without generating, and each showing what its docstring says: masks on the
digits' pixels, boxes around them and proposals overlapping them, tracking boxes on the moving target,
pairs of one class and of two, several labels per clip. Bad options are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.tasks.detection import box_iou
from workers.data.arrays import DatasetError
from workers.data.generated import (
    GENERATED,
    _digits,
    generate,
    generated_shapes,
    render,
    rts_digits,
    source_parts,
    tight_box,
)

SMALL = {
    "rts_digits": "rts_digits:per_class=3",
    "digit_pairs": "digit_pairs:pairs=40",
    "digit_tracking": "digit_tracking:sequences=3,frames=6",
    "digit_segmentation": "digit_segmentation:images=20",
    "digit_detection": "digit_detection:images=20",
    "multilabel_clips": "multilabel_clips:clips=20",
}


@pytest.mark.parametrize("base", sorted(GENERATED))
def test_seeded_and_shaped_as_declared(base):
    name = SMALL[base]
    a, b = generate(name), generate(name)
    other = generate(name + ",seed=1")
    shapes, n = generated_shapes(name)
    assert set(a) == set(shapes)
    for key, value in a.items():
        assert value.shape == (n, *shapes[key]), key
        assert np.array_equal(value, b[key]), key
    assert any(not np.array_equal(a[k], other[k]) for k in a)
    for key in GENERATED[base].inputs:
        assert key in a
        if a[key].dtype == np.uint8:
            assert a[key].max() == 255 or base == "digit_tracking"


def test_source_parts_are_disjoint_and_rts_digits_draws_only_from_its_sources():
    _, labels = _digits()
    parts = source_parts((0.6, 0.2, 0.2), seed=3)
    assert sum(len(p) for p in parts) == len(labels) and len(np.unique(np.concatenate(parts))) == len(labels)
    for part, share in zip(parts, (0.6, 0.2, 0.2), strict=True):
        assert abs(len(part) / len(labels) - share) < 0.01 and set(labels[part]) == set(range(10))
    # one source image per class, no rotation, scale 1 on an 8x8 canvas: every example of a class is that image
    one = np.array([parts[2][labels[parts[2]] == c][0] for c in range(10)])
    x = rts_digits(per_class=5, side=8, rotation=0.0, max_scale=1.0, sources=one)["x"][:, 0]
    want = np.stack([x[c] for c in range(10)])
    assert all(np.array_equal(x[i], want[i % 10]) for i in range(50))
    other = rts_digits(per_class=1, side=8, rotation=0.0, max_scale=1.0, sources=parts[0])["x"][:, 0]
    assert np.array_equal(want, rts_digits(per_class=1, side=8, rotation=0.0, max_scale=1.0, sources=one)["x"][:, 0])
    assert not np.array_equal(want, other)
    with pytest.raises(DatasetError, match="hold no digit image of some class"):
        rts_digits(per_class=1, sources=one[:9])
    with pytest.raises(DatasetError, match="source fractions must be positive"):
        source_parts((0.8, 0.4))


def test_rts_digits_vary_in_place_and_size():
    x = generate("rts_digits:per_class=10")["x"][:, 0].astype(np.float32)
    boxes = np.array([tight_box(img) for img in x])
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    assert centres.std(0).min() > 3 and sizes.max() - sizes.min() > 5
    assert 0 <= boxes.min() and boxes.max() <= 32


def test_pairs_alternate_positive_and_negative_crops():
    data = generate("digit_pairs:pairs=20,jitter=0")
    assert data["y"].tolist() == [1, 0] * 10
    # without jitter every digit sits at the crop's centre
    centre = data["x"][:, 0, 4:12, 4:12].astype(int).sum((1, 2))
    assert (centre == data["x"][:, 0].astype(int).sum((1, 2))).all()


def test_tracking_boxes_follow_the_target():
    data = generate("digit_tracking:sequences=4,frames=8,distractors=0")
    frames, boxes = data["frames"][:, :, 0], data["boxes"].astype(int)
    for m in range(4):
        for t in range(8):
            x1, y1, x2, y2 = boxes[m, t]
            inner = frames[m, t, y1 + 4:y2 - 4, x1 + 4:x2 - 4]  # the digit's 8x8 square
            assert inner.sum() == frames[m, t].sum() > 0  # alone on the canvas: all its pixels are there
    assert (np.abs(np.diff(boxes[..., :2], axis=1)) <= 3).all()  # at most speed 3 per frame


def test_segmentation_masks_are_the_digits_pixels():
    data = generate("digit_segmentation:images=30")
    x, mask = data["x"][:, 0], data["mask"]
    assert set(np.unique(mask)) <= set(range(11)) and len(np.unique(mask)) > 5
    assert (x[mask > 0] > 0).all()  # every labelled pixel is on a digit
    assert x[mask == 0].mean() < 0.1 * x[mask > 0].mean()  # background stays (nearly) dark


def test_detection_boxes_hold_the_digits_and_proposals_overlap_them():
    data = generate("digit_detection:images=30,proposals=12,jittered=3")
    x, gt, labels, props = data["x"][:, 0], data["gt_boxes"], data["gt_labels"], data["proposals"]
    for i in range(30):
        keep = labels[i] >= 0
        assert keep.sum() >= 1 and (labels[i][keep] < 10).all()
        inside = np.zeros_like(x[i], dtype=bool)
        for x1, y1, x2, y2 in gt[i][keep].astype(int):
            inside[y1:y2, x1:x2] = True
        assert x[i][~inside].max() < 0.25 * 255  # nothing bright outside the boxes
        iou = box_iou(torch.from_numpy(props[i]), torch.from_numpy(gt[i][keep]))
        assert int((iou.max(0).values >= 0.3).sum()) == int(keep.sum())  # each digit has a near proposal


def test_multilabel_clips_have_several_events():
    data = generate("multilabel_clips:clips=40,max_events=3")
    counts = data["y"].sum(1)
    assert counts.min() >= 1 and counts.max() == 3 and set(np.unique(data["y"])) == {0, 1}
    assert (data["x"].reshape(40, -1).max(1) > 0).all()


def test_render_draws_the_digit_where_asked():
    img = np.zeros((8, 8), np.float32)
    img[2:6, 3:5] = 1.0
    out = render(img, 20, (10.0, 6.0), scale=2.0)
    x1, y1, x2, y2 = tight_box(out)
    assert (x1 + x2) / 2 == pytest.approx(6.5, abs=1) and (y1 + y2) / 2 == pytest.approx(10.5, abs=1)
    assert y2 - y1 == pytest.approx(8, abs=1) and x2 - x1 == pytest.approx(4, abs=1)


def test_bad_options_are_named():
    for name, message in (("digit_pairs:pairs=1", "option 'pairs' must be >= 2"),
                          ("digit_detection:side=10", "option 'side' must be at least 20"),
                          ("rts_digits:size=3", "'size=3' is not key=value with a key among"),
                          ("rts_digits:min_scale=2,max_scale=1", "'max_scale' .* is below 'min_scale'"),
                          ("digit_tracking:crop=11", "option 'crop' must be >= 8 and differ from it by an even"),
                          ("digit_pairs:jitter=x", "option 'jitter' must be an int"),
                          ("multilabel_clips:frames=3", "option 'frames' must be >= 4"),
                          ("no_such_set", "unknown generated data set 'no_such_set'")):
        with pytest.raises(DatasetError, match=message):
            generate(name)
