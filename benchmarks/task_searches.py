"""Every task beyond classification searched through `nas search` (the CLI, real Ray, real training) with each
strategy: random, evolution and COMBO, on its generated data set and space (issue 20: "every new task works
through nas search with random, evolution and COMBO"). The test suite runs one such pair through Ray
(tests/test_task_search.py) and drives the others in process; this runs all twelve as a user would.

Each run: a private local Ray instance, small generated sets, 2 epochs per candidate, a budget of 4 (COMBO: 2
initial points, then proposals from its GP). Printed per run: evaluations ok / failed, the best validation score
of the task's metric and its test score, the wall time. Output: results/task_searches.txt.

Usage: python benchmarks/task_searches.py [--budget 4] [--out results/task_searches.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (data set, space, space options, objective)
TASKS = {
    "contrastive": ("digit_pairs:pairs=400", "siamese", {}, "val_auc"),
    "segmentation": ("digit_segmentation:images=200", "fcn", {}, "val_miou"),
    "detection": ("digit_detection:images=200,side=32,proposals=8", "detection", {"proposals": 8}, "val_map"),
    "multilabel": ("multilabel_clips:clips=200,frames=8,side=8", "timeception", {"width": 8, "hidden": 0},
                   "val_map"),
}
STRATEGY_OPTIONS = {"random": [], "evolution": ["population_size=2", "sample_size=2"],
                    "combo": ["n_initial=2", "fit=map"]}


def run(task: str, strategy: str, budget: int, work: Path) -> str:
    data, space, options, metric = TASKS[task]
    out = work / f"{task}-{strategy}"
    argv = [sys.executable, "-m", "nas.cli", "search", "--space", space, "--strategy", strategy, "--budget",
            str(budget), "--dataset", data, "--data-cache", str(work / "cache"), "--epochs", "2", "--batch-size", "16",
            "--optimizer", "adamw", "--lr", "0.01", "--seed", "0", "--max-params", "300000", "--latency-reps", "0",
            "--out", str(out)]
    for k, v in options.items():
        argv += ["--space-option", f"{k}={v}"]
    for o in STRATEGY_OPTIONS[strategy]:
        argv += ["--strategy-option", o]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    p = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        return f"{task:12s} {strategy:9s} EXIT {p.returncode}: {p.stderr.strip().splitlines()[-1:]} ({wall:.0f} s)"
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["value"]) if ok else None
    test = metric.replace("val_", "test_")
    score = f"best {metric} {best['value']:.4f} (its {test} {best['metrics'][test]:.4f})" if best else "no result"
    return (f"{task:12s} {strategy:9s} {len(rows)} evaluations, {len(ok)} ok, {len(rows) - len(ok)} failed | "
            f"{score} | {wall:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "results" / "task_searches.txt"))
    args = p.parse_args()
    lines = [f"# nas search per task x strategy: budget {args.budget}, 2 epochs per candidate, adamw lr 0.01, "
             "batch 16, "
             "seed 0, private local Ray (2 CPUs), CPU",
             f"# load average before: {os.getloadavg()[0]:.2f}"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="task-searches-") as d:
        for task in TASKS:
            for strategy in STRATEGY_OPTIONS:
                lines.append(run(task, strategy, args.budget, Path(d)))
                print(lines[-1], flush=True)
    lines.append(f"# load average after: {os.getloadavg()[0]:.2f}")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
