"""The driver: the search loop (`nas.loop`) as a Ray Tune `Searcher`, run by one `Tuner`, journaled to a run
folder, evaluating through the evaluation contract (`nas.evaluation`) without knowing which kind it is.

Public steps, which DARTS' plan (`nas.darts.plan`) is written with: `open_run` (the folder, checked for
resuming), `evaluation_of` (the kind of evaluation, its settings checked), `search` (restore the strategy
from the journal, run trials to the budget, write the derived files), `run_trials` (the Tuner),
`connect_ray`. `run_search` is the entry point: a plan where the strategy is one, else `search`.

Resuming does not depend on Ray's experiment state: the run folder's ``evaluations.jsonl`` is the
source of truth. On ``--resume`` the strategy is rebuilt from its last snapshot plus the evaluations
journaled after it, and a fresh Tuner runs the rest of the budget. A driver killed at any point (even
SIGKILL) therefore loses only trials that had not finished, and never records one twice.
"""

from __future__ import annotations

import json
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
from nas.loop import (
    FAILED,
    OK,
    AskTellLoop,
    BuildArchitecture,
    Constraints,
    Deduplicate,
    Outcome,
    Proposal,
    TooManyRejections,
    check_value,
)
from nas.registry import get_space
from nas.results import RunFolder
from nas.space import SearchSpace
from nas.strategies import make_strategy, strategy_plan
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


class RunJournal:
    """The run folder's side of the search loop (`nas.loop.Journal`): every outcome is appended to
    ``evaluations.jsonl`` (fsynced) before the strategy hears of it; after that the strategy snapshot,
    best.json, the leaderboard and the progress line are refreshed."""

    def __init__(self, cfg: SearchConfig, folder: RunFolder, strategy: Strategy, log: Callable[[str], None]):
        self.cfg, self.folder, self.strategy, self.log = cfg, folder, strategy, log
        self.records = folder.records()
        self.elapsed_before = max((r.get("elapsed_s", 0.0) for r in self.records), default=0.0)
        self.session_start = time.monotonic()
        self.session_done = 0
        ranked = folder.ranked(self.records, MODE)
        self.best = ranked[0] if ranked else None

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.session_start

    def record(self, p: Proposal, o: Outcome) -> None:
        n = len(self.records)
        if o.cached:
            rec = {"trial_id": f"{p.tag}_cached{n}", "assignment": p.assignment, "arch_id": p.arch_id,
                   "status": "ok", "value": o.value, "metrics": o.metrics, "cached": o.cached,
                   "train": o.extra.get("train")}
        elif p.arch_id is None:  # it failed before it was built
            rec = {"trial_id": f"{p.tag}_build{n}", "assignment": p.assignment, "arch_id": None,
                   "status": o.status, "value": None, "error": o.error, "metrics": {}}
        else:
            rec = {"trial_id": p.tag, "assignment": p.assignment, "arch_id": p.arch_id, "status": o.status,
                   "value": o.value if o.ok else None, "metrics": o.metrics, **o.extra}
            if o.error:
                rec["error"] = o.error
        rec["index"] = n
        rec["elapsed_s"] = round(self.elapsed(), 3)
        self.folder.append(rec)
        self.records.append(rec)
        self.session_done += 1
        if o.ok and (self.best is None or rec["value"] > self.best["value"]):
            self.best = rec
            if p.arch is not None and not o.cached:
                self.folder.write_best(rec, to_dict(p.arch), METRIC)

    def told(self, p: Proposal, o: Outcome) -> None:
        atomic_write_json(self.folder.strategy_file, {"n_records": len(self.records),
                                                      "state": self.strategy.state_dict()})
        self.folder.write_leaderboard(self.records, METRIC, MODE)
        self._progress(self.records[-1])

    def _progress(self, rec: dict[str, Any]) -> None:
        n, budget = len(self.records), self.cfg.budget
        rate = (time.monotonic() - self.session_start) / max(self.session_done, 1)
        eta = rate * max(budget - n, 0)
        what = f"{rec['value']:.4f}" if rec["status"] == "ok" else f"FAILED ({(rec.get('error') or '')[:80]})"
        best = f"{self.best['value']:.4f}" if self.best else "-"
        tag = " (cached)" if rec.get("cached") else ""
        self.log(f"[{n}/{budget}] {METRIC} {what}{tag} | best {best} | elapsed {_hms(self.elapsed())} | "
                 f"ETA {_hms(eta)}")


class SearchState:
    """The driver's state between Tune callbacks: the search loop, its journal and the trials in flight.

    `next_config` and `trial_finished` are what Tune's Searcher calls (`_make_searcher`); they are plain
    methods, so the bookkeeping is tested without Ray. Proposals that fail to build, or that repeat an
    evaluated architecture, are journaled without a trial (a failure, or the earlier result marked
    cached) and count toward the budget; proposals over max_params / max_flops are rejected before
    evaluation (told to the strategy as rejections), counted in `n_rejected`, and use no budget."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace, strategy: Strategy, folder: RunFolder,
                 evaluation: Evaluation, log: Callable[[str], None],
                 build: Callable[[dict[str, Any]], Any] | None = None):
        self.cfg, self.space, self.strategy, self.folder, self.log = cfg, space, strategy, folder, log
        self.evaluation = evaluation
        self.data = evaluation.data_info()
        self.journal = RunJournal(cfg, folder, strategy, log)
        self.dedup = Deduplicate((r["arch_id"], r["value"], r.get("metrics", {}), r["trial_id"],
                                  {"train": r.get("train")})
                                 for r in self.records if r.get("status") == "ok" and r.get("arch_id")
                                 and not r.get("cached"))
        build = build or (lambda a: space.graph(a, num_classes=self.data.num_classes,
                                                input_shape=self.data.input_shape, **cfg.space_options))
        wrappers = [BuildArchitecture(build), Constraints(cfg.max_params, cfg.max_flops), self.dedup]
        self.loop = AskTellLoop(strategy, wrappers, self.journal, budget=cfg.budget, n_done=len(self.records))
        self.pending: dict[str, tuple[Proposal, float]] = {}

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.journal.records

    @property
    def best(self) -> dict[str, Any] | None:
        return self.journal.best

    @property
    def n_rejected(self) -> int:
        return self.loop.n_rejected

    @property
    def by_arch(self) -> dict[str, tuple]:
        return self.dedup.first

    def next_config(self, trial_id: str) -> dict[str, Any] | None:
        """A trial config for the strategy's next proposal, or None when the budget is committed."""
        try:
            p = self.loop.next(tag=trial_id)
        except TooManyRejections as e:
            raise SearchError(f"{e}; raise --max-params / --max-flops or narrow the space") from None
        if p is None:
            return None
        self.pending[trial_id] = (p, time.monotonic())
        return self.evaluation.trial_config(p)

    def trial_finished(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        if trial_id not in self.pending:
            return  # a late duplicate report, or a trial of another session
        p, started = self.pending.pop(trial_id)
        metrics = {k: v for k, v in (result or {}).items() if _is_metric(k, v)}
        extra = {"train": asdict(self.cfg.train), "trial_seconds": round(time.monotonic() - started, 3)}
        if error or result is None:
            o = Outcome(FAILED, None, metrics, "the trial's worker raised or died (after retries); see the Ray "
                        "trial logs", extra=extra)
        elif metrics.get("status") == FAILED or result.get("status") == FAILED:
            o = Outcome(FAILED, None, metrics, str(result.get("error", "candidate failed")), extra=extra)
        else:
            o = check_value(Outcome(OK, metrics.get(METRIC), metrics, extra=extra),
                            f"trial reported no finite {METRIC}")
        epoch = metrics.get("epoch")
        if o.ok and isinstance(epoch, int) and epoch < self.cfg.train.epochs:
            o.extra["stopped_early"] = True  # by the scheduler (ASHA) or the trial's time limit
        self.loop.finish(p, o)


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


def _make_trial_callback(state: SearchState):
    from ray.tune import Callback

    class TrialFiles(Callback):
        """Record where each finished trial's checkpoint is (``checkpoints.jsonl`` in the run folder), copy
        the best trial's weights into the run folder as it appears, and log the evaluation's per-epoch
        progress lines where it has them."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            line = state.evaluation.epoch_line(result)
            if line:
                state.log(line)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if trial.checkpoint is None:
                return
            try:
                weights = state.folder.record_checkpoint(trial.trial_id, trial.checkpoint.path,
                                                         state.evaluation.weights_file)
                if weights is not None and state.best is not None and state.best.get("trial_id") == trial.trial_id:
                    state.folder.write_best_weights(weights, trial.trial_id, state.best["arch_id"])
            except Exception as e:  # weights are a convenience; never fail the search for them
                state.log(f"note: could not record the trial's checkpoint: {e}")

    return TrialFiles()


# ---------------------------------------------------------------------------------------------------
# the driver's public steps: DARTS' plan (nas.darts.plan) is written with these


def check_resume(folder: RunFolder, cfg: SearchConfig, resume: bool) -> None:
    """Refuse to overwrite a run folder holding evaluations without `resume`, and to resume one started
    with other settings (training settings compared with their defaults filled in)."""
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
    try:
        saved = SearchConfig.from_dict(saved, str(folder.config_file)).to_dict()
    except ValueError:
        pass  # compared as written
    now = cfg.to_dict()
    diff = [k for k in _IDENTITY_KEYS if saved.get(k) != now.get(k)]
    if diff:
        raise SearchError(f"--resume: the run in {folder.path} was started with different {diff}; "
                          "resume with the same settings (only budget, workers, resources and address may change)")


def restore_strategy(strategy: Strategy, folder: RunFolder, records: list[dict[str, Any]]) -> None:
    """The strategy as the journal left it: its last snapshot, then every evaluation journaled after it."""
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


def open_run(cfg: SearchConfig, resume: bool, log: Callable[[str], None]) -> RunFolder:
    """The run folder of `cfg`, checked for resuming and with a torn last journal line repaired."""
    folder = RunFolder(cfg.out)
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
    if state.records:
        log(f"resuming {folder.path}: {len(state.records)} evaluations on record, "
            f"{max(cfg.budget - len(state.records), 0)} to go")
    if len(state.records) < cfg.budget:
        run_trials(state, session)
    folder.write_leaderboard(state.records, METRIC, MODE)
    folder.plot(state.records, METRIC, MODE)
    return SearchOutcome(folder.path, state.records, state.best, state.n_rejected)


def data_info(cfg: SearchConfig) -> DataInfo:
    """Input shape and classes of the search's networks, from the evaluation's metadata."""
    return evaluation_of(cfg).data_info()


def print_line(line: str) -> None:
    """The default log: a module-level function, so the search state that holds it pickles by reference
    even where a library has replaced ``builtins.print`` (Ray does, in some of its modules)."""
    print(line, flush=True)


def run_search(cfg: SearchConfig, resume: bool = False, log: Callable[[str], None] = print_line) -> SearchOutcome:
    """Run (or resume) a search to its budget and return what it found. A strategy that is a plan over
    the driver (`nas.strategies.PLANS`: DARTS) runs that plan; every other one is asked and told."""
    folder = open_run(cfg, resume, log)
    plan = strategy_plan(cfg.strategy)
    if plan is not None:
        return plan(cfg, folder, log)
    evaluation = evaluation_of(cfg)
    try:
        strategy = make_strategy(cfg.strategy, get_space(cfg.space), seed=cfg.seed, mode=MODE,
                                 **cfg.strategy_options)
    except (TypeError, ValueError) as e:
        raise SearchError(str(e)) from None
    return search(cfg, folder, strategy, evaluation, log)


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}_{trial.config.get('arch_id') or ''}"


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


def run_trials(state: SearchState, session: str = "session") -> None:
    """Execute the search loop of `state` as Ray Tune trials of its evaluation: one Tuner, the loop as
    its Searcher, the trial callback recording checkpoints; returns when the budget is on record."""
    import ray
    from ray import tune

    cfg = state.cfg
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
    name = f"{session}-{len(list(storage.glob(f'{session}-*'))) if storage.exists() else 0}"
    tuner = tune.Tuner(
        tune.with_resources(state.evaluation.trainable(), resources),
        tune_config=tune.TuneConfig(search_alg=_make_searcher(state),
                                    num_samples=max(cfg.budget - len(state.records), 1), scheduler=scheduler,
                                    max_concurrent_trials=workers, reuse_actors=cfg.reuse_actors,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[_make_trial_callback(state)],
        ),
    )
    state.log(f"searching {cfg.space} with {cfg.strategy}: budget {cfg.budget}, {workers} trial(s) at once, "
              f"{state.evaluation.describe()} -> {state.folder.path}")
    tuner.fit()
