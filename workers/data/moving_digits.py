"""``moving_digits``: clips generated from scikit-learn's digits, a data source of float32 (N, C, T, H, W) arrays.

Generated from scikit-learn's embedded 8x8 digits, no download): every clip shows the
digits 0..D-1 once each, one after the other, each for ``frames_per_digit`` frames (one randomly drawn
image of that digit at a random offset in a ``side`` x ``side`` frame). The order is a walk around the
cycle 0 -> 1 -> ... -> D-1 -> 0 from a start digit s, forward or backward; the class is
``s + D * backward`` (2D classes: 10 for the default D = 5). So every class shows the same digits for the
same number of frames, drawn from the same distributions: a single frame, or the unordered set of a
clip's frames, says nothing about the class; only the order does (a network that averages per-frame
features over time is at chance). Options go in the name, ``moving_digits:key=value,...``:
``per_class`` (clips per class, default 100), ``digits`` (D >= 3, default 5), ``frames_per_digit`` (4),
``side`` (16, >= 8), ``noise`` (standard deviation of Gaussian pixel noise per frame, default 0; pixels are
0..1), ``seed`` (the clips' seed, default 0; the split's seed is `workers.data.load_dataset`'s). Default clip shape
(1, 20, 16, 16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.data.arrays import DatasetError, NpyWriter

MOVING_DIGITS = "moving_digits"
MOVING_DIGITS_DEFAULTS: dict[str, int | float] = {
    "per_class": 100, "digits": 5, "frames_per_digit": 4, "side": 16, "noise": 0.0, "seed": 0,
}
DIGIT_SIDE = 8


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


def parse_name(name: str) -> dict[str, int | float]:
    """The options of a ``moving_digits[:key=value,...]`` name, checked."""
    base, _, rest = name.lower().partition(":")
    if base != MOVING_DIGITS:
        raise DatasetError(f"not a moving_digits data set: {name!r}")
    options = parse_options(name, rest)
    _check_moving_digits(**{**MOVING_DIGITS_DEFAULTS, **options})
    return options


def write_moving_digits(options: dict[str, int | float], dest: Path) -> dict[str, int]:
    """Generate the clips into ``dest/train.{x,y}.npy``; returns the part's size."""
    x, y = moving_digits(**options)
    writer = NpyWriter(dest / "train.x.npy", np.float32, x.shape[1:], len(x))
    writer.write(x)
    np.save(dest / "train.y.npy", y)
    return {"train": writer.close()}
