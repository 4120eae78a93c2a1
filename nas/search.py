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
from nas.latency_table import LatencyTableError, load_latency_table
from nas.loop import (
    FAILED,
    LATER,
    OK,
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
_MAY_CHANGE = "budget, workers, cpus_per_trial, gpus_per_trial, address, max_failures and reuse_actors"


class SearchError(RuntimeError):
    """The search cannot start or continue; the message says why and what to do."""


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
        return self._count(FAILED)

    @property
    def n_cached(self) -> int:
        return sum(bool(r.get("cached")) for r in self.records)


class RunJournal:
    """The run folder's side of the search loop (`nas.loop.Journal`): every outcome is appended to
    ``evaluations.jsonl`` (fsynced) before the strategy hears of it; after that the strategy snapshot,
    best.json, the leaderboard and the progress line are refreshed."""

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
        atomic_write_json(self.folder.strategy_file, {"n_records": len(self.records),
                                                      "state": self.strategy.state_dict()})
        self.folder.write_leaderboard(self.records, self.metric, self.mode)
        if self.multi:
            from nas import pareto_report

            pareto_report.write(self.folder.path, self.records, self.objectives, self.cfg.reference_point)
        self._progress(self.records[-1])

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


class SearchState:
    """The driver's state between Tune callbacks: the search loop, its journal and the trials in flight.

    `next_config` and `trial_finished` are what Tune's Searcher calls (`_make_searcher`); they are plain
    methods, so the bookkeeping is tested without Ray. Proposals that fail to build, or that repeat an
    evaluated architecture, are journaled without a trial (a failure, or the earlier result marked
    cached) and count toward the budget; proposals over max_params / max_flops, or that the space cannot
    build (`SpaceError`), are rejected before evaluation (told to the strategy as rejections), counted in
    `n_rejected`, and use no budget. A proposal repeating an architecture in flight gets no trial: it waits
    for that trial and is answered from it (`next_config` returns `LATER`). A trial ASHA stops early is
    recorded with status "stopped" and the epoch it reached."""

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
        self.pending: dict[str, tuple[Proposal, float]] = {}

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

    def next_config(self, trial_id: str) -> Any:
        """A trial config for the strategy's next proposal; `LATER` when that proposal repeats an
        architecture in flight (deferred: no trial now, ask again later); None when the budget is committed."""
        try:
            p = self.loop.next(tag=trial_id)
        except TooManyRejections as e:
            raise SearchError(f"{e}; raise --max-params / --max-flops, narrow the space, or fix the space or its "
                              "options if that reason is a build error") from None
        if p is None or p is LATER:
            return p
        self.pending[trial_id] = (p, time.monotonic())
        return self.evaluation.trial_config(p)

    def trial_finished(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        if trial_id not in self.pending:
            return  # a late duplicate report, or a trial of another session
        p, started = self.pending.pop(trial_id)
        metrics = {**p.info.get("metrics", {}),  # known before evaluation (latency from a table, counts)
                   **{k: v for k, v in (result or {}).items() if _is_metric(k, v)}}
        extra = {"train": asdict(self.cfg.train), "trial_seconds": round(time.monotonic() - started, 3)}
        if error or result is None:
            o = Outcome(FAILED, None, metrics, "the trial's worker raised or died (after retries); see the Ray "
                        "trial logs", extra=extra)
        elif metrics.get("status") == FAILED or result.get("status") == FAILED:
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
            return Searcher.FINISHED if config is None else config

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if stop is not None and stop.signum is not None and (
                    error or result is None or result.get("status") == FAILED):
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
    if state.records:
        log(f"resuming {folder.path}: {len(state.records)} evaluations on record, "
            f"{max(cfg.budget - len(state.records), 0)} to go")
    if len(state.records) < cfg.budget:
        run_trials(state, session)
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
# Ray: which cluster, whether it can run the trials, and a clean end (also on Ctrl-C / SIGTERM)


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


class SignalReceived(KeyboardInterrupt):
    """Raised by `raise_on_signal`: a signal that stops the driver at once (SIGTERM, or a second Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_on_signal(signum: int, frame: Any) -> None:
    """A signal handler: stop where the driver is, as Ctrl-C does (finally blocks run, Ray is shut down)."""
    raise SignalReceived(signum)


def resume_command(folder: str | Path) -> str:
    import shlex

    return f"nas search --out {shlex.quote(str(folder))} --resume"


_RAY = {"owned": False, "held": 0}  # whether this module connected (owns the connection) / ray_session depth


class _RaySession:
    def __enter__(self) -> None:
        _RAY["held"] += 1

    def __exit__(self, *exc: Any) -> None:
        _RAY["held"] -= 1
        release_ray()


def ray_session() -> _RaySession:
    """``with ray_session():`` keeps a Ray instance this module starts alive across the searches run inside
    (DARTS' plan runs two) and shuts it down when the block ends, however it ends. Without it each
    `run_trials` shuts down what it started."""
    return _RaySession()


def release_ray() -> None:
    """Shut down the Ray connection `connect_ray` made (a private local instance with all its processes, or
    the driver's connection to a cluster) unless a `ray_session` holds it; a connection made by someone
    else (a test, a notebook) is left alone."""
    if not _RAY["owned"] or _RAY["held"] > 0:
        return
    _RAY["owned"] = False
    import ray

    ray.shutdown()  # also after a start that failed half-way; a no-op where nothing was started


def connect_ray(address: str | None) -> str:
    """Connect this process to Ray and return a line saying where the search runs.

    - Already connected (tests, a notebook, a search before this one): that connection is kept and is
      never shut down here.
    - `address` None or "local": a private Ray instance on this machine, started for this search and shut
      down when it ends (`release_ray`). It never joins a cluster found on the machine (the one ``ray
      start`` recorded, or ``RAY_ADDRESS``).
    - "auto" or HOST:PORT (or ray://HOST:PORT): that cluster, checked to answer within seconds first, so
      an unreachable address is a `SearchError` naming it rather than Ray's minutes of retries."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return f"ray: this process's connection to {_gcs_address()}: {nodes_summary(cluster_nodes())}"
    _RAY["owned"] = True  # from here on, even a half-done start is shut down by `release_ray`
    if address in (None, "", "local"):
        _ray_init(ray, "local")
        env = os.environ.get("RAY_ADDRESS")
        note = f"; RAY_ADDRESS={env} is not used without --address (--address auto joins it)" if env else ""
        return (f"ray: private local instance on this machine ({nodes_summary(cluster_nodes())}), shut down when "
                f"the search ends{note}")
    target = _reachable_address(address)  # a SearchError (a RuntimeError) of its own, within seconds
    try:
        _ray_init(ray, address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SearchError(f"--address {address}: could not join the Ray cluster at {target} ({e}); start one "
                          "with `ray start --head`, or leave out --address to run on a private local instance") \
            from None
    return f"ray: cluster at {target}: {nodes_summary(cluster_nodes())}"


def _ray_init(ray: Any, address: str) -> None:
    """`ray.init` keeping this process's own SIGTERM handler, where it has one (Ray installs a sys.exit)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        if main and callable(previous):
            signal.signal(signal.SIGTERM, previous)


def _gcs_address() -> str:
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return "a Ray cluster"


def _reachable_address(address: str, timeout: float = 3.0) -> str:
    """The HOST:PORT that `address` ("auto", HOST:PORT, ray://HOST:PORT) leads to, once something there
    answered as a gRPC server (Ray's GCS or client server) within `timeout` seconds; else `SearchError`."""
    import socket

    env = os.environ.get("RAY_ADDRESS", "")
    if address.startswith("ray://") or (address == "auto" and env.startswith("ray://")):
        target = (address if address.startswith("ray://") else env)[len("ray://"):].rstrip("/")
    else:
        from ray._private import services

        try:
            target = services.canonicalize_bootstrap_address(address)
        except ConnectionError:  # "auto" found nothing
            raise SearchError(f"--address {address}: no Ray cluster was found on this machine (none started with "
                              "`ray start`, no RAY_ADDRESS); start one with `ray start --head`, give HOST:PORT, "
                              "or leave out --address to run on a private local instance") from None
        except ValueError as e:
            raise SearchError(f"--address {address}: not a Ray address ({e}); give auto or HOST:PORT") from None
        if target is None:
            raise SearchError(f"--address {address}: not a cluster address; give auto or HOST:PORT")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SearchError(f"--address {address}: not a Ray address; give auto or HOST:PORT")
    via = f" (resolved to {target})" if address == "auto" else ""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "", "false"):
                # an HTTP/2 client preface and an empty SETTINGS frame; a gRPC server answers with SETTINGS
                s.settimeout(timeout)
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                head = b""
                while len(head) < 9:
                    chunk = s.recv(9 - len(head))
                    if not chunk:
                        break
                    head += chunk
                if len(head) < 9 or head[3] != 0x04:
                    raise SearchError(f"--address {address}{via}: {target} answers, but not as a Ray cluster's "
                                      "head (give the port of `ray start --head --port=PORT`, 6379 by default)")
    except SearchError:
        raise
    except OSError as e:
        raise SearchError(f"--address {address}{via}: no Ray cluster answers at {target} within {timeout:g} s "
                          f"({e.strerror or e}); is its head running (`ray start --head`)? Leave out --address "
                          "to run on a private local instance") from None
    return target


def cluster_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected cluster: {"ip", "CPU", "GPU"}."""
    import ray

    return [{"ip": n.get("NodeManagerAddress", "?"), "CPU": float(n.get("Resources", {}).get("CPU", 0.0)),
             "GPU": float(n.get("Resources", {}).get("GPU", 0.0))} for n in ray.nodes() if n.get("Alive")]


def _this_machine() -> list[dict[str, Any]]:
    """The node a private local instance would have, as Ray detects it (CPUs, GPUs), without starting
    Ray; [] where this Ray's internals differ (then the cluster is checked once started)."""
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
        return [{"ip": "this machine", "CPU": float(spec.num_cpus), "GPU": float(spec.num_gpus or 0)}]
    except Exception:
        return []


def nodes_summary(nodes: list[dict[str, Any]]) -> str:
    def one(n: dict[str, Any]) -> str:
        return f"{n['CPU']:g} CPUs, {n['GPU']:g} GPUs"

    if len(nodes) == 1:
        return f"1 node, {one(nodes[0])}"
    total = {"CPU": sum(n["CPU"] for n in nodes), "GPU": sum(n["GPU"] for n in nodes)}
    each = "; ".join(f"{n['ip']}: {one(n)}" for n in nodes)
    return f"{len(nodes)} nodes, {one(total)} ({each})"


def check_resources(cpus: float, gpus: float, nodes: list[dict[str, Any]], what: str = "the Ray cluster") -> None:
    """Raise `SearchError` naming the resource when no node of `nodes` (`what`: the Ray cluster, this
    machine) can ever run a trial asking for `cpus` CPUs and `gpus` GPUs (a trial runs on one node; Ray
    gives fractions of one GPU only)."""
    where = nodes_summary(nodes) if nodes else "no alive nodes"
    if not nodes:
        raise SearchError(f"{what} has no alive Ray nodes")
    if gpus > 0 and not any(n["GPU"] > 0 for n in nodes):
        raise SearchError(f"--gpus-per-trial {gpus:g}: {what} has no GPUs ({where}); leave out "
                          "--gpus-per-trial to train on CPUs, or join a cluster with GPUs (--address)")
    if gpus > 1 and gpus != int(gpus):
        raise SearchError(f"--gpus-per-trial {gpus:g}: above 1 a trial must ask for whole GPUs (Ray shares "
                          "out fractions of one GPU only); give 1 or less, or a whole number")
    most_gpus = max(n["GPU"] for n in nodes)
    if gpus > most_gpus + 1e-9:
        raise SearchError(f"--gpus-per-trial {gpus:g}: no node has {gpus:g} GPUs (the most on one node is "
                          f"{most_gpus:g}: {where}); a trial runs on one node")
    most_cpus = max(n["CPU"] for n in nodes)
    if cpus > most_cpus + 1e-9:
        raise SearchError(f"--cpus-per-trial {cpus:g}: no node has {cpus:g} CPUs (the most on one node is "
                          f"{most_cpus:g}: {where}); a trial runs on one node")
    if not any(n["CPU"] + 1e-9 >= cpus and n["GPU"] + 1e-9 >= gpus for n in nodes):
        raise SearchError(f"--cpus-per-trial {cpus:g} with --gpus-per-trial {gpus:g}: no node has both ({where}); "
                          "a trial runs on one node")


def trial_concurrency(cpus: float, gpus: float, totals: dict[str, float]) -> int:
    """Trials the cluster runs at once: over each resource a trial asks for, floor(cluster total / per
    trial), the least of them, and at least 1."""
    import math

    fits = [math.floor(totals.get(k, 0.0) / v + 1e-9) for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0]
    return max(1, min(fits) if fits else int(totals.get("CPU", 1.0)))


class _Stop:
    """The driver's stop request: the first SIGINT / SIGTERM while trials run records the signal (Tune is
    told by `stopper`, then ends the trials in flight without recording them); a second one stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.announced = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise SignalReceived(signum)
        self.signum = signum  # nothing else here: printing in a handler can collide with the main thread's

    def installed(self):
        import signal
        import threading

        stop = self

        class Installed:
            def __enter__(self) -> None:
                self.saved: dict[int, Any] = {}
                self.env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's own prints a Tuner.restore hint
                if threading.current_thread() is threading.main_thread():
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        self.saved[sig] = signal.getsignal(sig)
                        signal.signal(sig, stop.handle)

            def __exit__(self, *exc: Any) -> None:
                for sig, handler in self.saved.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
                if self.env is None:
                    os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
                else:
                    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.env

        return Installed()


def _make_stopper(stop: _Stop, log: Callable[[str], None]):
    from ray.tune import Stopper

    class StopOnSignal(Stopper):
        """Ends the experiment once the driver got SIGINT / SIGTERM (checked by Tune on every step)."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            if stop.signum is not None and not stop.announced:
                stop.announced = True
                import signal

                log(f"{signal.Signals(stop.signum).name} received: stopping the search; trials in flight are "
                    "not recorded (they run again on --resume)")
            return stop.signum is not None

    return StopOnSignal()


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
    stop = _Stop()
    try:
        if not ray.is_initialized() and cfg.address in (None, "", "local"):
            local = _this_machine()  # checked before a private instance is started for nothing
            if local:
                check_resources(cfg.cpus_per_trial, cfg.gpus_per_trial, local, "this machine")
        state.log(connect_ray(cfg.address))
        check_resources(cfg.cpus_per_trial, cfg.gpus_per_trial, cluster_nodes())
        workers = cfg.workers or trial_concurrency(cfg.cpus_per_trial, cfg.gpus_per_trial, ray.cluster_resources())
        scheduler = None
        if cfg.asha:
            from ray.tune.schedulers import ASHAScheduler

            first = state.objectives[0]  # with several objectives ASHA stops on the first
            scheduler = ASHAScheduler(time_attr="epoch", metric=first.metric, mode=first.mode,
                                      max_t=max(cfg.train.epochs, 1),
                                      grace_period=1, reduction_factor=3)
        resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
        storage = (state.folder.path / "ray").resolve()
        name = f"{session}-{len(list(storage.glob(f'{session}-*'))) if storage.exists() else 0}"
        tuner = tune.Tuner(
            tune.with_resources(state.evaluation.trainable(), resources),
            tune_config=tune.TuneConfig(search_alg=_make_searcher(state, stop),
                                        num_samples=max(cfg.budget - len(state.records), 1), scheduler=scheduler,
                                        max_concurrent_trials=workers, reuse_actors=cfg.reuse_actors,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=0, stop=_make_stopper(stop, state.log),
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=[_make_trial_callback(state)],
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
