"""Atomic file writes: a kill never leaves a half-written result file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Write to a temporary file in the same folder, fsync (unless not `durable`: a file derived from others,
    rebuilt from them, need not survive a power cut), then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode(), durable)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1, durable: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_jsonable) + "\n", durable)


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and fsync; a reader skips a torn last line (see `read_jsonl`)."""
    line = json.dumps(obj, default=_jsonable, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


class JournalError(ValueError):
    """A JSON-lines file holds a line that is not what it should be (not JSON, not an object, not a record)
    before its last line; `path` is the file and `lines` the 1-based numbers of the bad lines."""

    def __init__(self, message: str, path: str | Path, lines: list[int]):
        super().__init__(message)
        self.path, self.lines = Path(path), lines


def parse_jsonl(path: str | Path) -> list[tuple[int, str, dict | None, str]]:
    """Each non-blank line of `path` as (1-based line number, text, the JSON object or None, why it is not
    one: "" for an object)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            why = "" if isinstance(row, dict) else f"JSON {type(row).__name__}, not an object"
        except ValueError as e:
            row, why = None, f"not JSON: {e}"
        out.append((i, line, row if not why else None, why))
    return out


def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """Every complete JSON line of `path`, and how many malformed lines were skipped.

    Only the last line may be torn by a kill; a malformed line elsewhere is corruption and raises
    `JournalError` naming the file and the line.
    """
    lines = parse_jsonl(path)
    rows, bad = [], 0
    for k, (i, _text, row, why) in enumerate(lines):
        if row is not None:
            rows.append(row)
        elif k == len(lines) - 1:
            bad += 1
        else:
            raise JournalError(f"{path}: line {i} is not a JSON object ({why}); the file is corrupted", path, [i])
    return rows, bad


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, set | tuple):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
