"""The driver's bookkeeping without Ray: proposals, limits, cache, journal, and resume from it."""

from __future__ import annotations

import json

import pytest

import nas
from nas.config import SearchConfig
from nas.evaluation import DataInfo, Evaluation
from nas.graph import ArchGraph
from nas.results import RunFolder
from nas.search import SearchError, SearchState, check_resume, restore_strategy
from nas.strategies import make_strategy


def width_space() -> nas.SearchSpace:
    def build(a, *, num_classes, input_shape):
        if a["width"] == 3:
            raise ValueError("width 3 is cursed")
        g = ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=3)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("widths", [nas.Ordinal("width", (2, 3, 4, 64)), nas.Categorical("unused", ("a", "b"))],
                           build)


class DigitsShaped(Evaluation):
    """The driver's view of an evaluation, without a data set: 8x8 single-channel inputs, 10 classes."""

    def data_info(self) -> DataInfo:
        return DataInfo((1, 8, 8), 10)


def make_state(tmp_path, **cfg_kw) -> SearchState:
    cfg = SearchConfig(space="widths", strategy="random", budget=cfg_kw.pop("budget", 6), out=str(tmp_path), **cfg_kw)
    space = width_space()
    strategy = make_strategy("random", space, seed=0)
    folder = RunFolder(tmp_path)
    state = SearchState(cfg, space, strategy, folder, DigitsShaped(cfg), log=lambda s: None)
    restore_strategy(strategy, folder, state.records)
    return state


def finish(state: SearchState, trial_id: str, value: float = 0.5) -> None:
    state.trial_finished(trial_id, {"val_accuracy": value, "status": "ok", "params": 1}, error=False)


def test_budget_counts_failures_and_cached_duplicates(tmp_path):
    state = make_state(tmp_path, max_params=1000)
    n_trials = 0
    while (cfg := state.next_config(f"t{n_trials}")) is not None:
        assert cfg["assignment"]["width"] != 64  # over max_params: rejected before evaluation
        finish(state, f"t{n_trials}", value=cfg["assignment"]["width"] / 10)
        n_trials += 1
    recs = state.records
    assert len(recs) == 6 and len({r["trial_id"] for r in recs}) == 6
    statuses = {r["status"] for r in recs}
    assert "failed" in statuses  # width 3 failed in its build, with its message
    assert all("cursed" in r["error"] for r in recs if r["status"] == "failed")
    cached = [r for r in recs if r.get("cached")]
    assert cached and all(r["value"] == state.by_arch[r["arch_id"]][0] for r in cached)
    first = {r["arch_id"]: r["trial_id"] for r in reversed(recs) if r["status"] == "ok" and not r.get("cached")}
    assert all(r["cached"] == first[r["arch_id"]] for r in cached)  # answered from the first evaluation
    assert n_trials == sum(1 for r in recs if r["status"] == "ok" and not r.get("cached"))
    assert state.n_rejected > 0 and state.strategy.n_rejected == state.n_rejected  # told as rejections
    assert state.strategy.n_told == len(recs)  # rejections are neither results nor failures
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["value"] == 0.4 and nas.arch_id(nas.load_architecture(tmp_path / "best.json")) == best["arch_id"]


def test_trial_errors_and_reported_failures_are_recorded(tmp_path):
    state = make_state(tmp_path, budget=3)
    c1, c2, c3 = (state.next_config(f"t{i}") for i in range(3))
    assert state.next_config("t3") is None  # budget committed while trials are pending
    state.trial_finished("t0", None, error=True)
    state.trial_finished("t1", {"val_accuracy": float("nan"), "status": "failed", "error": "CandidateFailed: NaN"},
                         error=False)
    state.trial_finished("t2", {"val_loss": 1.0}, error=False)
    errors = [r["error"] for r in state.records]
    assert "died" in errors[0] and "NaN" in errors[1] and "no finite val_accuracy" in errors[2]
    state.trial_finished("t2", {"val_accuracy": 1.0}, error=False)  # a late duplicate report is ignored
    assert len(state.records) == 3


def test_resume_restores_the_strategy_and_refuses_other_settings(tmp_path):
    state = make_state(tmp_path, budget=4)
    for i in range(2):
        state.next_config(f"t{i}")
        finish(state, f"t{i}")
    state.next_config("t_pending")  # killed while this one ran
    again = make_state(tmp_path, budget=4)
    assert len(again.records) == 2 and again.strategy.n_told == 2
    while (cfg := again.next_config(f"u{len(again.records)}")) is not None:
        finish(again, f"u{len(again.records)}")
        assert cfg
    assert len(again.records) == 4 and len(RunFolder(tmp_path).records()) == 4

    with pytest.raises(SearchError, match="--resume"):
        check_resume(RunFolder(tmp_path), again.cfg, resume=False)


def test_torn_last_line_is_dropped_but_corruption_elsewhere_raises(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append({"trial_id": "a", "status": "ok", "value": 1.0, "assignment": {}})
    with open(folder.evaluations_file, "a") as f:
        f.write('{"trial_id": "b", "sta')
    assert [r["trial_id"] for r in folder.records()] == ["a"]
    assert folder.repair_torn_tail() == 1 and folder.evaluations_file.read_text().count("\n") == 1
    with open(folder.evaluations_file, "a") as f:
        f.write("garbage\n")
    folder.append({"trial_id": "c", "status": "ok", "value": 1.0, "assignment": {}})
    with pytest.raises(ValueError, match="line 2 .*corrupted"):
        folder.records()


def test_out_of_memory_runs_again_alone_once_before_the_strategy_hears_of_it(tmp_path):
    from nas.search import ALONE, trial_resources

    state = make_state(tmp_path, budget=2)
    first, other = state.next_config("t0"), state.next_config("t1")
    assert state.next_config("t2") is None and not state.idle()  # budget committed, t0 and t1 in flight
    state.trial_finished("t0", {"status": "oom", "error": "OutOfMemoryError: CUDA out of memory",
                                "val_accuracy": float("nan")}, error=False)
    assert state.records == [] and state.strategy.n_told == 0 and not state.idle()  # not told yet
    again = state.next_config("t2")  # the next trial is the rerun, before anything new is proposed
    assert again[ALONE] is True and again["assignment"] == first["assignment"]
    assert trial_resources(1, 0.25)(again) == {"cpu": 1, "gpu": 1.0}  # a whole GPU: no other trial on it
    assert trial_resources(1, 2)(again) == {"cpu": 0.01, "gpu": 0.0}  # data-parallel: its Train workers ask
    assert trial_resources(2, 0)(again)["gpu"] == 0
    assert trial_resources(1, 0.25)(other) == {"cpu": 1, "gpu": 0.25}
    state.trial_finished("t2", {"status": "oom", "error": "OutOfMemoryError: CUDA out of memory (again)",
                                "val_accuracy": float("nan")}, error=False)
    [rec] = state.records
    assert rec["status"] == "oom" and rec["trial_id"] == "t2" and rec["retry_of"] == "t0" and rec["value"] is None
    assert "also when run again alone" in rec["error"] and "(again)" in rec["error"]
    assert state.strategy.n_told == 1  # told as a failure, once
    finish(state, "t1")
    assert state.idle() and state.next_config("t3") is None
    leaderboard = (tmp_path / "leaderboard.md").read_text()
    assert "1 failed" in leaderboard


def test_a_rerun_alone_that_fits_is_the_result(tmp_path):
    state = make_state(tmp_path, budget=1)
    state.next_config("t0")
    state.trial_finished("t0", {"status": "oom", "error": "OutOfMemoryError: CUDA out of memory"}, error=False)
    state.next_config("t1")
    finish(state, "t1", 0.7)
    [rec] = state.records
    assert rec["status"] == "ok" and rec["value"] == 0.7 and rec["trial_id"] == "t1" and rec["retry_of"] == "t0"
    assert json.loads((tmp_path / "best.json").read_text())["trial_id"] == "t1"  # its weights are t1's


def test_trial_seconds_count_from_the_start_not_the_proposal(tmp_path, monkeypatch):
    import nas.search

    now = [100.0]
    monkeypatch.setattr(nas.search.time, "monotonic", lambda: now[0])
    state = make_state(tmp_path, budget=2)
    state.next_config("t0")
    now[0] = 160.0  # a minute waiting for resources
    state.trial_started("t0")
    now[0] = 165.5
    finish(state, "t0")
    state.next_config("t1")
    now[0] = 170.0
    finish(state, "t1")  # never seen starting (no callback): from its proposal
    assert [r["trial_seconds"] for r in state.records] == [5.5, 4.5]
    assert [r["proposed_after"] for r in state.records] == [0, 1]


def test_a_worker_that_raised_after_reporting_a_failure_is_recorded_with_it(tmp_path):
    state = make_state(tmp_path, budget=1)
    state.next_config("t0")
    state.trial_result("t0", {"status": "failed", "error": "AcceleratorError: CUDA error: an illegal memory access"})
    state.trial_finished("t0", None, error=True)
    assert "illegal memory access" in state.records[0]["error"] and state.records[0]["status"] == "failed"
