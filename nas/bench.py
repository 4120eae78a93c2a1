"""`nas bench`: search strategies on the NAS-Bench-201 table, many seeds each, in this process.

Each (strategy, seed) run is the search loop (`nas.loop`) executed in this process, evaluated by the
``table`` kind of evaluation (`nas.evaluation`; `workers.tabular`), without Ray or training: the strategy
is told one seed's 200-epoch CIFAR-10 validation accuracy (in percent), and every evaluation charges its
simulated time, 12/200 of its 200-epoch training time (the benchmark's 12-epoch protocol). A run stops at
the first evaluation that would overrun the budget of simulated seconds; that one is not counted and its
result is not told, so every counted evaluation finished within the budget. The evaluator's validation
draws are seeded by the run's seed, so all strategies of one seed see the same draw for the same
architecture.

Reported per strategy, over seeds: the CIFAR-10 test accuracy of the architecture the run would return,
its best by validation accuracy (the first of equals), as mean ± sample standard deviation and standard
error, and the number of evaluations; a difference between two strategies is given with the standard
error of the difference, sqrt(se_a^2 + se_b^2). The test accuracy is read only for this report.

Files under ``--out``: ``summary.txt`` (what is printed), ``results.json`` (settings, per-seed results,
the curves) and ``test_vs_time.png``: the test accuracy of the best-so-far-by-validation architecture
against simulated time, mean over seeds with a ±1 standard deviation band, with the table's optimum and
the published figures of the NAS-Bench-201 paper (random search, REINFORCE; they searched on the
12-epoch validation accuracy, a noisier signal than this table's 200-epoch one).
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.bench_optuna import PEERS
from nas.loop import AskTellLoop, Outcome, Proposal, run_in_process
from nas.objectives import Objective
from nas.registry import get_space
from nas.space import SearchSpace
from nas.strategies import make_strategy, strategy_class

# NAS-Bench-201 paper (Dong & Yang, ICLR 2020), CIFAR-10 test accuracy, 12,000 s budget: mean, std
PUBLISHED = {"random search": (93.70, 0.36), "REINFORCE": (93.85, 0.37)}

# Bench defaults, chosen on tuning seeds (1000..), never on the reported ones, by the validation accuracy of
# the returned architecture; flags override them:
# - regularized evolution sized for ~100 evaluations (its own defaults, P=100 and S=25, make it random
#   search at this budget): P=15, S=10 (seeds 1000..1499, results/nb201_bench/tuning.txt);
# - COMBO with its scores Yeo-Johnson-warped before the GP (its own n_initial=20), the best of n_initial
#   5/10/15/20, exhaustive EI, EI from the posterior mean, MAP and the warp with n_initial 10/20 (seeds
#   1000..1029, results/nb201_bench/combo_tuning.txt).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"evolution": {"population_size": 15, "sample_size": 10},
                                              "combo": {"warp": "yeo-johnson"}}

CURVE_POINTS = 241


class BenchError(ValueError):
    """Bad bench settings; the message names the flag or option at fault."""


@dataclass
class Run:
    """One strategy's run on one seed: every counted evaluation in order (accuracies in percent)."""

    strategy: str
    seed: int
    times: list[float] = field(default_factory=list)  # simulated seconds spent after each evaluation
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    index: list[int] = field(default_factory=list)  # the table's architecture index
    wall_seconds: float = 0.0
    # several objectives: each evaluation's objective vector as the strategy was told it (the search signal)
    # and the same vector with the test accuracy in place of the validation accuracy (reported only)
    signal: list[list[float]] = field(default_factory=list)
    on_test: list[list[float]] = field(default_factory=list)

    @property
    def n_evaluations(self) -> int:
        return len(self.val)

    @property
    def best(self) -> int:
        """Position of the best evaluation by validation accuracy (the first of equals)."""
        return max(range(len(self.val)), key=lambda i: (self.val[i], -i))

    def result(self) -> dict[str, Any]:
        b = self.best
        return {"seed": self.seed, "n_evaluations": self.n_evaluations, "best_index": self.index[b],
                "best_val": self.val[b], "best_test": self.test[b], "found_at_s": round(self.times[b], 3),
                "simulated_seconds": round(self.times[-1], 3), "wall_seconds": round(self.wall_seconds, 4)}

    def best_so_far_test(self, grid: Sequence[float]) -> list[float]:
        """Test accuracy of the best-by-validation evaluation finished by each time in `grid` (NaN before
        the first)."""
        out, i, best = [], 0, None
        for t in grid:
            while i < len(self.times) and self.times[i] <= t:
                if best is None or self.val[i] > self.val[best]:
                    best = i
                i += 1
            out.append(math.nan if best is None else self.test[best])
        return out


def run_one(space: SearchSpace, evaluate: Callable[[Proposal], Outcome], strategy: str, seed: int,
            budget_seconds: float, options: Mapping[str, Any], objectives: Sequence[Objective] | None = None,
            metric: Callable[[Any, str, bool], float] | None = None) -> Run:
    """Ask, look up, tell until the simulated budget is spent (see the module docstring): the search
    loop executed in this process. `evaluate` is the table evaluation's in-process lookup (e.g.
    ``TabularEvaluator(table, seed).outcome``); the strategy is told the table's validation accuracy in
    percent, the benchmark's own scale. With several `objectives` it is told their vector instead,
    ``metric(result, name, on_test)`` giving each value (`table_metric`)."""
    run, spent, start = Run(strategy, seed), [0.0], time.perf_counter()
    multi = objectives is not None and len(objectives) > 1
    metric = metric or table_metric

    def look_up(p: Proposal) -> Outcome:
        o = evaluate(p)
        if not o.ok:  # every cell of the space has a row: a failed lookup means a wrong table
            raise BenchError(f"nas bench: {o.error}")
        r = o.extra["result"]
        if multi:
            o.value = [metric(r, obj.metric, False) for obj in objectives]
            o.extra["on_test"] = [metric(r, obj.metric, True) for obj in objectives]
        else:
            o.value = r.val_accuracy
        return o

    def past_budget(p: Proposal, o: Outcome) -> bool:
        return spent[0] + o.extra["result"].simulated_seconds > budget_seconds

    class Record:
        def record(self, p: Proposal, o: Outcome) -> None:
            r = o.extra["result"]
            spent[0] += r.simulated_seconds
            run.times.append(spent[0])
            run.val.append(r.val_accuracy)
            run.test.append(r.test_accuracy)
            run.index.append(r.index)
            if multi:
                run.signal.append(list(o.value))
                run.on_test.append(o.extra["on_test"])

        def told(self, p: Proposal, o: Outcome) -> None:
            pass

    modes = "max" if not multi else [obj.mode for obj in objectives]
    if strategy in PEERS:
        from nas.bench_optuna import make_peer

        strat = make_peer(strategy, space, seed, modes)
    else:
        strat = make_strategy(strategy, space, seed=seed, mode=modes, **options)
    run_in_process(AskTellLoop(strat, journal=Record()), look_up, stop=past_budget)
    run.wall_seconds = time.perf_counter() - start
    return run


# -- options ---------------------------------------------------------------------------------------------


def table_metric(result: Any, name: str, on_test: bool = False) -> float:
    """An objective's value for a looked-up evaluation (`workers.tabular.TabularResult`), on the bench's
    scale: ``val_accuracy`` in percent (``on_test``: the test accuracy in its place, reported only),
    ``params`` from the table, ``flops`` counted on the cell's network (`cell_flops`)."""
    if name == "val_accuracy":
        return result.test_accuracy if on_test else result.val_accuracy
    if name == "params":
        return float(result.params)
    if name == "flops":
        return float(cell_flops(result.arch_str))
    raise BenchError(f"nas bench: the table gives no metric {name!r}; objectives can read {list(BENCH_METRICS)}")


BENCH_METRICS = ("val_accuracy", "params", "flops")
_FLOPS: dict[str, int] = {}


def cell_flops(arch_str: str) -> int:
    """Multiply-accumulates per sample of the NAS-Bench-201 network of a cell (the project's count,
    `nas.builder.count_flops`, on a 3x32x32 input, 10 classes), cached per process."""
    if arch_str not in _FLOPS:
        from nas.builder import count_flops
        from search_spaces.nb201 import nb201_assignment_from_string

        graph = get_space("nb201").graph(nb201_assignment_from_string(arch_str), num_classes=10,
                                         input_shape=(3, 32, 32))
        _FLOPS[arch_str] = count_flops(graph)
    return _FLOPS[arch_str]


def _accepted(name: str) -> set[str] | None:
    if name in PEERS:
        import importlib.util

        return set() if importlib.util.find_spec("optuna") is not None else None
    try:
        cls = strategy_class(name)
    except (ValueError, ImportError, AttributeError):
        return None
    return set(inspect.signature(cls.__init__).parameters) - {"self", "space", "seed", "mode"}


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def strategy_options(strategies: Sequence[str], items: Iterable[str] = (), population_size: int | None = None,
                     sample_size: int | None = None, defaults: Mapping[str, Mapping[str, Any]] | None = None,
                     ) -> dict[str, dict[str, Any]]:
    """Options per strategy: `defaults` (DEFAULT_OPTIONS), then ``--strategy-option`` items
    (``strategy.key=value`` for one strategy, ``key=value`` for every listed strategy that takes it), then
    ``--population-size`` / ``--sample-size`` (evolution's)."""
    defaults = DEFAULT_OPTIONS if defaults is None else defaults
    out = {s: dict(defaults.get(s, {})) for s in strategies}
    for item in items:
        if "=" not in item:
            raise BenchError(f"--strategy-option takes [STRATEGY.]KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        prefix, dot, rest = key.partition(".")
        if dot and prefix in out:
            out[prefix][rest] = _literal(value)
            continue
        if dot:
            raise BenchError(f"--strategy-option {item!r}: {prefix!r} is not one of the strategies run "
                             f"{list(strategies)}")
        takers = [s for s in strategies if key in (_accepted(s) or ())]
        if not takers:
            raise BenchError(f"--strategy-option {item!r}: none of {list(strategies)} takes option {key!r}")
        for s in takers:
            out[s][key] = _literal(value)
    for key, value in (("population_size", population_size), ("sample_size", sample_size)):
        if value is not None:
            if "evolution" not in out:
                raise BenchError(f"--{key.replace('_', '-')} is an option of evolution, which is not run")
            out["evolution"][key] = value
    return out


# -- the bench ---------------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float]:
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    return {"mean": mean, "std": std, "se": std / math.sqrt(n) if n else math.nan}


def _curve(runs: Sequence[Run], grid: Sequence[float]) -> dict[str, list]:
    per_run = [r.best_so_far_test(grid) for r in runs]
    mean, std = [], []
    for k in range(len(grid)):
        vals = [c[k] for c in per_run]
        if any(math.isnan(v) for v in vals):  # a run has no evaluation yet: no mean over all runs
            mean.append(None)
            std.append(None)
        else:
            s = _stats(vals)
            mean.append(round(s["mean"], 4))
            std.append(round(s["std"], 4))
    return {"mean": mean, "std": std}


def run_bench(table: str | Path, strategies: Sequence[str], seeds: int, budget_seconds: float,
              options: Mapping[str, Mapping[str, Any]] | None = None, first_seed: int = 0,
              space: str = "nb201", out: str | Path | None = None,
              log: Callable[[str], None] = print, objectives: Sequence[str] = (),
              reference: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Run every strategy on seeds first_seed .. first_seed + seeds - 1; write the files to `out` (if
    given) and return what results.json holds. A strategy that is not registered (or cannot be imported)
    is skipped with a message. Two or more `objectives` (``val_accuracy:max``, ``params:min``,
    ``flops:min``) make it a multi-objective bench (`nas.bench_multi`; `reference` overrides its
    reference point); none or one, the single-objective one on the validation accuracy."""
    from nas.config import SearchConfig
    from nas.evaluation import EvaluationError, get_evaluation
    from nas.objectives import ObjectiveError, parse_objectives

    if seeds < 1:
        raise BenchError(f"--seeds must be >= 1, got {seeds}")
    if not budget_seconds > 0:
        raise BenchError(f"--budget-seconds must be > 0, got {budget_seconds}")
    try:
        objs = parse_objectives(objectives)
    except ObjectiveError as e:
        raise BenchError(f"--objective: {e}") from None
    for o in objs:
        if o.metric not in BENCH_METRICS:
            raise BenchError(f"--objective {o.spec()}: the table gives no metric {o.metric!r}; objectives can read "
                             f"{', '.join(BENCH_METRICS)}")
    if len(objs) == 1 and objs[0].spec() != "val_accuracy:max":
        raise BenchError(f"--objective {objs[0].spec()}: the single-objective bench searches val_accuracy:max; "
                         "give two or more objectives for a multi-objective bench")
    if reference and len(objs) < 2:
        raise BenchError("--reference is the hypervolume's reference point: it needs two or more --objective")
    multi = len(objs) > 1
    the_space = get_space(space)

    def evaluation(seed: int):
        return get_evaluation(SearchConfig(space=space, table=str(table), seed=seed), "table")

    try:
        evaluation(first_seed).check()
    except EvaluationError as e:
        raise BenchError(f"nas bench: {e}") from None
    tab = evaluation(first_seed).table()
    options = {s: dict((options or {}).get(s, {})) for s in strategies}
    optimum = tab.best(lambda r: r.test_accuracy)
    grid = [budget_seconds * k / (CURVE_POINTS - 1) for k in range(CURVE_POINTS)]
    seed_list = list(range(first_seed, first_seed + seeds))
    report: dict[str, Any] = {
        "benchmark": "NAS-Bench-201, CIFAR-10 (tabular)", "table": str(table), "table_rows": len(tab),
        "budget_seconds": budget_seconds, "seeds": seed_list,
        "protocol": "signal: one seed's 200-epoch CIFAR-10 validation accuracy; cost: 12/200 of the 200-epoch "
                    "training time; reported: CIFAR-10 test accuracy of the best-by-validation architecture",
        "optimum": {"test_accuracy": optimum.test_accuracy, "index": optimum.index, "arch_str": optimum.arch_str},
        "published": {k: {"mean": m, "std": s} for k, (m, s) in PUBLISHED.items()},
        "platform": f"python {platform.python_version()}, {platform.machine()}",
        "strategies": {}, "skipped": {}, "curve_grid_s": grid,
    }
    if multi:
        from nas import bench_multi

        try:
            points = bench_multi.reference_of(objs, reference)
        except ValueError as e:
            raise BenchError(f"--reference: {e}") from None
        grid = bench_multi.curve_grid(budget_seconds)
        report.update(objectives=[o.spec() for o in objs], points=points, curve_grid_s=grid,
                      protocol=report["protocol"].replace("the best-by-validation architecture",
                                                          "the front's architectures"))
    for name in strategies:
        if _accepted(name) is None:
            try:
                if name in PEERS:
                    raise ImportError("optuna is not installed; it is a benchmark-only extra: pip install -e "
                                      "\".[bench]\"")
                strategy_class(name)
                why = "it cannot be loaded"
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
            log(f"skipping strategy {name!r}: it is not registered in this tree or does not load ({why})")
            report["skipped"][name] = why
            continue
        runs, start = [], time.perf_counter()
        for seed in seed_list:
            runs.append(run_one(the_space, evaluation(seed).in_process(), name, seed, budget_seconds, options[name],
                                objs if multi else None))
        wall = time.perf_counter() - start
        if multi:
            entry = bench_multi.strategy_entry(runs, objs, points, options[name], wall, _stats, grid)
            report["strategies"][name] = entry
            h = entry["hv_test"]
            log(f"{name}: {len(runs)} runs in {wall:.1f} s wall: hypervolume on test {h['mean']:.4f} ± {h['std']:.4f}")
            continue
        per_seed = [r.result() for r in runs]
        test = _stats([p["best_test"] for p in per_seed])
        report["strategies"][name] = {
            "options": options[name], "runs": len(runs),
            "test_accuracy": test, "val_accuracy": _stats([p["best_val"] for p in per_seed]),
            "evaluations": _stats([p["n_evaluations"] for p in per_seed]),
            "evaluations_range": [min(p["n_evaluations"] for p in per_seed),
                                  max(p["n_evaluations"] for p in per_seed)],
            "found_optimum": sum(p["best_index"] == optimum.index for p in per_seed),
            "wall_seconds": round(wall, 2), "per_seed": per_seed, "curve": _curve(runs, grid),
        }
        log(f"{name}: {len(runs)} runs in {wall:.1f} s wall: test {test['mean']:.2f} ± {test['std']:.2f}")
    report["summary"] = bench_multi.summary_text(report) if multi else summary_text(report)
    if out is not None:
        write_files(report, out)
    return report


def _options_text(opts: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"


def summary_text(report: Mapping[str, Any]) -> str:
    seeds = report["seeds"]
    lines = [
        f"{report['benchmark']}: {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), budget {report['budget_seconds']:g} "
        f"simulated seconds per run",
        f"table: {report['table']} ({report['table_rows']} architectures)",
        f"protocol: {report['protocol']}",
        "",
        f"{'strategy':<10} {'options':<34} {'runs':>4} {'evaluations':>14}  {'test accuracy of best-by-val':>30}"
        f"  {'optimum found':>13}",
    ]
    for name, s in report["strategies"].items():
        t, e = s["test_accuracy"], s["evaluations"]
        lines.append(f"{name:<10} {_options_text(s['options']):<34} {s['runs']:>4} {e['mean']:>7.1f} "
                     f"({s['evaluations_range'][0]}-{s['evaluations_range'][1]})  "
                     f"{t['mean']:>12.2f} ± {t['std']:.2f} (se {t['se']:.3f})  {s['found_optimum']:>8}/{s['runs']}")
    for name, why in report["skipped"].items():
        lines.append(f"{name:<10} skipped: {why}")
    names = list(report["strategies"])
    if "random" in names:
        r = report["strategies"]["random"]["test_accuracy"]
        for name in names:
            if name == "random":
                continue
            t = report["strategies"][name]["test_accuracy"]
            diff, se = t["mean"] - r["mean"], math.hypot(t["se"], r["se"])
            lines.append(f"{name} - random: {diff:+.3f} (se of the difference {se:.3f}, "
                         f"{diff / se if se else math.inf:+.1f} se)")
    pub = ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in report["published"].items())
    lines += ["", f"optimum (the table's best CIFAR-10 test accuracy): {report['optimum']['test_accuracy']:.2f} "
                  f"(index {report['optimum']['index']})",
              f"published (NAS-Bench-201 paper, searched on the 12-epoch validation accuracy): {pub}",
              f"{report['platform']}"]
    return "\n".join(lines) + "\n"


def write_files(report: Mapping[str, Any], out: str | Path) -> list[Path]:
    from nas.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(out / "summary.txt", report["summary"]),
             atomic_write_json(out / "results.json", {k: v for k, v in report.items() if k != "summary"})]
    if "objectives" in report:
        from nas import bench_multi

        files.append(bench_multi.plot(report, out / "pareto_vs_time.png"))
    else:
        files.append(plot(report, out / "test_vs_time.png"))
    return files


def plot(report: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = report["curve_grid_s"]
    fig, ax = plt.subplots(figsize=(8, 5))
    lows = []
    for name, s in report["strategies"].items():
        pts = [(t, m, sd) for t, m, sd in zip(grid, s["curve"]["mean"], s["curve"]["std"], strict=True)
               if m is not None]
        if not pts:
            continue
        ts, ms, sds = zip(*pts, strict=True)
        t_ = s["test_accuracy"]
        line, = ax.plot(ts, ms, label=f"{name} ({t_['mean']:.2f} ± {t_['std']:.2f}, {s['runs']} seeds)")
        ax.fill_between(ts, [m - d for m, d in zip(ms, sds, strict=True)],
                        [m + d for m, d in zip(ms, sds, strict=True)], color=line.get_color(), alpha=0.15)
        k = min(len(ms) - 1, len(ms) // 8)
        lows.append(ms[k] - sds[k])
    opt = report["optimum"]["test_accuracy"]
    ax.axhline(opt, color="black", lw=1, label=f"optimum {opt:.2f}")
    for (name, v), style in zip(report["published"].items(), ("--", ":"), strict=False):
        ax.axhline(v["mean"], color="grey", ls=style, lw=1,
                   label=f"published {name} {v['mean']:.2f} ± {v['std']:.2f}")
    ax.set_ylim(max(min(lows, default=90.0), 80.0), opt + 0.3)
    ax.set_xlim(0, report["budget_seconds"])
    ax.set_xlabel("simulated time (s): 12 epochs of training per evaluation")
    ax.set_ylabel("CIFAR-10 test accuracy (%) of the best-so-far by validation")
    ax.set_title("NAS-Bench-201, CIFAR-10: mean over seeds, band ±1 std")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


__all__ = ["DEFAULT_OPTIONS", "PUBLISHED", "BenchError", "Run", "run_bench", "run_one", "strategy_options",
           "summary_text"]
