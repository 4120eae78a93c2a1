"""Does the spatial transformer help? Issue 20's claim: on digits randomly rotated, scaled and translated on a
larger canvas (``rts_digits``, `workers.data.generated`), a small CNN with the STN (op ``stn``) in front beats the
same CNN without it, over several seeds.

    python benchmarks/stn_digits.py [--seeds 5] [--first-seed 0] [--jobs 2] [--epochs 6] [--per-class 1000] \
        [--optimizer adamw] [--lr 1e-3] [--weight-decay 0] [--stn KEY=VALUE ...] \
        [--json results/stn_digits/stn_digits_v2.json] [--export-check DIR] | tee results/stn_digits/stn_digits_v2.txt

The two networks are the presets ``rts_cnn`` and ``rts_cnn_stn`` of the ``vgg_stn`` space (`search_spaces.stn`:
the ``vgg`` space with the op choice ``stn`` vs ``identity`` before its first stage; three conv stages of
16/32/64 channels with batch norm, a 4x4 average pool, a 64-unit classifier), built at the canvas size with
`nas.build`: they differ only in that node (``--stn`` overrides op params of the transformer). The train,
validation and test sets are generated from disjoint digit images (`make_data`), the same for every seed; inputs
are standardised with the training set's statistics, as the worker does. Per seed both arms are trained by the
worker's `Trainer` at identical settings (AdamW lr 1e-3 without weight decay by default, or SGD momentum 0.9;
per-step cosine, batch 64, no augmentation, batch-norm recalibration) and the same seed, which sets the initial
weights (``torch.manual_seed`` before `nas.build`) and the batch order. Each network is scored once on the test
set after the last epoch. ``--jobs N`` trains N seeds at once in forked processes of one torch thread each (each seed
trains as it would alone: the same seed, one thread). Printed: a row per seed (with what the trained transformer does:
`transform_stats`), mean ± standard error of each arm and of the paired difference, parameter counts and the
settings. With ``--export-check`` the last seed's trained STN network is exported (python, TorchScript, ONNX,
with the data set's preprocessing) and each file's outputs on raw test images are compared with the trained
model's.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from workers.data import from_arrays  # noqa: E402
from workers.data.generated import rts_digits, source_parts  # noqa: E402
from workers.data.stats import channel_stats  # noqa: E402
from workers.training import Trainer, TrainSettings  # noqa: E402

ARMS = {"cnn": "rts_cnn", "cnn+stn": "rts_cnn_stn"}


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return statistics.mean(values), se


def fmt(values: list[float]) -> str:
    m, se = mean_se(values)
    return f"{100 * m:.2f} ± {100 * se:.2f}"


def make_data(args):
    """Train, validation and test sets generated from disjoint digit images (`source_parts`: 60/20/20% of each
    class of scikit-learn's digits, split by ``--data-seed``), each drawn with its own seed, so no test digit's
    image was seen in training, only other distortions of other images of its class."""
    parts = source_parts((0.6, 0.2, 0.2), seed=args.data_seed)
    sizes = {"train": args.per_class, "val": args.val_per_class, "test": args.test_per_class}
    sets = {}
    for k, (split, per_class) in enumerate(sizes.items()):
        a = rts_digits(per_class=per_class, side=args.side, seed=1000 * args.data_seed + k, sources=parts[k])
        sets[split] = (a["x"], a["y"])
    mean, std = channel_stats(sets["train"][0], np.arange(len(sets["train"][1])), 255.0, "rts_digits")
    pre = {"scale": 1 / 255, "mean": mean, "std": std}
    data = from_arrays(*(a for s in ("train", "val", "test") for a in sets[s]), name="rts_digits",
                       preprocessing=pre, num_classes=10)
    return data, pre


def train_arm(graph, data, settings: TrainSettings):
    torch.manual_seed(settings.seed)
    model = nas.build(graph)
    trainer = Trainer(model, data, settings, "cpu")
    history = []
    while not trainer.done:
        m = trainer.run_epoch()
        history.append(round(float(m["val_accuracy"]), 4))
    return model, trainer.evaluate("test")["accuracy"], history


_JOB: tuple = ()  # (graphs, data, settings) of this run, set before seeds are trained (inherited by forked workers)


def run_seed(seed: int) -> tuple[dict, dict]:
    """Train both arms at `seed`: the row of figures, and the trained STN network's state dict."""
    torch.set_num_threads(1)
    graphs, data, settings = _JOB
    row: dict = {"seed": seed}
    for arm in ARMS:
        t0 = time.perf_counter()
        model, acc, history = train_arm(graphs[arm], data, TrainSettings(**settings, seed=seed))
        row[arm] = acc
        row[f"{arm}_val_history"] = history
        row[f"{arm}_seconds"] = round(time.perf_counter() - t0, 1)
    row["diff"] = row["cnn+stn"] - row["cnn"]
    row["stn_transform"] = transform_stats(model, data)
    return row, model.state_dict()


def transform_stats(model, data) -> dict[str, float]:
    """What the trained transformer does on the test images: the area of the region it samples relative to the
    canvas (|det| of the 2x2 part; > 1 shrinks the image), and how much its matrix varies between images (the
    standard deviation over images, averaged over the six entries; ~0 means one fixed transform for all)."""
    model.eval()
    x = data.standardise(torch.from_numpy(np.asarray(data.splits["test"].gather()["x"])).float())
    with torch.no_grad():
        theta = model.stn.theta(x)
    return {"area": round(theta[:, :, :2].det().abs().mean().item(), 4),
            "theta_spread": round(theta.std(0).mean().item(), 4)}


def export_check(graph, model, data, pre, folder: Path) -> list[str]:
    """Export the trained network three ways and compare each file's outputs with the model's on raw test inputs."""
    import importlib.util

    from nas.export import export

    model.eval()
    raw = torch.from_numpy(np.asarray(data.splits["test"].gather()["x"][:64])).float()
    with torch.no_grad():
        want = model(data.standardise(raw))
    lines = []
    files = export(graph, "python", folder / "stn_net.py", weights=model, preprocessing=pre)
    spec = importlib.util.spec_from_file_location("stn_net", files[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(torch.load(files[1], weights_only=True))
    with torch.no_grad():
        got = net.eval()(raw)
    lines.append(f"python: max |diff| {(got - want).abs().max().item():.2e}")
    script = export(graph, "torchscript", folder / "stn_net.pt", weights=model, preprocessing=pre)[0]
    with torch.no_grad():
        got = torch.jit.load(str(script))(raw)
    lines.append(f"torchscript: max |diff| {(got - want).abs().max().item():.2e}")
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        import onnxruntime as ort

        path = export(graph, "onnx", folder / "stn_net.onnx", weights=model, preprocessing=pre)[0]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": raw.numpy()})[0])
        lines.append(f"onnx: max |diff| {(got - want).abs().max().item():.2e}")
    else:
        lines.append("onnx: not checked (onnx, onnxscript or onnxruntime missing)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--side", type=int, default=32, help="canvas side of rts_digits")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--per-class", type=int, default=1000, help="training examples per class")
    p.add_argument("--val-per-class", type=int, default=100, help="validation examples per class")
    p.add_argument("--test-per-class", type=int, default=300, help="test examples per class")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data and its split (fixed)")
    p.add_argument("--grad-scale", type=float, help="the stn op's grad_scale (default: the op's default)")
    p.add_argument("--stn", action="append", default=[], metavar="KEY=VALUE",
                   help="another stn op parameter (a Python literal), e.g. --stn norm=True; repeatable")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, in worker processes of 1 thread")
    p.add_argument("--json", type=Path, help="write the per-seed figures here")
    p.add_argument("--export-check", type=Path, metavar="FOLDER",
                   help="export the last seed's trained STN network into FOLDER and compare its outputs")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    data, pre = make_data(args)
    space = nas.get_space("vgg_stn")
    shape = (1, args.side, args.side)
    graphs = {arm: space.graph(preset=preset, input_shape=shape) for arm, preset in ARMS.items()}
    if args.grad_scale is not None:
        graphs["cnn+stn"].nodes["stn"]["params"]["grad_scale"] = args.grad_scale
    for item in args.stn:
        key, _, value = item.partition("=")
        graphs["cnn+stn"].nodes["stn"]["params"][key] = ast.literal_eval(value)
    params = {arm: nas.count_params(g) for arm, g in graphs.items()}
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                "momentum": 0.9, "weight_decay": args.weight_decay, "warmup_epochs": args.warmup_epochs,
                "schedule": "cosine", "augment": "none", "label_smoothing": 0.0, "latency_reps": 0}
    sizes = data.sizes()
    print(f"rts_digits: side {args.side}, rotation ±45°, scale 1..2 (digits of 8..16 px), data seed {args.data_seed};"
          f" train {sizes['train']}, val {sizes['val']}, test {sizes['test']}, each from its own 60/20/20% of the "
          f"digit images (no source image shared between splits)")
    print(f"networks: vgg_stn presets {ARMS['cnn']} ({params['cnn']:,} parameters) and {ARMS['cnn+stn']} "
          f"({params['cnn+stn']:,}; stn {nas.build(graphs['cnn+stn']).stn.extra_repr()})")
    print(f"training (workers.training.Trainer, CPU, torch threads 1): {json.dumps(settings)}; same seed per pair; "
          f"{args.seeds} seeds; test accuracy after the last epoch")
    global _JOB
    _JOB = (graphs, data, settings)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows, states = [], {}
    pool = None
    if args.jobs > 1:  # forked workers inherit the data and graphs; each trains whole seeds on 1 thread
        pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork"))
    results = pool.map(run_seed, seeds) if pool else map(run_seed, seeds)
    for row, state in results:
        rows.append(row)
        states[row["seed"]] = state
        print(f"seed {row['seed']}: cnn {100 * row['cnn']:.2f}% | cnn+stn {100 * row['cnn+stn']:.2f}% | difference "
              f"{100 * row['diff']:+.2f} ({row['cnn_seconds']:.0f} s + {row['cnn+stn_seconds']:.0f} s) | stn sampled "
              f"area {row['stn_transform']['area']:.2f}, theta spread {row['stn_transform']['theta_spread']:.4f}",
              flush=True)
    if pool:
        pool.shutdown()
    model = nas.build(graphs["cnn+stn"])
    model.load_state_dict(states[seeds[-1]])
    diffs = [r["diff"] for r in rows]
    print(f"test accuracy after {args.epochs} epochs, mean ± standard error over {args.seeds} seeds (%):")
    print(f"  cnn:               {fmt([r['cnn'] for r in rows])}")
    print(f"  cnn+stn:           {fmt([r['cnn+stn'] for r in rows])}")
    print(f"  paired difference: {fmt(diffs)} (stn better on {sum(d > 0 for d in diffs)} of {len(diffs)} seeds, "
          f"worse on {sum(d < 0 for d in diffs)})")
    checks = []
    if args.export_check:
        args.export_check.mkdir(parents=True, exist_ok=True)
        checks = export_check(graphs["cnn+stn"], model, data, pre, args.export_check)
        print(f"export of the trained cnn+stn (seed {args.first_seed + args.seeds - 1}), outputs on 64 raw test "
              "images vs the model's: " + "; ".join(checks))
    seconds = time.perf_counter() - start
    print(f"({seconds:.0f} s)")
    if args.json:
        summary = {arm: dict(zip(("mean", "se"), mean_se([r[arm] for r in rows]), strict=True))
                   for arm in (*ARMS, "diff")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": {"set": "rts_digits", "side": args.side, "per_class": args.per_class,
                     "val_per_class": args.val_per_class, "test_per_class": args.test_per_class,
                     "sources": "disjoint 60/20/20% of the digit images",
                     "data_seed": args.data_seed, "sizes": sizes},
            "stn_params": dict(graphs["cnn+stn"].nodes["stn"]["params"]),
            "presets": ARMS, "params": params, "settings": settings, "seeds": rows, "summary": summary,
            "export_check": checks, "seconds": round(seconds, 1)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
