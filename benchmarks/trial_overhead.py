"""Per-trial overhead of running short candidates as Ray Tune trials with actor reuse: Ray Tune itself, our
trainable under a plain Tuner, and the whole driver (`nas.search`: the searcher, the journal, the callbacks).

Each real trial trains a tiny conv net (conv-bn-relu x2, global pool, linear; width 16..31, so every trial is a
new architecture) for one epoch on digits through `workers.trainable.train_architecture`. Trials get 1 CPU each
on a local Ray instance, so `--cpus` trials run at once. Three ways, run alternately (--repeats rounds):

- ``tune-noop``: a function trainable that only reports (what Ray Tune itself costs per trial);
- ``trainable``: `train_architecture` under a plain Tuner (grid over the widths);
- ``driver``: `nas.search.search` (random strategy over the widths): proposals, journal, leaderboard, strategy
  snapshots, checkpoints recorded, best weights copied.

Figures per trial (means), in seconds:
- train: the trial's own ``train_seconds`` (training and validation, the useful work);
- in-trial: Tune's ``time_total_s`` (time inside the trainable) minus train: build, data (cached on a reused
  actor), latency, test evaluation, checkpoint, reports;
- span: from the driver's ``on_trial_start`` to its ``on_trial_complete`` callback, minus train: the per-trial
  overhead the driver sees, Ray Tune's own included;
- steady slot: (time from the first trial's start to the last one's end x concurrency - total train) / trials:
  the CPU-slot time per trial not spent training once the actors are up (actor start-up, paid once per actor,
  is left out: it is `startup`, from fit() to the first trial's start).
The first trial on each worker process ("cold") also pays that process's imports and data set load (once per
process with reuse); the others ("warm") are what each further trial costs. Both are printed: the per-trial
figure with actor reuse is the warm one, the cold one is a per-worker start-up cost.

Usage: python benchmarks/trial_overhead.py [--trials 16] [--cpus 2] [--repeats 2]
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

WIDTHS = list(range(16, 48))


def tiny_graph(width: int = 16):
    from nas.graph import ArchGraph

    g = ArchGraph((1, 8, 8))
    x = "input"
    for i in range(2):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=width, kernel_size=3)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def tiny_arch(width: int = 16) -> dict:
    from nas.graph import to_dict

    return to_dict(tiny_graph(width))


def tiny_space():
    import nas

    return nas.SearchSpace("tiny_widths", [nas.Categorical("width", tuple(WIDTHS))],
                           lambda a, *, num_classes, input_shape: tiny_graph(a["width"]))


def noop(config: dict) -> None:
    from ray import tune

    tune.report({"status": "ok", "val_accuracy": 1.0, "train_seconds": 0.0})


class Spans:
    """A Tune callback's record of each trial's start and end (driver time)."""

    def __init__(self) -> None:
        from ray import tune

        self.spans: dict[str, list[float]] = {}
        self.pids: dict[str, int] = {}
        self.totals: dict[str, float] = {}  # Tune's time_total_s of each trial (time inside the trainable)
        outer = self

        class Callback(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                outer.spans.setdefault(trial.trial_id, [time.perf_counter()])

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.spans[trial.trial_id].append(time.perf_counter())
                outer.pids[trial.trial_id] = (trial.last_result or {}).get("pid", 0)
                outer.totals[trial.trial_id] = (trial.last_result or {}).get("time_total_s", float("nan"))

        self.callback = Callback()


def summarise(rows: list[dict], spans: Spans, fit_start: float, cpus: int) -> dict:
    starts = [s[0] for s in spans.spans.values()]
    ends = [s[1] for s in spans.spans.values() if len(s) > 1]
    first, last = min(starts), max(ends)
    total_train = sum(r["train"] for r in rows)
    seen: set = set()
    for r in sorted(rows, key=lambda r: r["start"]):  # the first trial of each worker process is cold
        r["cold"] = r["pid"] not in seen
        seen.add(r["pid"])
    warm = [r for r in rows if not r["cold"]] or rows
    cold = [r for r in rows if r["cold"]]
    return {
        "trials": len(rows), "train": statistics.mean(r["train"] for r in rows),
        "in_trial": statistics.mean(r["in_trial"] for r in warm), "span": statistics.mean(r["span"] for r in warm),
        "measure": statistics.mean(r["measure"] for r in warm),
        "span_median": statistics.median(r["span"] for r in warm),
        "cold_span": statistics.mean(r["span"] for r in cold),
        "steady_slot": ((last - first) * cpus - total_train) / len(rows), "startup": first - fit_start,
        "processes": len(seen), "span_all": statistics.mean(r["span"] for r in rows),
    }


def run_tuner(kind: str, trials: int, cpus: int, storage: Path, tag: str) -> dict:
    from ray import tune

    from workers.trainable import train_architecture

    spans = Spans()
    fn = noop if kind == "tune-noop" else train_architecture
    tuner = tune.Tuner(
        tune.with_resources(fn, {"cpu": 1}),
        param_space={"width": tune.grid_search(WIDTHS[:trials]),
                     "arch": tune.sample_from(lambda spec: tiny_arch(spec.config.width)),
                     "train": {"epochs": 1, "batch_size": 64}},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cpus, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=str(storage), name=tag, verbose=0, callbacks=[spans.callback]),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    rows = []
    for r in grid:
        m = r.metrics
        if r.error is not None or m.get("status") != "ok":
            raise RuntimeError(f"trial failed: {r.error or m.get('error')}")
        start, end = spans.spans[m["trial_id"]]
        rows.append({"train": m["train_seconds"], "in_trial": m["time_total_s"] - m["train_seconds"],
                     "measure": m.get("test_seconds", 0.0) + m.get("latency_seconds", 0.0),
                     "span": end - start - m["train_seconds"], "pid": m["pid"], "start": start})
    return summarise(rows, spans, t0, cpus)


def run_driver(trials: int, cpus: int, out: Path) -> dict:
    import json

    from nas.config import SearchConfig, TrainConfig
    from nas.evaluation import get_evaluation
    from nas.registry import register_space
    from nas.results import RunFolder
    from nas.search import SearchState, restore_strategy, run_trials
    from nas.strategies import make_strategy

    register_space("tiny_widths", tiny_space)
    space = tiny_space()
    cfg = SearchConfig(space="tiny_widths", strategy="random", budget=trials, out=str(out), workers=cpus,
                       train=TrainConfig(epochs=1, batch_size=64))
    folder = RunFolder(out)
    strategy = make_strategy("random", space, seed=0)
    state = SearchState(cfg, space, strategy, folder, get_evaluation(cfg), log=lambda s: None)
    restore_strategy(strategy, folder, state.records)
    spans = Spans()
    import nas.search

    make_callback = nas.search._make_trial_callback
    nas.search._make_trial_callback = lambda st: _Both(make_callback(st), spans.callback)
    t0 = time.perf_counter()
    try:
        run_trials(state)
    finally:
        nas.search._make_trial_callback = make_callback
    rows, pids = [], spans.pids
    for r in (json.loads(line) for line in folder.evaluations_file.read_text().splitlines()):
        m = r["metrics"]
        if r["status"] != "ok":
            raise RuntimeError(f"trial failed: {r.get('error')}")
        start, end = spans.spans[r["trial_id"]]
        in_trial = spans.totals.get(r["trial_id"], float("nan")) - m["train_seconds"]
        rows.append({"train": m["train_seconds"], "in_trial": in_trial, "span": end - start - m["train_seconds"],
                     "measure": m.get("test_seconds", 0.0) + m.get("latency_seconds", 0.0),
                     "pid": pids.get(r["trial_id"], 0), "start": start})
    return summarise(rows, spans, t0, cpus)


def _Both(a, b):
    """One Tune callback calling two (the driver's and the span recorder)."""
    from ray import tune

    class Both(tune.Callback):
        def on_trial_start(self, *args, **kw):
            b.on_trial_start(*args, **kw)
            a.on_trial_start(*args, **kw)

        def on_trial_result(self, *args, **kw):
            a.on_trial_result(*args, **kw)

        def on_trial_complete(self, *args, **kw):
            a.on_trial_complete(*args, **kw)
            b.on_trial_complete(*args, **kw)

        def on_step_end(self, *args, **kw):
            a.on_step_end(*args, **kw)

    return Both()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--kinds", default="tune-noop,trainable,driver")
    args = p.parse_args()
    if args.trials > len(WIDTHS):
        p.error(f"--trials at most {len(WIDTHS)}")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables on stdout
    import ray
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="graphnas-overhead-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=str(tmp / "r"), log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    init = time.perf_counter() - t0
    print(f"# trial overhead: {args.trials} trials x 1 epoch of a tiny conv net on digits, 1 CPU per trial, "
          f"{args.cpus} at once, actor reuse on")
    print(f"# ray {ray.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cores visible (machine shared with other work; compare within this run)")
    print(f"# ray.init: {init:.2f} s (once, not counted below); load average before: {os.getloadavg()[0]:.2f}")
    print("# seconds per trial; warm = every trial but the first on each worker process (cold: imports, data load);")
    print("# span = driver's trial start to end minus train (warm mean, warm median, cold mean); in-trial (warm) =")
    print("# Tune's time_total_s minus train; steady slot = (first start to last end x concurrency - total train) /")
    print("# trials; startup = fit() to the first trial's start (once)")
    print("# test+lat = the trial's test evaluation and latency measurement (test_seconds + latency_seconds, warm")
    print("# mean): work it is asked to do, inside in-trial and span")
    print(f"{'round':>5} {'kind':>10} {'processes':>9} {'train':>7} {'in-trial':>9} {'test+lat':>8} {'span':>7} "
          f"{'median':>7} {'cold':>7} {'steady slot':>11} {'startup':>8}")
    runs = []
    try:
        for rnd in range(args.repeats):
            for kind in args.kinds.split(","):
                tag = f"r{rnd}_{kind}"
                if kind == "driver":
                    r = run_driver(args.trials, args.cpus, tmp / tag)
                else:
                    r = run_tuner(kind, args.trials, args.cpus, tmp / "storage", tag)
                r["kind"] = kind
                runs.append(r)
                print(f"{rnd:>5} {kind:>10} {r['processes']:>9} {r['train']:>7.3f} {r['in_trial']:>9.3f} "
                      f"{r['measure']:>8.3f} {r['span']:>7.3f} {r['span_median']:>7.3f} {r['cold_span']:>7.2f} "
                      f"{r['steady_slot']:>11.3f} {r['startup']:>8.2f}", flush=True)
    finally:
        ray.shutdown()
    print()
    for kind in args.kinds.split(","):
        rs = [r for r in runs if r["kind"] == kind]
        def mean(key: str, rs: list[dict] = rs) -> float:
            return statistics.mean(r[key] for r in rs)

        print(f"{kind}: per warm trial {mean('span'):.3f} s span overhead (median {mean('span_median'):.3f} s), "
              f"{mean('in_trial'):.3f} s of it in the trial ({mean('measure'):.3f} s test evaluation and latency "
              f"measurement, {mean('span') - mean('measure'):.3f} s of the span besides them); first trial per "
              f"worker {mean('cold_span'):.2f} s; "
              f"all trials {mean('span_all'):.3f} s; steady slot {mean('steady_slot'):.3f} s; training "
              f"{mean('train'):.3f} s")
    print(f"(load average after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
