"""Training on an image folder larger than this machine's RAM could hold as float32, with bounded memory.

    python benchmarks/larger_than_ram.py | tee results/larger_than_ram.txt

Two synthetic folders (written by this script into a temporary folder, deleted at the end) of 256x256 RGB BMP
images in 2 classes: a small one (1 GiB of pixels) and a large one (6 GiB of pixels: 24 GiB as float32, more than
the machine's whole memory, let alone what is free). For each, two fresh processes, as a node's first trial and a
later one:

1. decode: ``load_dataset("folder")`` decodes the folder into the node's uint8 cache (block by block);
2. train: one epoch of a small CNN by the worker's ``Trainer`` (batch 64, flip augmentation, torch on 1 thread),
   the batches streamed from the cache (``data_placement`` auto chooses stream for a split this size), then one
   pass over the validation split (evaluation batch 64).

Each process samples its resident memory (VmRSS) every 0.2 s and reports the peak (VmHWM) less its resident
memory after its imports (and, for training, after building the model and the trainer).

The bound of the training process: the data it holds are at most PREFETCH + 2 batches of uint8 rows, read with
positioned reads (nothing is memory-mapped, so the file's pages are the kernel's page cache, shared and
reclaimable, never the process's), plus the float32 tensors made from the batch being trained: its cast and
scaling, augmentation and standardisation, and the first layer's input and workspace; the bound printed allows
8 float32 copies of a batch for those. None of it grows with the data set. The decoding process holds one block
of images at a time (`workers.data.images.block_size`: at most 32 MiB of them) and one 16 MiB block for the
statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIDE = 256

PROBE = r'''
import json, sys, threading, time
import torch

def mem():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

samples = []
def sample():
    while True:
        samples.append(mem()[0])
        time.sleep(0.2)

torch.set_num_threads(1)
mode, root, cache = sys.argv[1:4]
import nas
from nas.graph import ArchGraph
from workers.data import load_dataset
from workers.data.batches import PREFETCH
from workers.training import Trainer, TrainSettings
import sklearn.model_selection
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
out = {}
if mode == "decode":
    base = mem()[0]
    data = load_dataset("folder", root=root, cache_dir=cache)
else:
    data = load_dataset("folder", root=root, cache_dir=cache)
    g = ArchGraph(data.input_shape)
    x = g.add_op("conv0", "conv", "input", out_channels=8, kernel_size=8, stride=8, padding=0)
    x = g.add_op("bn0", "bn", x)
    x = g.add_op("relu0", "relu", x)
    x = g.add_op("conv1", "conv", x, out_channels=16, kernel_size=3, stride=2)
    x = g.add_op("relu1", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=data.num_classes)
    torch.manual_seed(0)
    settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=64, augment="flip", latency_reps=0)
    trainer = Trainer(nas.build(g), data, settings, "cpu")
    base = mem()[0]
    start = time.perf_counter()
    metrics = trainer.run_epoch()
    batch = 64 * int(torch.tensor(data.input_shape).prod())
    out.update(placement=trainer.train_batches.placement, steps=metrics["steps"], batch_mib=batch / 2**20,
               bound_mib=((PREFETCH + 2) * batch + 8 * 4 * batch) / 2**20, val_accuracy=metrics["val_accuracy"])
rss, hwm = mem()
out.update(seconds=time.perf_counter() - start, base=base, peak=hwm - base, sampled=max(samples) - base,
           rss=rss - base, examples=sum(data.sizes().values()))
print(json.dumps(out))
'''


def write_folder(root: Path, gib: float) -> int:
    """BMP images of SIDE x SIDE x 3 pixels, 2 classes, until `gib` GiB of pixels; returns their number."""
    from PIL import Image

    n = int(np.ceil(gib * 2**30 / (SIDE * SIDE * 3)))
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"class{i % 2}" / f"{i:06d}.bmp")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    return n


def probe(mode: str, root: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(root), str(cache)], capture_output=True, text=True,
                         env=env, cwd=str(REPO), timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def meminfo() -> dict[str, float]:
    info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    return {k: int(info[k].split()[0]) / 2**20 for k in ("MemTotal", "MemAvailable")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, nargs="+", default=[1.0, 6.0], help="GiB of pixels of each folder")
    p.add_argument("--tmp", default=None, help="where to write the folders (default: the system's temp folder)")
    args = p.parse_args()
    m = meminfo()
    print(f"machine: {m['MemTotal']:.1f} GiB of memory, {m['MemAvailable']:.1f} GiB available at the start; "
          f"{SIDE}x{SIDE} RGB BMP images, 2 classes; torch threads 1")
    for gib in args.gib:
        tmp = Path(tempfile.mkdtemp(prefix="graphnas-bench-", dir=args.tmp))
        try:
            t = time.perf_counter()
            n = write_folder(tmp / "images", gib)
            written = time.perf_counter() - t
            as_float = n * SIDE * SIDE * 3 * 4 / 2**30
            print(f"\nfolder of {n} images: {gib:.1f} GiB of uint8 pixels, {as_float:.1f} GiB as float32 "
                  f"({as_float / meminfo()['MemAvailable']:.1f}x the memory available now); written in {written:.0f} s")
            dec = probe("decode", tmp / "images", tmp / "cache")
            print(f"  decode into the node's cache: {dec['seconds']:.0f} s, peak resident memory +{dec['peak']:.0f} "
                  f"MiB above the process's {dec['base']:.0f} MiB after imports")
            tr = probe("train", tmp / "images", tmp / "cache")
            print(f"  train one epoch ({tr['steps']} steps of 64, batches {tr['placement']}ed, then validation): "
                  f"{tr['seconds']:.0f} s, peak resident memory +{tr['peak']:.0f} MiB (sampled every 0.2 s: "
                  f"+{tr['sampled']:.0f} MiB) above the process's {tr['base']:.0f} MiB with its model and trainer; "
                  f"the bound: {tr['bound_mib']:.0f} MiB ((PREFETCH + 2) batches of {tr['batch_mib']:.1f} MiB of "
                  "uint8 + 8 float32 copies of one batch)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
