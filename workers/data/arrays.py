"""Arrays on disk, what every data source shares: the data set error, checked ``.npy`` reading, `FileArray`
(rows read on demand, nothing mapped or kept) and `NpyWriter` (an array written block by block)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A data set cannot be loaded; the message names the file or argument at fault."""


def load_npy(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """The array in a ``.npy`` file, never unpickling; `mmap` maps it read-only instead of reading it, so
    that its shape and dtype cost only the header (how `workers.data.dataset_info` reads shapes)."""
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


class FileArray:
    """A read-only ``.npy`` array on disk whose rows are read on demand with positioned reads (``os.preadv``).

    Nothing of the file is mapped into the process or kept by it: the rows asked for are copied from the
    kernel's page cache into a fresh array, so every process on a node shares the one cached copy of the file,
    and a process holds only the rows it asked for (a memory map would count every page it ever touched in the
    process's resident memory). Indexing with an array of row numbers (any order) or a slice gives an
    ``np.ndarray``; `read()` gives all rows. It pickles by path, and opens its file once per process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: not a readable .npy file ({e})") from None
        if fortran or dtype.hasobject or not shape:
            raise DatasetError(f"{self.path}: rows of a C-ordered numeric array expected, got shape {shape} "
                               f"dtype {dtype}{' in Fortran order' if fortran else ''}")
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        size = self.path.stat().st_size
        if size < self.offset + self.row_bytes * self.shape[0]:
            raise DatasetError(f"{self.path}: truncated: {size} bytes for shape {self.shape} dtype {self.dtype}")
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def __repr__(self) -> str:
        return f"FileArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def read(self) -> np.ndarray:
        """Every row, as an array in memory."""
        return self[0:len(self)]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
                self._read_into(out, start, len(out))
                return out
            index = np.arange(start, stop, step)
        rows = np.asarray(index)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"FileArray: index with a slice or a 1-D array of row numbers, got {index!r}")
        rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"FileArray {self.path}: row out of range 0..{len(self) - 1}")
        order = None
        if len(rows) > 1 and (np.diff(rows) < 0).any():
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
            starts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [len(rows)]))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                self._read_into(out[a:b], int(rows[a]), b - a)
        if order is not None:
            unsorted = np.empty_like(out)
            unsorted[order] = out
            out = unsorted
        return out

    def _read_into(self, out: np.ndarray, first: int, count: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8)) if count else None
        done, want = 0, count * self.row_bytes
        position = self.offset + first * self.row_bytes
        while done < want:
            n = os.preadv(self._file(), [view[done:]], position + done)
            if n <= 0:
                raise DatasetError(f"{self.path}: ended early (truncated while in use?)")
            done += n


def npy_header(dtype: np.dtype, shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header of `length` bytes (default: the least multiple of 64 that holds it)."""
    text = f"{{'descr': {np.lib.format.dtype_to_descr(np.dtype(dtype))!r}, 'fortran_order': False, " \
           f"'shape': {tuple(int(v) for v in shape)!r}, }}".encode("latin1")
    need = 10 + len(text) + 1
    length = -(-need // 64) * 64 if length is None else length
    if need > length:
        raise ValueError(f"a .npy header of {need} bytes does not fit in {length}")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length - 10) + text + b" " * (length - need) + b"\n"


class NpyWriter:
    """Writes a ``.npy`` array block by block, so that no more than a block is ever in memory; it may hold fewer
    rows than planned (examples skipped while writing), which `close` records in the header."""

    def __init__(self, path: str | os.PathLike, dtype, row_shape: tuple[int, ...], rows_planned: int):
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(int(v) for v in row_shape)
        self.header_length = len(npy_header(self.dtype, (rows_planned, *self.row_shape)))
        self.rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._f.write(b"\0" * self.header_length)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        block.tofile(self._f)  # no copy of a contiguous block
        self.rows += len(block)

    def close(self) -> int:
        """Write the header for the rows written; returns their number."""
        self._f.seek(0)
        self._f.write(npy_header(self.dtype, (self.rows, *self.row_shape), self.header_length))
        self._f.close()
        return self.rows
