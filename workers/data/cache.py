"""The per-node cache of decoded data sets: one folder per data set version, built once, then read by every trial.

An entry is a folder ``<cache>/<source>-<what>-<content>/`` holding the decoded arrays as ``.npy`` files and a
``meta.json`` written last; it is built in a private temporary folder and renamed into place, under a file lock,
so concurrent trials on a node wait for one build instead of decoding twice, and nobody ever sees half an
entry. ``<content>`` hashes what the data were decoded from (for files: their paths, sizes and modification
times; the options that change the result), so a changed file gives a new entry, and the entries the same
source left before are removed once the new one is in place (a process still reading one keeps its open
files). The cache folder is the ``data_cache`` setting, else ``$GRAPHNAS_CACHE``, else
``~/.cache/graphnas/cache``; deleting it only costs a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workers.data.arrays import DatasetError

CACHE_ENV = "GRAPHNAS_CACHE"
META_FILE = "meta.json"


def cache_root(setting: str | os.PathLike | None = None) -> Path:
    """The cache folder: `setting` (the ``data_cache`` training setting), else $GRAPHNAS_CACHE, else
    ~/.cache/graphnas/cache."""
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphnas" / "cache"


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"data cache {root}: cannot be created ({e}); set the data_cache setting "
                           f"(--data-cache) or ${CACHE_ENV} to a writable folder") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DatasetError(f"data cache {root}: not writable; set the data_cache setting (--data-cache) or "
                           f"${CACHE_ENV} to a writable folder")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), held for the block; other processes wait."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_meta(entry: Path) -> dict[str, Any]:
    return json.loads((entry / META_FILE).read_text())


def cached_entry(root: Path, source: str, what: Any, content: Any,
                 build: Callable[[Path], dict[str, Any]]) -> tuple[Path, bool]:
    """(the entry folder of `source` data `what` decoded from `content`, whether it was built now).

    `build(folder)` writes the arrays into an empty folder and returns the metadata, saved as ``meta.json``.
    An entry already complete is returned at once; else it is built under a lock (a process that waited finds
    it complete), and the older entries of the same `what` are removed."""
    prefix = f"{source}-{digest(what)}"
    entry = root / f"{prefix}-{digest(content)}"
    if (entry / META_FILE).is_file():
        return entry, False
    _writable(root)
    with locked(root / f".{prefix}.lock"):
        if (entry / META_FILE).is_file():
            return entry, False
        for stale in root.glob(f".building-{entry.name}-*"):  # left by a process killed while building it
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".building-{entry.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = build(tmp)
            _atomic_json(tmp / META_FILE, meta)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in root.glob(f"{prefix}-*"):  # versions of these data decoded from files since changed
            if old != entry and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return entry, True


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON value in `path`, computed and saved (atomically) when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_json(path, value)
    except OSError:  # a read-only cache still answers, computing every time
        pass
    return value


def _atomic_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
