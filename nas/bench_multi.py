"""`nas bench` with several objectives: the Pareto front each run would return, and its hypervolume on
the test accuracy.

A run's front is its non-dominated evaluations by the search signal (one seed's validation accuracy and,
say, the table's parameter count: what the strategy saw). Its quality is the hypervolume of those same
architectures with their *test* accuracy in place of the validation accuracy (the other objectives, known
exactly, are unchanged), against a fixed reference point, as a fraction of the box between the reference
point and the ideal point (`REFERENCE`, `IDEAL`: 10 % accuracy, chance on CIFAR-10, and 100 %; 1.6 M
parameters, above the largest cell's 1.53 M, and none; 2.5e8 multiply-accumulates, above the largest
cell's 2.2e8, and none). Hypervolumes are botorch's (`nas.pareto`).

Reported per strategy, over seeds: that normalised hypervolume (mean ± std, se), the front's size, the
evaluations; the best graphnas strategy against random search and against every peer (Optuna's samplers,
`nas.bench_optuna`), each difference with its standard error sqrt(se_a^2 + se_b^2). ``pareto_vs_time.png``:
the hypervolume of the front so far against simulated time (mean over seeds, ±1 std band), and the fronts
of the first seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.objectives import Objective
from nas.pareto import hypervolume, non_dominated, signed

# the bench's scale: accuracies in percent, parameters and multiply-accumulates as counts
REFERENCE = {"val_accuracy": 10.0, "params": 1.6e6, "flops": 2.5e8}
IDEAL = {"val_accuracy": 100.0, "params": 0.0, "flops": 0.0}
CURVE_POINTS = 61
GRAPHNAS = ("random", "evolution", "combo")


def reference_of(objectives: Sequence[Objective], given: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The fixed reference and ideal points of `objectives` (`given` overrides the reference)."""
    ref = {o.metric: float((given or {}).get(o.metric, REFERENCE.get(o.metric, math.nan))) for o in objectives}
    missing = [m for m, v in ref.items() if not math.isfinite(v)]
    if missing:
        raise ValueError(f"no reference point for {missing}; give --reference METRIC=VALUE")
    return {"reference": ref, "ideal": {o.metric: IDEAL.get(o.metric, 0.0) for o in objectives}}


def _box(objectives: Sequence[Objective], points: Mapping[str, Any]) -> float:
    out = 1.0
    for o in objectives:
        out *= abs(points["ideal"][o.metric] - points["reference"][o.metric])
    return out


def normalised_hv(vectors: Sequence[Sequence[float]], objectives: Sequence[Objective],
                  points: Mapping[str, Any]) -> float:
    """Hypervolume of `vectors` (values in the objectives' own directions) against the reference point,
    as a fraction of the box from the reference to the ideal point."""
    modes = [o.mode for o in objectives]
    ref = signed([points["reference"][o.metric] for o in objectives], modes)
    return hypervolume([signed(v, modes) for v in vectors], ref) / _box(objectives, points)


def front_positions(vectors: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> list[int]:
    modes = [o.mode for o in objectives]
    mask = non_dominated([signed(v, modes) for v in vectors])
    return [i for i, keep in enumerate(mask) if keep]


def run_result(run: Any, objectives: Sequence[Objective], points: Mapping[str, Any]) -> dict[str, Any]:
    """One run's front (by the signal) and its hypervolumes, on test and on the signal."""
    front = front_positions(run.signal, objectives)
    return {"seed": run.seed, "n_evaluations": run.n_evaluations,
            "front_size": len({run.index[i] for i in front}), "front_index": sorted({run.index[i] for i in front}),
            "hv_test": normalised_hv([run.on_test[i] for i in front], objectives, points),
            "hv_signal": normalised_hv([run.signal[i] for i in front], objectives, points),
            "simulated_seconds": round(run.times[-1], 3) if run.times else 0.0,
            "wall_seconds": round(run.wall_seconds, 4)}


def hv_curve(run: Any, objectives: Sequence[Objective], points: Mapping[str, Any], grid: Sequence[float]
             ) -> list[float]:
    """Test hypervolume of the front-by-signal of the evaluations finished by each time of `grid`."""
    out, i, last = [], 0, 0.0
    for t in grid:
        j = i
        while j < len(run.times) and run.times[j] <= t:
            j += 1
        if j != i or not out:
            front = front_positions(run.signal[:j], objectives) if j else []
            last = normalised_hv([run.on_test[k] for k in front], objectives, points) if front else 0.0
            i = j
        out.append(last)
    return out


def strategy_entry(runs: Sequence[Any], objectives: Sequence[Objective], points: Mapping[str, Any],
                   options: Mapping[str, Any], wall: float, stats: Any, grid: Sequence[float]) -> dict[str, Any]:
    """What results.json holds of one strategy: per-seed fronts and hypervolumes, their statistics
    (`stats(values) -> {"mean", "std", "se"}`), the hypervolume curve on `grid`."""
    per_seed = [run_result(r, objectives, points) for r in runs]
    curves = [hv_curve(r, objectives, points, grid) for r in runs]
    mean = [round(stats([c[k] for c in curves])["mean"], 5) for k in range(len(grid))]
    std = [round(stats([c[k] for c in curves])["std"], 5) for k in range(len(grid))]
    first = runs[0]
    return {"options": dict(options), "runs": len(runs),
            "hv_test": stats([p["hv_test"] for p in per_seed]), "hv_signal": stats([p["hv_signal"] for p in per_seed]),
            "front_size": stats([p["front_size"] for p in per_seed]),
            "evaluations": stats([p["n_evaluations"] for p in per_seed]),
            "evaluations_range": [min(p["n_evaluations"] for p in per_seed),
                                  max(p["n_evaluations"] for p in per_seed)],
            "wall_seconds": round(wall, 2), "per_seed": per_seed, "curve": {"mean": mean, "std": std},
            "first_front_on_test": [first.on_test[i] for i in front_positions(first.signal, objectives)]}


def curve_grid(budget_seconds: float) -> list[float]:
    return [budget_seconds * k / (CURVE_POINTS - 1) for k in range(CURVE_POINTS)]


def summary_text(report: Mapping[str, Any]) -> str:
    seeds = report["seeds"]
    objs = ", ".join(report["objectives"])
    pts = report["points"]
    ref = ", ".join(f"{k} {v:g}" for k, v in pts["reference"].items())
    ideal = ", ".join(f"{k} {v:g}" for k, v in pts["ideal"].items())
    lines = [
        f"{report['benchmark']}: {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), budget {report['budget_seconds']:g} "
        f"simulated seconds per run",
        f"table: {report['table']} ({report['table_rows']} architectures)",
        f"objectives (the search signal): {objs}",
        f"protocol: {report['protocol']}",
        f"figure: hypervolume of each run's front (non-dominated by the signal) with the TEST accuracy in place of "
        f"the validation accuracy, against the reference point ({ref}), as a fraction of the box up to the ideal "
        f"point ({ideal})",
        "",
        f"{'strategy':<13} {'options':<34} {'runs':>4} {'evaluations':>14}  {'hypervolume on test':>28}  "
        f"{'front size':>10}",
    ]
    for name, s in report["strategies"].items():
        h, e, f = s["hv_test"], s["evaluations"], s["front_size"]
        opts = " ".join(f"{k}={v}" for k, v in s["options"].items()) or "defaults"
        lines.append(f"{name:<13} {opts:<34} {s['runs']:>4} {e['mean']:>7.1f} "
                     f"({s['evaluations_range'][0]}-{s['evaluations_range'][1]})  "
                     f"{h['mean']:>10.4f} ± {h['std']:.4f} (se {h['se']:.4f})  {f['mean']:>10.1f}")
    for name, why in report["skipped"].items():
        lines.append(f"{name:<13} skipped: {why}")
    ours = [n for n in report["strategies"] if n in GRAPHNAS and n != "random"]
    if ours:
        best = max(ours, key=lambda n: report["strategies"][n]["hv_test"]["mean"])
        b = report["strategies"][best]["hv_test"]
        lines += ["", f"best graphnas strategy by mean hypervolume: {best}"]
        below = []
        for name, s in report["strategies"].items():
            if name == best:
                continue
            t = s["hv_test"]
            diff, se = b["mean"] - t["mean"], math.hypot(b["se"], t["se"])
            lines.append(f"{best} - {name}: {diff:+.4f} (se of the difference {se:.4f}, "
                         f"{diff / se if se else math.inf:+.1f} se)")
            if name not in GRAPHNAS and diff < 0:
                below.append(name)
        peers = [n for n in report["strategies"] if n not in GRAPHNAS]
        if peers:
            verdict = ("at or above every peer's mean" if not below else
                       f"BELOW the mean of {', '.join(below)}")
            lines.append(f"goal (graphnas's best at or above every peer's mean hypervolume): {best} is {verdict}")
    lines += ["", f"{report['platform']}"]
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = report["objectives"]
    grid = report["curve_grid_s"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for name, s in report["strategies"].items():
        h = s["hv_test"]
        ms, sds = s["curve"]["mean"], s["curve"]["std"]
        line, = ax.plot(grid, ms, label=f"{name} ({h['mean']:.4f} ± {h['std']:.4f}, {s['runs']} seeds)")
        ax.fill_between(grid, [m - d for m, d in zip(ms, sds, strict=True)],
                        [m + d for m, d in zip(ms, sds, strict=True)], color=line.get_color(), alpha=0.12)
    ax.set_xlim(0, report["budget_seconds"])
    lows = [s["curve"]["mean"][len(grid) // 6] for s in report["strategies"].values()]
    if lows:
        ax.set_ylim(min(lows) * 0.98, None)
    ax.set_xlabel("simulated time (s): 12 epochs of training per evaluation")
    ax.set_ylabel("normalised hypervolume of the front so far (on test)")
    ax.set_title(f"NAS-Bench-201, CIFAR-10, objectives {', '.join(objs)}: mean over seeds, band ±1 std",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    metric_x = objs[1].split(":")[0]
    for name, s in report["strategies"].items():
        pts = sorted(s["first_front_on_test"], key=lambda v: v[1])
        if pts:
            ax.step([p[1] for p in pts], [p[0] for p in pts], where="post", marker="o", ms=3,
                    label=f"{name} (seed {report['seeds'][0]})")
    ax.set_xlabel(metric_x)
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title("the front each strategy returned on the first seed (on test)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
