"""User errors of `nas`: one line ``nas: error: ...`` naming what is wrong, exit code 2, no traceback, and
found before Ray starts or a trial is spent; resume refuses what would change the search; the journal's
corruption is an error naming the line, and ``--repair`` moves bad lines aside."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nas.search
from nas.cli import main, make_parser, strategy_options
from nas.config import ConfigError
from nas.strategies import STRATEGIES, strategy_class

REPO = Path(__file__).resolve().parents[1]
TABLE = Path("/work/shared/data/nb201/nb201.csv")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the search gets as far as Ray."""

    def never(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(nas.search, "run_trials", never)
    monkeypatch.setattr(nas.search, "connect_ray", never)


def one_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and needle in err, err
    return err


BAD_SEARCHES = [
    (["--strategy", "foo"], "unknown strategy 'foo'"),
    (["--strategy-option", "population_size=-3"], "population_size must be an integer >= 1, got -3"),
    (["--strategy-option", "population_size=abc"], "population_size must be an integer >= 1, got 'abc'"),
    (["--strategy-option", "sample_size=200", "--strategy-option", "population_size=5"],
     "sample_size (200) must not exceed population_size (5)"),
    (["--strategy-option", "bogus=1"], "has no option(s) ['bogus']"),
    (["--strategy", "combo", "--strategy-option", "fit=foo"], "combo: option fit must be one of"),
    (["--strategy", "combo", "--strategy-option", "n_initial=0"], "combo: option n_initial must be an integer >= 1"),
    (["--strategy", "random", "--strategy-option", "n=1"], "strategy 'random' has no option(s) ['n']"),
    (["--strategy", "darts", "--strategy-option", "assignment={bad"], "--strategy-option assignment: malformed JSON"),
    (["--strategy", "darts", "--strategy-option", "epochs=0"], "DARTS setting 'epochs' must be an int >= 1"),
    (["--strategy-option", "novalue"], "--strategy-option takes KEY=VALUE"),
    (["--space-option", "foo=1"], "space 'resnet' has no option(s) ['foo']"),
    (["--space", "densenet", "--space-option", "drop_rate=abc"], "option 'drop_rate' must be a number"),
    (["--space", "darts", "--space-option", "layers=0"], "option 'layers' must be an int >= 3"),
    (["--space", "nosuch"], "unknown search space 'nosuch'"),
    (["--dataset", "nosuch"], "unknown data set 'nosuch'"),
    (["--dataset", "npy", "--data-root", "/nonexistent/data"], "folder /nonexistent/data does not exist"),
    (["--space", "nb201", "--table", "/nonexistent/nb201.csv"], "table /nonexistent/nb201.csv does not exist"),
    (["--budget", "0"], "'budget' must be an int >= 1"),
    (["--workers", "0"], "'workers' must be an int >= 1"),
    (["--cpus-per-trial", "0"], "'cpus_per_trial' must be a number > 0"),
    (["--gpus-per-trial", "-1"], "'gpus_per_trial' must be a number >= 0"),
    (["--max-params", "0"], "'max_params' must be None or an int >= 1"),
    (["--epochs", "0"], "'epochs' must be an int >= 1"),
    (["--lr", "0"], "'lr' must be a positive number"),
    (["--batch-size", "0"], "'batch_size' must be an int >= 1"),
    (["--resume"], "holds no search to resume"),
]


@pytest.mark.parametrize("args,needle", BAD_SEARCHES, ids=[" ".join(a) for a, _ in BAD_SEARCHES])
def test_a_bad_setting_is_one_line_and_exit_2_before_ray_starts(args, needle, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *args]) == 2  # no_ray: Ray is never started
    one_error(capsys, needle)
    assert not (out / "evaluations.jsonl").exists()
    if "--resume" in args:
        assert not out.exists()  # a refused resume leaves no folder behind


def test_a_malformed_npy_file_is_named(tmp_path, capsys, no_ray):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x_train.npy").write_bytes(b"not an array")
    np.save(data / "y_train.npy", np.zeros(4, dtype=np.int64))
    assert main(["search", "--out", str(tmp_path / "run"), "--dataset", "npy", "--data-root", str(data)]) == 2
    one_error(capsys, str(data / "x_train.npy"))


@pytest.mark.parametrize("name,text,needle", [
    ("c.toml", "budget = [", "malformed"),
    ("c.yaml", "space: [unclosed", "malformed"),
    ("c.json", '{"budget": ', "malformed"),
    ("c.toml", "budget = 0", "'budget' must be an int >= 1"),
    ("c.toml", "[strategy_options]\npopulation_size = -1", "population_size must be an integer >= 1"),
    ("c.toml", "strategy_options = 3", "'strategy_options' must be dict"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, no_ray, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = one_error(capsys, needle)
    assert "malformed" not in needle or str(path) in err


def test_a_usage_error_of_argparse_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--budget", "many"])
    assert exit_.value.code == 2
    one_error(capsys, "argument --budget: invalid int value: 'many'")


def test_debug_shows_the_traceback_and_a_bug_is_not_hidden(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="'budget' must be an int >= 1"):
        main(["--debug", "search", "--budget", "0", "--out", str(tmp_path / "run")])

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(nas.search, "run_search", bug)
    with pytest.raises(ZeroDivisionError):  # not a user error: its traceback shows
        main(["search", "--out", str(tmp_path / "run")])


def test_the_process_prints_one_line_and_starts_no_ray(tmp_path):
    out = tmp_path / "run"
    for args, needle in ((["--space-option", "foo=1"], "no option(s) ['foo']"),):
        p = subprocess.run([sys.executable, "-m", "nas.cli", "search", "--out", str(out), *args],
                           capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
        assert not (out / "evaluations.jsonl").exists()  # refused before any trial (no wall-clock bound: CI is shared)
        assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
        assert p.stderr.startswith("nas: error: ") and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
        assert not re.search(r"\bray\b", p.stdout + p.stderr, re.IGNORECASE)
        assert not (out / "evaluations.jsonl").exists()


def test_help_lists_every_strategy_option_from_the_classes():
    sub = next(a for a in make_parser()._actions if a.dest == "command").choices["search"]
    text = sub.format_help()
    for name in STRATEGIES:
        cls = strategy_class(name)
        params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "space", "seed", "mode")]
        options = strategy_options(cls)
        assert [o[0] for o in options] == params
        for key, default, meaning in options:
            assert meaning, f"{name}.{key} has no line in {cls.__name__}.__init__'s docstring"
            assert f"{name}.{key} (default {json.dumps(default)}): {meaning.split()[0]}" in text
    assert "random: no options" in text and "darts:" in text and "partial_channels=1" in text
    assert "strategy's options" in make_parser().format_help()


# -- resume: a run folder written by the driver (the NAS-Bench-201 table, looked up in this process) ----------


def run_here(state, session="session"):
    """`nas.search.run_trials` without Ray: each proposal looked up in the table in this process, its
    result reported as a trial's would be (`SearchState.trial_finished`)."""
    look_up = state.evaluation.in_process()
    i = len(state.records)
    while state.next_config(f"here{i}") is not None:
        o = look_up(state.pending[f"here{i}"].proposal)
        state.trial_finished(f"here{i}", {**o.metrics, "status": o.status, "val_accuracy": o.value}, False)
        i += 1


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} is not here")
    out = tmp_path_factory.mktemp("table") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.search, "run_trials", run_here)
        assert main(["search", "--space", "nb201", "--table", str(TABLE), "--budget", "3", "--strategy", "random",
                     "--out", str(out)]) == 0
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == 3
    return out


@pytest.fixture
def run(table_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(table_run, copy, ignore=shutil.ignore_patterns("ray"))
    return copy


@pytest.mark.parametrize("args,needle", [
    (["--max-params", "1000"], "max_params: null on record, 1000 now"),
    (["--max-flops", "1000"], "max_flops: null on record, 1000 now"),
    (["--asha"], "asha: false on record, true now"),
    (["--epochs", "5"], "train.epochs: 3 on record, 5 now"),
    (["--seed", "2"], "seed: 0 on record, 2 now"),
    (["--strategy", "evolution"], 'strategy: "random" on record, "evolution" now'),
    (["--space-option", "C=8"], "space_options.C: <not set> on record, 8 now"),
    (["--budget", "2"], "budget 2 is below the 3 evaluations on record"),
])
def test_resume_refuses_what_changes_the_search(run, args, needle, capsys, no_ray):
    before = (run / "evaluations.jsonl").read_text()
    assert main(["search", "--out", str(run), "--resume", *args]) == 2
    one_error(capsys, needle)
    assert (run / "evaluations.jsonl").read_text() == before


def test_resume_may_change_how_trials_run_and_a_fresh_start_is_refused(run, capsys, no_ray):
    assert main(["search", "--out", str(run), "--resume", "--workers", "2", "--cpus-per-trial", "2",
                 "--gpus-per-trial", "0", "--address", "auto"]) == 0  # budget met: no trial, so no Ray
    assert "3 evaluations" in capsys.readouterr().out
    assert main(["search", "--out", str(run), "--space", "nb201", "--table", str(TABLE)]) == 2
    one_error(capsys, "already holds a search (3 evaluations); pass --resume")


def test_a_corrupted_config_json_is_named(run, capsys, no_ray):
    (run / "config.json").write_text('{"space": ')
    assert main(["search", "--out", str(run), "--resume"]) == 2
    one_error(capsys, f"{run / 'config.json'} is malformed")


def test_a_torn_last_line_is_repaired_silently(run, capsys, no_ray):
    journal = run / "evaluations.jsonl"
    good = journal.read_text()
    journal.write_text(good + '{"trial_id": "x", "assignm')
    assert main(["search", "--out", str(run), "--resume"]) == 0
    assert "dropped a torn last line" in capsys.readouterr().out
    assert journal.read_text() == good


def test_a_corrupted_journal_is_an_error_and_repair_moves_the_bad_lines_aside(run, capsys, no_ray):
    journal = run / "evaluations.jsonl"
    good = journal.read_text().splitlines()
    journal.write_text("\n".join([good[0], "garbage", '{"hello": 1}', *good[1:]]) + "\n")
    assert main(["search", "--out", str(run), "--resume"]) == 2
    err = one_error(capsys, f"{journal}: line 2 is not an evaluation record (not JSON")
    assert "--repair" in err
    journal.write_text("\n".join([*good, '{"hello": 1}', good[0]]) + "\n")  # the bad line is not last here
    assert main(["search", "--out", str(run), "--resume"]) == 2
    one_error(capsys, f"{journal}: line 4 is not an evaluation record (no trial_id, assignment, status)")

    journal.write_text("\n".join([good[0], "garbage", *good[1:], '{"hello": 1}', '{"trial_id": "t", "sta']) + "\n")
    assert main(["search", "--out", str(run), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "moved 3 line(s)" in out and "line 2: not JSON" in out and "line 5: no trial_id" in out
    assert journal.read_text().splitlines() == good
    rejected = [json.loads(line) for line in (run / "evaluations.rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 5, 6] and rejected[0]["text"] == "garbage"
    assert main(["search", "--out", str(run), "--repair"]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(["search", "--out", str(run), "--resume"]) == 0


def test_repair_needs_a_journal(tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path / "none"), "--repair"]) == 2
    one_error(capsys, "does not exist; there is no journal to repair")


def test_a_resume_after_repair_runs_the_rest_of_the_budget(run, capsys, monkeypatch):
    journal = run / "evaluations.jsonl"
    good = journal.read_text().splitlines()
    journal.write_text("\n".join([good[0], "garbage", *good[1:]]) + "\n")
    assert main(["search", "--out", str(run), "--repair"]) == 0
    monkeypatch.setattr(nas.search, "run_trials", run_here)
    assert main(["search", "--out", str(run), "--resume", "--budget", "5"]) == 0
    assert "resuming" in capsys.readouterr().out
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(rows) == 5 and [json.loads(g)["trial_id"] for g in good] == [r["trial_id"] for r in rows[:3]]
    assert all(r["status"] == "ok" for r in rows)
