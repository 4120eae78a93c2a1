"""Per-trial overhead of running candidates as Ray Tune trials, with and without actor reuse.

Each trial trains a tiny conv net (conv-bn-relu x2, global pool, linear) for one epoch on digits
through `workers.trainable.train_architecture`. Trials get 1 CPU each on a local Ray cluster, so
`--cpus` trials run at once. Figures per configuration (means over its trials):

- train: the trial's own `train_seconds` (training + validation, the useful work);
- in-trial overhead: Tune's `time_total_s` (time inside the trainable, as Tune measures it) minus
  train_seconds: data set load (cached on a reused actor), build, latency measurement, test
  evaluation, checkpoint;
- driver span overhead: from the driver's `on_trial_start` to its `on_trial_complete` callback, minus
  train_seconds;
- slot overhead: (Tuner.fit wall time x concurrent trials - total train_seconds) / trials, i.e. the
  CPU-slot time per trial not spent training, including actor start-up and scheduling.

Usage: python benchmarks/trial_overhead.py [--trials 8] [--cpus 2] [--repeats 2]
The two settings are run alternately (--repeats rounds) so that warm-up or machine load affects both.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_arch() -> dict:
    from nas.graph import ArchGraph, to_dict

    g = ArchGraph((1, 8, 8))
    x = "input"
    for i in range(2):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=16, kernel_size=3)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return to_dict(g)


def run_once(reuse: bool, trials: int, cpus: int, storage: Path, tag: str) -> dict:
    from ray import tune

    from workers.trainable import train_architecture, trial_resources

    spans: dict[str, list[float]] = {}

    class Spans(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            spans[trial.trial_id] = [time.perf_counter()]

        def on_trial_complete(self, iteration, trials, trial, **info):
            spans[trial.trial_id].append(time.perf_counter())

    tuner = tune.Tuner(
        tune.with_resources(train_architecture, trial_resources(1, 0)),
        param_space={"arch": tiny_arch(), "train": {"epochs": 1, "batch_size": 64, "seed": tune.grid_search(
            list(range(trials)))}},
        tune_config=tune.TuneConfig(reuse_actors=reuse, max_concurrent_trials=cpus, metric="val_accuracy",
                                    mode="max"),
        run_config=tune.RunConfig(storage_path=str(storage), name=tag, verbose=0, callbacks=[Spans()]),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    rows = []
    for r in grid:
        m = r.metrics
        if r.error is not None or m.get("status") != "ok":
            raise RuntimeError(f"trial failed: {r.error or m.get('error')}")
        start, end = spans[m["trial_id"]]
        rows.append({"train": m["train_seconds"], "in_trial": m["time_total_s"] - m["train_seconds"],
                     "span": end - start - m["train_seconds"], "pid": m["pid"]})
    total_train = sum(r["train"] for r in rows)
    return {
        "reuse": reuse, "wall": wall, "trials": len(rows), "processes": len({r["pid"] for r in rows}),
        "train": statistics.mean(r["train"] for r in rows),
        "in_trial": statistics.mean(r["in_trial"] for r in rows),
        "span": statistics.mean(r["span"] for r in rows),
        "slot": (wall * cpus - total_train) / len(rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables on stdout
    import ray
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="graphnas-overhead-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=str(tmp / "r"), log_to_driver=False,
             configure_logging=False)
    init = time.perf_counter() - t0
    print(f"# trial overhead: {args.trials} trials x 1 epoch of a tiny conv net on digits, 1 CPU per trial, "
          f"{args.cpus} at once")
    print(f"# ray {ray.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cores visible (machine shared with other work; compare within this run)")
    print(f"# ray.init: {init:.2f} s (once, not counted below); load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print("# seconds per trial (means); slot = (fit wall x concurrency - total train) / trials")
    print(f"{'round':>5} {'reuse_actors':>12} {'fit wall':>9} {'processes':>9} {'train':>7} {'in-trial':>9} "
          f"{'span':>7} {'slot':>7}")
    runs = []
    try:
        for rnd in range(args.repeats):
            for reuse in (True, False):
                tag = f"r{rnd}_{'reuse' if reuse else 'fresh'}"
                r = run_once(reuse, args.trials, args.cpus, tmp / "storage", tag)
                runs.append(r)
                print(f"{rnd:>5} {str(reuse):>12} {r['wall']:>9.2f} {r['processes']:>9} {r['train']:>7.3f} "
                      f"{r['in_trial']:>9.3f} {r['span']:>7.3f} {r['slot']:>7.3f}", flush=True)
    finally:
        ray.shutdown()
    print()
    by = {reuse: [r for r in runs if r["reuse"] == reuse] for reuse in (True, False)}
    for reuse, rs in by.items():
        print(f"reuse_actors={reuse}: mean overhead per trial {statistics.mean(r['slot'] for r in rs):.3f} s "
              f"(slot), {statistics.mean(r['span'] for r in rs):.3f} s (driver span), "
              f"{statistics.mean(r['in_trial'] for r in rs):.3f} s (in trial); "
              f"training {statistics.mean(r['train'] for r in rs):.3f} s")
    ratio = statistics.mean(r["slot"] for r in by[False]) / statistics.mean(r["slot"] for r in by[True])
    print(f"slot overhead without reuse / with reuse: {ratio:.2f}x "
          f"(load average after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
