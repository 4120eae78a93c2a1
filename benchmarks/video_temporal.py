"""Does Timeception use time? moving_digits (workers/video_data.py), where only the order of the frames
tells the classes apart, on CPU.

(a) the timeception space's ``digits_tc`` preset: per-frame 2D backbone (1x3x3 convs), 2 Timeception layers
    (4 groups, kernels 3/5/7, expansion 1.25), global average pooling, linear classifier;
(b) ``digits_avgpool``: the same backbone and classifier with temporal (and spatial) average pooling only.

Both are trained by workers.training.train_candidate with the same settings, one run per seed (the seed
draws the split, the initial weights and the batches; the clips themselves are moving_digits' seed 0).
Test accuracy is reported as mean ± standard error over seeds, and for both also on a frame-shuffled copy
of the test split (each clip's frames in a random order of their own): a network that uses the order
must drop there, and (b), which averages per-frame features, cannot change. The training settings
(AdamW, lr 0.01, 15 epochs, batch 32, no hidden classifier layer) were chosen on seed 0's validation
split; the test split is only read here, at the end.

    python benchmarks/video_temporal.py | tee results/video_temporal.txt
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from workers.data import load_dataset  # noqa: E402
from workers.training import evaluate, train_candidate  # noqa: E402

SEEDS = (0, 1, 2)
DATASET = "moving_digits"
TRAIN = {"epochs": 15, "batch_size": 32, "optimizer": "adamw", "lr": 0.01, "weight_decay": 5e-4}
OPTIONS = {"hidden": 0}
NETWORKS = {"timeception (digits_tc)": "digits_tc", "temporal avg pool (digits_avgpool)": "digits_avgpool"}


def shuffle_frames(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Each clip (N, C, T, H, W) with its frames in a random order of its own."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(x.shape[2], generator=gen) for _ in range(len(x))])
    return x[torch.arange(len(x))[:, None], :, order].transpose(1, 2).contiguous()


def mean_se(values: list[float]) -> str:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.1f} ± {100 * se:.1f}"


def main() -> None:
    torch.set_num_threads(1)
    space = nas.get_space("timeception")
    print(f"data set {DATASET}; training {TRAIN}; options {OPTIONS}; seeds {list(SEEDS)}; torch threads 1")
    results: dict[str, dict[str, list[float]]] = {k: {"test": [], "shuffled": [], "seconds": []} for k in NETWORKS}
    for seed in SEEDS:
        data = load_dataset(DATASET, seed=seed)
        shuffled = shuffle_frames(data.x_test, seed=1000 + seed)
        for label, preset in NETWORKS.items():
            g = space.graph(preset=preset, input_shape=data.input_shape, num_classes=data.num_classes, **OPTIONS)
            torch.manual_seed(seed)
            model = nas.build(g)
            start = time.perf_counter()
            metrics = train_candidate(model, data, seed=seed, device="cpu", **TRAIN)
            seconds = time.perf_counter() - start
            test = evaluate(model, data.x_test, data.y_test)["accuracy"]
            shuf = evaluate(model, shuffled, data.y_test)["accuracy"]
            r = results[label]
            r["test"].append(test)
            r["shuffled"].append(shuf)
            r["seconds"].append(seconds)
            print(f"seed {seed} {label}: params {nas.count_params(g)}, val {metrics['val_accuracy']:.3f}, "
                  f"test {test:.3f}, frame-shuffled test {shuf:.3f}, {seconds:.0f} s", flush=True)
    print(f"\n{data.sizes()} clips of {data.input_shape}, {data.num_classes} classes (chance 10%)")
    print("test accuracy, % (mean ± se over seeds)")
    for label, r in results.items():
        print(f"  {label:36s} {mean_se(r['test']):>12s}   frame-shuffled test {mean_se(r['shuffled']):>12s}   "
              f"train {statistics.mean(r['seconds']):.0f} s per run")
    a, b = (results[k]["test"] for k in NETWORKS)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    print(f"timeception - avg pool, same seed: {mean_se(diffs)} points")


if __name__ == "__main__":
    main()
