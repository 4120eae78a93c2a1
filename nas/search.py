"""The driver: the search loop (`nas.loop`) as a Ray Tune `Searcher`, run by one `Tuner`, journaled to a run
folder, evaluating through the evaluation contract (`nas.evaluation`) without knowing which kind it is.

Public steps, which DARTS' plan (`nas.darts.plan`) is written with: `open_run` (the folder, checked for
resuming), `evaluation_of` (the kind of evaluation, its settings checked), `search` (restore the strategy
from the journal, run trials to the budget, write the derived files), `run_trials` (the Tuner),
`connect_ray` (`nas.ray_cluster`: which Ray cluster, its resources, a clean end on every way out). `run_search`
is the entry point: a plan where the strategy is one, else `search`.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.config import SearchConfig
from nas.evaluation import DataInfo, Evaluation, EvaluationError, get_evaluation
from nas.graph import to_dict
from nas.io import atomic_write_json
from nas.latency_table import LatencyTableError, load_latency_table
from nas.loop import (
    FAILED,
    LATER,
    OK,
    OOM,
    STOPPED,
    AskTellLoop,
    BuildArchitecture,
    Constraints,
    Deduplicate,
    Measure,
    Outcome,
    Proposal,
    TooManyRejections,
    check_value,
)
from nas.objectives import Objective, ObjectiveError, objective_values, pre_evaluation, search_objectives, violations
from nas.ray_cluster import (  # SearchError is also this module's error, as it always was
    DDP_TRIAL_CPUS,
    SearchError,
    StopRequest,
    check_resources,
    cluster_nodes,
    connect_ray,
    make_stopper,
    release_ray,
    this_machine,
    trial_concurrency,
)
from nas.registry import get_space
from nas.results import EVALUATIONS, RunFolder
from nas.space import SearchSpace
from nas.strategies import make_strategy, strategy_plan
from nas.strategies.base import Strategy

METRIC, MODE = "val_accuracy", "max"  # the built-in evaluations' default objective (Evaluation.default_objective)

# settings that define a search, what it proposes (space, strategy, their options, seed, the size limits) and
# how a candidate is evaluated (training settings, table, ASHA): a resumed run must keep them. Only how trials
# are run may change: budget, workers, cpus / gpus per trial, address, max_failures, reuse_actors.
_IDENTITY_KEYS = ("space", "strategy", "seed", "space_options", "strategy_options", "train", "table",
                  "max_params", "max_flops", "asha", "objectives", "constraints", "latency_table")
_MAY_CHANGE = "budget, workers, cpus_per_trial, gpus_per_trial, address, storage, max_failures and reuse_actors"


@dataclass
class SearchOutcome:
    """What a search ended with. The records split into `n_trained` (evaluated to the end), `n_stopped`
    (evaluated, stopped early by ASHA), `n_failed` (evaluated or built, and failed) and `n_cached`
    (answered from an earlier or in-flight evaluation of the same architecture, whatever its status);
    `n_rejected` proposals (over max_params / max_flops, or impossible to build) are not records."""

    folder: Path
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    n_rejected: int = 0  # this session's proposals rejected before evaluation (no budget used)
    objectives: list[Objective] | None = None
    front: list[dict[str, Any]] | None = None  # several objectives: the Pareto front (pareto.json), best first
    hypervolume: float | None = None

    def _count(self, status: str) -> int:
        return sum(r.get("status") == status and not r.get("cached") for r in self.records)

    @property
    def n_trained(self) -> int:
        return self._count(OK)

    @property
    def n_stopped(self) -> int:
        return self._count(STOPPED)

    @property
    def n_failed(self) -> int:
        """Failures of every kind, out of memory (`n_oom`) included."""
        return self._count(FAILED) + self._count(OOM)

    @property
    def n_oom(self) -> int:
        return self._count(OOM)

    @property
    def n_cached(self) -> int:
        return sum(bool(r.get("cached")) for r in self.records)


DERIVED_EVERY_S = 2.0  # how often the files derived from the journal are rewritten during a search (seconds)


class RunJournal:
    """The run folder's side of the search loop (`nas.loop.Journal`): every outcome is appended to
    ``evaluations.jsonl`` (fsynced) before the strategy hears of it, and best.json is rewritten when the best
    changes; after that the progress line is logged. The files derived from the journal alone (the strategy
    snapshot, the leaderboard, the Pareto report) are rewritten at most every `DERIVED_EVERY_S` seconds: after an
    outcome when that long has passed since the last write, else by `write_derived_if_due` (Tune's loop calls it
    every step, so they lag the journal by about that long at most), with the last outcome of the budget, and at
    the end (`write_derived`). Rewriting them after every outcome cost a short trial a few milliseconds each, and
    a snapshot older than the journal loses nothing (the strategy is rebuilt from it plus the evaluations
    journaled after it)."""

    def __init__(self, cfg: SearchConfig, folder: RunFolder, strategy: Strategy, log: Callable[[str], None],
                 objectives: list[Objective] | None = None):
        self.cfg, self.folder, self.strategy, self.log = cfg, folder, strategy, log
        self.objectives = objectives or [Objective(METRIC, MODE)]
        self.metric, self.mode = self.objectives[0].metric, self.objectives[0].mode
        self.multi = len(self.objectives) > 1
        self.records = folder.records()
        self.elapsed_before = max((r.get("elapsed_s", 0.0) for r in self.records), default=0.0)
        self.session_start = time.monotonic()
        self.session_done = 0
        self.derived_at = -math.inf  # when the derived files were last written (time.monotonic)
        self.derived_stale = False  # outcomes on record that the derived files do not show yet
        ranked = folder.ranked(self.records, self.mode)
        self.best = ranked[0] if ranked else None

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.session_start

    def record(self, p: Proposal, o: Outcome) -> None:
        n = len(self.records)
        value = o.told_value
        values = {}
        if self.multi:  # the first objective's value is the record's value (ranking, best.json); all in values
            values = {"values": value}
            value = value[0] if value is not None else None
        if o.cached:  # answered from an earlier (or in-flight) evaluation, with its status
            rec = {"trial_id": f"{p.tag}_cached{n}", "assignment": p.assignment, "arch_id": p.arch_id,
                   "status": o.status, "value": value, **values, "metrics": o.metrics, "cached": o.cached,
                   "train": o.extra.get("train")}
            if o.status == STOPPED:
                rec.update(stopped_early=True, epoch=o.extra.get("epoch"))
            if o.error:
                rec["error"] = o.error
        elif p.arch_id is None:  # it failed before it was built
            rec = {"trial_id": f"{p.tag}_build{n}", "assignment": p.assignment, "arch_id": None,
                   "status": o.status, "value": None, "error": o.error, "metrics": {}}
        else:
            rec = {"trial_id": p.tag, "assignment": p.assignment, "arch_id": p.arch_id, "status": o.status,
                   "value": value, **values, "metrics": o.metrics, **o.extra}
            if o.error:
                rec["error"] = o.error
        rec["index"] = n
        rec["elapsed_s"] = round(self.elapsed(), 3)
        self.folder.append(rec)
        self.records.append(rec)
        self.session_done += 1
        if o.ok and (self.best is None or self.objectives[0].better(rec["value"], self.best["value"])):
            self.best = rec
            if p.arch is not None and not o.cached:
                self.folder.write_best(rec, to_dict(p.arch), self.metric)

    def told(self, p: Proposal, o: Outcome) -> None:
        self.derived_stale = True
        if len(self.records) >= self.cfg.budget:
            self.write_derived()
        else:
            self.write_derived_if_due()
        self._progress(self.records[-1])

    def write_derived_if_due(self) -> None:
        """`write_derived` where outcomes came since the last write and that was `DERIVED_EVERY_S` ago."""
        if self.derived_stale and time.monotonic() - self.derived_at >= DERIVED_EVERY_S:
            self.write_derived()

    def write_derived(self) -> None:
        """Rewrite the strategy snapshot, the leaderboard and (several objectives) the Pareto report from the
        records: derived from the journal (a lost or stale snapshot is rebuilt from it), so written atomically
        but not fsynced."""
        atomic_write_json(self.folder.strategy_file, {"n_records": len(self.records),
                                                      "state": self.strategy.state_dict()}, durable=False)
        self.folder.write_leaderboard(self.records, self.metric, self.mode, durable=False)
        if self.multi:
            from nas import pareto_report

            pareto_report.write(self.folder.path, self.records, self.objectives, self.cfg.reference_point)
        self.derived_at = time.monotonic()
        self.derived_stale = False

    def _progress(self, rec: dict[str, Any]) -> None:
        n, budget = len(self.records), self.cfg.budget
        rate = (time.monotonic() - self.session_start) / max(self.session_done, 1)
        eta = rate * max(budget - n, 0)
        if rec["status"] == OK and self.multi:
            what = " ".join(f"{o.metric} {v:.4g}" for o, v in zip(self.objectives, rec["values"], strict=True))
        elif rec["status"] == OK:
            what = f"{rec['value']:.4f}"
        elif rec["status"] == STOPPED:
            what = f"{rec['value']:.4f} STOPPED early at epoch {rec.get('epoch')}/{self.cfg.train.epochs} (not ranked)"
        elif rec["status"] == OOM:
            what = f"OUT OF MEMORY, also alone ({(rec.get('error') or '')[:80]})"
        else:
            what = f"FAILED ({(rec.get('error') or '')[:80]})"
        best = f"{self.best['value']:.4f}" if self.best else "-"
        tag = " (cached)" if rec.get("cached") else ""
        if self.multi:
            from nas import pareto_report

            front = pareto_report.progress(self.records, self.objectives, self.cfg.reference_point)
            self.log(f"[{n}/{budget}] {what}{tag} | {front} | elapsed {_hms(self.elapsed())} | ETA {_hms(eta)}")
            return
        self.log(f"[{n}/{budget}] {self.metric} {what}{tag} | best {best} | elapsed {_hms(self.elapsed())} | "
                 f"ETA {_hms(eta)}")


ALONE = "alone"  # a trial config's key: run this trial alone on whole GPUs (`trial_resources`)


@dataclass
class PendingTrial:
    """A trial the driver proposed and waits for: its proposal, when it was proposed and when it started
    running (None while it waits for resources), how many evaluations were on record when it was proposed, and
    the id of the trial it retries (after that one ran out of memory)."""

    proposal: Proposal
    proposed: float
    n_on_record: int
    started: float | None = None
    retry_of: str | None = None


class SearchState:
    """The driver's state between Tune callbacks: the search loop, its journal and the trials in flight.

    `next_config`, `trial_started` and `trial_finished` are what Tune's Searcher and callbacks call
    (`_make_searcher`, `_make_trial_callback`); they are plain methods, so the bookkeeping is tested without
    Ray. Proposals that fail to build, or that repeat an evaluated architecture, are journaled without a trial
    (a failure, or the earlier result marked cached) and count toward the budget; proposals over max_params /
    max_flops, or that the space cannot build (`SpaceError`), are rejected before evaluation (told to the
    strategy as rejections), counted in `n_rejected`, and use no budget. A proposal repeating an architecture
    in flight gets no trial: it waits for that trial and is answered from it (`next_config` returns `LATER`).
    A trial ASHA stops early is recorded with status "stopped" and the epoch it reached.

    A trial that ran out of memory (status "oom") is not told yet: its proposal runs once more, alone (its
    config carries ``ALONE``, for which `trial_resources` asks whole GPUs, so no other trial shares them), as
    the next trial proposed; if that one runs out of memory too the outcome is "oom" (a failure), else the
    retry's result. ``trial_seconds`` is the time from the trial's start (not its proposal: queueing for
    resources is not its cost) to its end."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace, strategy: Strategy, folder: RunFolder,
                 evaluation: Evaluation, log: Callable[[str], None],
                 build: Callable[[dict[str, Any]], Any] | None = None):
        self.cfg, self.space, self.strategy, self.folder, self.log = cfg, space, strategy, folder, log
        self.evaluation = evaluation
        self.data = evaluation.data_info()
        try:
            self.objectives, rules = search_objectives(cfg, evaluation)
        except ObjectiveError as e:
            raise SearchError(str(e)) from None
        self.rules_before, self.rules_after = pre_evaluation(rules, cfg.latency_table is not None)
        self.journal = RunJournal(cfg, folder, strategy, log, self.objectives)
        self.dedup = Deduplicate((r["arch_id"], r["values"] if self.multi else r["value"], r.get("metrics", {}),
                                  r["trial_id"], {"train": r.get("train"), "epoch": r.get("epoch")}, r["status"])
                                 for r in self.records if r.get("status") in (OK, STOPPED) and r.get("arch_id")
                                 and not r.get("cached"))
        build = build or (lambda a: space.graph(a, num_classes=self.data.num_classes,
                                                input_shape=self.data.input_shape, **cfg.space_options))
        needed = {o.metric for o in self.objectives} | {c.metric for c in self.rules_before}
        latency = latency_table_of(cfg, space) if "latency_ms" in needed and cfg.latency_table else None
        wrappers = [BuildArchitecture(build), Measure(needed, latency),
                    Constraints(cfg.max_params, cfg.max_flops, self.rules_before), self.dedup]
        self.loop = AskTellLoop(strategy, wrappers, self.journal, budget=cfg.budget, n_done=len(self.records))
        self.pending: dict[str, PendingTrial] = {}
        self.to_retry: list[tuple[Proposal, str]] = []  # (proposal, trial id) of trials out of memory, to rerun
        self.reported_failure: dict[str, str] = {}  # trial id -> the failure it reported before its worker raised

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.journal.records

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def value_of(self, metrics: dict[str, Any]) -> Any:
        """The value the strategy is told: the objective's metric, or the vector of the objectives' metrics."""
        if not self.multi:
            return metrics.get(self.objectives[0].metric)
        values = objective_values(self.objectives, metrics)
        return None if any(v is None for v in values) else values

    @property
    def best(self) -> dict[str, Any] | None:
        return self.journal.best

    @property
    def n_rejected(self) -> int:
        return self.loop.n_rejected

    @property
    def by_arch(self) -> dict[str, tuple]:
        return self.dedup.first

    def idle(self) -> bool:
        """Nothing in flight, deferred or waiting to be run again: once the budget is committed, the end."""
        return not self.pending and not self.to_retry and self.loop.in_flight == 0 and self.loop.n_deferred == 0

    def next_config(self, trial_id: str) -> Any:
        """A trial config: a proposal to run again alone (out of memory) first, else the strategy's next
        proposal; `LATER` when that proposal repeats an architecture in flight (deferred: no trial now, ask again
        later); None when the budget is committed."""
        if self.to_retry:
            p, first = self.to_retry.pop(0)
            self.pending[trial_id] = PendingTrial(p, time.monotonic(), len(self.records), retry_of=first)
            return {**self.evaluation.trial_config(p), ALONE: True}
        try:
            p = self.loop.next(tag=trial_id)
        except TooManyRejections as e:
            raise SearchError(f"{e}; raise --max-params / --max-flops, narrow the space, or fix the space or its "
                              "options if that reason is a build error") from None
        if p is None or p is LATER:
            return p
        self.pending[trial_id] = PendingTrial(p, time.monotonic(), len(self.records))
        return self.evaluation.trial_config(p)

    def trial_started(self, trial_id: str) -> None:
        """The trial got its resources and started (again, after a restart: the time counts from then)."""
        if trial_id in self.pending:
            self.pending[trial_id].started = time.monotonic()

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """An intermediate result: a failure reported before the worker raised is kept for the record."""
        if result.get("status") in (FAILED, OOM) and result.get("error"):
            self.reported_failure[trial_id] = str(result["error"])

    def trial_finished(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        if trial_id not in self.pending:
            return  # a late duplicate report, or a trial of another session
        t = self.pending.pop(trial_id)
        p, reported = t.proposal, self.reported_failure.pop(trial_id, None)
        metrics = {**p.info.get("metrics", {}),  # known before evaluation (latency from a table, counts)
                   **{k: v for k, v in (result or {}).items() if _is_metric(k, v)}}
        extra: dict[str, Any] = {"train": asdict(self.cfg.train),
                                 "trial_seconds": round(time.monotonic() - (t.started or t.proposed), 3),
                                 "proposed_after": t.n_on_record}
        if t.retry_of is not None:
            p.tag = trial_id  # the record names the trial that ran last (its checkpoint is that trial's)
            extra["retry_of"] = t.retry_of
        status = None if error or result is None else (result.get("status") or metrics.get("status"))
        if status == OOM and t.retry_of is None:
            self.to_retry.append((p, trial_id))
            self.log(f"trial {trial_id} ran out of memory ({str(result.get('error', ''))[:120]}); running it again "
                     "alone")
            return
        if error or result is None:
            why = f": {reported}" if reported else "; see the Ray trial logs"
            o = Outcome(FAILED, None, metrics, f"the trial's worker raised or died (after retries){why}", extra=extra)
        elif status == OOM:
            o = Outcome(OOM, None, metrics, f"out of memory, also when run again alone: {result.get('error', '')}",
                        extra=extra)
        elif status == FAILED:
            o = Outcome(FAILED, None, metrics, str(result.get("error", "candidate failed")), extra=extra)
        else:
            names = ", ".join(o.metric for o in self.objectives)
            o = check_value(Outcome(OK, self.value_of(metrics), metrics, extra=extra),
                            f"trial reported no finite {names}")
            broken = violations(self.rules_after, metrics) if o.ok else []
            if broken:  # evaluated, but not feasible: never on the front or ranked; told as a failure
                o = Outcome(FAILED, None, metrics, f"infeasible: {'; '.join(broken)}",
                            extra={**extra, "violates": broken})
        epoch = metrics.get("epoch")
        if o.ok and self.cfg.asha and isinstance(epoch, int) and epoch < self.cfg.train.epochs:
            # stopped by the scheduler at a lower fidelity: its value is partial, never ranked with complete
            # ones (a trial ending at its own --max-seconds, without ASHA, is complete under its settings)
            o = Outcome(STOPPED, o.value, metrics, extra={**extra, "stopped_early": True, "epoch": epoch})
        self.loop.finish(p, o)


def trial_resources(cpus: float, gpus: float) -> Callable[[dict[str, Any]], dict[str, float]]:
    """A trial's resources from its config: `cpus` CPUs and `gpus` GPUs, or for a trial run again ``ALONE``
    (after running out of memory) whole GPUs, at least one (`gpus` of 0.25 becomes 1), so that no other trial
    shares them. Above 1 GPU a trial trains data-parallel on `gpus` Ray Train workers (`cpus` CPUs and one GPU
    each, placed by Ray Train, `workers.distributed`): the Tune trial itself asks for almost nothing."""
    import math

    def of(config: dict[str, Any]) -> dict[str, float]:
        if gpus > 1:  # data-parallel: the trial's Ray Train workers ask for a GPU each; the trial only waits
            return {"cpu": DDP_TRIAL_CPUS, "gpu": 0.0}
        alone = bool(config.get(ALONE)) and gpus > 0
        return {"cpu": cpus, "gpu": float(max(1, math.ceil(gpus - 1e-9))) if alone else gpus}

    return of


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


def _make_searcher(state: SearchState, stop: Any = None):
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        """A graphnas strategy as a Tune Searcher: suggest -> ask, on_trial_complete -> tell."""

        def __init__(self) -> None:
            first = state.objectives[0]
            super().__init__(metric=first.metric, mode=first.mode)
            self.state = state

        def suggest(self, trial_id: str) -> dict | str | None:
            config = self.state.next_config(trial_id)
            if config is LATER:  # a duplicate of a trial in flight waits for it: nothing now, ask again
                return None
            if config is None:  # the budget is committed; finished once nothing may still need a trial (a rerun)
                return Searcher.FINISHED if self.state.idle() else None
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.state.trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if stop is not None and stop.signum is not None and (
                    error or result is None or result.get("status") in (FAILED, OOM)):
                return  # after SIGINT / SIGTERM a failure may be the signal's doing: not an evaluation
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


def _make_trial_callback(state: SearchState):
    from ray.tune import Callback

    class TrialFiles(Callback):
        """Record where each finished trial's checkpoint is (``checkpoints.jsonl`` in the run folder), copy
        the best trial's weights into the run folder as it appears, log the evaluation's per-epoch
        progress lines where it has them, and bring the derived files up to date once due (`RunJournal`)."""

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            state.trial_started(trial.trial_id)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            state.journal.write_derived_if_due()  # outcomes the leaderboard and snapshot skipped, once due

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            line = state.evaluation.epoch_line(result)
            if line:
                state.log(line)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if trial.checkpoint is None:
                return
            try:
                local = local_checkpoint(trial.checkpoint, state.folder.path / "checkpoints" / trial.trial_id)
                weights = state.folder.record_checkpoint(trial.trial_id, str(local), state.evaluation.weights_file)
                if weights is not None and state.best is not None and state.best.get("trial_id") == trial.trial_id:
                    state.folder.write_best_weights(weights, trial.trial_id, state.best["arch_id"])
            except Exception as e:  # weights are a convenience; never fail the search for them
                state.log(f"note: could not record the trial's checkpoint: {e}")

    return TrialFiles()


def _no_tensorboard_logger():
    """A Tune logger standing in for its TensorBoard logger, which Tune adds by default where tensorboardX is
    installed: that one writes an event file per trial in the driver's loop and fsyncs it four times per trial
    (14 ms of a short trial's overhead on a loaded machine), and nothing reads those files (the run folder's
    journal is the record; Tune's CSV and JSON result files are still written)."""
    from ray.tune.logger import LoggerCallback, TBXLoggerCallback

    class NoTensorBoard(TBXLoggerCallback):
        def __init__(self) -> None:  # no SummaryWriter: nothing to write
            pass

        log_trial_start = LoggerCallback.log_trial_start
        log_trial_result = LoggerCallback.log_trial_result
        log_trial_end = LoggerCallback.log_trial_end

    return NoTensorBoard()


def local_checkpoint(checkpoint: Any, dest: Path) -> Path:
    """A trial's checkpoint (a Ray ``Checkpoint``) as a folder on this machine: its own where the storage is this
    machine's disk; else (``--storage s3://...``, ``gs://...``) its files but the optimiser state (``*.pth``)
    copied from the storage into `dest`, so the run folder holds every trial's weights, as export reads them."""
    import pyarrow.fs

    fs, path = checkpoint.filesystem, checkpoint.path
    if isinstance(fs, pyarrow.fs.LocalFileSystem) and Path(path).is_dir():
        return Path(path)
    dest.mkdir(parents=True, exist_ok=True)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False)):
        if info.type == pyarrow.fs.FileType.File and not info.base_name.endswith(".pth"):
            with fs.open_input_stream(info.path) as src:
                (dest / info.base_name).write_bytes(src.read())
    return dest


def storage_of(cfg: SearchConfig, folder: RunFolder, session: str) -> tuple[str, str]:
    """(Ray's storage_path, the experiment's name): ``--storage`` (a URI or a path every node sees), else the run
    folder's ``ray/`` (on this machine only: a trial on another node could not write its checkpoint there). A
    name unique in that storage: ``session-N`` in the run folder, ``<run folder name>-session-<time>`` in a
    storage shared by many runs."""
    if cfg.storage:
        return cfg.storage, f"{folder.path.resolve().name}-{session}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = (folder.path / "ray").resolve()
    return str(storage), f"{session}-{len(list(storage.glob(f'{session}-*'))) if storage.exists() else 0}"


# ---------------------------------------------------------------------------------------------------
# the driver's public steps: DARTS' plan (nas.darts.plan) is written with these


def check_resume(folder: RunFolder, cfg: SearchConfig, resume: bool) -> None:
    """Refuse to overwrite a run folder holding evaluations without `resume`; with `resume`, refuse a folder
    holding no search, a journal that is not one (`nas.io.JournalError`), a budget below the evaluations on
    record, and settings that differ from the run's in what defines the search (`_IDENTITY_KEYS`; training
    settings compared with their defaults filled in): the message names each field and both values."""
    has_run = folder.config_file.exists() or folder.evaluations_file.exists()
    if not has_run:
        if resume:
            raise SearchError(f"--resume: {folder.path} holds no search to resume (no config.json or "
                              f"{folder.evaluations_file.name}); leave out --resume to start one there")
        return
    n = len(folder.records())
    if not resume and n == 0:
        return  # nothing was evaluated there: start afresh
    if not resume:
        raise SearchError(f"{folder.path} already holds a search ({n} evaluations); pass --resume to continue "
                          "it, or choose another --out")
    if cfg.budget < n:
        raise SearchError(f"--resume: budget {cfg.budget} is below the {n} evaluations on record in {folder.path}; "
                          f"give --budget {n} or more")
    if not folder.config_file.exists():
        return
    try:
        saved = json.loads(folder.config_file.read_text())
    except ValueError as e:
        raise SearchError(f"--resume: {folder.config_file} is not valid JSON ({e}); it holds the run's settings: "
                          "restore it, or start afresh in another --out") from None
    if not isinstance(saved, dict):
        raise SearchError(f"--resume: {folder.config_file} holds {type(saved).__name__}, not the run's settings")
    try:
        saved = SearchConfig.from_dict(saved, str(folder.config_file)).to_dict()
    except ValueError:
        pass  # compared as written
    diff = _identity_diff(saved, cfg.to_dict())
    if diff:
        what = "; ".join(f"{k}: {_shown(a)} on record, {_shown(b)} now" for k, a, b in diff)
        raise SearchError(f"--resume: the run in {folder.path} was started with other settings ({what}); resume "
                          f"with the run's settings (only {_MAY_CHANGE} may change), or search afresh in "
                          "another --out")


_MISSING = "<not set>"


def _shown(value: Any) -> str:
    return value if value is _MISSING else json.dumps(value, default=str)


def _identity_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, saved value, current value) of each identity setting that differs; tables (train, options)
    field by field, ``train.epochs``; file paths compared as absolute paths."""

    def same(key: str, a: Any, b: Any) -> bool:
        if key in ("table", "train.data_root") and isinstance(a, str) and isinstance(b, str):
            return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))
        return a == b

    out = []
    for key in _IDENTITY_KEYS:
        a, b = saved.get(key, _MISSING), now.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [(f"{key}.{k}", a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted({*a, *b}, key=str)
                    if not same(f"{key}.{k}", a.get(k, _MISSING), b.get(k, _MISSING))]
        elif not same(key, a, b):
            out.append((key, a, b))
    return out


def latency_table_of(cfg: SearchConfig, space: SearchSpace):
    """The search's latency table (`nas.latency_table`), read for its space; `SearchError` naming the file."""
    try:
        return load_latency_table(cfg.latency_table, space)
    except LatencyTableError as e:
        raise SearchError(f"--latency-table: {e}") from None


def restore_strategy(strategy: Strategy, folder: RunFolder, records: list[dict[str, Any]]) -> None:
    """The strategy as the journal left it: its last snapshot, then every evaluation journaled after it. A
    record the strategy cannot take (an assignment outside the space, a value that is not a number) raises
    `SearchError` naming the journal and the record."""
    start = 0
    if folder.strategy_file.exists():
        try:
            snap = json.loads(folder.strategy_file.read_text())
            if snap["n_records"] <= len(records):
                strategy.load_state_dict(snap["state"])
                start = snap["n_records"]
        except (ValueError, KeyError, TypeError):
            start = 0  # a snapshot from elsewhere: rebuild from the journal alone
    for i, r in enumerate(records[start:], start):
        try:
            value = r.get("values", r["value"]) if strategy.multi_objective else r["value"]
            strategy.tell(r["assignment"], value if r.get("status") in ("ok", "stopped") else None)
        except (ValueError, TypeError, KeyError) as e:
            raise SearchError(f"{folder.evaluations_file}: record {i + 1} (trial {r.get('trial_id')!r}) does not "
                              f"fit this search ({e}); is the journal from another space? `nas search --out "
                              f"{folder.path} --repair` moves lines that are not records aside") from None
    strategy.clear_pending()


def open_run(cfg: SearchConfig, resume: bool, log: Callable[[str], None]) -> RunFolder:
    """The run folder of `cfg`, checked for resuming and with a torn last journal line repaired. A refused
    resume leaves no new folder behind."""
    path = Path(cfg.out)
    if resume and not ((path / "config.json").exists() or (path / EVALUATIONS).exists()):
        raise SearchError(f"--resume: {path} holds no search to resume (no config.json or {EVALUATIONS}); "
                          "leave out --resume to start one there")
    try:
        folder = RunFolder(cfg.out)
    except OSError as e:
        raise SearchError(f"--out {cfg.out}: cannot make the run folder ({e})") from None
    check_resume(folder, cfg, resume)
    if folder.repair_torn_tail():
        log("note: dropped a torn last line of evaluations.jsonl (an evaluation interrupted mid-write)")
    return folder


def evaluation_of(cfg: SearchConfig, kind: str | None = None) -> Evaluation:
    """The search's kind of evaluation (`nas.evaluation`), its settings checked before Ray starts."""
    try:
        evaluation = get_evaluation(cfg, kind)
        evaluation.check()
    except EvaluationError as e:
        raise SearchError(str(e)) from None
    return evaluation


def search(cfg: SearchConfig, folder: RunFolder, strategy: Strategy, evaluation: Evaluation,
           log: Callable[[str], None] | None = None, build: Callable[[dict[str, Any]], Any] | None = None,
           session: str = "session", write_config: bool = True) -> SearchOutcome:
    """The one driver path: restore `strategy` from the run folder's journal, run the search loop on Ray
    trials of `evaluation` until `cfg.budget` outcomes are on record, and write the derived files.
    `build(assignment)` gives a proposal's architecture (default: the space's graph at the data's shape);
    `write_config=False` leaves the folder's config.json to a plan that wrote its own."""
    log = log or print_line
    space = get_space(cfg.space)
    state = SearchState(cfg, space, strategy, folder, evaluation, log, build)
    restore_strategy(strategy, folder, state.records)
    if write_config:
        atomic_write_json(folder.config_file, cfg.to_dict())
    for line in evaluation.notes():
        log(line)
    if state.records:
        log(f"resuming {folder.path}: {len(state.records)} evaluations on record, "
            f"{max(cfg.budget - len(state.records), 0)} to go")
    try:
        if len(state.records) < cfg.budget:
            run_trials(state, session)
    finally:  # what the last outcomes changed, also when the search was interrupted
        if state.journal.session_done:
            state.journal.write_derived()
    metric, mode = state.objectives[0].metric, state.objectives[0].mode
    folder.write_leaderboard(state.records, metric, mode)
    folder.plot(state.records, metric, mode)
    outcome = SearchOutcome(folder.path, state.records, state.best, state.n_rejected, state.objectives)
    if state.multi:
        from nas import pareto_report

        outcome.front, outcome.hypervolume = pareto_report.write(folder.path, state.records, state.objectives,
                                                                 cfg.reference_point)
        pareto_report.plot(folder.path, state.records, state.objectives, cfg.reference_point)
    return outcome


def data_info(cfg: SearchConfig) -> DataInfo:
    """Input shape and classes of the search's networks, from the evaluation's metadata."""
    return evaluation_of(cfg).data_info()


def print_line(line: str) -> None:
    """The default log: a module-level function, so the search state that holds it pickles by reference
    even where a library has replaced ``builtins.print`` (Ray does, in some of its modules)."""
    print(line, flush=True)


def run_search(cfg: SearchConfig, resume: bool = False, log: Callable[[str], None] = print_line) -> SearchOutcome:
    """Run (or resume) a search to its budget and return what it found. A strategy that is a plan over
    the driver (`nas.strategies.PLANS`: DARTS) runs that plan; every other one is asked and told.

    Everything that can be checked is checked before the run folder is touched and Ray starts (`check_search`): a
    bad setting, strategy option or space option is a `SearchError` / `ConfigError`, never failed trials."""
    plan = strategy_plan(cfg.strategy)
    if plan is not None:
        cfg.check()
        if cfg.objectives or cfg.constraints or cfg.latency_table:
            raise SearchError(f"--strategy {cfg.strategy} trains one supernet and derives one architecture: it takes "
                              "no --objective / --constraint / --latency-table (its resource penalty is the "
                              "strategy option resource_penalty)")
        folder = open_run(cfg, resume, log)
        return plan(cfg, folder, log)
    strategy, evaluation = check_search(cfg)
    folder = open_run(cfg, resume, log)
    return search(cfg, folder, strategy, evaluation, log)


def check_search(cfg: SearchConfig) -> tuple[Strategy, Evaluation]:
    """Check an ask/tell search's settings without starting Ray: the settings themselves, the space, the
    evaluation (data set, table), the strategy and its options (by constructing it) and the space options
    (by building the space's default architecture with them). Returns the strategy and the evaluation."""
    cfg.check()
    try:
        space = get_space(cfg.space)
    except (ImportError, AttributeError, ValueError) as e:
        raise SearchError(f"space {cfg.space!r}: {e}") from None
    evaluation = evaluation_of(cfg)
    try:
        objectives, _ = search_objectives(cfg, evaluation)
    except ObjectiveError as e:
        raise SearchError(str(e)) from None
    if cfg.latency_table is not None:
        latency_table_of(cfg, space)
    modes = objectives[0].mode if len(objectives) == 1 else [o.mode for o in objectives]
    try:
        strategy = make_strategy(cfg.strategy, space, seed=cfg.seed, mode=modes, **cfg.strategy_options)
    except (TypeError, ValueError) as e:
        raise SearchError(str(e)) from None  # names the strategy and the option
    if cfg.space_options:
        check_space_options(space, cfg.space_options, evaluation.data_info())
    return strategy, evaluation


def check_space_options(space: SearchSpace, options: dict[str, Any], data: DataInfo) -> None:
    """Raise `SearchError` unless `space` takes `options`: each must be one of its options, and an
    architecture that builds without them (the default one, else one of a few seeded draws) must build with
    them."""
    import random

    unknown = sorted(set(options) - set(space.options))
    if unknown:
        raise SearchError(f"--space-option: space {space.name!r} has no option(s) {unknown}; its options: "
                          f"{sorted(space.options) or 'none'}")
    shape = {"num_classes": data.num_classes, "input_shape": data.input_shape}
    rng = random.Random(0)
    for assignment in [space.defaults(), *(space.sample(rng) for _ in range(3))]:
        try:
            space.graph(assignment, **shape, **options)
            return
        except Exception as e:  # a space's build raises what it raises
            error = e
        try:
            space.graph(assignment, **shape)
        except Exception:
            continue  # it does not build without the options either: they are not what is wrong
        raise SearchError(f"--space-option: space {space.name!r} does not build with options {options}: "
                          f"{type(error).__name__}: {error}") from None


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}_{trial.config.get('arch_id') or ''}"


# ---------------------------------------------------------------------------------------------------
# the end of a search stopped by a signal (the signal handling itself is in nas.ray_cluster)


class SearchInterrupted(SearchError):
    """The search was stopped by a signal (SIGINT: Ctrl-C, or SIGTERM) before its budget: `n_records`
    evaluations are on record in `folder`, which ``nas search --out FOLDER --resume`` continues.
    `exit_code` is the shell's for that signal (130, 143)."""

    def __init__(self, folder: str | Path, n_records: int, signum: int):
        import signal

        self.folder, self.n_records, self.signum = Path(folder), n_records, signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}: {n_records} evaluations on record in {self.folder}; "
                         f"resume with: {resume_command(self.folder)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @classmethod
    def of_folder(cls, folder: str | Path, signum: int) -> SearchInterrupted:
        """The interruption of the search in `folder`, counting the evaluations its journal holds."""
        try:
            n = len(RunFolder(folder).records()) if (Path(folder) / EVALUATIONS).exists() else 0
        except Exception:  # a journal that does not read: the count is only informative
            n = 0
        return cls(folder, n, signum)


def resume_command(folder: str | Path) -> str:
    import shlex

    return f"nas search --out {shlex.quote(str(folder))} --resume"


def run_trials(state: SearchState, session: str = "session") -> None:
    """Execute the search loop of `state` as Ray Tune trials of its evaluation: one Tuner, the loop as
    its Searcher, the trial callback recording checkpoints; returns when the budget is on record.

    It says which Ray cluster it runs on, fails with `SearchError` before any trial when the cluster can
    never give a trial its resources, and raises `SearchInterrupted` on SIGINT / SIGTERM once the trials in
    flight are stopped (those are not journaled). A Ray instance it started is shut down on every way out."""
    import signal

    import ray
    from ray import tune

    cfg = state.cfg
    stop = StopRequest()
    try:
        if not ray.is_initialized() and cfg.address in (None, "", "local"):
            local = this_machine()  # checked before a private instance is started for nothing
            if local:
                check_resources(cfg.cpus_per_trial, cfg.gpus_per_trial, local, "this machine")
        state.log(connect_ray(cfg.address))
        nodes = cluster_nodes()
        check_resources(cfg.cpus_per_trial, cfg.gpus_per_trial, nodes)
        capacity = trial_concurrency(cfg.cpus_per_trial, cfg.gpus_per_trial, nodes)
        workers = min(cfg.workers or capacity, capacity)
        if cfg.workers and cfg.workers > capacity:  # more would wait for resources, proposed from a stale population
            state.log(f"note: --workers {cfg.workers}, but the cluster runs {capacity} such trial(s) at once; "
                      f"running {capacity}")
        scheduler = None
        if cfg.asha:
            from ray.tune.schedulers import ASHAScheduler

            first = state.objectives[0]  # with several objectives ASHA stops on the first
            scheduler = ASHAScheduler(time_attr="epoch", metric=first.metric, mode=first.mode,
                                      max_t=max(cfg.train.epochs, 1),
                                      grace_period=1, reduction_factor=3)
        resources = trial_resources(cfg.cpus_per_trial, cfg.gpus_per_trial)
        storage, name = storage_of(cfg, state.folder, session)
        if not cfg.storage and len(nodes) > 1:
            state.log(f"note: {len(nodes)} nodes and no --storage: trials on other nodes write their checkpoints to "
                      f"{storage}, which must then be a disk they all see (else give --storage s3://... or an NFS "
                      "path)")
        tuner = tune.Tuner(
            tune.with_resources(state.evaluation.trainable(), resources),
            tune_config=tune.TuneConfig(search_alg=_make_searcher(state, stop),
                                        num_samples=-1, scheduler=scheduler,  # the searcher says when it ends
                                        max_concurrent_trials=workers, reuse_actors=cfg.reuse_actors,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0, stop=make_stopper(stop, state.log),
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=[_make_trial_callback(state), _no_tensorboard_logger()],
            ),
        )
        state.log(f"searching {cfg.space} with {cfg.strategy}: budget {cfg.budget}, {workers} trial(s) at once, "
                  f"{state.evaluation.describe()} -> {state.folder.path}")
        with stop.installed():
            tuner.fit()
    except KeyboardInterrupt as e:  # Ctrl-C before the trials started, or a second signal: stop at once
        raise SearchInterrupted(state.folder.path, len(state.records), getattr(e, "signum", signal.SIGINT)) from None
    finally:
        release_ray()
    if stop.signum is not None and len(state.records) < cfg.budget:
        raise SearchInterrupted(state.folder.path, len(state.records), stop.signum)
