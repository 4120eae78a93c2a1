"""Tabular mode on NAS-Bench-201: lookups give one validation seed (never the test accuracy) and charge
12/200 of the training time; `nas bench` runs and writes its files; a tabular search through real Ray, with
one objective and with two (val_accuracy and params: a Pareto front, exported with --pareto)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from nas.bench import BenchError, run_bench, run_one, strategy_options
from nas.cli import main
from nas.config import SearchConfig
from nas.registry import get_space
from nas.search import SearchError, run_search
from search_spaces.nb201 import nb201_assignment_from_string
from workers.tabular import (
    TableError,
    TabularEvaluator,
    evaluate_row,
    load_table,
    val_seed_index,
)

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO.parent / "shared/data/nb201/nb201.csv"
SPACE = get_space("nb201")

pytestmark = pytest.mark.skipif(not TABLE.is_file(), reason=f"the NAS-Bench-201 table is not at {TABLE}")


@pytest.fixture(scope="module")
def table():
    return load_table(TABLE)


def rewritten_table(path: Path, column: str, value) -> Path:
    """A copy of the table with `column` of every row replaced by value(row)."""
    with TABLE.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for r in rows:
        r[column] = value(r)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_lookup_gives_one_validation_seed_and_charges_12_of_200_epochs(table):
    rng = random.Random(0)
    for seed in range(20):
        a = SPACE.sample(rng)
        row = table.lookup(a)
        r = TabularEvaluator(table, seed)(a)
        assert r.index == row.index and r.arch_str == row.arch_str
        assert r.val_accuracy == row.val_seeds[r.val_seed] and r.val_accuracy != row.test_accuracy
        assert r.simulated_seconds == pytest.approx(row.train_seconds * 12 / 200, rel=1e-12)
        assert r.test_accuracy == row.test_accuracy
    # every seed of a row gets drawn; a search's draw is fixed by (search seed, architecture)
    row = table.rows[1]
    assert len(row.val_seeds) == 3
    assert {val_seed_index(s, row.index, 3) for s in range(60)} == {0, 1, 2}
    assert evaluate_row(row, 5) == evaluate_row(row, 5)


def test_the_search_never_reads_the_test_accuracy(tmp_path):
    """Scrambling the test column changes nothing a search does; changing the validation seeds does."""
    scrambled = rewritten_table(tmp_path / "scrambled.csv", "c10_test_200ep_mean",
                                lambda r: str(random.Random(r["index"]).uniform(10, 99)))
    shifted = rewritten_table(tmp_path / "shifted.csv", "c10valid_xvalid_200ep_seeds",
                              lambda r: ";".join(str(random.Random(r["index"]).uniform(10, 99))
                                                 for _ in r["c10valid_xvalid_200ep_seeds"].split(";")))

    def choices(path: Path, strategy: str) -> list:
        tab = load_table(path)
        opts = {"population_size": 5, "sample_size": 3} if strategy == "evolution" else {}
        runs = [run_one(SPACE, TabularEvaluator(tab, s).outcome, strategy, s, 3000, opts) for s in range(3)]
        return [(r.index, r.val) for r in runs]

    for strategy in ("random", "evolution"):
        assert choices(scrambled, strategy) == choices(TABLE, strategy)
    assert choices(shifted, "evolution") != choices(TABLE, "evolution")


def test_table_errors(tmp_path, table):
    with pytest.raises(TableError, match="does not exist"):
        load_table(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("index,arch_str\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    with pytest.raises(TableError, match="missing column"):
        load_table(bad)
    with pytest.raises(TableError, match="no row"):
        table.row("|none~0|")


def test_bench_runs_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--table", str(TABLE), "--strategies", "random,evolution,no_such_strategy",
                 "--seeds", "3", "--budget-seconds", "2000", "--population-size", "5", "--sample-size", "2",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipping strategy 'no_such_strategy'" in printed and "evolution - random" in printed
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "summary.txt", "test_vs_time.png"]
    assert (out / "test_vs_time.png").stat().st_size > 10_000
    report = json.loads((out / "results.json").read_text())
    assert report["optimum"]["test_accuracy"] == pytest.approx(94.3733, abs=1e-3)
    assert set(report["strategies"]) == {"random", "evolution"} and "no_such_strategy" in report["skipped"]
    evo = report["strategies"]["evolution"]
    assert evo["options"] == {"population_size": 5, "sample_size": 2} and evo["runs"] == 3
    tab = load_table(TABLE)
    for s in evo["per_seed"]:
        assert s["simulated_seconds"] <= 2000 and 5 <= s["n_evaluations"] <= 40
        row = tab.rows[s["best_index"]]
        assert s["best_test"] == row.test_accuracy and s["best_val"] in row.val_seeds
    assert (out / "summary.txt").read_text() in printed


def test_budget_is_simulated_time_and_runs_repeat(table):
    opts = {"population_size": 5, "sample_size": 2}
    a = run_one(SPACE, TabularEvaluator(table, 7).outcome, "evolution", 7, 4000, opts)
    b = run_one(SPACE, TabularEvaluator(table, 7).outcome, "evolution", 7, 4000, opts)
    assert (a.index, a.val, a.times) == (b.index, b.val, b.times)
    assert a.times[-1] <= 4000 and all(t2 > t1 for t1, t2 in zip(a.times, a.times[1:], strict=False))
    longer = run_one(SPACE, TabularEvaluator(table, 7).outcome, "evolution", 7, 8000, opts)
    assert longer.index[: a.n_evaluations] == a.index and longer.n_evaluations > a.n_evaluations


def test_strategy_options():
    opts = strategy_options(["random", "evolution"], ["evolution.removal=worst", "sample_size=3"], population_size=9)
    assert opts == {"random": {}, "evolution": {"population_size": 9, "sample_size": 3, "removal": "worst"}}
    with pytest.raises(BenchError, match="none of"):
        strategy_options(["random"], ["population_size=3"])
    with pytest.raises(BenchError, match="not one of the strategies"):
        strategy_options(["random"], ["evolution.population_size=3"])
    with pytest.raises(BenchError, match="space nb201"):
        run_bench(TABLE, ["random"], 1, 1000, space="resnet")


def test_tabular_search_settings_are_checked_before_ray_starts(tmp_path):
    with pytest.raises(SearchError, match="--space nb201"):
        run_search(SearchConfig(space="resnet", table=str(TABLE), out=str(tmp_path / "a")), log=lambda s: None)
    with pytest.raises(SearchError, match="does not exist"):
        run_search(SearchConfig(space="nb201", table=str(tmp_path / "no.csv"), out=str(tmp_path / "b")),
                   log=lambda s: None)


# -- through Ray -------------------------------------------------------------------------------------------



def test_tabular_search_through_ray(cluster, tmp_path, table):
    out = tmp_path / "run"
    cfg = SearchConfig(space="nb201", strategy="evolution", budget=10, seed=3, out=str(out), table=str(TABLE),
                       workers=2, strategy_options={"population_size": 4, "sample_size": 2})
    outcome = run_search(cfg, log=lambda s: None)
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        m = r["metrics"]
        row = table.row(m["arch_str"])
        assert nb201_assignment_from_string(m["arch_str"]) == r["assignment"] and m["nb201_index"] == row.index
        expected = evaluate_row(row, 3)  # the search's seed decides the validation draw
        assert r["value"] == m["val_accuracy"] == pytest.approx(expected.val_accuracy / 100)
        assert m["test_accuracy"] == pytest.approx(row.test_accuracy / 100)
        assert m["simulated_seconds"] == pytest.approx(row.train_seconds * 12 / 200)
        assert m["params"] == row.params and m["flops"] > 0
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == max(r["value"] for r in rows) == outcome.best["value"]
    assert json.loads((out / "config.json").read_text())["table"] == str(TABLE)


def test_search_flag_table_reaches_the_config(tmp_path, capsys):
    assert main(["search", "--space", "resnet", "--table", str(TABLE), "--out", str(tmp_path / "r")]) == 2
    assert "--space nb201" in capsys.readouterr().err


def test_a_multi_objective_search_through_ray_and_its_export(cluster, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = SearchConfig(space="nb201", strategy="evolution", budget=8, seed=2, out=str(out), table=str(TABLE),
                       workers=2, objectives=["val_accuracy:max", "params:min"], constraints=["flops<=1.5e8"],
                       strategy_options={"population_size": 4, "sample_size": 2})
    outcome = run_search(cfg, log=lambda s: None)
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["metrics"]["flops"] <= 1.5e8 for r in rows if r["status"] == "ok")
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["values"] == [r["metrics"]["val_accuracy"], r["metrics"]["params"]] for r in ok)
    saved = json.loads((out / "pareto.json").read_text())
    assert [e["trial_id"] for e in saved["front"]] == [r["trial_id"] for r in outcome.front]
    assert (out / "pareto.png").is_file() and (out / "pareto.md").is_file()
    assert main(["export", str(out), "--pareto", "1", "--format", "json", "--out", str(tmp_path / "p1.json"),
                 "--untrained"]) == 0
    assert saved["front"][0]["arch_id"] in capsys.readouterr().out
    with pytest.raises(SearchError, match="resource_penalty"):
        run_search(SearchConfig(space="nb201", strategy="darts", out=str(tmp_path / "d"),
                                objectives=["val_accuracy:max", "params:min"]), log=lambda s: None)
