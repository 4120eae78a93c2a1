"""Video data sets, as (N, C, T, H, W) arrays for `workers.datasets.load_dataset` to split and scale.

``moving_digits`` (generated from scikit-learn's embedded 8x8 digits, no download): every clip shows the
digits 0..D-1 once each, one after the other, each for ``frames_per_digit`` frames (one randomly drawn
image of that digit at a random offset in a ``side`` x ``side`` frame). The order is a walk around the
cycle 0 -> 1 -> ... -> D-1 -> 0 from a start digit s, forward or backward; the class is
``s + D * backward`` (2D classes: 10 for the default D = 5). So every class shows the same digits for the
same number of frames, drawn from the same distributions: a single frame, or the unordered set of a
clip's frames, says nothing about the class; only the order does (a network that averages per-frame
features over time is at chance). Options go in the name, ``moving_digits:key=value,...``:
``per_class`` (clips per class, default 100), ``digits`` (D >= 3, default 5), ``frames_per_digit`` (4),
``side`` (16, >= 8), ``noise`` (standard deviation of Gaussian pixel noise per frame, default 0; pixels are
0..1), ``seed`` (the clips' seed, default 0; the split's seed is `load_dataset`'s). Default clip shape
(1, 20, 16, 16).

``clips`` (a folder of the user's clips, ``root=<folder>``): ``root/<class name>/*.npy``, one clip per
file, each (C, T, H, W) or (T, H, W) (read as one channel), every clip of one shape, any real dtype
(uint8 is scaled to 0..1). Classes are the sub-folders in sorted name order (labels 0..K-1); other
files in ``root`` and files not ending in ``.npy`` are ignored; a class folder without clips is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workers.arrays import DatasetError, check_real, load_npy

MOVING_DIGITS = "moving_digits"
CLIPS = "clips"
MOVING_DIGITS_DEFAULTS: dict[str, int | float] = {
    "per_class": 100, "digits": 5, "frames_per_digit": 4, "side": 16, "noise": 0.0, "seed": 0,
}
DIGIT_SIDE = 8


def is_video_dataset(name: str) -> bool:
    return isinstance(name, str) and name.lower().partition(":")[0] in (MOVING_DIGITS, CLIPS)


def load_video_arrays(name: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``moving_digits[:options]`` or ``clips`` (with `root`); see the module docstring."""
    base, options = _parse_name(name, root)
    if base == CLIPS:
        x, y, _ = read_clip_folder(root)
        return x, y
    return moving_digits(**options)


def video_dataset_info(name: str, root: str | os.PathLike | None = None) -> tuple[tuple[int, ...], int, int]:
    """(clip shape, number of classes, number of clips) that `load_video_arrays` would give, from the options
    or the clips' ``.npy`` headers alone, with the same errors (but for NaN or infinite pixel values, which
    only reading the clips finds): the search driver needs the shape before any worker loads the data."""
    base, options = _parse_name(name, root)
    if base == CLIPS:
        return clip_folder_info(root)
    return moving_digits_info(**options)


def _parse_name(name: str, root: str | os.PathLike | None) -> tuple[str, dict[str, int | float]]:
    """(base name, moving_digits options) of a video data set name, checked."""
    base, _, rest = name.lower().partition(":")
    if base == CLIPS:
        if rest:
            raise DatasetError(f"data set 'clips' takes no options, got {name!r}; pass root=<folder>")
        if root is None:
            raise DatasetError("data set 'clips' needs root=<folder with one sub-folder of .npy clips per class>")
        return base, {}
    if base != MOVING_DIGITS:
        raise DatasetError(f"unknown video data set {name!r}; known: {MOVING_DIGITS}, {CLIPS}")
    return base, parse_options(name, rest)


def parse_options(name: str, text: str) -> dict[str, int | float]:
    """``key=value,...`` of a ``moving_digits:...`` name, checked against the known options."""
    out: dict[str, int | float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in MOVING_DIGITS_DEFAULTS:
            raise DatasetError(f"data set {name!r}: {part!r} is not key=value with a key among "
                               f"{sorted(MOVING_DIGITS_DEFAULTS)}")
        try:
            out[key] = float(value) if key == "noise" else int(value)
        except ValueError:
            kind = "a number" if key == "noise" else "an int"
            raise DatasetError(f"data set {name!r}: option {key!r} must be {kind}, got {value.strip()!r}") from None
    return out


def moving_digit_orders(digits: int) -> np.ndarray:
    """(2D, D) digit order of each class: row s + D*b walks the cycle from s forward (b=0) or backward."""
    steps = np.arange(digits)
    return np.array([(s + sign * steps) % digits for sign in (1, -1) for s in range(digits)])


def moving_digits(per_class: int = 100, digits: int = 5, frames_per_digit: int = 4, side: int = 16,
                  noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): float32 clips (N, 1, D * frames_per_digit, side, side) with pixels in 0..1 (plus noise),
    int64 labels; N = 2D * per_class, classes interleaved. Same arguments, same arrays."""
    from sklearn.datasets import load_digits

    _check_moving_digits(per_class, digits, frames_per_digit, side, noise, seed)
    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    pools = [np.flatnonzero(d.target == v) for v in range(digits)]
    orders = moving_digit_orders(digits)
    n_classes = len(orders)
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(n_classes), per_class)
    n, t = len(y), digits * frames_per_digit
    x = np.zeros((n, 1, t, side, side), dtype=np.float32)
    span = side - DIGIT_SIDE + 1
    for i, label in enumerate(y):
        for k, value in enumerate(orders[label]):
            img = images[rng.choice(pools[value])]
            r, c = rng.integers(span, size=2)
            x[i, 0, k * frames_per_digit:(k + 1) * frames_per_digit, r:r + DIGIT_SIDE, c:c + DIGIT_SIDE] = img
    if noise > 0:
        x += rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    return x, y.astype(np.int64)


def moving_digits_info(per_class: int = 100, digits: int = 5, frames_per_digit: int = 4, side: int = 16,
                       noise: float = 0.0, seed: int = 0) -> tuple[tuple[int, ...], int, int]:
    """(clip shape, number of classes, number of clips) of `moving_digits` with these arguments, without
    drawing the clips; the same errors."""
    _check_moving_digits(per_class, digits, frames_per_digit, side, noise, seed)
    return (1, digits * frames_per_digit, side, side), 2 * digits, 2 * digits * per_class


def _check_moving_digits(per_class, digits, frames_per_digit, side, noise, seed) -> None:
    for key, value, least in (("per_class", per_class, 1), ("digits", digits, 3), ("frames_per_digit",
                              frames_per_digit, 1), ("side", side, DIGIT_SIDE), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DatasetError(f"moving_digits: option {key!r} must be an int >= {least}, got {value!r}")
    if digits > 10:
        raise DatasetError(f"moving_digits: option 'digits' must be at most 10 (digit values 0..9), got {digits}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise < float("inf"):
        raise DatasetError(f"moving_digits: option 'noise' must be a number >= 0, got {noise!r}")


def read_clip_folder(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, class names) from ``root/<class name>/*.npy`` (see the module docstring)."""
    folder, classes = _clip_classes(root)
    clips, labels = [], []
    for label, clip in _iter_clips(folder, classes, mmap=False):
        clips.append(clip)
        labels.append(label)
    if len({c.dtype for c in clips}) > 1:  # mixed dtypes: each as float, uint8 scaled to 0..1 as usual
        clips = [c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c.astype(np.float32) for c in clips]
    x = np.stack(clips)
    return x, np.asarray(labels, dtype=np.int64), classes


def clip_folder_info(root: str | os.PathLike) -> tuple[tuple[int, ...], int, int]:
    """(clip shape, number of classes, number of clips) that `read_clip_folder` would give, from the clips'
    ``.npy`` headers (memory-mapped, not read); its errors but for NaN or infinite values."""
    folder, classes = _clip_classes(root)
    shape: tuple[int, ...] = ()
    n = 0
    for _, clip in _iter_clips(folder, classes, mmap=True):
        shape, n = clip.shape, n + 1
    return tuple(int(v) for v in shape), len(classes), n


def _clip_classes(root: str | os.PathLike) -> tuple[Path, list[str]]:
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"clips data set: folder {folder} does not exist")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"clips data set: {folder} has no class sub-folders (expected {folder}/<class>/*.npy)")
    return folder, classes


def _iter_clips(folder: Path, classes: list[str], mmap: bool):
    """(label, clip (C, T, H, W)) of every clip in class then file name order, each checked, all of one
    shape. With `mmap` the clips are memory-mapped and their values are not checked (nor read)."""
    shape: tuple[int, ...] | None = None
    first: Path | None = None
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix == ".npy")
        if not files:
            raise DatasetError(f"clips data set: class folder {folder / name} holds no .npy clips")
        for f in files:
            clip = load_npy(f, mmap=mmap)
            if clip.ndim == 3:
                clip = clip[None]
            if clip.ndim != 4 or 0 in clip.shape:
                raise DatasetError(f"{f}: shape {clip.shape} is not a clip (C, T, H, W) or (T, H, W)")
            check_real(f, clip, values=not mmap)
            if shape is None:
                shape, first = clip.shape, f
            elif clip.shape != shape:
                raise DatasetError(f"{f}: clip shape {clip.shape} differs from {shape} of {first}; every clip "
                                   "must have one (C, T, H, W) shape")
            yield label, clip
