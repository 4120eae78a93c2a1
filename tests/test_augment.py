"""Augmentation (nas.augment): the spec, each op's effect, determinism for a seed, and the trainer's use of it
(training batches only, the data set's default, identical whichever way batches are read)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nas
from nas.augment import Augment, AugmentError, check_augment_shape, default_augment, format_augment, parse_augment
from nas.graph import ArchGraph
from workers.data import from_arrays
from workers.training import Trainer, TrainSettings


def _aug(spec: str, channels: int = 3) -> Augment:
    return Augment(spec, low=[0.0] * channels, high=[1.0] * channels, fill=[0.5] * channels)


def _batch(n: int = 6, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_spec_parses_to_ops_with_defaults_and_names_what_is_wrong():
    assert parse_augment("crop:4, flip,cutout:16") == [("crop", 4), ("flip", None), ("cutout", 16)]
    assert parse_augment("resized_crop,jitter") == [("resized_crop", 0.08), ("jitter", 0.4)]
    assert parse_augment("none") == parse_augment("") == parse_augment(None) == []
    assert format_augment(parse_augment(" crop:2 ,tflip")) == "crop:2,tflip" and format_augment([]) == "none"
    for spec, message in (("rotate", "unknown op 'rotate'"), ("crop:x", "'crop' must be an integer"),
                          ("flip:2", "'flip' takes no argument"), ("cutout:0", "'cutout' must be >= 1"),
                          ("jitter:1.5", r"must be in \[0.0, 1.0\]"), ("none,flip", "'none' cannot be combined"),
                          (3, "must be a string")):
        with pytest.raises(AugmentError, match=message):
            parse_augment(spec)
    with pytest.raises(AugmentError, match=r"'tflip' needs clips"):
        check_augment_shape(parse_augment("tflip"), (3, 8, 8))
    with pytest.raises(AugmentError, match=r"'crop' needs images"):
        check_augment_shape(parse_augment("crop"), (64,))
    assert default_augment("cifar10", (3, 32, 32)) == "crop:4,flip" and default_augment("digits", (1, 8, 8)) == "none"
    assert default_augment("folder", (3, 32, 32)) == "crop:4,flip"
    assert default_augment("folder", (3, 224, 224)) == "resized_crop:0.08,flip"


def test_the_same_seed_gives_the_same_augmentation_and_another_seed_another():
    x = _batch()
    aug = _aug("crop:2,flip,cutout:3,resized_crop:0.3,jitter:0.4")
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    assert (a >= 0).all() and (a <= 1).all()


def test_crop_is_a_shifted_window_of_the_zero_padded_image_and_flip_mirrors():
    x = _batch(n=20)
    out = _aug("crop:2")(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 5  # examples get their own shifts
    flipped = _aug("flip")(x, torch.Generator().manual_seed(0))
    same = [torch.equal(flipped[i], x[i]) for i in range(len(x))]
    assert all(s or torch.equal(flipped[i], x[i].flip(-1)) for i, s in enumerate(same)) and 0 < sum(same) < len(x)


def test_cutout_fills_a_square_with_the_mean_and_leaves_the_rest():
    x = _batch(n=8, h=16, w=16)
    out = _aug("cutout:4")(x, torch.Generator().manual_seed(1))
    filled = (out == 0.5).all(dim=1)  # every channel at its fill value
    for i in range(len(x)):
        assert 1 <= int(filled[i].sum()) <= 16
        assert torch.equal(out[i][:, ~filled[i]], x[i][:, ~filled[i]])


def test_clip_ops_work_on_frames():
    clip = torch.arange(2 * 1 * 5 * 4 * 4, dtype=torch.float32).reshape(2, 1, 5, 4, 4) / 200
    rev = _aug("tflip", channels=1)(clip, torch.Generator().manual_seed(3))
    for i in range(2):
        assert torch.equal(rev[i], clip[i]) or torch.equal(rev[i], clip[i].flip(1))
    shifted = _aug("tcrop:1", channels=1)(clip, torch.Generator().manual_seed(0))
    assert shifted.shape == clip.shape
    for i in range(2):
        padded = torch.nn.functional.pad(clip[i], (0, 0, 0, 0, 1, 1))
        assert any(torch.equal(shifted[i], padded[:, s:s + 5]) for s in range(3))
    assert _aug("crop:1,flip,cutout:2,resized_crop,jitter", channels=1)(
        clip, torch.Generator().manual_seed(0)).shape == clip.shape


def _trainer(data, **settings) -> Trainer:
    g = ArchGraph(data.input_shape)
    g.add_op("conv", "conv", "input", out_channels=4, kernel_size=3)
    g.add_op("pool", "global_avgpool", "conv")
    g.add_op("fc", "linear", "pool", out_features=data.num_classes)
    torch.manual_seed(0)
    return Trainer(nas.build(g), data, TrainSettings(**{"latency_reps": 0, "bn_recalibration": 0, **settings}))


def _images(n: int = 40):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.uint8)
    y = np.arange(n) % 2
    pre = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3}
    return from_arrays(x, y, x[:10], y[:10], x[10:20], y[10:20], name="cifar10", preprocessing=pre)


def test_the_trainer_augments_training_batches_only(monkeypatch):
    data = _images()
    trainer = _trainer(data, augment="flip,cutout:4", epochs=1)
    assert trainer.augment_spec == "flip,cutout:4"
    assert _trainer(data).augment_spec == "crop:4,flip"  # the data set's default (here named cifar10)
    assert _trainer(data, augment="none").augment_spec == "none"
    seen = []
    real = trainer.augment.__call__
    monkeypatch.setattr(type(trainer.augment), "__call__", lambda self, x, g: seen.append(len(x)) or real(x, g))
    trainer.run_epoch()
    assert sum(seen) == len(data.splits["train"])  # every training example, once
    before = len(seen)
    first, second = trainer.evaluate("val"), trainer.evaluate("val")
    assert first == second and len(seen) == before  # evaluation never augments
    with pytest.raises(ValueError, match="'tflip' needs clips"):
        _trainer(data, augment="tflip")


def test_augmented_training_repeats_for_a_seed_and_reads_batches_the_same_either_way():
    data = _images(60)
    runs = {}
    for placement in ("device", "stream", "device"):
        t = _trainer(data, augment="crop:2,flip,cutout:3,jitter:0.2", epochs=2, batch_size=16, seed=3,
                     data_placement=placement)
        assert t.train_batches.placement == placement
        for _ in range(2):
            metrics = t.run_epoch()
        runs.setdefault(placement, []).append((metrics["train_loss"], metrics["val_loss"],
                                               [p.detach().clone() for p in t.model.parameters()]))
    (a, b), (c,) = runs["device"], runs["stream"]
    for other in (b, c):
        assert a[:2] == other[:2] and all(torch.equal(p, q) for p, q in zip(a[2], other[2], strict=True))
    other_seed = _trainer(data, augment="crop:2,flip,cutout:3,jitter:0.2", epochs=2, batch_size=16, seed=4)
    other_seed.run_epoch()
    assert other_seed.run_epoch()["train_loss"] != a[0]
