"""A user-supplied table of measured latencies: the metric ``latency_ms`` read per architecture instead of
measured by the trial (e.g. measured beforehand on the target phone).

The format is a CSV file with a header row and a ``latency_ms`` column; each row names its architecture
either by ``arch_id`` (as `nas describe ... --json` prints it) or by one column per variable of the search
space (the assignment, values written as on the command line: ``--set VAR=VALUE``). Both may be mixed in
one file (an empty ``arch_id`` cell: the row is keyed by its assignment). Lines starting with ``#`` are
comments (say what device and batch size the latencies were measured on). For example::

    # Pixel 8, TFLite fp32, batch 1, median of 50 runs
    edge_1_0,edge_2_0,edge_2_1,edge_3_0,edge_3_1,edge_3_2,latency_ms
    nor_conv_3x3,nor_conv_3x3,skip_connect,nor_conv_1x1,none,avg_pool_3x3,4.21

    arch_id,latency_ms
    3f2a9c...,4.21

A proposal is looked up by its ``arch_id`` first, then by its assignment. Latency is known before the
evaluation, so a constraint on it rejects a proposal without using budget; a proposal the table has no
latency for is rejected too (it cannot be placed on the front), with the reason naming the file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.space import SearchSpace, SpaceError

COLUMN = "latency_ms"


class LatencyTableError(ValueError):
    """The latency table cannot be read; the message names the file, the line and what is wrong."""


@dataclass
class LatencyTable:
    path: Path
    by_arch: dict[str, float] = field(default_factory=dict)
    by_assignment: dict[tuple[int, ...], float] = field(default_factory=dict)
    space: SearchSpace | None = None

    def __len__(self) -> int:
        return len(self.by_arch) + len(self.by_assignment)

    def lookup(self, arch_id: str | None, assignment: Mapping[str, Any]) -> float | None:
        """The latency of an architecture (by arch_id, else by assignment), or None where the table has none."""
        if arch_id is not None and arch_id in self.by_arch:
            return self.by_arch[arch_id]
        if self.by_assignment and self.space is not None:
            from nas.strategies.ledger import assignment_key

            try:
                return self.by_assignment.get(assignment_key(self.space, assignment))
            except (SpaceError, KeyError):
                return None
        return None


def load_latency_table(path: str | Path, space: SearchSpace) -> LatencyTable:
    """Read the table at `path` for `space`; raises `LatencyTableError` naming the file and line at fault."""
    from nas.strategies.ledger import assignment_key

    path = Path(path).expanduser()
    if not path.is_file():
        raise LatencyTableError(f"latency table {path} does not exist")
    with path.open(newline="") as f:
        lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise LatencyTableError(f"latency table {path}: no header row (a CSV with a {COLUMN} column)")
    rows = csv.reader([line for _, line in lines])
    header = [h.strip() for h in next(rows)]
    if COLUMN not in header:
        raise LatencyTableError(f"latency table {path}, line {lines[0][0]}: no {COLUMN!r} column (header: {header})")
    names = {v.name for v in space.variables}
    unknown = [h for h in header if h not in names and h not in (COLUMN, "arch_id")]
    if unknown:
        raise LatencyTableError(f"latency table {path}, line {lines[0][0]}: column(s) {unknown} are neither arch_id, "
                                f"{COLUMN} nor variables of space {space.name!r} ({sorted(names)})")
    by_variables = [h for h in header if h in names]
    table = LatencyTable(path, space=space)
    for (line, _), cells in zip(lines[1:], rows, strict=True):
        rec = dict(zip(header, (c.strip() for c in cells), strict=False))
        if len(cells) != len(header):
            raise LatencyTableError(f"latency table {path}, line {line}: {len(cells)} cells, the header has "
                                    f"{len(header)}")
        try:
            latency = float(rec[COLUMN])
        except ValueError:
            raise LatencyTableError(f"latency table {path}, line {line}: {COLUMN} {rec[COLUMN]!r} is not a "
                                    "number") from None
        if not math.isfinite(latency) or latency < 0:
            raise LatencyTableError(f"latency table {path}, line {line}: {COLUMN} must be a finite number >= 0, "
                                    f"got {latency}")
        if rec.get("arch_id"):
            table.by_arch[rec["arch_id"]] = latency
            continue
        if len(by_variables) != len(space.variables):
            missing = sorted(names - set(by_variables))
            raise LatencyTableError(f"latency table {path}, line {line}: no arch_id, and the columns lack variable(s) "
                                    f"{missing} of space {space.name!r} to key the row by its assignment")
        try:
            assignment = {n: space.variable(n).parse(rec[n]) for n in by_variables}
            key = assignment_key(space, space.validate(assignment))
        except (SpaceError, ValueError, KeyError) as e:
            raise LatencyTableError(f"latency table {path}, line {line}: {e}") from None
        table.by_assignment[key] = latency
    if not len(table):
        raise LatencyTableError(f"latency table {path}: no rows")
    return table
