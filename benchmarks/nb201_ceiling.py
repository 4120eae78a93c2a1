"""How high can a search go on NAS-Bench-201 under `nas bench`'s protocol, and where do the reference run's
strategies land? Reads the table and a `nas bench` results.json; runs no search.

1. Ceiling: a search that evaluated exactly the K architectures with the highest mean validation accuracy
   (the best any search can do with K evaluations of this signal) still returns the best of them by ONE
   seed's validation draw, as every strategy does; the mean CIFAR-10 test accuracy of that pick over
   `--draws` search seeds (the evaluator's own seeded draws) is printed for several K.
2. For each strategy of the reference run: the rank of the returned architecture among all 15,625 by mean
   validation accuracy (0 = best), and for the runs whose returned test accuracy is below `--low`, which
   ranks they returned: a rank near 0 with a low test accuracy is the table's validation/test mismatch,
   not a search failure.

    python benchmarks/nb201_ceiling.py | tee results/nb201_bench/ceiling.txt
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.tabular import evaluate_row, load_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shown(path: str) -> str:
    """The path as the repository's README writes it (relative to the repository root) where it can be."""
    p = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT.parent / "shared/data/nb201/nb201.csv"))
    ap.add_argument("--results", default=str(ROOT / "results/nb201_bench/results.json"))
    ap.add_argument("--draws", type=int, default=200, help="search seeds 0..draws-1 for the ceiling")
    ap.add_argument("--low", type=float, default=94.0)
    args = ap.parse_args()

    table = load_table(args.table)
    by_val = sorted(table.rows, key=lambda r: (-r.val_mean, r.index))
    rank = {r.index: i for i, r in enumerate(by_val)}
    print(f"NAS-Bench-201 ceiling under the bench protocol ({shown(args.table)}, {len(by_val)} architectures)")
    print("top architectures by mean validation accuracy: rank, index, val mean, val per seed, test")
    for i, r in enumerate(by_val[:6]):
        seeds = ", ".join(f"{v:.2f}" for v in r.val_seeds)
        print(f"  {i:>3}  {r.index:>5}  {r.val_mean:.2f}  [{seeds}]  {r.test_accuracy:.2f}")
    print(f"\n1. evaluate exactly the top K by mean validation accuracy, return the best by one seed's draw "
          f"({args.draws} search seeds):")
    for k in (1, 2, 5, 10, 20, 50, 100):
        picks = [max((evaluate_row(r, s) for r in by_val[:k]), key=lambda e: (e.val_accuracy, -e.index))
                 for s in range(args.draws)]
        tests = [p.test_accuracy for p in picks]
        print(f"  K={k:>3}: test {statistics.fmean(tests):.3f} ± {statistics.stdev(tests):.3f} (std)")

    results = json.loads(Path(args.results).read_text())
    print(f"\n2. the reference run ({shown(args.results)}: {len(results['seeds'])} seeds, "
          f"{results['budget_seconds']:g} simulated s): rank of the returned architecture by mean validation")
    for name, strat in results["strategies"].items():
        runs = strat["per_seed"]
        ranks = sorted(rank[r["best_index"]] for r in runs)
        low = [r for r in runs if r["best_test"] < args.low]
        counts = collections.Counter(rank[r["best_index"]] for r in low)
        common = ", ".join(f"rank {k} x{v}" for k, v in sorted(counts.items())[:6])
        print(f"  {name:<10} mean test {statistics.fmean(r['best_test'] for r in runs):.2f}; returned rank: "
              f"median {statistics.median(ranks):g}, rank 0 in {ranks.count(0)}/{len(runs)}, top 10 in "
              f"{sum(k < 10 for k in ranks)}/{len(runs)}; test < {args.low}: {len(low)} runs ({common}, ...)")


if __name__ == "__main__":
    main()
