"""Multi-objective search: objectives and constraints (parsing, checks before any trial), the Pareto helpers
(botorch's), NSGA-II selection in evolution, the driver's journal and Pareto files without Ray (and resume
keeping the front exact), the latency table, export --pareto and the multi-objective bench. A search
through real Ray is in test_tabular.py (sharing its cluster)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import nas
from nas import pareto_report
from nas.bench import run_bench
from nas.cli import main
from nas.config import ConfigError, SearchConfig
from nas.evaluation import DataInfo, Evaluation
from nas.export_source import ExportSourceError, from_run_folder
from nas.graph import ArchGraph
from nas.latency_table import LatencyTableError, load_latency_table
from nas.objectives import (
    Objective,
    ObjectiveError,
    parse_constraint,
    parse_constraints,
    parse_objective,
    parse_objectives,
    search_objectives,
)
from nas.pareto import crowding_distances, hypervolume, non_dominated, pareto_ranks
from nas.results import RunFolder
from nas.search import SearchState, restore_strategy
from nas.strategies import make_strategy

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO.parent / "shared/data/nb201/nb201.csv"
needs_table = pytest.mark.skipif(not TABLE.is_file(), reason=f"the NAS-Bench-201 table is not at {TABLE}")


# -- objectives and constraints ------------------------------------------------------------------------------


def test_objectives_and_constraints_parse():
    assert parse_objective("val_accuracy:max") == Objective("val_accuracy", "max")
    assert parse_objective("params") == Objective("params", "min")  # a known direction may be left out
    assert parse_objective("val_miou") == Objective("val_miou", "max")
    c = parse_constraint("flops<=3e8")
    assert (c.metric, c.op, c.bound) == ("flops", "<=", 3e8) and c.holds(3e8) and not c.holds(3.1e8)
    assert not parse_constraint("latency_ms < 10").holds(10) and parse_constraint("x>=1").holds(1)
    for bad, match in [("val_accuracy:up", "max or min"), ("weird_metric", "maximise or minimise"),
                       ("", "METRIC:max")]:
        with pytest.raises(ObjectiveError, match=match):
            parse_objective(bad)
    with pytest.raises(ObjectiveError, match="given twice"):
        parse_objectives(["params:min", "params:max"])
    for bad in ["flops=3e8", "flops<=many", "<=3"]:
        with pytest.raises(ObjectiveError, match="constraint"):
            parse_constraint(bad)
    with pytest.raises(ObjectiveError, match="contradict"):
        parse_constraints(["flops<=1e8", "flops>=2e8"])
    with pytest.raises(ObjectiveError, match="contradict"):
        parse_constraints(["params<5", "params>=5"])
    parse_constraints(["params<=5", "params>=5"])  # exactly 5 meets both


def test_bad_settings_are_errors_before_any_trial(tmp_path):
    def cfg(**kw):
        return SearchConfig(space="resnet", out=str(tmp_path / "r"), **kw)

    with pytest.raises(ConfigError, match="contradict"):
        cfg(max_params=1000, constraints=["params>=2000"]).check()
    with pytest.raises(ConfigError, match="list of strings"):
        cfg(objectives="val_accuracy:max").check()

    class Reports(Evaluation):
        kind = "demo"

        def reported_metrics(self):
            return {"val_accuracy", "val_loss"}

    ev = Reports(cfg())
    with pytest.raises(ObjectiveError, match="does not report 'val_miou'.*val_accuracy"):
        search_objectives(cfg(objectives=["val_miou:max"]), ev)
    with pytest.raises(ObjectiveError, match="latency-table"):
        search_objectives(cfg(objectives=["val_accuracy:max", "latency_ms:min"]), ev)
    with pytest.raises(ObjectiveError, match="test split"):
        search_objectives(cfg(objectives=["test_accuracy:max", "params:min"]), ev)
    with pytest.raises(ObjectiveError, match="two or more objectives"):
        search_objectives(cfg(reference_point={"val_accuracy": 0.0}), ev)
    objs, rules = search_objectives(cfg(objectives=["val_accuracy:max", "params:min"], constraints=["flops<=3e8"]), ev)
    assert [o.spec() for o in objs] == ["val_accuracy:max", "params:min"] and rules[0].metric == "flops"
    assert search_objectives(cfg(), ev)[0] == [Objective("val_accuracy", "max")]  # the evaluation's default


def test_the_cli_names_a_bad_objective_before_ray_starts(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["search", "--space", "resnet", "--objective", "val_accuracy:max", "--objective", "val_miou:max",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nas: error:" in err and "does not report 'val_miou'" in err and not out.exists()
    assert main(["search", "--space", "resnet", "--constraint", "flops<=1e6", "--constraint", "flops>2e6",
                 "--out", str(out)]) == 2
    assert "contradict" in capsys.readouterr().err


# -- Pareto helpers (botorch underneath) ----------------------------------------------------------------------


def test_pareto_helpers_on_a_hand_computed_example():
    pts = [[3.0, 1.0], [2.0, 2.0], [1.0, 3.0], [1.0, 1.0], [2.0, 2.0], [0.5, 0.5]]
    assert non_dominated(pts) == [True, True, True, False, True, False]  # equal points are all kept
    assert pareto_ranks(pts) == [0, 0, 0, 1, 0, 2]
    crowd = crowding_distances(pts, pareto_ranks(pts))
    assert crowd[0] == crowd[2] == math.inf and crowd[1] == pytest.approx(crowd[4]) and 0 < crowd[1] < math.inf
    # the union of [0,3]x[0,1], [0,2]x[0,2] and [0,1]x[0,3]: 3 + 4 + 3 - 2 - 1 - 2 + 1 = 6
    assert hypervolume(pts, [0.0, 0.0]) == pytest.approx(6.0)
    assert hypervolume(pts, [1.0, 1.0]) == pytest.approx(1.0)  # only (2, 2) is strictly beyond (1, 1)
    assert hypervolume([[0.0, 5.0]], [0.0, 0.0]) == 0.0  # not strictly better than the reference


def test_evolution_tournament_prefers_the_front_then_the_less_crowded():
    space = nas.space.as_space([nas.Ordinal("x", tuple(range(10)))])
    s = make_strategy("evolution", space, seed=0, mode=["max", "max"], population_size=4, sample_size=4)
    for x, v in [(0, [1.0, 1.0]), (1, [3.0, 1.0]), (2, [2.0, 2.0]), (3, [1.0, 3.0])]:
        s.tell({"x": x}, v)
    assert s._unfitness()[0][0] == 1 and all(u[0] == 0 for u in s._unfitness()[1:])
    sample, winner = s.tournament()
    assert winner in (1, 3)  # the whole population is drawn: an extreme of the front (infinite crowding) wins
    s.tell({"x": 4}, [0.5, 0.5])  # aging: the oldest leaves, whatever its rank
    assert [p["assignment"]["x"] for p in s.population] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="2 values"):
        s.tell({"x": 5}, [1.0])
    with pytest.raises(TypeError, match="2 values"):
        s.tell({"x": 5}, 1.0)


# -- the driver without Ray: journal, Pareto files, resume ---------------------------------------------------------


def width_space() -> nas.SearchSpace:
    def build(a, *, num_classes, input_shape):
        g = ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=a["kernel"])
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("widths", [nas.Ordinal("width", (2, 4, 8, 16, 32)), nas.Ordinal("kernel", (1, 3, 5))],
                           build)


class DigitsShaped(Evaluation):
    kind = "demo"

    def data_info(self) -> DataInfo:
        return DataInfo((1, 8, 8), 10)


def accuracy(a: dict) -> float:
    """Wider and larger kernels are better, with diminishing returns: a real trade-off against params."""
    return 1 - 1 / (1 + 0.05 * a["width"] * a["kernel"])


def state_of(tmp_path, budget: int, **kw) -> SearchState:
    cfg = SearchConfig(space="widths", strategy="evolution", budget=budget, out=str(tmp_path), seed=1,
                       objectives=["val_accuracy:max", "params:min"],
                       strategy_options={"population_size": 4, "sample_size": 2}, **kw)
    space = width_space()
    strategy = make_strategy("evolution", space, seed=1, mode=["max", "min"], population_size=4, sample_size=2)
    folder = RunFolder(tmp_path)
    state = SearchState(cfg, space, strategy, folder, DigitsShaped(cfg), log=lambda s: None)
    restore_strategy(strategy, folder, state.records)
    return state


def drive(state: SearchState) -> None:
    i = len(state.records)
    while (c := state.next_config(f"t{i}")) is not None:
        state.trial_finished(f"t{i}", {"val_accuracy": accuracy(c["assignment"]), "status": "ok"}, error=False)
        i += 1


def test_a_multi_objective_journal_front_and_resume(tmp_path):
    state = state_of(tmp_path, budget=8, constraints=["params<=300"])
    drive(state)
    recs = state.records
    assert len(recs) == 8 and state.n_rejected > 0  # wide, large-kernel nets break params<=300 unevaluated
    for r in recs:
        if r["status"] == "ok":
            assert r["values"] == [r["metrics"]["val_accuracy"], r["metrics"]["params"]]
            assert r["value"] == r["values"][0]
            assert r["metrics"]["params"] <= 300
    assert all(isinstance(p["value"], list) for p in state.strategy.population)  # told vectors
    objectives = state.objectives
    front_before = [r["trial_id"] for r in pareto_report.front(recs, objectives)]
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert [e["trial_id"] for e in saved["front"]] == front_before and saved["objectives"] == [
        "val_accuracy:max", "params:min"]
    values = [r["values"] for r in pareto_report.evaluated(recs, 2)]
    for e in saved["front"]:  # no evaluated point dominates a point of the front
        v = [e["values"]["val_accuracy"], e["values"]["params"]]
        assert not any(w[0] >= v[0] and w[1] <= v[1] and w != v for w in values)

    resumed = state_of(tmp_path, budget=14, constraints=["params<=300"])  # a new driver on the same folder
    assert [p["value"] for p in resumed.strategy.population] == [p["value"] for p in state.strategy.population]
    assert [r["trial_id"] for r in pareto_report.front(resumed.records, objectives)] == front_before
    drive(resumed)
    assert len(resumed.records) == 14
    fresh = RunFolder(tmp_path).records()
    assert [r["trial_id"] for r in pareto_report.front(fresh, objectives)] == [
        e["trial_id"] for e in json.loads((tmp_path / "pareto.json").read_text())["front"]]
    assert pareto_report.plot(tmp_path, fresh, objectives).stat().st_size > 10_000


def test_a_metric_constraint_after_evaluation_makes_the_record_infeasible(tmp_path):
    state = state_of(tmp_path, budget=4, constraints=["val_accuracy>=0.5"])
    drive(state)
    for r in state.records:
        if r["metrics"].get("val_accuracy", 1) < 0.5:
            assert r["status"] == "failed" and r["error"].startswith("infeasible") and r["violates"]
    assert all(r["metrics"]["val_accuracy"] >= 0.5 for r in pareto_report.front(state.records, state.objectives))


# -- the latency table ---------------------------------------------------------------------------------------------


def test_latency_table_by_assignment_and_arch_id(tmp_path):
    space = width_space()
    arch = nas.arch_id(space.graph({"width": 4, "kernel": 3}, num_classes=10, input_shape=(1, 8, 8)))
    path = tmp_path / "lat.csv"
    path.write_text("# phone X, batch 1, median of 50\nwidth,kernel,arch_id,latency_ms\n2,1,,0.5\n"
                    f",,{arch},1.25\n")
    table = load_latency_table(path, space)
    assert table.lookup(None, {"width": 2, "kernel": 1}) == 0.5
    assert table.lookup(arch, {"width": 4, "kernel": 3}) == 1.25
    assert table.lookup("nope", {"width": 8, "kernel": 5}) is None
    for text, match in [("width,kernel\n2,1\n", "no 'latency_ms' column"), ("width,latency_ms\n2,1\n", "lack"),
                        ("width,kernel,latency_ms\n2,1,fast\n", "not a number"), ("depth,latency_ms\n1,1\n",
                                                                                  "neither arch_id"),
                        ("width,kernel,latency_ms\n7,1,1\n", "7")]:
        path.write_text(text)
        with pytest.raises(LatencyTableError, match=match):
            load_latency_table(path, space)


def test_latency_from_a_table_is_an_objective_and_a_constraint_known_before_evaluation(tmp_path):
    lat = tmp_path / "lat.csv"
    lat.write_text("width,kernel,latency_ms\n" + "".join(f"{w},{k},{w * k / 10}\n" for w in (2, 4, 8, 16) for k in
                                                          (1, 3, 5)))  # no width 32: those are rejected
    cfg = SearchConfig(space="widths", strategy="random", budget=6, out=str(tmp_path / "r"), seed=0,
                       objectives=["val_accuracy:max", "latency_ms:min"], constraints=["latency_ms<=4"],
                       latency_table=str(lat))
    space = width_space()
    strategy = make_strategy("random", space, seed=0, mode=["max", "min"])
    state = SearchState(cfg, space, strategy, RunFolder(cfg.out), DigitsShaped(cfg), log=lambda s: None)
    drive(state)
    assert state.n_rejected > 0
    for r in state.records:
        a = r["assignment"]
        assert a["width"] != 32 and a["width"] * a["kernel"] / 10 <= 4
        assert r["values"][1] == r["metrics"]["latency_ms"] == pytest.approx(a["width"] * a["kernel"] / 10)


# -- export --pareto ---------------------------------------------------------------------------------------------


def test_export_pareto_k_and_its_errors(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text(json.dumps(SearchConfig(space="resnet", out=str(single)).to_dict()))
    (single / "evaluations.jsonl").write_text(json.dumps({"trial_id": "t0", "assignment": {}, "status": "ok",
                                                          "value": 0.5}) + "\n")
    with pytest.raises(ExportSourceError, match="one objective .*no Pareto front"):
        from_run_folder(single, pareto=1)

    multi = tmp_path / "multi"
    state = state_of(multi, budget=6)
    drive(state)
    (multi / "config.json").write_text(json.dumps(state.cfg.to_dict()))
    front = pareto_report.front(state.records, state.objectives)
    last = len(front)
    with pytest.raises(ExportSourceError, match=f"1..{last}"):
        from_run_folder(multi, pareto=last + 1)
    out = tmp_path / "net.json"
    assert main(["export", str(multi), "--rank", "1", "--pareto", "1", "--format", "json", "--out", str(out)]) == 2
    assert not out.exists()  # --pareto once overrode --rank silently


# -- the bench and Ray, on the NAS-Bench-201 table -----------------------------------------------------------------


@needs_table
def test_multi_objective_bench_reports_hypervolume_on_test(tmp_path):
    report = run_bench(TABLE, ["random", "evolution", "optuna-nsga2"], 2, 2500,
                       {"evolution": {"population_size": 5, "sample_size": 2}}, out=tmp_path,
                       objectives=["val_accuracy:max", "params:min"], log=lambda s: None)
    assert report["points"]["reference"] == {"val_accuracy": 10.0, "params": 1.6e6}
    for name, s in report["strategies"].items():
        assert s["runs"] == 2 and 0 < s["hv_test"]["mean"] < 1, name
        for p in s["per_seed"]:
            assert p["front_size"] >= 1 and p["simulated_seconds"] <= 2500
    assert "goal (graphnas's best at or above every peer's mean hypervolume)" in report["summary"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto_vs_time.png", "results.json", "summary.txt"]


@pytest.mark.filterwarnings("ignore")  # combo may warn about repeats on this small space
def test_combo_ehvi_repeats_with_its_seed_and_restores_mid_run_with_pending_asks():
    space = nas.space.as_space([nas.Categorical(f"x{i}", tuple("abcd")) for i in range(4)])

    def values(a):
        k = ["abcd".index(a[f"x{i}"]) for i in range(4)]
        return [sum(k) + 0.1 * math.sin(k[0]), sum((3 - v) ** 2 for v in k) + 0.1 * k[1]]

    def make(seed):
        return make_strategy("combo", space, seed=seed, mode=["max", "min"], n_initial=4, fit="map", n_spray=100,
                             n_starts=3, mo_acquisition="ehvi")

    def run(s, n):
        out = []
        for _ in range(n):
            a = s.ask()
            out.append(a)
            s.tell(a, values(a))
        return out

    first = run(make(1), 6)
    assert run(make(1), 6) == first
    s = make(1)
    run(s, 5)
    pending = [s.ask(), s.ask()]
    assert len({json.dumps(p, sort_keys=True) for p in pending}) == 2  # the fantasy spreads a batch
    copy = make(99)
    copy.load_state_dict(json.loads(json.dumps(s.state_dict())))
    for p in pending:
        s.tell(p, values(p))
        copy.tell(p, values(p))
    assert run(copy, 2) == run(s, 2)
    with pytest.raises(ValueError, match="mo_acquisition"):
        make_strategy("combo", space, mode=["max", "min"], mo_acquisition="qnehvi")
