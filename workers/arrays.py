"""What `workers.datasets` and `workers.video_data` share: the data set error and checked ``.npy`` reading.

A module of its own so that the two import it and `workers.datasets` imports `workers.video_data`, in one
direction only. It imports neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A data set cannot be loaded; the message names the file or argument at fault."""


def load_npy(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """The array in a ``.npy`` file, never unpickling; `mmap` maps it read-only instead of reading it, so
    that its shape and dtype cost only the header (how `workers.datasets.dataset_info` reads shapes)."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as e:  # object arrays need pickle, which is never allowed; or a truncated file
        text = str(e)
        if "pickle" in text or "object" in text.lower():  # numpy's words differ with mmap; these do not
            raise DatasetError(f"{path}: cannot be read without pickle (it holds Python objects or is a pickle); "
                               "save a numeric array") from None
        raise DatasetError(f"{path}: not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:  # EOFError: an empty file
        raise DatasetError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive under a .npy name
        a.close()
        raise DatasetError(f"{path}: is an .npz archive, not a .npy array; save one array per file")
    return a


def check_real(path: str | os.PathLike, a: np.ndarray, *, values: bool = True) -> None:
    """Raise unless `a` is real numeric (or bool) and, where `values`, finite. Without `values` only the
    dtype is looked at, so a memory-mapped array is not read."""
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a):
        raise DatasetError(f"{path}: dtype {a.dtype} is not a real numeric type")
    if values and np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise DatasetError(f"{path}: holds NaN or infinite values")
