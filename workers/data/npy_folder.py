"""A folder of ``.npy`` arrays as a data source: ``x_train.npy`` and ``y_train.npy``, optionally ``x_val.npy`` /
``y_val.npy`` and ``x_test.npy`` / ``y_test.npy``; inputs (N, D), (N, C, H, W) or (N, C, T, H, W) of any real
dtype, labels integers 0..K-1. Stored as uint8 where the inputs are uint8, else float32."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workers.data.arrays import DatasetError, NpyWriter, check_real, load_npy

NPY_SPLITS = ("train", "val", "test")


def read_npy_folder(root: str | os.PathLike):
    """(x_train, y_train, x_val, y_val, x_test, y_test) from a folder; missing optional splits are None."""
    return _read_npy_arrays(root, header_only=False)


def _read_npy_arrays(root: str | os.PathLike, header_only: bool):
    """`read_npy_folder`; with `header_only` the inputs are memory-mapped and only their headers are read
    (so NaN or infinite values go unnoticed), the labels read and checked in full."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"npy data set: folder {folder} does not exist")
    arrays: dict[str, np.ndarray | None] = {}
    for split in NPY_SPLITS:
        fx, fy = folder / f"x_{split}.npy", folder / f"y_{split}.npy"
        if split != "train" and not fx.exists() and not fy.exists():
            arrays[f"x_{split}"] = arrays[f"y_{split}"] = None
            continue
        for f in (fx, fy):
            if not f.is_file():
                other = fy if f == fx else fx
                why = f" (it is needed alongside {other.name})" if split != "train" else ""
                raise DatasetError(f"npy data set: {f} is missing{why}")
        arrays[f"x_{split}"] = _load_x(fx, header_only)
        arrays[f"y_{split}"] = _load_y(fy, len(arrays[f"x_{split}"]))
    ref = arrays["x_train"].shape[1:]
    for split in NPY_SPLITS[1:]:
        x = arrays[f"x_{split}"]
        if x is not None and x.shape[1:] != ref:
            raise DatasetError(f"npy data set: {folder / f'x_{split}.npy'} has per-example shape "
                               f"{x.shape[1:]}, but x_train.npy has {ref}")
    return tuple(arrays[f"{v}_{s}"] for s in NPY_SPLITS for v in ("x", "y"))


def _load_x(path: Path, header_only: bool = False) -> np.ndarray:
    x = load_npy(path, mmap=header_only)
    if x.ndim not in (2, 4, 5):
        raise DatasetError(f"{path}: shape {x.shape} is not (N, D), (N, C, H, W) or (N, C, T, H, W)")
    if 0 in x.shape:
        raise DatasetError(f"{path}: shape {x.shape} holds no data")
    check_real(path, x, values=not header_only)
    return x


def _load_y(path: Path, n: int) -> np.ndarray:
    y = load_npy(path)
    if y.ndim != 1:
        raise DatasetError(f"{path}: labels must have shape (N,), got {y.shape}")
    if len(y) != n:
        raise DatasetError(f"{path}: {len(y)} labels for {n} examples in {path.name.replace('y_', 'x_')}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: labels must be integers 0..K-1, got dtype {y.dtype}")
    if y.min() < 0:
        raise DatasetError(f"{path}: labels must be integers 0..K-1, found {int(y.min())}")
    return y.astype(np.int64)



def npy_files(root: str | os.PathLike) -> list[Path]:
    """The folder's array files that `read_npy_folder` reads."""
    folder = Path(root).expanduser()
    return [folder / f"{v}_{s}.npy" for s in NPY_SPLITS for v in ("x", "y") if (folder / f"{v}_{s}.npy").exists()]


def write_npy_folder(root: str | os.PathLike, dest: Path, block_bytes: int = 64 * 2**20) -> tuple[dict[str, int], str]:
    """Copy the folder's splits into ``dest/<split>.{x,y}.npy`` block by block (uint8 stays uint8, anything else
    becomes float32, NaN and infinite values are errors); returns the splits' sizes and the stored dtype."""
    arrays = _read_npy_arrays(root, header_only=True)
    xs = {s: arrays[2 * i] for i, s in enumerate(NPY_SPLITS) if arrays[2 * i] is not None}
    dtype = np.uint8 if all(x.dtype == np.uint8 for x in xs.values()) else np.float32
    folder = Path(root).expanduser()
    sizes = {}
    for i, split in enumerate(NPY_SPLITS):
        x, y = arrays[2 * i], arrays[2 * i + 1]
        if x is None:
            continue
        writer = NpyWriter(dest / f"{split}.x.npy", dtype, x.shape[1:], len(x))
        rows = max(1, block_bytes // max(1, x[0].nbytes))
        for a in range(0, len(x), rows):
            block = np.asarray(x[a:a + rows])
            if dtype != np.uint8 and x.dtype == np.uint8:
                block = block.astype(np.float32) / 255.0
            check_real(folder / f"x_{split}.npy", block)
            writer.write(block)
        sizes[split] = writer.close()
        np.save(dest / f"{split}.y.npy", y)
    return sizes, np.dtype(dtype).name

