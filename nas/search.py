"""The driver: a strategy wrapped as a Ray Tune `Searcher`, run by a `Tuner`, journaled to a run folder.

Resuming does not depend on Ray's experiment state: the run folder's ``evaluations.jsonl`` is the
source of truth. On ``--resume`` the strategy is rebuilt from its last snapshot plus the evaluations
journaled after it, and a fresh Tuner runs the rest of the budget. A driver killed at any point (even
SIGKILL) therefore loses only trials that had not finished, and never records one twice.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.config import SearchConfig
from nas.graph import arch_id as compute_arch_id
from nas.graph import to_dict
from nas.io import atomic_write_json
from nas.registry import get_space
from nas.results import RunFolder
from nas.space import SearchSpace
from nas.strategies import make_strategy
from nas.strategies.base import Strategy

METRIC, MODE = "val_accuracy", "max"

# settings that define a search: a resumed run must keep them
_IDENTITY_KEYS = ("space", "strategy", "seed", "space_options", "strategy_options", "train", "table")


class SearchError(RuntimeError):
    """The search cannot start or continue; the message says why and what to do."""


@dataclass
class SearchOutcome:
    folder: Path
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    n_rejected: int = 0  # proposals over max_params / max_flops, never evaluated

    @property
    def n_failed(self) -> int:
        return sum(r.get("status") != "ok" for r in self.records)


class SearchState:
    """Everything the driver tracks between Tune callbacks: the strategy, the journal, pending trials."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace, strategy: Strategy, folder: RunFolder,
                 data_shape: tuple[int, ...], num_classes: int, log: Callable[[str], None]):
        self.cfg, self.space, self.strategy, self.folder, self.log = cfg, space, strategy, folder, log
        self.data_shape, self.num_classes = data_shape, num_classes
        self.records = folder.records()
        self.pending: dict[str, dict[str, Any]] = {}
        self.by_arch: dict[str, dict[str, Any]] = {r["arch_id"]: r for r in self.records
                                                    if r.get("status") == "ok" and r.get("arch_id")}
        self.elapsed_before = max((r.get("elapsed_s", 0.0) for r in self.records), default=0.0)
        self.session_start = time.monotonic()
        self.session_done = 0
        self.n_rejected = 0
        self.best = folder.ranked(self.records, MODE)[0] if folder.ranked(self.records, MODE) else None

    # -- bookkeeping --------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.session_start

    def n_committed(self) -> int:
        return len(self.records) + len(self.pending)

    def record(self, rec: dict[str, Any], arch: dict[str, Any] | None) -> None:
        """Journal one finished evaluation, then tell the strategy; refresh the derived files."""
        rec["index"] = len(self.records)
        rec["elapsed_s"] = round(self.elapsed(), 3)
        self.folder.append(rec)
        self.records.append(rec)
        self.session_done += 1
        ok = rec["status"] == "ok"
        self.strategy.tell(rec["assignment"], rec["value"] if ok else None)
        atomic_write_json(self.folder.strategy_file, {"n_records": len(self.records),
                                                      "state": self.strategy.state_dict()})
        if ok and rec.get("arch_id"):
            self.by_arch.setdefault(rec["arch_id"], rec)
        improved = ok and (self.best is None or rec["value"] > self.best["value"])
        if improved:
            self.best = rec
            if arch is not None:
                self.folder.write_best(rec, arch, METRIC)
        self.folder.write_leaderboard(self.records, METRIC, MODE)
        self._progress(rec)

    def _progress(self, rec: dict[str, Any]) -> None:
        n, budget = len(self.records), self.cfg.budget
        rate = (time.monotonic() - self.session_start) / max(self.session_done, 1)
        eta = rate * max(budget - n, 0)
        what = f"{rec['value']:.4f}" if rec["status"] == "ok" else f"FAILED ({rec.get('error', '')[:80]})"
        best = f"{self.best['value']:.4f}" if self.best else "-"
        tag = " (cached)" if rec.get("cached") else ""
        self.log(f"[{n}/{budget}] {METRIC} {what}{tag} | best {best} | elapsed {_hms(self.elapsed())} | "
                 f"ETA {_hms(eta)}")

    # -- proposals ----------------------------------------------------------------------------------
    def next_config(self, trial_id: str) -> dict[str, Any] | None:
        """A trial config for the strategy's next proposal, or None when the budget is committed.

        Proposals that fail to build, or that repeat an evaluated architecture, are journaled here
        without a trial (a failure, or the earlier result marked cached) and count toward the budget.
        Proposals over max_params / max_flops are rejected before evaluation: the strategy is told they
        failed, they are counted in `n_rejected`, and they do not use the budget."""
        rejected_in_a_row = 0
        while self.n_committed() < self.cfg.budget:
            assignment = self.strategy.ask()
            try:
                g = self.space.graph(assignment, num_classes=self.num_classes, input_shape=self.data_shape,
                                     **self.cfg.space_options)
                aid = compute_arch_id(g)
            except Exception as e:  # the candidate fails, not the search
                self.record({"trial_id": f"{trial_id}_build{len(self.records)}", "assignment": assignment,
                             "arch_id": None,
                             "status": "failed", "value": None, "error": f"{type(e).__name__}: {e}",
                             "metrics": {}}, None)
                continue
            too_large = _over_limits(g, self.cfg)
            if too_large:
                with warnings.catch_warnings():  # counted and reported as skipped proposals, not failures
                    warnings.simplefilter("ignore")
                    self.strategy.tell(assignment, None)
                self.n_rejected += 1
                rejected_in_a_row += 1
                if rejected_in_a_row >= MAX_REJECTIONS_IN_A_ROW:
                    raise SearchError(f"{rejected_in_a_row} proposals in a row exceeded the limits (last: "
                                      f"{too_large}); raise --max-params / --max-flops or narrow the space")
                continue
            if aid in self.by_arch:
                prev = self.by_arch[aid]
                self.record({"trial_id": f"{trial_id}_cached{len(self.records)}", "assignment": assignment,
                             "arch_id": aid,
                             "status": "ok", "value": prev["value"], "metrics": prev.get("metrics", {}),
                             "cached": prev["trial_id"], "train": prev.get("train")}, None)
                continue
            arch = to_dict(g)
            self.pending[trial_id] = {"assignment": assignment, "arch_id": aid, "arch": arch,
                                      "started": time.monotonic()}
            return {"assignment": assignment, "arch_id": aid, "arch": arch, "train": asdict(self.cfg.train)}
        return None

    def trial_finished(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        p = self.pending.pop(trial_id, None)
        if p is None:
            return
        metrics = {k: v for k, v in (result or {}).items() if _is_metric(k, v)}
        status, err = "ok", None
        if error or result is None:
            status, err = "failed", "the trial's worker raised or died (after retries); see the Ray trial logs"
        elif metrics.get("status") == "failed" or result.get("status") == "failed":
            status, err = "failed", str(result.get("error", "candidate failed"))
        value = metrics.get(METRIC)
        if status == "ok" and not (isinstance(value, int | float) and math.isfinite(value)):
            status, err = "failed", f"trial reported no finite {METRIC}"
        rec = {"trial_id": trial_id, "assignment": p["assignment"], "arch_id": p["arch_id"], "status": status,
               "value": float(value) if status == "ok" else None, "metrics": metrics,
               "train": asdict(self.cfg.train), "trial_seconds": round(time.monotonic() - p["started"], 3)}
        if err:
            rec["error"] = err
        elif isinstance(metrics.get("epoch"), int) and metrics["epoch"] < self.cfg.train.epochs:
            rec["stopped_early"] = True  # by the scheduler (ASHA) or the trial's time limit
        self.record(rec, p["arch"])


MAX_REJECTIONS_IN_A_ROW = 2000


def _over_limits(g: Any, cfg: SearchConfig) -> str | None:
    """Why `g` exceeds the search's max_params / max_flops, or None."""
    from nas.builder import count_flops, count_params

    if cfg.max_params is not None and (n := count_params(g)) > cfg.max_params:
        return f"{n:,} parameters > max_params {cfg.max_params:,}"
    if cfg.max_flops is not None and (n := count_flops(g)) > cfg.max_flops:
        return f"{n:,} multiply-accumulates > max_flops {cfg.max_flops:,}"
    return None


def _is_metric(key: str, value: Any) -> bool:
    skip = {"config", "trial_id", "date", "hostname", "node_ip", "pid", "timestamp", "time_this_iter_s",
            "time_total_s", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
            "should_checkpoint", "done", "training_iteration", "experiment_tag"}
    return key not in skip and not key.startswith("config/") and isinstance(value, int | float | str | bool)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---------------------------------------------------------------------------------------------------
# Ray Tune glue (imported lazily: `nas.search` must import without starting Ray)


def _make_searcher(state: SearchState):
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        """A graphnas strategy as a Tune Searcher: suggest -> ask, on_trial_complete -> tell."""

        def __init__(self) -> None:
            super().__init__(metric=METRIC, mode=MODE)
            self.state = state

        def suggest(self, trial_id: str) -> dict | str | None:
            config = self.state.next_config(trial_id)
            return Searcher.FINISHED if config is None else config

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.state.trial_finished(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text(json.dumps(self.get_state()))

        def restore(self, checkpoint_path: str) -> None:
            self.set_state(json.loads(Path(checkpoint_path).read_text()))

        def get_state(self) -> dict:
            return {"strategy": self.state.strategy.state_dict(), "n_records": len(self.state.records)}

        def set_state(self, saved: dict) -> None:
            self.state.strategy.load_state_dict(saved["strategy"])

        def __getstate__(self) -> dict:  # Tune pickles its config; the live state stays in the driver
            return {"saved": self.get_state()}

        def __setstate__(self, d: dict) -> None:
            self.__dict__.update(d)

    return StrategySearcher()


def _make_weights_callback(state: SearchState):
    from ray.tune import Callback

    class BestWeights(Callback):
        """Copy the best trial's final weights into the run folder as it appears."""

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if state.best is None or state.best.get("trial_id") != trial.trial_id or trial.checkpoint is None:
                return
            try:
                with trial.checkpoint.as_directory() as ckpt:
                    files = sorted(Path(ckpt).glob("*.pt"))
                    if files:
                        from nas.io import atomic_write_bytes

                        atomic_write_bytes(state.folder.weights_file, files[0].read_bytes())
                        atomic_write_json(state.folder.path / "best_weights.json",
                                          {"trial_id": trial.trial_id, "arch_id": state.best["arch_id"],
                                           "source": files[0].name})
            except Exception as e:  # weights are a convenience; never fail the search for them
                state.log(f"note: could not copy the best trial's weights: {e}")

    return BestWeights()


# ---------------------------------------------------------------------------------------------------


def _check_resume(folder: RunFolder, cfg: SearchConfig, resume: bool) -> None:
    has_run = folder.config_file.exists() or folder.evaluations_file.exists()
    if not has_run:
        return
    n = len(folder.records())
    if not resume and n == 0:
        return  # nothing was evaluated there: start afresh
    if not resume:
        raise SearchError(f"{folder.path} already holds a search ({n} evaluations); pass --resume to continue "
                          "it, or choose another --out")
    if not folder.config_file.exists():
        return
    saved = json.loads(folder.config_file.read_text())
    now = cfg.to_dict()
    diff = [k for k in _IDENTITY_KEYS if saved.get(k) != now.get(k)]
    if diff:
        raise SearchError(f"--resume: the run in {folder.path} was started with different {diff}; "
                          "resume with the same settings (only budget, workers, resources and address may change)")


def _restore_strategy(strategy: Strategy, folder: RunFolder, records: list[dict[str, Any]]) -> None:
    start = 0
    if folder.strategy_file.exists():
        try:
            snap = json.loads(folder.strategy_file.read_text())
            if snap["n_records"] <= len(records):
                strategy.load_state_dict(snap["state"])
                start = snap["n_records"]
        except (ValueError, KeyError, TypeError):
            start = 0  # a snapshot from elsewhere: rebuild from the journal alone
    for r in records[start:]:
        strategy.tell(r["assignment"], r["value"] if r.get("status") == "ok" else None)
    strategy.clear_pending()


def dataset_shape(cfg: SearchConfig) -> tuple[tuple[int, ...], int]:
    if cfg.table is not None:  # tabular mode: the benchmark's network, looked up instead of trained
        from workers.tabular import table_data_shape

        return table_data_shape(cfg.space, cfg.table)
    from workers.datasets import load_dataset

    data = load_dataset(cfg.train.dataset, root=cfg.train.data_root, seed=cfg.train.data_seed)
    return tuple(data.input_shape), int(data.num_classes)


def print_line(line: str) -> None:
    """The default log: a module-level function, so the search state that holds it pickles by reference
    even where a library has replaced ``builtins.print`` (Ray does, in some of its modules)."""
    print(line, flush=True)


def run_search(cfg: SearchConfig, resume: bool = False, log: Callable[[str], None] = print_line) -> SearchOutcome:
    """Run (or resume) a search to its budget and return what it found."""
    folder = RunFolder(cfg.out)
    _check_resume(folder, cfg, resume)
    if folder.repair_torn_tail():
        log("note: dropped a torn last line of evaluations.jsonl (an evaluation interrupted mid-write)")
    if cfg.strategy == "darts":  # one supernet trial, then the derived network's training
        from nas.darts.driver import run_darts_search

        return run_darts_search(cfg, folder, log)
    space = get_space(cfg.space)
    shape, n_classes = dataset_shape(cfg)
    strategy = make_strategy(cfg.strategy, space, seed=cfg.seed, mode=MODE, **cfg.strategy_options)
    state = SearchState(cfg, space, strategy, folder, shape, n_classes, log)
    _restore_strategy(strategy, folder, state.records)
    atomic_write_json(folder.config_file, cfg.to_dict())
    if state.records:
        log(f"resuming {folder.path}: {len(state.records)} evaluations on record, "
            f"{max(cfg.budget - len(state.records), 0)} to go")
    if len(state.records) < cfg.budget:
        _run_tuner(cfg, state)
    folder.write_leaderboard(state.records, METRIC, MODE)
    folder.plot(state.records, METRIC, MODE)
    return SearchOutcome(folder.path, state.records, state.best, state.n_rejected)


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}_{trial.config.get('arch_id', '')}"


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (None: start one on this machine) unless already connected."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise SearchError(f"no Ray cluster at --address {address!r} ({e}); start one with `ray start "
                          "--head`, or leave out --address to run on this machine") from None


def _run_tuner(cfg: SearchConfig, state: SearchState) -> None:
    import ray
    from ray import tune

    from workers.trainable import train_architecture

    trainable = train_architecture
    if cfg.table is not None:
        from workers.tabular import tabular_trainable

        trainable = tabular_trainable(cfg.table, cfg.seed)
    connect_ray(cfg.address)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    workers = cfg.workers or max(1, int(cpus // max(cfg.cpus_per_trial, 1e-9)))
    scheduler = None
    if cfg.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=max(cfg.train.epochs, 1),
                                  grace_period=1, reduction_factor=3)
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    storage = (state.folder.path / "ray").resolve()
    session = f"session-{len(list(storage.glob('session-*'))) if storage.exists() else 0}"
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(search_alg=_make_searcher(state),
                                    num_samples=max(cfg.budget - len(state.records), 1), scheduler=scheduler,
                                    max_concurrent_trials=workers, reuse_actors=cfg.reuse_actors,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=session, storage_path=str(storage), verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[_make_weights_callback(state)],
        ),
    )
    what = (f"looked up in {cfg.table}" if cfg.table is not None
            else f"{cfg.train.dataset}, {cfg.train.epochs} epoch(s) per candidate")
    state.log(f"searching {cfg.space} with {cfg.strategy}: budget {cfg.budget}, {workers} trial(s) at once, "
              f"{what} -> {state.folder.path}")
    tuner.fit()
