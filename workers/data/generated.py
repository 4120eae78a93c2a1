"""Generated data sets for the tasks of `nas.tasks`, made from scikit-learn's embedded 8x8 digits (no
download): each is a function of its options and a seed (same options, same arrays) returning named numpy
arrays, and a `GeneratedSet` entry in `GENERATED` saying its task, which arrays the network takes, and its
shapes without generating it. Images are uint8 (0..255; a digit's 0..16 pixels times 255/16), one channel.

- ``rts_digits`` (task ``classification``): a digit rotated by up to ``rotation`` degrees either way, scaled
  ``min_scale``..``max_scale`` times (8 to 16 pixels at the defaults) and placed anywhere it fits on a
  ``side`` x ``side`` canvas (32): the distorted digits of the spatial transformer paper's RTS experiment.
  Arrays ``x`` (N, 1, side, side), ``y`` (N,) 0..9; N = 10 ``per_class`` (300).
- ``digit_pairs`` (task ``contrastive``): ``pairs`` (3000) pairs of ``side`` x ``side`` crops (16), each a
  digit shifted up to ``jitter`` (2) pixels from the centre; half are positive (two different images of one
  class, ``y`` = 1), half negative (two classes, ``y`` = 0). Arrays ``x``, ``x2`` (N, 1, side, side), ``y``.
- ``digit_tracking`` (the contrastive task's tracking evaluation): ``sequences`` (40) sequences of
  ``frames`` (12) ``side`` x ``side`` frames (48) in which one digit (the target, a fixed image) moves at up
  to ``speed`` (3) pixels a frame, bouncing off the borders, among ``distractors`` (2) digits of other
  classes moving the same way. Arrays ``frames`` (M, T, 1, side, side), ``boxes`` (M, T, 4): the target's
  ``crop`` x ``crop`` box (16) with the digit at its centre, x1, y1, x2, y2; ``labels`` (M,) its class.
- ``digit_segmentation`` (task ``segmentation``): ``images`` (1200) canvases of ``side`` x ``side`` (32) with
  1..``max_digits`` (3) digits scaled ``min_scale``..``max_scale`` (1..2) at places where they do not
  overlap; the mask gives each pixel of a digit (its intensity at least a quarter of the maximum) the class
  digit + 1, every other pixel 0 (background). Arrays ``x`` (N, 1, side, side), ``mask`` (N, side, side)
  uint8 0..10 (11 classes).
- ``digit_detection`` (task ``detection``): ``images`` (1200) canvases of ``side`` x ``side`` (48) with
  1..``max_digits`` (3) non-overlapping digits scaled ``min_scale``..``max_scale`` (1..2.5); their boxes are
  the tight boxes of their pixels (as the mask's). ``proposals`` (16) boxes per image: for every digit,
  copies of its box shifted and resized by up to 30% (``jittered``, 3 each), the rest random boxes of 6..24
  pixels anywhere. Arrays ``x`` (N, 1, side, side), ``proposals`` (N, R, 4) float32, ``gt_boxes`` (N, G, 4)
  float32, ``gt_labels`` (N, G) int64 0..9 with -1 for no box (G = max_digits).
- ``multilabel_clips`` (task ``multilabel``): ``clips`` (1000) clips of ``frames`` (20) ``side`` x ``side``
  (16) frames with 1..``max_events`` (3) events of different classes: a digit image shown at one place for
  4..10 consecutive frames, events free to overlap in time and space (pixels take the maximum). Arrays
  ``x`` (N, 1, frames, side, side), ``y`` (N, 10) uint8, 1 for each digit class with an event.

Options go in the name, ``digit_detection:images=200,side=64``. The test/validation split of a set is the
search's to make (by example); the digit images are shared between the splits, the transformations are not.
For held-out digit images, `source_parts` splits scikit-learn's digits into disjoint parts and ``rts_digits``
draws from one part with ``sources=`` (Python only; `benchmarks/stn_digits.py` builds its splits so).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.data.arrays import DatasetError

DIGIT = 8  # side of scikit-learn's digits
PIXEL = 255.0 / 16.0  # digit pixel (0..16) -> uint8


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def _by_class() -> list[np.ndarray]:
    _, labels = _digits()
    return [np.flatnonzero(labels == c) for c in range(10)]


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def render(image: np.ndarray, side: int, center: tuple[float, float], scale: float = 1.0,
           angle: float = 0.0) -> np.ndarray:
    """`image` (8x8, 0..1) scaled `scale` times and rotated by `angle` degrees about its centre, drawn with
    its centre at `center` (row, column, pixel coordinates) on a `side` x `side` canvas (bilinear)."""
    from scipy import ndimage

    t = math.radians(angle)
    inverse = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) / scale
    src = np.array([(DIGIT - 1) / 2, (DIGIT - 1) / 2])
    offset = src - inverse @ np.asarray(center, dtype=np.float64)
    out = ndimage.affine_transform(image, inverse, offset=offset, output_shape=(side, side), order=1, cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def tight_box(pixels: np.ndarray, threshold: float = 0.25) -> list[float] | None:
    """x1, y1, x2, y2 (pixel edges) of the pixels at least `threshold` of the maximum; None if none is."""
    on = pixels >= threshold * max(float(pixels.max()), 1e-6)
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    if not len(rows) or pixels.max() <= 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _place(rng: np.random.Generator, side: int, scale: float, taken: list[list[float]], margin: float = 1.0,
           tries: int = 50) -> tuple[float, float] | None:
    """A centre where a digit of this scale fits on the canvas without touching the boxes `taken`."""
    half = DIGIT * scale / 2
    for _ in range(tries):
        cy, cx = rng.uniform(half, side - half, size=2)
        box = [cx - half - margin, cy - half - margin, cx + half + margin, cy + half + margin]
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in taken):
            return float(cy), float(cx)
    return None


# -- the sets -----------------------------------------------------------------------------------------------


def source_parts(fractions: tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """Disjoint sets of scikit-learn digit indices, one per fraction (of each class, shuffled by `seed`), e.g.
    ``(0.6, 0.2, 0.2)``: the source images of a train, a validation and a test set that share no digit image."""
    if not fractions or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
        raise DatasetError(f"source fractions must be positive and sum to at most 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for pool in _by_class():
        pool = rng.permutation(pool)
        ends = np.rint(np.cumsum(fractions) * len(pool)).astype(int)
        for k, (a, b) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
            parts[k].append(pool[a:b])
    return [np.sort(np.concatenate(p)) for p in parts]


def rts_digits(per_class: int = 300, side: int = 32, rotation: float = 45.0, min_scale: float = 1.0,
               max_scale: float = 2.0, seed: int = 0, sources: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Rotated, translated and scaled digits (see the module docstring); `sources` (indices of scikit-learn's
    digits, e.g. one of `source_parts`) limits the digit images drawn from, by default all of them."""
    images, labels = _digits()
    pools = _by_class()
    if sources is not None:
        keep = np.zeros(len(labels), dtype=bool)
        keep[np.asarray(sources, dtype=np.int64)] = True
        pools = [pool[keep[pool]] for pool in pools]
        if min(len(pool) for pool in pools) == 0:
            raise DatasetError("rts_digits: the given sources hold no digit image of some class")
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(10), per_class)
    x = np.zeros((len(y), 1, side, side), dtype=np.uint8)
    for i, label in enumerate(y):
        scale = rng.uniform(min_scale, max_scale)
        half = DIGIT * scale / 2
        center = rng.uniform(half, side - half, size=2)
        angle = rng.uniform(-rotation, rotation)
        x[i, 0] = _uint8(render(images[rng.choice(pools[label])], side, tuple(center), scale, angle))
    return {"x": x, "y": y.astype(np.int64)}


def _centred_crop(image: np.ndarray, side: int, dy: int, dx: int) -> np.ndarray:
    out = np.zeros((side, side), dtype=np.float32)
    top, left = (side - DIGIT) // 2 + dy, (side - DIGIT) // 2 + dx
    out[top:top + DIGIT, left:left + DIGIT] = image
    return out


def digit_pairs(pairs: int = 3000, side: int = 16, jitter: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Pairs of jittered digit crops, half of one class (see the module docstring)."""
    images, _ = _digits()
    pools = _by_class()
    rng = np.random.default_rng(seed)
    x = np.zeros((pairs, 1, side, side), dtype=np.uint8)
    x2 = np.zeros_like(x)
    y = (np.arange(pairs) % 2 == 0).astype(np.int64)  # positives and negatives alternate
    for i in range(pairs):
        a = int(rng.integers(10))
        b = a if y[i] else int((a + rng.integers(1, 10)) % 10)
        ia, ib = rng.choice(pools[a]), rng.choice(pools[b])
        while ib == ia:
            ib = rng.choice(pools[b])
        for dest, k in ((x, ia), (x2, ib)):
            dy, dx = rng.integers(-jitter, jitter + 1, size=2)
            dest[i, 0] = _uint8(_centred_crop(images[k], side, int(dy), int(dx)))
    return {"x": x, "x2": x2, "y": y}


def digit_tracking(sequences: int = 40, frames: int = 12, side: int = 48, crop: int = 16, speed: int = 3,
                   distractors: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Sequences of a digit moving among distractors, with its box in every frame (see the module docstring)."""
    images, _ = _digits()
    pools = _by_class()
    rng = np.random.default_rng(seed)
    pad = (crop - DIGIT) // 2
    out = np.zeros((sequences, frames, 1, side, side), dtype=np.uint8)
    boxes = np.zeros((sequences, frames, 4), dtype=np.float32)
    labels = np.zeros(sequences, dtype=np.int64)
    hi = side - DIGIT
    for m in range(sequences):
        classes = rng.permutation(10)[:1 + distractors]
        labels[m] = classes[0]
        digits = [images[rng.choice(pools[c])] for c in classes]
        pos = rng.integers(0, hi + 1, size=(len(classes), 2)).astype(np.int64)
        vel = rng.integers(-speed, speed + 1, size=(len(classes), 2))
        for t in range(frames):
            canvas = np.zeros((side, side), dtype=np.float32)
            for d, (r, c) in zip(digits, pos, strict=True):
                canvas[r:r + DIGIT, c:c + DIGIT] = np.maximum(canvas[r:r + DIGIT, c:c + DIGIT], d)
            out[m, t, 0] = _uint8(canvas)
            r, c = pos[0]
            boxes[m, t] = [c - pad, r - pad, c - pad + crop, r - pad + crop]
            pos = pos + vel
            for k in range(len(classes)):  # bounce off the borders
                for j in range(2):
                    if pos[k, j] < 0 or pos[k, j] > hi:
                        vel[k, j] = -vel[k, j]
                        pos[k, j] = min(max(pos[k, j], 0), hi)
    return {"frames": out, "boxes": boxes, "labels": labels}


def _scene(rng: np.random.Generator, side: int, max_digits: int, min_scale: float, max_scale: float
           ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """A canvas with 1..max_digits non-overlapping digits: (canvas, [(class, its rendered pixels)])."""
    images, _ = _digits()
    pools = _by_class()
    canvas = np.zeros((side, side), dtype=np.float32)
    placed: list[tuple[int, np.ndarray]] = []
    taken: list[list[float]] = []
    for _ in range(int(rng.integers(1, max_digits + 1))):
        scale = rng.uniform(min_scale, max_scale)
        center = _place(rng, side, scale, taken)
        if center is None:
            continue
        label = int(rng.integers(10))
        pixels = render(images[rng.choice(pools[label])], side, center, scale)
        half = DIGIT * scale / 2
        taken.append([center[1] - half, center[0] - half, center[1] + half, center[0] + half])
        canvas = np.maximum(canvas, pixels)
        placed.append((label, pixels))
    return canvas, placed


def digit_segmentation(images: int = 1200, side: int = 32, max_digits: int = 3, min_scale: float = 1.0,
                       max_scale: float = 2.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Canvases of digits and their per-pixel class masks (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((images, 1, side, side), dtype=np.uint8)
    mask = np.zeros((images, side, side), dtype=np.uint8)
    for i in range(images):
        canvas, placed = _scene(rng, side, max_digits, min_scale, max_scale)
        x[i, 0] = _uint8(canvas)
        for label, pixels in placed:
            mask[i][pixels >= 0.25 * max(float(pixels.max()), 1e-6)] = label + 1
    return {"x": x, "mask": mask}


def _jitter(rng: np.random.Generator, box: list[float], amount: float = 0.3) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2 + rng.uniform(-amount, amount) * w, (box[1] + box[3]) / 2 + rng.uniform(
        -amount, amount) * h
    w, h = w * math.exp(rng.uniform(-amount, amount)), h * math.exp(rng.uniform(-amount, amount))
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def digit_detection(images: int = 1200, side: int = 48, max_digits: int = 3, min_scale: float = 1.0,
                    max_scale: float = 2.5, proposals: int = 16, jittered: int = 3, seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Canvases of digits, their boxes and classes, and proposals (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((images, 1, side, side), dtype=np.uint8)
    props = np.zeros((images, proposals, 4), dtype=np.float32)
    gt_boxes = np.zeros((images, max_digits, 4), dtype=np.float32)
    gt_labels = np.full((images, max_digits), -1, dtype=np.int64)
    for i in range(images):
        canvas, placed = _scene(rng, side, max_digits, min_scale, max_scale)
        x[i, 0] = _uint8(canvas)
        found = []
        for j, (label, pixels) in enumerate(placed):
            gt_boxes[i, j], gt_labels[i, j] = tight_box(pixels), label
            found += [_jitter(rng, tight_box(pixels)) for _ in range(jittered)]
        found = found[:proposals]
        while len(found) < proposals:
            w, h = rng.uniform(6, 24, size=2)
            x1, y1 = rng.uniform(0, side - w), rng.uniform(0, side - h)
            found.append([x1, y1, x1 + w, y1 + h])
        props[i] = np.asarray(found, dtype=np.float32)[rng.permutation(proposals)]
    return {"x": x, "proposals": props, "gt_boxes": gt_boxes, "gt_labels": gt_labels}


def multilabel_clips(clips: int = 1000, frames: int = 20, side: int = 16, max_events: int = 3,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Clips with several digit events, and which digit classes occur (see the module docstring)."""
    images, _ = _digits()
    pools = _by_class()
    rng = np.random.default_rng(seed)
    x = np.zeros((clips, 1, frames, side, side), dtype=np.float32)
    y = np.zeros((clips, 10), dtype=np.uint8)
    for i in range(clips):
        for c in rng.permutation(10)[:int(rng.integers(1, max_events + 1))]:
            length = int(rng.integers(4, min(10, frames) + 1))
            start = int(rng.integers(0, frames - length + 1))
            r, col = rng.integers(0, side - DIGIT + 1, size=2)
            view = x[i, 0, start:start + length, r:r + DIGIT, col:col + DIGIT]
            np.maximum(view, images[rng.choice(pools[c])], out=view)
            y[i, c] = 1
    return {"x": _uint8(x), "y": y}


# -- the table ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedSet:
    """One generated data set: its function and options, its task, the arrays the network takes
    (``inputs``, in its inputs' order), and `shapes`: the arrays' shapes (without the example dimension)
    and the number of examples, from the options alone."""

    make: Callable[..., dict[str, np.ndarray]]
    defaults: dict[str, int | float]
    task: str
    inputs: tuple[str, ...]
    num_classes: int
    shapes: Callable[[dict[str, Any]], tuple[dict[str, tuple[int, ...]], int]]


GENERATED: dict[str, GeneratedSet] = {
    "rts_digits": GeneratedSet(
        rts_digits, {"per_class": 300, "side": 32, "rotation": 45.0, "min_scale": 1.0, "max_scale": 2.0, "seed": 0},
        "classification", ("x",), 10,
        lambda o: ({"x": (1, o["side"], o["side"]), "y": ()}, 10 * o["per_class"])),
    "digit_pairs": GeneratedSet(
        digit_pairs, {"pairs": 3000, "side": 16, "jitter": 2, "seed": 0}, "contrastive", ("x", "x2"), 2,
        lambda o: ({"x": (1, o["side"], o["side"]), "x2": (1, o["side"], o["side"]), "y": ()}, o["pairs"])),
    "digit_tracking": GeneratedSet(
        digit_tracking, {"sequences": 40, "frames": 12, "side": 48, "crop": 16, "speed": 3, "distractors": 2,
                         "seed": 0}, "tracking", ("frames",), 10,
        lambda o: ({"frames": (o["frames"], 1, o["side"], o["side"]), "boxes": (o["frames"], 4), "labels": ()},
                   o["sequences"])),
    "digit_segmentation": GeneratedSet(
        digit_segmentation, {"images": 1200, "side": 32, "max_digits": 3, "min_scale": 1.0, "max_scale": 2.0,
                             "seed": 0}, "segmentation", ("x",), 11,
        lambda o: ({"x": (1, o["side"], o["side"]), "mask": (o["side"], o["side"])}, o["images"])),
    "digit_detection": GeneratedSet(
        digit_detection, {"images": 1200, "side": 48, "max_digits": 3, "min_scale": 1.0, "max_scale": 2.5,
                          "proposals": 16, "jittered": 3, "seed": 0}, "detection", ("x", "proposals"), 10,
        lambda o: ({"x": (1, o["side"], o["side"]), "proposals": (o["proposals"], 4),
                    "gt_boxes": (o["max_digits"], 4), "gt_labels": (o["max_digits"],)}, o["images"])),
    "multilabel_clips": GeneratedSet(
        multilabel_clips, {"clips": 1000, "frames": 20, "side": 16, "max_events": 3, "seed": 0}, "multilabel",
        ("x",), 10, lambda o: ({"x": (1, o["frames"], o["side"], o["side"]), "y": (10,)}, o["clips"])),
}

# least values of the options (the canvas must hold a digit at the largest scale, and so on)
_LEAST: dict[str, float] = {"per_class": 1, "pairs": 2, "sequences": 1, "images": 1, "clips": 1, "frames": 2,
                            "speed": 0, "distractors": 0, "jitter": 0, "rotation": 0.0, "min_scale": 0.5,
                            "max_digits": 1, "max_events": 1, "proposals": 1, "jittered": 0, "seed": 0}


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """(set, options with defaults filled in) of ``set[:key=value,...]``, every option checked."""
    base, _, text = name.lower().partition(":")
    if base not in GENERATED:
        raise DatasetError(f"unknown generated data set {base!r}; known: {', '.join(GENERATED)}")
    spec = GENERATED[base]
    options: dict[str, Any] = dict(spec.defaults)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in spec.defaults:
            raise DatasetError(f"data set {name!r}: {part!r} is not key=value with a key among {sorted(spec.defaults)}")
        kind = type(spec.defaults[key])
        try:
            options[key] = kind(value)
        except ValueError:
            raise DatasetError(f"data set {name!r}: option {key!r} must be {'an int' if kind is int else 'a number'}"
                               f", got {value!r}") from None
    _check(base, options)
    return base, options


def _check(base: str, o: dict[str, Any]) -> None:
    for key, value in o.items():
        least = _LEAST.get(key, 1)
        if not math.isfinite(value) or value < least:
            raise DatasetError(f"{base}: option {key!r} must be >= {least}, got {value!r}")
    scale = o.get("max_scale", 1.0)
    if "max_scale" in o and o["max_scale"] < o["min_scale"]:
        raise DatasetError(f"{base}: option 'max_scale' ({o['max_scale']}) is below 'min_scale' ({o['min_scale']})")
    need = math.ceil(DIGIT * scale) + (2 * o.get("jitter", 0))
    if base == "digit_tracking":
        need = max(o["crop"], DIGIT) + 1
        if o["crop"] < DIGIT or (o["crop"] - DIGIT) % 2:
            raise DatasetError(f"{base}: option 'crop' must be >= {DIGIT} and differ from it by an even number, "
                               f"got {o['crop']}")
        if o["distractors"] > 9:
            raise DatasetError(f"{base}: option 'distractors' must be at most 9 (other digit classes), got "
                               f"{o['distractors']}")
    if base == "multilabel_clips" and o["max_events"] > 10:
        raise DatasetError(f"{base}: option 'max_events' must be at most 10 (digit classes), got {o['max_events']}")
    if base == "multilabel_clips" and o["frames"] < 4:
        raise DatasetError(f"{base}: option 'frames' must be >= 4 (an event lasts 4..10 frames), got {o['frames']}")
    if "side" in o and o["side"] < need:
        raise DatasetError(f"{base}: option 'side' must be at least {need} to hold a digit, got {o['side']}")


def generate(name: str) -> dict[str, np.ndarray]:
    """The arrays of generated data set `name` (``set[:key=value,...]``)."""
    base, options = parse_name(name)
    return GENERATED[base].make(**options)


def generated_shapes(name: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """(shape of each array without the example dimension, number of examples) of `name`, not generating it."""
    base, options = parse_name(name)
    return GENERATED[base].shapes(options)
