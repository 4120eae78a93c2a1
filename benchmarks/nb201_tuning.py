"""Choosing regularized evolution's population size P and tournament size S for `nas bench` on NAS-Bench-201.

Same protocol as `nas bench` (12,000 simulated seconds per run, one seed's 200-epoch CIFAR-10 validation
accuracy as the signal, 12/200 of the training time charged per evaluation), on tuning seeds 1000..1499,
disjoint from the reported run's seeds 0..99. Every (P, S) with S <= P on the grid below runs on all
tuning seeds; random search runs alongside as the reference.

Selection criterion: the mean, over tuning seeds, of the returned architecture's mean validation
accuracy over its training seeds (``c10valid_xvalid_200ep_mean``): validation data only. The test
accuracy on the tuning seeds is printed too, for information; it did not pick the setting.

    python benchmarks/nb201_tuning.py --table ../shared/data/nb201/nb201.csv | tee results/nb201_bench/tuning.txt
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.bench import run_one  # noqa: E402
from nas.registry import get_space  # noqa: E402
from workers.tabular import TabularEvaluator, load_table  # noqa: E402

POPULATIONS = (5, 10, 15, 20, 30, 50, 100)
SAMPLES = (2, 3, 5, 10, 15, 20, 25)


def main() -> None:
    default_table = Path(__file__).resolve().parents[1].parent / "shared/data/nb201/nb201.csv"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(default_table))
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget-seconds", type=float, default=12000.0)
    args = ap.parse_args()

    table = load_table(args.table)
    space = get_space("nb201")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    val_mean = {r.index: r.val_mean for r in table.rows}
    print(f"NAS-Bench-201 tuning of regularized evolution (P, S): seeds {seeds[0]}..{seeds[-1]}, budget "
          f"{args.budget_seconds:g} simulated s per run; python {platform.python_version()}")
    print("selected by: mean validation accuracy (mean over training seeds) of the returned architecture")
    print(f"{'strategy':<10} {'P':>4} {'S':>3} {'evals':>6} {'val of returned':>18} {'test of returned (info)':>24}")
    rows = []
    configs = [("random", None, None)] + [("evolution", p, s) for p in POPULATIONS for s in SAMPLES if s <= p]
    start = time.perf_counter()
    for name, p, s in configs:
        options = {} if name == "random" else {"population_size": p, "sample_size": s}
        vals, tests, evals = [], [], []
        for seed in seeds:
            run = run_one(space, TabularEvaluator(table, seed).outcome, name, seed, args.budget_seconds, options)
            b = run.best
            vals.append(val_mean[run.index[b]])
            tests.append(run.test[b])
            evals.append(run.n_evaluations)
        n = len(vals)
        v, t = statistics.fmean(vals), statistics.fmean(tests)
        v_se, t_se = statistics.stdev(vals) / math.sqrt(n), statistics.stdev(tests) / math.sqrt(n)
        rows.append((v, name, p, s))
        print(f"{name:<10} {p or '-':>4} {s or '-':>3} {statistics.fmean(evals):>6.1f} {v:>10.3f} ± {v_se:.3f}se "
              f"{t:>15.3f} ± {t_se:.3f}se", flush=True)
    best = max(r for r in rows if r[1] == "evolution")
    print(f"selected: P={best[2]}, S={best[3]} (mean validation accuracy of the returned architecture "
          f"{best[0]:.3f}); {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
