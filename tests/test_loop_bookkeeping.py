"""Honest bookkeeping of the search loop (issue #16): trials ASHA stopped early are "stopped" (partial value,
never ranked), a proposal repeating an architecture in flight waits for it instead of training it twice,
an impossible candidate (`SpaceError` in the build) is rejected before it uses budget, and the summary says
what was trained. Plain Python (milliseconds, no Ray) but for one real-Ray check of `--asha` at the end."""

from __future__ import annotations

import json

import pytest

import nas
from nas.config import SearchConfig, TrainConfig
from nas.evaluation import DataInfo, Evaluation
from nas.graph import ArchGraph
from nas.loop import LATER, AskTellLoop, BuildArchitecture, Deduplicate, Outcome, run_in_process
from nas.results import RunFolder
from nas.search import DERIVED_EVERY_S, SearchOutcome, SearchState, restore_strategy
from nas.space import SpaceError
from nas.strategies.base import Strategy


def tiny_space() -> nas.SearchSpace:
    """``width`` shapes the network, ``unused`` does not (two assignments, one architecture); width 5 can
    never be built (a `SpaceError`, as a space says of an invalid combination), width 6 has a bug."""

    def build(a, *, num_classes, input_shape):
        if a["width"] == 5:
            raise SpaceError("variable 'width' = 5 does not fit (an invalid combination)")
        if a["width"] == 6:
            raise ValueError("a bug in the build")
        g = ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=3)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("tiny", [nas.Ordinal("width", (2, 4, 5, 6, 8)), nas.Categorical("unused", ("a", "b"))],
                           build)


class Scripted(Strategy):
    """Proposes a fixed list of assignments, in order, and remembers what it was told."""

    name = "scripted"

    def __init__(self, space, script, **kw):
        super().__init__(space, **kw)
        self.script = [space.validate(a) for a in script]
        self.heard: list[tuple[dict, float | None]] = []
        self.rejected: list[dict] = []

    def propose(self):
        return self.script[(self.n_told + self.n_rejected + len(self.pending)) % len(self.script)]

    def observe(self, assignment, value, score):
        self.heard.append((assignment, value))

    def on_reject(self, assignment, reason):
        self.rejected.append(assignment)


def A(width: int, unused: str = "a") -> dict:
    return {"width": width, "unused": unused}


class DigitsShaped(Evaluation):
    def data_info(self) -> DataInfo:
        return DataInfo((1, 8, 8), 10)


def make_state(tmp_path, script, budget=4, **cfg_kw) -> SearchState:
    train = TrainConfig(epochs=cfg_kw.pop("epochs", 4))
    cfg = SearchConfig(space="tiny", strategy="random", budget=budget, out=str(tmp_path), train=train, **cfg_kw)
    space = tiny_space()
    strategy = Scripted(space, script)
    folder = RunFolder(tmp_path)
    state = SearchState(cfg, space, strategy, folder, DigitsShaped(cfg), log=lambda s: None)
    restore_strategy(strategy, folder, state.records)
    return state


def report(state: SearchState, trial_id: str, value: float, epoch: int = 4) -> None:
    state.trial_finished(trial_id, {"val_accuracy": value, "status": "ok", "epoch": epoch, "params": 1}, error=False)


# -- 1. trials stopped early ---------------------------------------------------------------------------------


def test_a_trial_asha_stopped_is_recorded_as_stopped_and_never_ranked(tmp_path):
    state = make_state(tmp_path, [A(2), A(4), A(4, "b"), A(8)], budget=4, asha=True)
    c0 = state.next_config("t0")
    c1 = state.next_config("t1")
    assert c0["assignment"] == A(2) and c1["assignment"] == A(4)
    report(state, "t1", 0.9, epoch=1)  # ASHA stopped it at epoch 1 of 4: the best value so far, but partial
    report(state, "t0", 0.5)  # complete
    stopped = state.records[0]
    assert stopped["status"] == "stopped" and stopped["epoch"] == 1 and stopped["value"] == 0.9
    assert stopped["stopped_early"] is True
    # the strategy hears the partial value (as Tune's searchers hear a stopped trial's last result)
    assert (A(4), 0.9) in state.strategy.heard
    # best.json is the complete trial, never the stopped one with the higher partial value
    assert state.best["trial_id"] == "t0"
    assert json.loads((tmp_path / "best.json").read_text())["trial_id"] == "t0"
    # the stopped architecture is answered from cache as stopped, not as a complete result
    assert state.next_config("t2") is not None  # A(4, "b") was answered from cache, then A(8) is a trial
    cached = state.records[2]
    assert cached["cached"] == "t1" and cached["status"] == "stopped" and cached["epoch"] == 1
    report(state, "t2", 0.3)
    assert len(state.records) == 4 and state.strategy.n_told == 4
    board = (tmp_path / "leaderboard.md").read_text()
    ranked_part, stopped_part = board.split("## Stopped early")
    assert "| t0 |" in ranked_part and "| t2 |" in ranked_part and "| t1 |" not in ranked_part
    assert "| t1 |" in stopped_part and "| 1 | 0.9000 |" in stopped_part
    assert [r["trial_id"] for r in RunFolder(tmp_path).ranked(state.records, "max")] == ["t0", "t2"]
    outcome = SearchOutcome(tmp_path, state.records, state.best)
    assert (outcome.n_trained, outcome.n_stopped, outcome.n_cached, outcome.n_failed) == (2, 1, 1, 0)


def test_without_asha_a_short_trial_is_complete(tmp_path):
    state = make_state(tmp_path, [A(2)], budget=1)  # e.g. ended at its own --max-seconds
    state.next_config("t0")
    report(state, "t0", 0.4, epoch=2)
    assert state.records[0]["status"] == "ok" and state.best["trial_id"] == "t0"


def test_resume_tells_the_strategy_the_partial_value_and_keeps_stopped_in_the_cache(tmp_path):
    state = make_state(tmp_path, [A(4), A(2)], budget=4, asha=True)
    state.next_config("t0")
    report(state, "t0", 0.7, epoch=2)
    (tmp_path / "strategy_state.json").unlink()  # rebuilt from the journal alone, as after a kill before it
    again = make_state(tmp_path, [A(4), A(4, "b"), A(2)], budget=4, asha=True)
    assert again.strategy.heard == [(A(4), 0.7)]
    again.next_config("u1")  # A(4, "b") answered from the stopped record; A(2) goes to a trial
    assert again.records[1]["status"] == "stopped" and again.records[1]["cached"] == "t0"


def test_the_derived_files_are_rewritten_once_due_and_with_the_last_outcome(tmp_path):
    state = make_state(tmp_path, [A(2), A(4), A(8)], budget=3)
    board, snapshot = tmp_path / "leaderboard.md", tmp_path / "strategy_state.json"
    state.next_config("t0")
    report(state, "t0", 0.5)  # the first outcome: written at once
    assert "| t0 |" in board.read_text() and json.loads(snapshot.read_text())["n_records"] == 1
    state.next_config("t1")
    report(state, "t1", 0.6)  # within DERIVED_EVERY_S of that write: journaled (fsynced), derived files later
    assert [r["trial_id"] for r in RunFolder(tmp_path).records()] == ["t0", "t1"]
    assert "| t1 |" not in board.read_text() and json.loads(snapshot.read_text())["n_records"] == 1
    state.journal.write_derived_if_due()  # what Tune's loop calls every step: not due yet
    assert "| t1 |" not in board.read_text()
    state.journal.derived_at -= DERIVED_EVERY_S  # as when that much time has passed
    state.journal.write_derived_if_due()
    assert "| t1 |" in board.read_text() and json.loads(snapshot.read_text())["n_records"] == 2
    state.next_config("t2")
    report(state, "t2", 0.7)  # the budget's last outcome: written at once
    assert "| t2 |" in board.read_text() and json.loads(snapshot.read_text())["n_records"] == 3


# -- 2. in-flight duplicates wait for their twin; the summary counts ---------------------------------------


def test_a_duplicate_of_a_trial_in_flight_waits_for_it_and_is_answered_from_it(tmp_path):
    state = make_state(tmp_path, [A(2), A(2, "b"), A(4), A(8)], budget=4)
    assert state.next_config("t0")["assignment"] == A(2)
    assert state.next_config("t1") is LATER  # A(2, "b") is A(2)'s architecture, in flight: no second trial
    assert state.loop.n_deferred == 1 and state.loop.remaining() == 2 and "t1" not in state.pending
    assert state.next_config("t2")["assignment"] == A(4)
    assert state.next_config("t3")["assignment"] == A(8)
    assert state.next_config("t4") is None  # budget committed: 3 trials + 1 deferred
    arch_ids = [t.proposal.arch_id for t in state.pending.values()]
    assert len(arch_ids) == len(set(arch_ids)) == 3
    report(state, "t2", 0.6)
    report(state, "t0", 0.5)  # answers the deferred one right after it
    report(state, "t3", 0.4)
    recs = state.records
    assert [r["trial_id"] for r in recs] == ["t2", "t0", "t1_cached2", "t3"]
    assert recs[2]["cached"] == "t0" and recs[2]["status"] == "ok" and recs[2]["value"] == 0.5
    assert len(recs) == 4 and state.strategy.n_told == 4 and state.loop.n_deferred == 0
    assert len(RunFolder(tmp_path).records()) == 4


def test_a_duplicate_of_a_failed_trial_is_answered_with_the_same_failure(tmp_path):
    state = make_state(tmp_path, [A(2), A(2, "b")], budget=2)
    state.next_config("t0")
    assert state.next_config("t1") is LATER
    assert state.next_config("t2") is None
    state.trial_finished("t0", {"val_accuracy": float("nan"), "status": "failed", "error": "CandidateFailed: NaN"},
                         error=False)
    first, twin = state.records
    assert first["status"] == twin["status"] == "failed" and "NaN" in twin["error"] and twin["cached"] == "t0"
    assert state.strategy.heard == [(A(2), None), (A(2, "b"), None)]
    outcome = SearchOutcome(tmp_path, state.records, state.best)
    assert (outcome.n_trained, outcome.n_failed, outcome.n_cached) == (0, 1, 1)


def test_abandoning_a_trial_drops_the_proposals_waiting_for_it(tmp_path):
    state = make_state(tmp_path, [A(2), A(2, "b"), A(4)], budget=3)
    p = state.loop.next("t0")
    assert state.loop.next("t1") is LATER
    state.loop.abandon(p)
    assert state.loop.committed() == 0 and state.loop.n_deferred == 0 and not state.loop.running


def test_run_in_process_is_sequential_and_answers_duplicates_from_cache():
    space = tiny_space()
    strategy = Scripted(space, [A(2), A(2, "b"), A(4), A(6), A(5), A(8)])
    build = lambda a: space.graph(a, num_classes=10, input_shape=(1, 8, 8))  # noqa: E731
    seen, evaluated = [], []

    class Journal:
        def record(self, p, o):
            seen.append((p.assignment, o.status, o.cached))

        def told(self, p, o):
            pass

    def evaluate(p):
        evaluated.append(p.assignment)
        return Outcome("ok", p.assignment["width"] / 10)

    loop = AskTellLoop(strategy, [BuildArchitecture(build), Deduplicate()], Journal(), budget=5)
    run_in_process(loop, evaluate)
    assert evaluated == [A(2), A(4), A(8)]
    assert [s for _, s, _ in seen] == ["ok", "ok", "ok", "failed", "ok"] and seen[1][2]
    assert loop.n_done == 5 and loop.n_rejected == 1 and strategy.rejected == [A(5)]


# -- 3. impossible candidates are rejected, build bugs fail -----------------------------------------------------


def test_a_space_error_in_the_build_is_a_rejection_and_uses_no_budget(tmp_path):
    state = make_state(tmp_path, [A(5), A(5, "b"), A(6), A(2)], budget=2)
    c = state.next_config("t0")
    assert c["assignment"] == A(2)  # A(5) twice rejected, A(6) failed (journaled, one budget slot)
    assert state.n_rejected == 2 and state.strategy.rejected == [A(5), A(5, "b")]
    (failed,) = state.records
    assert failed["status"] == "failed" and "ValueError: a bug in the build" in failed["error"]
    report(state, "t0", 0.5)
    assert len(state.records) == 2 and state.strategy.n_told == 2
    assert all(r["assignment"]["width"] != 5 for r in state.records)


def test_the_cli_summary_says_what_was_trained(tmp_path, monkeypatch, capsys):
    from nas import cli

    recs = [{"trial_id": "a", "status": "ok", "value": 0.5, "arch_id": "x", "assignment": {}, "metrics": {}},
            {"trial_id": "b", "status": "stopped", "value": 0.2, "arch_id": "y", "epoch": 1},
            {"trial_id": "c", "status": "ok", "value": 0.5, "cached": "a", "arch_id": "x"},
            {"trial_id": "d", "status": "failed", "value": None, "arch_id": None}]
    monkeypatch.setattr("nas.search.run_search",
                        lambda cfg, resume=False: SearchOutcome(tmp_path, recs, recs[0], n_rejected=3))
    assert cli.main(["search", "--space", "resnet", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "4 evaluations (1 failed)" in out
    assert ("1 architectures trained to the end, 1 stopped early" in out and "1 answered from cache" in out
            and "3 proposals rejected" in out)


# -- one real-Ray check: --asha on digits ---------------------------------------------------------------------


def asha_space() -> nas.SearchSpace:
    """``good``: a linear layer on the pixels (about 90% on digits in an epoch); ``weak``: a linear layer
    on the image's mean pixel (near chance)."""

    def build(a, *, num_classes, input_shape):
        g = ArchGraph(input_shape)
        x = g.add_op("pool", "flatten" if a["net"] == "good" else "global_avgpool", "input")
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("asha_tiny", [nas.Categorical("net", ("good", "weak")), nas.Categorical("tag", ("a", "b"))],
                           build)


def test_asha_stopped_trials_are_recorded_as_stopped_and_not_best(cluster, tmp_path):
    pytest.importorskip("ray")
    from nas.search import evaluation_of, open_run, search

    nas.register_space("asha_tiny", asha_space)
    # one trial at a time: ASHA's rung at epoch 1 holds the good net's value when the weak net gets there
    cfg = SearchConfig(out=str(tmp_path / "asha"), space="asha_tiny", strategy="random", budget=3, seed=0,
                       workers=1, asha=True, train=TrainConfig(epochs=2, batch_size=32, lr=0.1))
    space = nas.get_space("asha_tiny")
    strategy = Scripted(space, [{"net": "good", "tag": "a"}, {"net": "weak", "tag": "a"},
                                {"net": "weak", "tag": "b"}])
    folder = open_run(cfg, False, lambda s: None)
    outcome = search(cfg, folder, strategy, evaluation_of(cfg), lambda s: None)
    good, weak, weak_again = outcome.records
    assert good["status"] == "ok" and good["metrics"]["epoch"] == 2, good
    assert weak["status"] == "stopped" and weak["epoch"] == 1 and weak["stopped_early"], weak
    assert weak_again["status"] == "stopped" and weak_again["cached"] == weak["trial_id"]
    best = json.loads((folder.path / "best.json").read_text())
    assert best["trial_id"] == good["trial_id"] == json.loads((folder.path / "best_weights.json").read_text())[
        "trial_id"]
    assert (outcome.n_trained, outcome.n_stopped, outcome.n_cached) == (1, 1, 1)
    board = (folder.path / "leaderboard.md").read_text()
    assert board.split("## Stopped early")[1].count(weak["trial_id"]) == 1
