"""Does the worker's augmentation help? scikit-learn's digits with a small training fraction, a fixed small CNN,
test accuracy with random crops (``crop:1``: 1 pixel of padding on 8x8 images, CIFAR's 4 of 32 scaled down)
against none, over several seeds, at two training lengths (a short one, as a search's trials, and a long one);
the same seed gives both arms the same training examples, initial weights and batch order, so the comparison is
paired.

    python benchmarks/augment_effect.py [--seeds 10] [--fraction 0.1] [--epochs 40 200] | tee results/augment_effect.txt

Per seed: the training examples are a seeded, stratified `fraction` of the worker's training split of digits;
validation and test are the worker's own splits (288 and 359 examples); the network is trained by the worker's
`Trainer` (SGD lr 0.05, cosine, batch 32, batch-norm recalibration) and scored once on the test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from nas.graph import ArchGraph  # noqa: E402
from workers.data import from_arrays, load_dataset  # noqa: E402
from workers.data.splits import hold_out  # noqa: E402
from workers.training import Trainer, TrainSettings  # noqa: E402


def small_cnn() -> ArchGraph:
    g = ArchGraph((1, 8, 8))
    x = g.add_op("conv1", "conv", "input", out_channels=16, kernel_size=3)
    x = g.add_op("bn1", "bn", x)
    x = g.add_op("relu1", "relu", x)
    x = g.add_op("conv2", "conv", x, out_channels=32, kernel_size=3, stride=2)
    x = g.add_op("bn2", "bn", x)
    x = g.add_op("relu2", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def mean_se(values: list[float]) -> str:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.2f} ± {100 * se:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, nargs="+", default=[40, 200])
    p.add_argument("--augment", default="crop:1")
    args = p.parse_args()
    torch.set_num_threads(1)
    digits = load_dataset("digits")
    train, val, test = (digits.splits[s].gather() for s in ("train", "val", "test"))
    print(f"digits: {len(train['y'])} training examples, {args.fraction} of them per seed; val {len(val['y'])}, "
          f"test {len(test['y'])}; batch 32, SGD lr 0.05 cosine; augment {args.augment!r} vs none; {args.seeds} "
          f"seeds; torch threads 1")
    for epochs in args.epochs:
        compare(epochs, args, digits, train, val, test)


def compare(epochs: int, args, digits, train, val, test) -> None:
    print(f"\n{epochs} epochs:")
    results: dict[str, list[float]] = {"none": [], args.augment: []}
    start = time.perf_counter()
    for seed in range(args.seeds):
        _, few = hold_out(train["y"], args.fraction, 1000 + seed, "training subset")
        data = from_arrays(train["x"][few], train["y"][few], val["x"], val["y"], test["x"], test["y"], name="digits",
                           preprocessing=digits.preprocessing)
        line = [f"seed {seed}: {len(few)} training examples"]
        for augment in ("none", args.augment):
            torch.manual_seed(seed)
            model = nas.build(small_cnn())
            settings = TrainSettings(epochs=epochs, batch_size=32, lr=0.05, seed=seed, augment=augment,
                                     latency_reps=0)
            trainer = Trainer(model, data, settings, "cpu")
            while not trainer.done:
                trainer.run_epoch()
            acc = trainer.evaluate("test")["accuracy"]
            results[augment].append(acc)
            line.append(f"{augment} {100 * acc:.2f}%")
        print(" | ".join(line), flush=True)
    diff = [a - b for a, b in zip(results[args.augment], results["none"], strict=True)]
    print(f"test accuracy after {epochs} epochs ({epochs * -(-len(few) // 32)} steps), mean ± standard error over "
          f"{args.seeds} seeds (%):")
    print(f"  no augmentation:   {mean_se(results['none'])}")
    print(f"  {args.augment + ':':<18} {mean_se(results[args.augment])}")
    print(f"  paired difference: {mean_se(diff)} (augmented better on {sum(d > 0 for d in diff)} of {len(diff)} "
          f"seeds, worse on {sum(d < 0 for d in diff)})")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
