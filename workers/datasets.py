"""Data sets as torch tensors, split once into fixed train / validation / test parts by a seed.

The test split is for the final report only: the search selects on the validation split. Splits are
stratified by label where every class has at least two examples (`train_test_split(stratify=...)`),
and plain seeded random splits otherwise. Inputs are float32, standardised per channel (dimension 1)
with the training split's mean and standard deviation; labels are int64 in 0..K-1. What was done to the
inputs (the scale, and the per-channel mean and std) is `DatasetSplits.preprocessing`, a plain dict
(`nas.preprocessing`) that the worker saves with a trained model so that an exported model applies it.

Fractions: ``test_fraction`` of all examples is held out as the test split when the data set has none
of its own (digits; an npy folder without ``x_test.npy``); ``val_fraction`` of the remaining
training examples is held out for validation when the data set has no validation split of its own.

Sets: ``digits`` (scikit-learn's 8x8 digits, embedded), ``cifar10`` (the binary distribution), ``npy``
(a folder of ``.npy`` arrays); video (`workers.video_data`): ``moving_digits[:options]`` (generated clips)
and ``clips`` (a folder of ``.npy`` clips per class).

`dataset_info` gives the input shape and number of classes that `load_dataset` would give from file headers,
sizes and labels, without reading and converting the inputs (the search driver needs them before Ray starts).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workers.arrays import DatasetError, check_real, load_npy  # DatasetError's home; importable from here too
from workers.video_data import is_video_dataset, load_video_arrays, video_dataset_info

CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_RECORD = 1 + 3 * 32 * 32

NPY_SPLITS = ("train", "val", "test")
DIGITS_SHAPE, DIGITS_CLASSES, DIGITS_EXAMPLES = (1, 8, 8), 10, 1797  # scikit-learn's load_digits()
_KNOWN = "cifar10, clips, digits, moving_digits, npy"


@dataclass
class DatasetSplits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    # what was done to the inputs as the data set gives them (nas.preprocessing): x * scale, then
    # (x - mean[c]) / std[c] per channel; an exported model applies it itself
    preprocessing: dict | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def __repr__(self) -> str:  # the default would print every tensor
        return (f"DatasetSplits(name={self.name!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, sizes={self.sizes()})")


@dataclass(frozen=True)
class DatasetInfo:
    """What a network needs to know of a data set: `input_shape` (one example, without the batch dimension)
    and `num_classes`, as `load_dataset` would give them; `name` as `DatasetSplits.name`."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int


def default_root() -> Path:
    """Where data sets live when no root is given: $GRAPHNAS_DATA, else ~/.cache/graphnas/data."""
    env = os.environ.get("GRAPHNAS_DATA")
    return Path(env) if env else Path.home() / ".cache" / "graphnas" / "data"


def load_dataset(name: str, *, root: str | os.PathLike | None = None, seed: int = 0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2, normalize: bool = True,
                 download: bool = False) -> DatasetSplits:
    """Load data set `name` split by `seed` (see the module docstring for the fractions).

    `root`: for ``cifar10`` the folder holding ``cifar-10-batches-bin`` (or that folder itself); for
    ``npy`` the folder of arrays (required). `download` (cifar10 only) fetches the archive when files
    are missing; it is never attempted unless asked for.
    """
    _check_fractions(val_fraction, test_fraction)
    key = name.lower() if isinstance(name, str) else name
    if key == "digits":
        x, y = _digits()
        splits = _split_all(x, y, None, None, None, None, seed, val_fraction, test_fraction)
    elif key == "cifar10":
        (x, y), (xt, yt) = read_cifar10(root, download=download)
        splits = _split_all(x, y, None, None, xt, yt, seed, val_fraction, test_fraction)
    elif key == "npy":
        arrays = read_npy_folder(_npy_root(root))
        splits = _split_all(*arrays, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    elif is_video_dataset(key):
        x, y = load_video_arrays(key, root)
        splits = _split_all(x, y, None, None, None, None, seed, val_fraction, test_fraction)
    else:
        raise DatasetError(f"unknown data set {name!r}; known: {_KNOWN}")
    (xtr, ytr), (xv, yv), (xte, yte) = splits
    num_classes = int(max(ytr.max(initial=-1), yv.max(initial=-1), yte.max(initial=-1))) + 1
    scale = (1.0 / 255.0 if xtr.dtype == np.uint8 else 1.0) * (_DIGITS_SCALE if key == "digits" else 1.0)
    xtr, xv, xte = (_as_float(a) for a in (xtr, xv, xte))
    if normalize:
        mean, std = _channel_stats(xtr)
        xtr, xv, xte = _standardise(xtr, xv, xte, stats=(mean, std))
    else:
        mean, std = np.zeros(xtr.shape[1], np.float32), np.ones(xtr.shape[1], np.float32)
    preprocessing = {"scale": scale, "mean": [float(v) for v in np.ravel(mean)],
                     "std": [float(v) for v in np.ravel(std)]}
    t = torch.from_numpy
    return DatasetSplits(
        x_train=t(xtr), y_train=t(ytr.astype(np.int64)), x_val=t(xv), y_val=t(yv.astype(np.int64)),
        x_test=t(xte), y_test=t(yte.astype(np.int64)), num_classes=num_classes,
        input_shape=tuple(int(v) for v in xtr.shape[1:]), name=key, preprocessing=preprocessing,
    )


def dataset_info(name: str, *, root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2) -> DatasetInfo:
    """The input shape and number of classes that ``load_dataset(name, root=root, seed=seed, ...)`` would
    give, without loading the inputs: the search driver needs them to build networks before Ray starts, and
    the workers load the data themselves.

    It reads file sizes, ``.npy`` headers (memory-mapped), labels, and CIFAR-10's label bytes (the number of
    classes is the largest label + 1, as in `load_dataset`), and raises `load_dataset`'s errors (unknown
    names, bad fractions, missing or malformed files and labels, splits too small to hold out) but for NaN or
    infinite inputs, which only reading the inputs finds. `seed` does not change the answer; it is taken so
    that calls mirror `load_dataset`'s.
    """
    _check_fractions(val_fraction, test_fraction)
    key = name.lower() if isinstance(name, str) else name
    if key == "digits":
        shape, num_classes, sizes = DIGITS_SHAPE, DIGITS_CLASSES, (DIGITS_EXAMPLES, None, None)
    elif key == "cifar10":
        n_train, n_test, max_label = cifar10_counts(root)
        shape, num_classes, sizes = (3, 32, 32), max_label + 1, (n_train, None, n_test)
    elif key == "npy":
        x_train, y_train, x_val, y_val, x_test, y_test = _read_npy_arrays(_npy_root(root), header_only=True)
        labels = [y for y in (y_train, y_val, y_test) if y is not None]
        shape, num_classes = x_train.shape[1:], max(int(y.max(initial=-1)) for y in labels) + 1
        sizes = (len(x_train), None if x_val is None else len(x_val), None if x_test is None else len(x_test))
    elif is_video_dataset(key):
        shape, num_classes, n = video_dataset_info(key, root)
        sizes = (n, None, None)
    else:
        raise DatasetError(f"unknown data set {name!r}; known: {_KNOWN}")
    _split_sizes(*sizes, val_fraction=val_fraction, test_fraction=test_fraction)
    return DatasetInfo(name=key, input_shape=tuple(int(v) for v in shape), num_classes=int(num_classes))


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(v, int | float) and 0 < v < 1):
            raise DatasetError(f"{what} must be a number in (0, 1), got {v!r}")


def _npy_root(root: str | os.PathLike | None) -> str | os.PathLike:
    if root is None:
        raise DatasetError("data set 'npy' needs root=<folder holding x_train.npy and y_train.npy>")
    return root


# ---------------------------------------------------------------------------------------------------
# sources


_DIGITS_SCALE = 1.0 / 16.0  # digits' pixels are 0..16; `_digits` divides them by 16


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16 (_DIGITS_SCALE)
    return x, d.target.astype(np.int64)


def read_cifar10_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes,
    each 32x32 row-major). Returns uint8 images (N, 3, 32, 32) and int64 labels."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    _check_cifar_size(path, raw.size)
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = _check_cifar_labels(path, records[:, 0].astype(np.int64))
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar10_labels(path: str | os.PathLike) -> np.ndarray:
    """The int64 labels of one CIFAR-10 binary batch, with `read_cifar10_file`'s checks, without decoding
    the images (their bytes are mapped, and only the label bytes are touched)."""
    path = Path(path)
    _check_cifar_size(path, path.stat().st_size)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    labels = raw[::_CIFAR_RECORD].astype(np.int64)
    del raw
    return _check_cifar_labels(path, labels)


def _check_cifar_size(path: Path, size: int) -> None:
    if size == 0 or size % _CIFAR_RECORD:
        raise DatasetError(f"{path}: size {size} bytes is not a positive multiple of the CIFAR-10 record "
                           f"size {_CIFAR_RECORD}; the file is truncated or not a CIFAR-10 binary batch")


def _check_cifar_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    if labels.max() > 9:
        raise DatasetError(f"{path}: label byte {int(labels.max())} is not a CIFAR-10 class (0..9)")
    return labels


def cifar10_folder(root: str | os.PathLike | None) -> Path:
    base = Path(root).expanduser() if root is not None else default_root()
    return base if base.name == CIFAR10_FOLDER else base / CIFAR10_FOLDER


def read_cifar10(root: str | os.PathLike | None, download: bool = False):
    """((x_train, y_train), (x_test, y_test)) from the five training batches and the official test batch."""
    folder = cifar10_folder(root)
    if _cifar10_missing(folder) and download:
        download_cifar10(folder.parent)
    _check_cifar10_files(folder)
    train = [read_cifar10_file(folder / n) for n in CIFAR10_TRAIN_FILES]
    x = np.concatenate([a for a, _ in train])
    y = np.concatenate([b for _, b in train])
    return (x, y), read_cifar10_file(folder / CIFAR10_TEST_FILE)


def cifar10_counts(root: str | os.PathLike | None) -> tuple[int, int, int]:
    """(training records, test records, largest label) of the folder `read_cifar10` reads, with its errors
    (no download), from the files' sizes and label bytes."""
    folder = cifar10_folder(root)
    _check_cifar10_files(folder)
    train = [read_cifar10_labels(folder / n) for n in CIFAR10_TRAIN_FILES]
    test = read_cifar10_labels(folder / CIFAR10_TEST_FILE)
    return sum(len(y) for y in train), len(test), int(max(y.max() for y in (*train, test)))


def _cifar10_missing(folder: Path) -> list[str]:
    return [n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / n).is_file()]


def _check_cifar10_files(folder: Path) -> None:
    missing = _cifar10_missing(folder)
    if missing:
        names = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE]
        raise DatasetError(f"CIFAR-10: {folder} lacks {missing[0]}"
                           + (f" (and {len(missing) - 1} more of {names})" if len(missing) > 1 else "")
                           + f". Put the binary distribution ({CIFAR10_URL}, extracted) there, pass "
                           "root=<its parent folder>, or pass download=True where the network allows.")


def download_cifar10(dest: str | os.PathLike) -> Path:
    """Fetch and check (MD5) the binary archive, and extract its .bin files into dest/cifar-10-batches-bin."""
    import urllib.request

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "cifar-10-binary.tar.gz"
    if not archive.is_file():
        tmp = archive.with_suffix(".part")
        try:
            urllib.request.urlretrieve(CIFAR10_URL, tmp)
        except OSError as e:
            raise DatasetError(f"could not download {CIFAR10_URL} into {dest}: {e}") from None
        tmp.replace(archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    if md5 != CIFAR10_MD5:
        raise DatasetError(f"{archive}: MD5 {md5} differs from the published {CIFAR10_MD5}; "
                           "delete it and retry")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(f"{CIFAR10_FOLDER}/")
                   and m.name.endswith((".bin", ".txt"))]
        tar.extractall(dest, members=members, filter="data")
    return dest / CIFAR10_FOLDER


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


# ---------------------------------------------------------------------------------------------------
# splitting and scaling


def _split_all(x, y, x_val, y_val, x_test, y_test, seed: int, val_fraction: float, test_fraction: float):
    if x_test is None:
        x, y, x_test, y_test = _split(x, y, test_fraction, seed, "test")
    if x_val is None:
        x, y, x_val, y_val = _split(x, y, val_fraction, seed + 1, "validation")
    return (x, y), (x_val, y_val), (x_test, y_test)


def _held_out(n: int, fraction: float, what: str) -> int:
    """How many of `n` examples a `fraction` hold-out takes; at least one, and not all."""
    n_held = int(round(fraction * n))
    if n_held < 1 or n_held >= n:
        raise DatasetError(f"cannot hold out a {what} split of fraction {fraction} from {n} examples")
    return n_held


def _split_sizes(n: int, n_val: int | None, n_test: int | None, *, val_fraction: float,
                 test_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes `_split_all` makes of `n` examples and the given splits' sizes (None:
    carved out), with its errors, without the arrays."""
    if n_test is None:
        n_test = _held_out(n, test_fraction, "test")
        n -= n_test
    if n_val is None:
        n_val = _held_out(n, val_fraction, "validation")
        n -= n_val
    return n, n_val, n_test


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str):
    """(x_keep, y_keep, x_held, y_held): a stratified hold-out where every class has two examples."""
    from sklearn.model_selection import train_test_split

    n_held = _held_out(len(y), fraction, what)
    counts = np.bincount(y)
    present = counts[counts > 0]
    stratify = y if present.min() >= 2 and len(present) <= n_held <= len(y) - len(present) else None
    idx = np.arange(len(y))
    keep, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=stratify)
    keep, held = np.sort(keep), np.sort(held)  # a fixed order; the training loop shuffles
    return x[keep], y[keep], x[held], y[held]


def _as_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return np.ascontiguousarray(x, dtype=np.float32)


def _channel_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training split's per-channel (dimension 1) float32 mean and std (1 where it is ~0), shaped to
    broadcast against the inputs."""
    axes = tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _standardise(x_train: np.ndarray, *others: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None):
    """Per-channel (dimension 1) standardisation with the training split's statistics (`stats`: those of
    `_channel_stats(x_train)`, when already computed)."""
    mean, std = stats if stats is not None else _channel_stats(x_train)
    return tuple(((a - mean) / std).astype(np.float32, copy=False) for a in (x_train, *others))
