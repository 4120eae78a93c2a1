"""COMBO's two multi-objective acquisitions on the NAS-Bench-201 multi-objective bench, seed by seed: ParEGO
(the default) against EHVI (``mo_acquisition=ehvi``), from two `nas bench` outputs over the same objectives,
budget and reference point (the seeds both ran are compared, paired).

    nas bench --table nb201.csv --strategies combo --strategy-option combo.mo_acquisition=ehvi \\
        --objective val_accuracy:max --objective params:min --seeds 10 --out results/nb201_pareto/combo_ehvi
    python benchmarks/nb201_pareto_acquisition.py results/nb201_pareto/results.json \\
        results/nb201_pareto/combo_ehvi/results.json > results/nb201_pareto/combo_acquisition.txt
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def per_seed(path: Path) -> tuple[dict, dict[int, dict]]:
    report = json.loads(path.read_text())
    combo = report["strategies"]["combo"]
    return report, {p["seed"]: p for p in combo["per_seed"]}


def main(parego_file: str, ehvi_file: str) -> None:
    a_report, parego = per_seed(Path(parego_file))
    b_report, ehvi = per_seed(Path(ehvi_file))
    for key in ("objectives", "budget_seconds", "points"):
        if a_report[key] != b_report[key]:
            raise SystemExit(f"the two runs differ in {key}: {a_report[key]} vs {b_report[key]}")
    seeds = sorted(set(parego) & set(ehvi))
    print(f"COMBO on NAS-Bench-201, objectives {', '.join(a_report['objectives'])}, budget "
          f"{a_report['budget_seconds']:g} simulated s, reference point {a_report['points']['reference']}")
    print(f"ParEGO: {parego_file} (options {a_report['strategies']['combo']['options']})")
    print(f"EHVI:   {ehvi_file} (options {b_report['strategies']['combo']['options']})")
    print(f"paired seeds: {seeds[0]}..{seeds[-1]} ({len(seeds)})\n")
    print(f"{'seed':>4} {'ParEGO hv':>10} {'EHVI hv':>10} {'EHVI-ParEGO':>12} {'evals P/E':>10} {'wall s P/E':>12}")
    diffs = []
    for s in seeds:
        p, e = parego[s], ehvi[s]
        diffs.append(e["hv_test"] - p["hv_test"])
        print(f"{s:>4} {p['hv_test']:>10.4f} {e['hv_test']:>10.4f} {diffs[-1]:>+12.4f} "
              f"{p['n_evaluations']:>4}/{e['n_evaluations']:<4} {p['wall_seconds']:>6.0f}/{e['wall_seconds']:<5.0f}")
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    hp = statistics.fmean(parego[s]["hv_test"] for s in seeds)
    he = statistics.fmean(ehvi[s]["hv_test"] for s in seeds)
    wins = sum(d > 0 for d in diffs)
    print(f"\nmean hypervolume on test: ParEGO {hp:.4f}, EHVI {he:.4f}; EHVI - ParEGO {mean:+.4f} "
          f"(paired se {se:.4f}, {mean / se if se else math.inf:+.1f} se); EHVI higher on {wins} of {len(diffs)} seeds")
    wall_p = statistics.fmean(parego[s]["wall_seconds"] for s in seeds)
    wall_e = statistics.fmean(ehvi[s]["wall_seconds"] for s in seeds)
    print(f"wall seconds per run (shared machine, not interleaved): ParEGO {wall_p:.0f}, EHVI {wall_e:.0f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
