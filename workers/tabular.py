"""Tabular evaluation on NAS-Bench-201: a candidate is looked up in the benchmark's table, not trained.

The table is a CSV the user gives (``--table PATH``; its columns are described in the README beside the
shared copy: one row per cell, all 15,625, with the architecture string). It is never copied into the
package. A candidate of the ``nb201`` space is found by its architecture string
(`search_spaces.nb201.nb201_string`).

What an evaluation sees and costs (`evaluate_row`):

- the search signal is ONE training seed's CIFAR-10 validation accuracy after 200 epochs
  (``c10valid_xvalid_200ep_seeds``), the seed drawn at random by a generator seeded with the search's seed
  and the architecture's index, so the same search repeats exactly, whatever order its evaluations finish
  in, and evaluating an architecture again gives the same draw;
- the simulated time charged is 12/200 of that split's 200-epoch training time
  (``c10valid_train_time_200ep_s``): the benchmark's 12-epoch search protocol (the signal itself is the
  200-epoch one, which is all the table has, so it is cleaner than the paper's 12-epoch signal);
- the CIFAR-10 test accuracy (``c10_test_200ep_mean``) is returned for reporting only. Nothing in the
  search reads it.

Accuracies in `TabularResult` are in percent, as in the table and the paper. The Ray trainable reports
fractions (``val_accuracy``, ``test_accuracy`` in [0, 1]) like the training trainable, so the search
driver's journal and leaderboard read the same in both modes.

The ``table`` kind of evaluation (`TableEvaluation`, the `nas.evaluation` contract) has two ways in:
`TabularEvaluator` (in process, for `nas bench`) and `tabular_trainable` (a Ray Tune function trainable for
``nas search --space nb201 --table PATH``). The table is loaded once per process.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.evaluation import DataInfo, Evaluation, EvaluationError
from nas.loop import Outcome, Proposal

SIMULATED_EPOCHS = 12
TABLE_EPOCHS = 200
INPUT_SHAPE = (3, 32, 32)  # the benchmark's CIFAR-10 network: what the search driver builds and journals
NUM_CLASSES = 10
SPACE = "nb201"

_COLUMNS = {
    "index": "index", "arch_str": "arch_str", "val_seeds": "c10valid_xvalid_200ep_seeds",
    "val_mean": "c10valid_xvalid_200ep_mean", "test_accuracy": "c10_test_200ep_mean",
    "train_seconds": "c10valid_train_time_200ep_s", "params_mb": "c10valid_params_MB",
}


class TableError(ValueError):
    """The table cannot be read, or has no row for an architecture; the message names the file and row."""


@dataclass(frozen=True)
class Row:
    """One architecture of the table (accuracies in percent)."""

    index: int
    arch_str: str
    val_seeds: tuple[float, ...]  # CIFAR-10 validation accuracy per training seed, 200 epochs: the signal
    val_mean: float
    test_accuracy: float  # CIFAR-10 test accuracy, mean over seeds: reported, never searched on
    train_seconds: float  # 200 epochs of training on the train split
    params: int


@dataclass
class Table:
    path: Path
    rows: list[Row]
    by_arch: dict[str, Row]

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, arch_str: str) -> Row:
        try:
            return self.by_arch[arch_str]
        except KeyError:
            raise TableError(f"{self.path}: no row for architecture {arch_str!r}") from None

    def lookup(self, assignment: Mapping[str, Any]) -> Row:
        from search_spaces.nb201 import nb201_string

        return self.row(nb201_string(assignment))

    def best(self, key: Callable[[Row], float]) -> Row:
        return max(self.rows, key=key)


_CACHE: dict[tuple[str, float], Table] = {}


def load_table(path: str | Path) -> Table:
    """The NAS-Bench-201 table at `path` (cached per process, keyed by the file and its mtime)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TableError(f"table {path} does not exist (give the NAS-Bench-201 CSV, e.g. shared/data/nb201/nb201.csv)")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _CACHE:
        return _CACHE[key]
    table = _read(path)
    _CACHE.clear()
    _CACHE[key] = table
    return table


def _read(path: Path) -> Table:
    from search_spaces.nb201 import nb201_assignment_from_string, nb201_string

    rows: list[Row] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS.values() if c not in (reader.fieldnames or [])]
        if missing:
            raise TableError(f"table {path}: missing column(s) {missing}; is it the NAS-Bench-201 CSV?")
        for line, rec in enumerate(reader, start=2):
            try:
                arch = nb201_string(nb201_assignment_from_string(rec[_COLUMNS["arch_str"]]))
                seeds = tuple(float(v) for v in rec[_COLUMNS["val_seeds"]].split(";") if v.strip())
                row = Row(index=int(rec["index"]), arch_str=arch, val_seeds=seeds,
                          val_mean=float(rec[_COLUMNS["val_mean"]]),
                          test_accuracy=float(rec[_COLUMNS["test_accuracy"]]),
                          train_seconds=float(rec[_COLUMNS["train_seconds"]]),
                          params=round(float(rec[_COLUMNS["params_mb"]]) * 1e6))
            except (ValueError, TypeError, AttributeError) as e:
                raise TableError(f"table {path}, line {line}: {e}") from None
            if not seeds or not all(math.isfinite(v) for v in seeds) or not math.isfinite(row.train_seconds):
                raise TableError(f"table {path}, line {line}: no finite validation seeds / training time")
            rows.append(row)
    by_arch = {r.arch_str: r for r in rows}
    if len(by_arch) != len(rows):
        raise TableError(f"table {path}: an architecture string appears twice")
    return Table(path, rows, by_arch)


# -- evaluation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TabularResult:
    """One looked-up evaluation (accuracies in percent)."""

    index: int
    arch_str: str
    val_accuracy: float  # one seed's 200-epoch validation accuracy: the search signal
    val_seed: int  # which of the row's seeds
    test_accuracy: float  # reported only
    simulated_seconds: float  # 12/200 of the 200-epoch training time
    params: int


def val_seed_index(seed: int, index: int, n_seeds: int) -> int:
    """The validation seed drawn for architecture `index` in a search seeded `seed` (a string-seeded
    generator: the same in every process, unlike hash())."""
    return random.Random(f"nb201-val/{seed}/{index}").randrange(n_seeds)


def evaluate_row(row: Row, seed: int) -> TabularResult:
    k = val_seed_index(seed, row.index, len(row.val_seeds))
    return TabularResult(index=row.index, arch_str=row.arch_str, val_accuracy=row.val_seeds[k], val_seed=k,
                         test_accuracy=row.test_accuracy,
                         simulated_seconds=row.train_seconds * SIMULATED_EPOCHS / TABLE_EPOCHS, params=row.params)


class TabularEvaluator:
    """In-process lookups for one search (`seed`): ``evaluator(assignment) -> TabularResult``; counts the
    evaluations and the simulated seconds charged."""

    def __init__(self, table: Table | str | Path, seed: int = 0):
        self.table = table if isinstance(table, Table) else load_table(table)
        self.seed = seed
        self.n_evaluations = 0
        self.simulated_seconds = 0.0

    def __call__(self, assignment: Mapping[str, Any]) -> TabularResult:
        result = evaluate_row(self.table.lookup(assignment), self.seed)
        self.n_evaluations += 1
        self.simulated_seconds += result.simulated_seconds
        return result

    def outcome(self, proposal: Proposal) -> Outcome:
        """The lookup as the search loop's outcome: val_accuracy as a fraction, as the trainable reports
        it, the `TabularResult` in ``extra["result"]``; a missing row is a failed outcome."""
        try:
            r = self(proposal.assignment)
        except TableError as e:
            return Outcome("failed", error=str(e))
        return Outcome("ok", r.val_accuracy / 100, metrics=_metrics(r), extra={"result": r})


def _metrics(r: TabularResult) -> dict[str, Any]:
    return {"status": "ok", "val_accuracy": r.val_accuracy / 100, "test_accuracy": r.test_accuracy / 100,
            "val_seed": r.val_seed, "simulated_seconds": r.simulated_seconds, "nb201_index": r.index,
            "arch_str": r.arch_str, "params": r.params}


# -- Ray ---------------------------------------------------------------------------------------------------


def tabular_trainable(table: str | Path, seed: int) -> Callable[[dict[str, Any]], None]:
    """A Ray Tune function trainable that looks ``config["assignment"]`` up in `table` and reports once:
    status, val_accuracy and test_accuracy (fractions), val_seed, simulated_seconds, nb201_index,
    arch_str, params (the table's) and flops (of ``config["arch"]``, when given). A candidate with no row
    reports status="failed" (val_accuracy NaN), as the training trainable does. The path is made absolute
    here, in the driver: Tune runs trials in their own folders. On a cluster the file must be readable at
    that path on every node."""
    path = str(Path(table).expanduser().resolve())

    def lookup_architecture(config: dict[str, Any]) -> None:
        from ray import tune

        from nas.builder import count_flops
        from nas.graph import from_dict

        try:
            r = evaluate_row(load_table(path).lookup(config["assignment"]), seed)
            flops = count_flops(from_dict(config["arch"], "config['arch']")) if "arch" in config else None
        except Exception as e:  # the candidate fails, not the search
            tune.report({"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000],
                         "val_accuracy": float("nan")})
            return
        metrics = _metrics(r)
        tune.report(metrics if flops is None else {**metrics, "flops": flops})

    return lookup_architecture


class TableEvaluation(Evaluation):
    """``nas search --space nb201 --table PATH``: candidates looked up in the table, not trained. The
    network the driver builds and journals for each is the benchmark's CIFAR-10 one."""

    kind = "table"

    def check(self) -> None:
        from nas.registry import get_space

        if get_space(self.cfg.space).name != SPACE:
            raise EvaluationError(f"--table looks candidates up in NAS-Bench-201; it needs --space {SPACE}, "
                                  f"not {self.cfg.space!r}")
        try:
            load_table(self.cfg.table)
        except TableError as e:
            raise EvaluationError(str(e)) from None

    def data_info(self) -> DataInfo:
        return DataInfo(INPUT_SHAPE, NUM_CLASSES)

    def reported_metrics(self) -> set[str]:
        """One seed's validation accuracy, the table's parameter count, the project's count of
        multiply-accumulates of the cell's network and the simulated training time."""
        return {"val_accuracy", "params", "flops", "simulated_seconds"}

    def table(self) -> Table:
        """The table itself (loaded once per process), for reports such as `nas bench`'s optimum."""
        return load_table(self.cfg.table)

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        return tabular_trainable(self.cfg.table, self.cfg.seed)

    def in_process(self) -> Callable[[Proposal], Outcome]:
        return TabularEvaluator(self.cfg.table, self.cfg.seed).outcome

    def describe(self) -> str:
        return f"looked up in {self.cfg.table}"
