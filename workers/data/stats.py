"""Per-channel mean and standard deviation of a training split, read in blocks (never the whole split at once).

The statistics are of the inputs as the worker feeds them to the standardisation: ``x.float() / divisor``
(float32, `divisor` = 1 / scale), per channel (dimension 1). uint8 inputs are counted per channel value
(exact sums of a 256-bin histogram); float inputs are summed in float64, a pass for the mean and one for the
deviations. A float input that is NaN or infinite is an error naming the array's file.
"""

from __future__ import annotations

import numpy as np

from workers.data.arrays import DatasetError

BLOCK_BYTES = 16 * 2**20


def _blocks(x, rows: np.ndarray):
    per_block = max(1, BLOCK_BYTES // max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize))
    for i in range(0, len(rows), per_block):
        yield np.asarray(x[rows[i:i + per_block]])


def channel_stats(x, rows: np.ndarray, divisor: float, where: str) -> tuple[list[float], list[float]]:
    """(mean, std) per channel, each rounded to float32, of rows `rows` of `x` (an array or `FileArray`) as
    ``x.float() / divisor``; a std of (nearly) 0 is 1."""
    channels = x.shape[1]
    n = len(rows) * int(np.prod(x.shape[2:]))
    if len(rows) == 0:
        raise DatasetError(f"{where}: no training examples to compute statistics on")
    if x.dtype == np.uint8:
        counts = np.zeros((channels, 256), np.int64)
        for block in _blocks(x, rows):
            for c in range(channels):
                counts[c] += np.bincount(block[:, c].reshape(-1), minlength=256)
        values = (np.arange(256, dtype=np.float32) / np.float32(divisor)).astype(np.float64)
        mean = counts @ values / n
        var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
    else:
        total = np.zeros(channels, np.float64)
        for block in _blocks(x, rows):
            v = block.astype(np.float32) / np.float32(divisor)
            if not np.isfinite(v).all():
                raise DatasetError(f"{where}: holds NaN or infinite values")
            total += v.reshape(len(v), channels, -1).sum(axis=(0, 2), dtype=np.float64)
        mean = total / n
        sq = np.zeros(channels, np.float64)
        for block in _blocks(x, rows):
            v = (block.astype(np.float32) / np.float32(divisor)).reshape(len(block), channels, -1)
            sq += ((v - mean[None, :, None]) ** 2).sum(axis=(0, 2), dtype=np.float64)
        var = sq / n
    std = np.sqrt(var)
    std = np.where(std > 1e-8, std, 1.0)
    return [float(v) for v in mean.astype(np.float32)], [float(v) for v in std.astype(np.float32)]
