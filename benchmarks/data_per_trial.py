"""What a trial pays for its data, before and after the node cache: a CIFAR-10-format folder of 50,000 training
examples (plus the 10,000-example test batch the format has), random pixels, written by this script into a
temporary folder and deleted at the end.

    python benchmarks/data_per_trial.py | tee results/data_per_trial.txt

Each measurement is a fresh Python process, as a Ray worker process is, that imports what the worker imports
and then:

- before (the loader of commit 5d3b4d0, taken from git into a temporary folder: every worker process decoded
  the files into float32 tensors of the three splits): ``load_dataset("cifar10")``, then one epoch of training
  batches (128, shuffled) gathered from the tensors as that trainer did;
- after, the first trial on a node (empty cache): ``load_dataset`` decodes the files into the node's uint8 cache;
- after, every later trial on the node (a fresh process): ``load_dataset`` opens the cache entry, then one epoch
  of training batches is read from it (``Batches``, streamed as on a CPU for a split this size) and standardised
  as the trainer does (``InputTransform``);
- after, a trial on a reused actor: the worker's per-process handle (``workers.trainable.cached_dataset``)
  asked a second time in the same process.

Reported per process: CPU seconds (user + system, all threads) and wall seconds of the data step, resident
memory (VmRSS) after it and the peak (VmHWM) during it, both less the process's resident memory after its
imports. The before/after processes alternate, three of each; figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BEFORE = "5d3b4d0"  # the last commit with the per-process float32 loader
OLD_FILES = ("workers/datasets.py", "workers/arrays.py", "workers/video_data.py")

PROBE = r'''
import json, os, resource, sys, time
import numpy as np
import torch

def mem():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

torch.set_num_threads(1)
mode, root, cache = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "before":
    from workers.datasets import load_dataset
else:
    from workers.data import Batches, InputTransform, load_dataset
    from workers.trainable import cached_dataset, train_settings
import sklearn.model_selection  # imported by both loaders when they split
base, _ = mem()
c0, w0 = cpu(), time.perf_counter()
epoch = None
if mode == "before":
    d = load_dataset("cifar10", root=root)
    c1, w1, opened = cpu(), time.perf_counter(), mem()[0]
    perm = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(0))
    s = 0.0
    for i in range(0, len(perm), 128):
        s += float(d.x_train[perm[i:i + 128]].sum())
    epoch = "in memory"
elif mode == "first":
    d = load_dataset("cifar10", root=root, cache_dir=cache)
    c1, w1, opened = cpu(), time.perf_counter(), mem()[0]
elif mode == "after":
    d = load_dataset("cifar10", root=root, cache_dir=cache)
    c1, w1, opened = cpu(), time.perf_counter(), mem()[0]
    batches = Batches(d.splits["train"], "cpu", "auto")
    prep = InputTransform(d.preprocessing, "cpu", 3)
    perm = torch.randperm(len(batches), generator=torch.Generator().manual_seed(0))
    s = 0.0
    for b in batches.iterate(perm, 128):
        s += float(prep(b["x"]).sum())
    epoch = batches.placement
elif mode == "reused":
    t = train_settings({"dataset": "cifar10", "data_root": root, "data_cache": cache})
    cached_dataset(t)  # the actor's first trial
    base, _ = mem()
    c0, w0 = cpu(), time.perf_counter()
    d = cached_dataset(t)  # a later trial on the same actor
    c1, w1, opened = cpu(), time.perf_counter(), mem()[0]
c2, w2 = cpu(), time.perf_counter()
rss, hwm = mem()
print(json.dumps({"cpu": c1 - c0, "wall": w1 - w0, "opened": opened - base, "epoch_cpu": c2 - c1,
                  "epoch_wall": w2 - w1, "rss": rss - base, "peak": hwm - base, "base": base, "epoch": epoch}))
'''


def write_cifar(folder: Path, per_batch: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        records = rng.integers(0, 256, (per_batch, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, per_batch)
        records.tofile(folder / name)


def old_loader(tmp: Path) -> Path:
    """The loader of commit BEFORE, as a package `workers` of its own."""
    pkg = tmp / "old" / "workers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for f in OLD_FILES:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:{f}"], capture_output=True, text=True,
                              check=True).stdout
        (pkg / Path(f).name).write_text(text)
    return pkg.parent


def probe(mode: str, root: Path, cache: Path, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(root), str(cache)], capture_output=True, text=True,
                         env=env, cwd=str(path), timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-batch", type=int, default=10000, help="records per batch file (5 training batches)")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="graphnas-bench-"))
    try:
        root = tmp / "cifar-10-batches-bin"
        write_cifar(root, args.per_batch)
        size = sum(f.stat().st_size for f in root.iterdir()) / 2**20
        print(f"CIFAR-10-format folder: {5 * args.per_batch} training + {args.per_batch} test examples, {size:.0f} MiB;"
              f" before = commit {BEFORE}'s loader, after = this commit's; each row a fresh process, torch threads 1")
        old, new, cache = old_loader(tmp), REPO, tmp / "cache"
        first = probe("first", root, cache, new)
        rows: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.reps):  # interleaved
            rows["before"].append(probe("before", root, cache, old))
            rows["after"].append(probe("after", root, cache, new))
        reused = probe("reused", root, cache, new)

        def med(mode: str, key: str) -> float:
            return statistics.median(r[key] for r in rows[mode])

        print("\nthe data step: load (before) or open (after) the data set, as each trial does first")
        print(f"{'':46} {'CPU s':>7} {'wall s':>7} {'RSS MiB':>8} {'peak MiB':>9}")
        print(f"{'before: every worker process loads':46} {med('before', 'cpu'):7.2f} {med('before', 'wall'):7.2f} "
              f"{med('before', 'opened'):8.0f} {'':9}")
        print(f"{'after: the first trial on a node decodes':46} {first['cpu']:7.2f} {first['wall']:7.2f} "
              f"{first['opened']:8.0f} {first['peak']:9.0f}")
        print(f"{'after: a later trial (a fresh process) opens':46} {med('after', 'cpu'):7.3f} "
              f"{med('after', 'wall'):7.3f} {med('after', 'opened'):8.1f}")
        print(f"{'after: a later trial on a reused actor':46} {reused['cpu']:7.4f} {reused['wall']:7.4f} "
              f"{reused['opened']:8.1f}")
        print("\nthen one epoch of training batches (128, shuffled) read and standardised, as the trainer does:")
        print(f"{'':46} {'CPU s':>7} {'wall s':>7} {'RSS MiB':>8} {'peak MiB':>9}")
        print(f"{'before (tensors in the process)':46} {med('before', 'epoch_cpu'):7.2f} "
              f"{med('before', 'epoch_wall'):7.2f} {med('before', 'rss'):8.0f} {med('before', 'peak'):9.0f}")
        print(f"{'after (batches from the cache: ' + str(rows['after'][0]['epoch']) + ')':46} "
              f"{med('after', 'epoch_cpu'):7.2f} {med('after', 'epoch_wall'):7.2f} {med('after', 'rss'):8.0f} "
              f"{med('after', 'peak'):9.0f}")
        print(f"(memory above the process's resident memory after its imports, median "
              f"{statistics.median(r['base'] for r in rows['after']):.0f} MiB; peak = VmHWM from then on)")
        cpu_ratio = med('before', 'cpu') / med('after', 'cpu')
        print(f"\nratios before / after, a later trial: data step CPU {cpu_ratio:.0f}x,"
              f" wall {med('before', 'wall') / med('after', 'wall'):.0f}x; resident memory after the data step "
              f"{med('before', 'opened') / max(med('after', 'opened'), 0.1):.0f}x; peak through an epoch "
              f"{med('before', 'peak') / max(med('after', 'peak'), 0.1):.1f}x")
        for mode in ("before", "after"):
            print(f"{mode} runs: " + "; ".join(f"data step {r['cpu']:.3f} s CPU, {r['opened']:.0f} MiB; peak "
                                               f"{r['peak']:.0f} MiB" for r in rows[mode]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
