"""Epoch time of the worker on a folder of images against a plain hand-written PyTorch loop with a DataLoader on
the same folder and the same model (goal: worker / hand-written <= 1.0).

    python benchmarks/folder_epoch.py | tee results/folder_epoch.txt

The folder (written by this script into a temporary folder, deleted at the end): 10 classes x 500 PNG images of
32x32 RGB. The model: one small CNN built from one architecture graph for every loop. Training: SGD (lr 0.05,
momentum 0.9, weight decay 5e-4), batch 128, CIFAR's augmentation (random 32x32 crop of the image zero-padded by
4, horizontal flip), then one pass over the validation split; torch on 1 thread. Loops:

- worker: `workers.training.Trainer` on ``load_dataset("folder")`` (the folder decoded once into the node's uint8
  cache beforehand: that one-off cost is printed apart; then batches on the device, augmented and standardised
  there), batch-norm recalibration off as in the hand-written loops;
- hand-written, DataLoader: what one writes without torchvision: a Dataset that opens each image with Pillow, makes
  a float tensor, crops, flips and normalises it, and a DataLoader (shuffle, batch 128) with 0 and with 2 worker
  processes (persistent), as practitioners do;
- hand-written, decoded once: the images decoded into one float32 tensor in memory first (what the worker did
  before its cache), the same per-example augmentation on batches of it.

Every loop trains the same train split (the worker's split indices) for one untimed warm-up epoch, then the
loops alternate for 3 timed epochs each; figures are the median epoch (training and validation) in seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from nas.graph import ArchGraph  # noqa: E402
from workers.data import load_dataset  # noqa: E402
from workers.training import Trainer, TrainSettings  # noqa: E402

BATCH, LR, PAD = 128, 0.05, 4


def write_folder(root: Path, classes: int, per_class: int) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(0)
    files = []
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
            img[:, :, c % 3] += np.uint8(10 * c % 50)
            path = root / f"class{c}" / f"{i:04d}.png"
            Image.fromarray(img).save(path)
            files.append((path, c))
    return files


def cnn() -> ArchGraph:
    g = ArchGraph((3, 32, 32))
    x = "input"
    for i, (width, stride) in enumerate(((16, 1), (32, 2), (32, 2))):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=width, kernel_size=3, stride=stride)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return nas.build(cnn())


def optimizer(m: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)


def crop_flip(x: torch.Tensor) -> torch.Tensor:
    """One image (C, H, W): a random crop of the zero-padded image, then a random horizontal flip."""
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    i, j = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
    x = padded[:, i:i + x.shape[1], j:j + x.shape[2]]
    return x.flip(-1) if torch.rand(()) < 0.5 else x


class ImageFiles(Dataset):
    """The hand-written Dataset: each item decoded from its file with Pillow, every epoch."""

    def __init__(self, files, mean, std, train: bool):
        self.files, self.train = files, train
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path, label = self.files[i]
        with Image.open(path) as img:
            x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        if self.train:
            x = crop_flip(x)
        return (x - self.mean) / self.std, label


def hand_epoch(m, opt, train_batches, val_batches) -> float:
    start = time.perf_counter()
    m.train()
    for x, y in train_batches:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        for x, y in val_batches:
            m(x).argmax(1).eq(y).sum()
    return time.perf_counter() - start


def in_memory_batches(x: torch.Tensor, y: torch.Tensor, train: bool, generator: torch.Generator):
    order = torch.randperm(len(y), generator=generator) if train else torch.arange(len(y))
    for i in range(0, len(y), BATCH):
        idx = order[i:i + BATCH]
        xb = torch.stack([crop_flip(v) for v in x[idx]]) if train else x[idx]
        yield xb, y[idx]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="graphnas-bench-"))
    try:
        root = tmp / "images"
        files = write_folder(root, 10, args.per_class)
        import sklearn.model_selection  # noqa: F401  (imported by the split; not part of the decoding)

        t = time.perf_counter()
        data = load_dataset("folder", root=root, cache_dir=tmp / "cache")
        decode = time.perf_counter() - t
        order = sorted(files, key=lambda f: (f[1], f[0].name))  # the cache's order: label, then name
        train_files = [order[i] for i in data.splits["train"].index]
        val_files = [order[i] for i in data.splits["val"].index]
        pre = data.preprocessing
        print(f"folder: {len(files)} PNG images 32x32 RGB in 10 classes; train {len(train_files)}, val "
              f"{len(val_files)}; decoding it into the node's cache once took {decode:.2f} s (not in the epochs); "
              f"batch {BATCH}, crop:4,flip, torch threads 1")

        worker = Trainer(model(), data, TrainSettings(epochs=100, batch_size=BATCH, lr=LR, augment="crop:4,flip",
                                                      bn_recalibration=0, schedule="constant", latency_reps=0), "cpu")
        loops = {"worker (Trainer.run_epoch)": lambda: worker.run_epoch()["epoch_seconds"]}
        for workers in (0, 2):
            m = model()
            opt = optimizer(m)
            train_loader = DataLoader(ImageFiles(train_files, pre["mean"], pre["std"], True), batch_size=BATCH,
                                      shuffle=True, num_workers=workers, persistent_workers=workers > 0)
            val_loader = DataLoader(ImageFiles(val_files, pre["mean"], pre["std"], False), batch_size=512,
                                    num_workers=workers, persistent_workers=workers > 0)
            loops[f"hand-written, DataLoader, {workers} workers"] = (
                lambda m=m, opt=opt, tl=train_loader, vl=val_loader: hand_epoch(m, opt, tl, vl))
        loader = ImageFiles(train_files + val_files, pre["mean"], pre["std"], False)
        decoded = torch.stack([loader[i][0] for i in range(len(loader))])  # float32, normalised, once
        labels = torch.tensor([label for _, label in train_files + val_files])
        n = len(train_files)
        m_mem = model()
        opt_mem = optimizer(m_mem)
        gen = torch.Generator().manual_seed(0)
        loops["hand-written, decoded once (float32)"] = lambda: hand_epoch(
            m_mem, opt_mem, in_memory_batches(decoded[:n], labels[:n], True, gen),
            in_memory_batches(decoded[n:], labels[n:], False, gen))
        times: dict[str, list[float]] = {name: [] for name in loops}
        for run in loops.values():  # warm-up: DataLoader workers start, first allocations
            run()
        for _ in range(args.epochs):  # interleaved
            for name, run in loops.items():
                times[name].append(run())
        ref = statistics.median(times["worker (Trainer.run_epoch)"])
        print(f"\n{'loop':42} {'epoch s (median)':>17} {'worker / this':>14}   epochs")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:42} {med:17.2f} {ref / med:14.2f}   " + ", ".join(f"{v:.2f}" for v in ts))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
