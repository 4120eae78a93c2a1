"""A multi-objective search's Pareto outputs, derived from its journal like everything in the run folder:
``pareto.json`` and ``pareto.md`` (the non-dominated architectures with all their metrics), ``pareto.png``
(the front, and the hypervolume over the search).

The front is taken over the complete, feasible evaluations (status "ok", not answered from cache: each
architecture once), by their objective vectors (``values`` in the journal). Its points are ordered by the
first objective, best first (ties: journal order); ``nas export RUN --pareto K`` exports the K-th.
Being a function of the journal alone, the front after a resume is exactly the front of the evaluations on
record.

Hypervolume (botorch's, `nas.pareto`): against the search's ``reference_point`` where it gives one for
every objective; otherwise against a point just beyond the worst value seen of each objective (by a tenth
of the range seen, or of the value itself where all are equal), which moves as the search goes, so the
progress line's figure is comparable only within a stretch where that point stays put; ``pareto.json``
says which reference it used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.io import atomic_write_json, atomic_write_text
from nas.objectives import Objective
from nas.pareto import hypervolume, non_dominated, signed


def evaluated(records: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The complete, feasible evaluations of `n` objectives (each architecture once: no cached answers)."""
    return [r for r in records if r.get("status") == "ok" and not r.get("cached")
            and isinstance(r.get("values"), list) and len(r["values"]) == n
            and all(isinstance(v, int | float) and math.isfinite(v) for v in r["values"])]


def front(records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[Mapping[str, Any]]:
    """The non-dominated evaluations, best first by the first objective (ties: journal order)."""
    modes = [o.mode for o in objectives]
    pool = evaluated(records, len(objectives))
    mask = non_dominated([signed(r["values"], modes) for r in pool])
    on = [r for r, keep in zip(pool, mask, strict=True) if keep]
    first = objectives[0]
    return sorted(on, key=lambda r: -first.signed(r["values"][0]))


def reference_point(records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
                    given: Mapping[str, float] | None = None) -> tuple[dict[str, float], str]:
    """The hypervolume's reference point and where it came from ("given" or "derived")."""
    given = dict(given or {})
    if objectives and all(o.metric in given for o in objectives):
        return {o.metric: float(given[o.metric]) for o in objectives}, "given"
    pool = evaluated(records, len(objectives))
    out = {}
    for k, o in enumerate(objectives):
        if o.metric in given:
            out[o.metric] = float(given[o.metric])
            continue
        vals = [r["values"][k] for r in pool]
        if not vals:
            out[o.metric] = math.nan
            continue
        worst = min(vals) if o.mode == "max" else max(vals)
        margin = 0.1 * ((max(vals) - min(vals)) or abs(worst) or 1.0)
        out[o.metric] = worst - margin if o.mode == "max" else worst + margin
    return out, "derived"


def hypervolume_of(records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
                   reference: Mapping[str, float]) -> float:
    modes = [o.mode for o in objectives]
    ref = [reference[o.metric] for o in objectives]
    if any(not math.isfinite(v) for v in ref):
        return 0.0
    pool = evaluated(records, len(objectives))
    return hypervolume([signed(r["values"], modes) for r in pool], signed(ref, modes))


def write(folder: Path, records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
          given: Mapping[str, float] | None = None) -> tuple[list[Mapping[str, Any]], float]:
    """Write ``pareto.json`` and ``pareto.md``; returns the front and its hypervolume."""
    points = front(records, objectives)
    ref, source = reference_point(records, objectives, given)
    hv = hypervolume_of(records, objectives, ref)
    names = [o.metric for o in objectives]
    entries = [{"pareto": k, "trial_id": r.get("trial_id"), "arch_id": r.get("arch_id"),
                "assignment": r.get("assignment"), "values": dict(zip(names, r["values"], strict=True)),
                "metrics": r.get("metrics", {})} for k, r in enumerate(points, 1)]
    atomic_write_json(Path(folder) / "pareto.json", {
        "objectives": [o.spec() for o in objectives], "reference_point": ref, "reference_point_source": source,
        "hypervolume": hv, "n_evaluated": len(evaluated(records, len(objectives))), "front": entries})
    lines = [f"# Pareto front ({', '.join(o.spec() for o in objectives)}; {len(entries)} non-dominated of "
             f"{len(evaluated(records, len(objectives)))} architectures evaluated; hypervolume {hv:.6g} against "
             f"{source} reference point {_point(ref)})", "",
             "`nas export RUN --pareto K` exports the K-th row.", "",
             "| K | " + " | ".join(names) + " | test_accuracy | arch_id | trial | assignment |",
             "|---:|" + "---:|" * len(names) + "---:|---|---|---|"]
    for e in entries:
        m = e["metrics"]
        test = m.get("test_accuracy")
        lines.append(f"| {e['pareto']} | " + " | ".join(_num(e["values"][n]) for n in names)
                     + f" | {_num(test) if test is not None else ''} | {e['arch_id']} | {e['trial_id']} | "
                     + "`" + ", ".join(f"{k}={v}" for k, v in (e["assignment"] or {}).items()) + "` |")
    atomic_write_text(Path(folder) / "pareto.md", "\n".join(lines) + "\n")
    return points, hv


def _num(v: Any) -> str:
    if not isinstance(v, int | float):
        return str(v)
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{v:.6g}"


def _point(ref: Mapping[str, float]) -> str:
    return "(" + ", ".join(f"{k} {v:.6g}" for k, v in ref.items()) + ")"


def progress(records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
             given: Mapping[str, float] | None = None) -> str:
    """``front N, hypervolume H`` for the progress line."""
    ref, _ = reference_point(records, objectives, given)
    return f"front {len(front(records, objectives))}, hypervolume {hypervolume_of(records, objectives, ref):.4g}"


def plot(folder: Path, records: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
         given: Mapping[str, float] | None = None) -> Path | None:
    """``pareto.png``: every feasible evaluation and the front (two objectives: one scatter with the front
    drawn as a staircase; more: one panel per pair), and the hypervolume after each evaluation (against the
    final reference point)."""
    pool = evaluated(records, len(objectives))
    if not pool:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on = front(records, objectives)
    on_ids = {id(r) for r in on}
    pairs = [(i, j) for i in range(len(objectives)) for j in range(i + 1, len(objectives))]
    fig, axes = plt.subplots(1, len(pairs) + 1, figsize=(5.2 * (len(pairs) + 1), 4.4), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=False):
        xs = [r["values"][j] for r in pool]
        ys = [r["values"][i] for r in pool]
        ax.scatter(xs, ys, s=12, color="tab:blue", alpha=0.5, label=f"evaluated ({len(pool)})")
        fx = [r["values"][j] for r in pool if id(r) in on_ids]
        fy = [r["values"][i] for r in pool if id(r) in on_ids]
        ax.scatter(fx, fy, s=30, color="tab:red", label=f"on the front ({len(on)})")
        if len(objectives) == 2:
            stairs = sorted(zip(fx, fy, strict=True), key=lambda p: objectives[1].signed(p[0]), reverse=True)
            ax.step([p[0] for p in stairs], [p[1] for p in stairs], where="post", color="tab:red", lw=1)
        ax.ticklabel_format(style="sci", scilimits=(-3, 4))
        ax.set_xlabel(objectives[j].spec())
        ax.set_ylabel(objectives[i].spec())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ref, source = reference_point(records, objectives, given)
    hv, seen = [], []
    for r in records:
        seen.append(r)
        hv.append(hypervolume_of(seen, objectives, ref))
    ax = axes[0][-1]
    ax.plot(range(1, len(hv) + 1), hv)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"against the {source} reference point {_point(ref)}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(folder) / "pareto.png"
    tmp = Path(folder) / ".pareto.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
