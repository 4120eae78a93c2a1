"""Train / validation / test splits as sorted example indices, fixed by a seed; nothing is copied (`Split`).

A data set without a test split of its own holds out ``test_fraction`` of its examples (seed ``seed``), one
without a validation split ``val_fraction`` of the remaining training examples (seed ``seed + 1``). A hold-out
is stratified by label where every class has at least two examples (``train_test_split(stratify=...)``), a
plain seeded random split otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.data.arrays import DatasetError


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1):
            raise DatasetError(f"{what} must be a number in (0, 1), got {v!r}")


def held_out(n: int, fraction: float, what: str) -> int:
    """How many of `n` examples a `fraction` hold-out takes; at least one, and not all."""
    n_held = int(round(fraction * n))
    if n_held < 1 or n_held >= n:
        raise DatasetError(f"cannot hold out a {what} split of fraction {fraction} from {n} examples")
    return n_held


def split_sizes(n: int, n_val: int | None, n_test: int | None, *, val_fraction: float,
                test_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes `split_indices` makes of `n` training examples and the data set's own
    validation and test sizes (None: carved out of the training examples), with its errors."""
    if n_test is None:
        n_test = held_out(n, test_fraction, "test")
        n -= n_test
    if n_val is None:
        n_val = held_out(n, val_fraction, "validation")
        n -= n_val
    return n, n_val, n_test


def hold_out(labels: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): sorted positions in `labels` of a seeded `fraction` hold-out, stratified where it can be."""
    from sklearn.model_selection import train_test_split

    n_held = held_out(len(labels), fraction, what)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    stratify = labels if present.min() >= 2 and len(present) <= n_held <= len(labels) - len(present) else None
    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)  # a fixed order; the training loop shuffles


def split_indices(y_train: np.ndarray, has_val: bool, has_test: bool, seed: int, val_fraction: float,
                  test_fraction: float) -> dict[str, np.ndarray | None]:
    """Positions in the training part (labels `y_train`) of the train split and of the validation and test
    splits carved out of it (None where the data set has that split of its own)."""
    keep = np.arange(len(y_train))
    out: dict[str, np.ndarray | None] = {"val": None, "test": None}
    if not has_test:
        kept, held = hold_out(y_train, test_fraction, seed, "test")
        keep, out["test"] = keep[kept], keep[held]
    if not has_val:
        kept, held = hold_out(y_train[keep], val_fraction, seed + 1, "validation")
        keep, out["val"] = keep[kept], keep[held]
    out["train"] = keep
    return out


@dataclass
class Split:
    """Examples of one split: rows `index` (sorted) of the part's `arrays` (field -> `FileArray` or array)."""

    arrays: dict[str, Any]
    index: np.ndarray
    key: str  # identifies these examples (cache entry, part, split): what a per-process cache is keyed by

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        """Bytes of this split's examples, all fields."""
        return sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize for a in self.arrays.values()) \
            * len(self.index)

    def gather(self, positions: np.ndarray | None = None, fields: list[str] | None = None) -> dict[str, np.ndarray]:
        """The examples at `positions` of this split (default: all, in order), one array per field, read by one
        index from every field's array; positions in increasing order read the files in order."""
        rows = self.index if positions is None else self.index[np.asarray(positions, dtype=np.int64)]
        return {k: np.asarray(a[rows]) for k, a in self.arrays.items() if fields is None or k in fields}
