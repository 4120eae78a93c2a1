"""Does the spatial transformer help? Issue 20's claim: on digits randomly rotated, scaled and translated on a
larger canvas (``rts_digits``, `workers.data.generated`), a small CNN with the STN (op ``stn``) in front beats the
same CNN without it, over several seeds.

    python benchmarks/stn_digits.py [--seeds 5] [--epochs 20] [--side 32] [--per-class 500] [--grad-scale G] \
        [--json results/stn_digits/stn_digits.json] [--export-check DIR] | tee results/stn_digits/stn_digits.txt

The two networks are the presets ``rts_cnn`` and ``rts_cnn_stn`` of the ``vgg_stn`` space (`search_spaces.stn`:
the ``vgg`` space with the op choice ``stn`` vs ``identity`` before its first stage; three conv stages of
16/32/64 channels with batch norm, a 4x4 average pool, a 64-unit classifier), built at the canvas size with
`nas.build`: they differ only in that node. The data set is generated once (``--data-seed``) and split by the
worker's own stratified hold-out (`workers.data.splits.split_indices`: 20% test, 20% of the rest validation);
its inputs are standardised with the training split's statistics, as the worker does. Per seed both arms are
trained by the worker's `Trainer` at identical settings (SGD momentum 0.9, weight decay 5e-4, per-step cosine
from ``--lr``, batch 64, no augmentation, batch-norm recalibration) and the same seed, which sets the initial
weights (``torch.manual_seed`` before `nas.build`) and the batch order; the data are the same for every seed.
Each network is scored once on the test split after the last epoch. Printed: a row per seed (with what the
trained transformer does: `transform_stats`), mean ± standard error of each arm and of the paired difference,
parameter counts and the settings. With
``--export-check`` the last seed's trained STN network is exported (python, TorchScript, ONNX, with the data
set's preprocessing) and each file's outputs on raw test images are compared with the trained model's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas  # noqa: E402
from workers.data import from_arrays  # noqa: E402
from workers.data.generated import rts_digits  # noqa: E402
from workers.data.splits import split_indices  # noqa: E402
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
    arrays = rts_digits(per_class=args.per_class, side=args.side, seed=args.data_seed)
    x, y = arrays["x"], arrays["y"]
    idx = split_indices(y, False, False, args.data_seed, 0.2, 0.2)
    mean, std = channel_stats(x, idx["train"], 255.0, "rts_digits")
    pre = {"scale": 1 / 255, "mean": mean, "std": std}
    data = from_arrays(*(a for s in ("train", "val", "test") for a in (x[idx[s]], y[idx[s]])), name="rts_digits",
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
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--side", type=int, default=32, help="canvas side of rts_digits")
    p.add_argument("--per-class", type=int, default=500, help="rts_digits examples per class (before splitting)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data and its split (fixed)")
    p.add_argument("--grad-scale", type=float, help="the stn op's grad_scale (default: the op's default)")
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
    params = {arm: nas.count_params(g) for arm, g in graphs.items()}
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "sgd", "lr": args.lr,
                "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "augment": "none",
                "label_smoothing": 0.0, "latency_reps": 0}
    sizes = data.sizes()
    print(f"rts_digits: side {args.side}, {args.per_class} per class, rotation ±45°, scale 1..2 (digits of 8..16 "
          f"px), data seed {args.data_seed}; train {sizes['train']}, val {sizes['val']}, test {sizes['test']}")
    print(f"networks: vgg_stn presets {ARMS['cnn']} ({params['cnn']:,} parameters) and {ARMS['cnn+stn']} "
          f"({params['cnn+stn']:,}; stn grad_scale {nas.build(graphs['cnn+stn']).stn.grad_scale})")
    print(f"training (workers.training.Trainer, CPU, torch threads 1): {json.dumps(settings)}; same seed per pair; "
          f"{args.seeds} seeds; test accuracy after the last epoch")
    rows = []
    model = None
    for seed in range(args.seeds):
        row = {"seed": seed}
        for arm in ARMS:
            t0 = time.perf_counter()
            model, acc, history = train_arm(graphs[arm], data, TrainSettings(**settings, seed=seed))
            row[arm] = acc
            row[f"{arm}_val_history"] = history
            row[f"{arm}_seconds"] = round(time.perf_counter() - t0, 1)
        row["diff"] = row["cnn+stn"] - row["cnn"]
        row["stn_transform"] = transform_stats(model, data)
        rows.append(row)
        print(f"seed {seed}: cnn {100 * row['cnn']:.2f}% | cnn+stn {100 * row['cnn+stn']:.2f}% | difference "
              f"{100 * row['diff']:+.2f} ({row['cnn_seconds']:.0f} s + {row['cnn+stn_seconds']:.0f} s) | stn sampled "
              f"area {row['stn_transform']['area']:.2f}, theta spread {row['stn_transform']['theta_spread']:.4f}",
              flush=True)
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
        print(f"export of the trained cnn+stn (seed {args.seeds - 1}), outputs on 64 raw test images vs the model's: "
              + "; ".join(checks))
    seconds = time.perf_counter() - start
    print(f"({seconds:.0f} s)")
    if args.json:
        summary = {arm: dict(zip(("mean", "se"), mean_se([r[arm] for r in rows]), strict=True))
                   for arm in (*ARMS, "diff")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": {"set": "rts_digits", "side": args.side, "per_class": args.per_class,
                     "data_seed": args.data_seed, "sizes": sizes},
            "stn_grad_scale": nas.build(graphs["cnn+stn"]).stn.grad_scale,
            "presets": ARMS, "params": params, "settings": settings, "seeds": rows, "summary": summary,
            "export_check": checks, "seconds": round(seconds, 1)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
