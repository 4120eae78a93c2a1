"""CIFAR-10's binary distribution (``cifar-10-batches-bin``: five training batches and a test batch of records
of 1 label byte and 3072 pixel bytes), as a data source: stored as uint8 images (N, 3, 32, 32)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np

from workers.data.arrays import DatasetError, NpyWriter

CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_RECORD = 1 + 3 * 32 * 32


def default_root() -> Path:
    """Where data sets live when no root is given: $GRAPHNAS_DATA, else ~/.cache/graphnas/data."""
    env = os.environ.get("GRAPHNAS_DATA")
    return Path(env) if env else Path.home() / ".cache" / "graphnas" / "data"


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



def cifar10_files(root: str | os.PathLike | None) -> list[Path]:
    """The six batch files of the folder `read_cifar10` reads (an error where one is missing)."""
    folder = cifar10_folder(root)
    _check_cifar10_files(folder)
    return [folder / n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)]


def write_cifar10(root: str | os.PathLike | None, dest: Path) -> dict[str, int]:
    """Decode the batches into ``dest/{train,test}.{x,y}.npy`` one file at a time; returns the parts' sizes."""
    files = cifar10_files(root)
    sizes = {}
    for part, names in (("train", files[:5]), ("test", files[5:])):
        labels = [read_cifar10_labels(f) for f in names]
        writer = NpyWriter(dest / f"{part}.x.npy", np.uint8, (3, 32, 32), sum(len(y) for y in labels))
        for f in names:
            writer.write(read_cifar10_file(f)[0])
        sizes[part] = writer.close()
        np.save(dest / f"{part}.y.npy", np.concatenate(labels))
    return sizes

