"""Choosing COMBO's options for `nas bench` on NAS-Bench-201, as benchmarks/nb201_tuning.py did for
evolution: the same protocol (12,000 simulated seconds, one seed's validation accuracy as the signal),
on tuning seeds disjoint from the reported run's 0..99, selected by the returned architecture's mean
validation accuracy over its training seeds; test accuracy printed for information only.

    python benchmarks/nb201_combo_tuning.py | tee results/nb201_bench/combo_tuning.txt
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

CONFIGS = ("", "n_initial=5", "n_initial=10", "n_initial=15")


def parse(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def main() -> None:
    default_table = Path(__file__).resolve().parents[1].parent / "shared/data/nb201/nb201.csv"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(default_table))
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget-seconds", type=float, default=12000.0)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), help="comma-separated KEY=VALUE per config")
    args = ap.parse_args()

    table = load_table(args.table)
    space = get_space("nb201")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    val_mean = {r.index: r.val_mean for r in table.rows}
    print(f"NAS-Bench-201 tuning of COMBO: seeds {seeds[0]}..{seeds[-1]}, budget {args.budget_seconds:g} simulated "
          f"s per run; python {platform.python_version()}; selected by the returned architecture's mean validation "
          "accuracy", flush=True)
    for config in args.configs:
        options = parse(config)
        vals, tests, evals, start = [], [], [], time.perf_counter()
        for seed in seeds:
            run = run_one(space, TabularEvaluator(table, seed).outcome, "combo", seed, args.budget_seconds, options)
            vals.append(val_mean[run.index[run.best]])
            tests.append(run.test[run.best])
            evals.append(run.n_evaluations)
        n = len(vals)
        print(f"combo {config or 'defaults':<28} evals {statistics.fmean(evals):5.1f}  val of returned "
              f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals) / math.sqrt(n):.3f}se  test (info) "
              f"{statistics.fmean(tests):.3f} ± {statistics.stdev(tests) / math.sqrt(n):.3f}se  "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
