"""A standalone ``train.py`` (torch and numpy only) that retrains an exported model from scratch.

The script imports the exported model file next to it, reads a folder of ``.npy`` arrays
(``x_train.npy``/``y_train.npy``, optional ``x_val``/``y_val`` and ``x_test``/``y_test``), prepares
them as graphnas' workers do (uint8 scaled to [0, 1], per-channel standardisation with the training
split's statistics), and trains with the given hyperparameters: SGD (momentum) or AdamW, weight decay,
label smoothing, a per-step cosine (or constant) learning rate, auxiliary heads (``model.aux_outputs``)
weighted like the search's training loop (heads whose width is not the classifier's are left out, with
a note). It prints the loss and accuracy of every epoch and saves the
trained state dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from nas.export.python_codegen import ExportError
from nas.train_settings import OPTIMIZERS, SCHEDULES, SettingsError, TrainSettings

__all__ = ["OPTIMIZERS", "SCHEDULES", "USED", "TrainConfig", "train_config_of", "train_script"]

# train.py's hyperparameters are the search's training settings, one definition (nas.train_settings).
# An export from a run gets the run's settings; one without a run (a space's preset, an architecture file
# without them) gets TrainSettings' defaults, the search's: 3 epochs of batch 64, which retrain the way a
# candidate was trained, so train.py's accuracy compares with the search's; a longer training is
# `python train.py --epochs N`.
TrainConfig = TrainSettings
# the settings train.py uses, in the order of its DEFAULTS; the others (data location and splits, AMP,
# channels-last, time limit, evaluation batch, batch-norm recalibration, checkpoints, latency) are accepted
# and ignored: train.py reads --data, runs in float32 and trains every epoch
USED = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "label_smoothing", "schedule",
        "seed", "aux_weight", "val_fraction")


def train_config_of(config: TrainSettings | Mapping[str, Any] | Any | None) -> TrainSettings:
    """Checked `TrainSettings` from None (defaults), a mapping of settings, or a dataclass of them."""
    if config is None:
        config = {}
    elif isinstance(config, TrainSettings):
        config = config.to_dict()
    elif not isinstance(config, Mapping):
        try:
            config = asdict(config)
        except TypeError:
            raise ExportError(f"train_config must be a mapping or a dataclass, got {type(config).__name__}") from None
    known = [f.name for f in fields(TrainSettings)]
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ExportError(f"train_config has unknown setting(s) {unknown}; known: {sorted(known)}")
    try:
        return TrainSettings.from_dict(dict(config), "train_config")
    except SettingsError as e:
        if e.setting is None:
            raise ExportError(str(e)) from None
        raise ExportError(f"train_config: {e.setting!r} must be {e.want}, got {e.value!r}") from None


def train_script(model_file: str, class_name: str, arch_id: str, input_shape: tuple[int, ...],
                 config: TrainSettings) -> str:
    """The text of train.py for the exported model file `model_file` (a name next to train.py); its
    DEFAULTS are `config`'s settings that train.py uses (`USED`)."""
    defaults = {k: getattr(config, k) for k in USED}
    lines = [f"    {k!r}: {v!r}," for k, v in defaults.items()]
    return _TEMPLATE.format(
        class_name=class_name, arch_id=arch_id, model_file=model_file, input_shape=tuple(input_shape),
        defaults="\n".join(lines),
    )


_TEMPLATE = '''"""Retrain {class_name} (graphnas architecture {arch_id}) from scratch. Needs only torch and numpy.

    python train.py --data DIR [--epochs N] [--lr LR] [--optimizer sgd|adamw] ...

DIR holds x_train.npy and y_train.npy (optionally x_val.npy/y_val.npy and x_test.npy/y_test.npy): inputs of
shape (N, C, H, W) (or (N, D), (N, C, T, H, W)), labels integers 0..K-1. Inputs are prepared as graphnas
does: uint8 scaled to [0, 1], then standardised per channel with the training split's mean and std.
Without a validation split, --val-fraction of the training examples (seeded) are held out. The defaults
below are the hyperparameters given at export. Prints loss and accuracy every epoch; saves the trained
weights (a plain state dict: torch.load(path, weights_only=True)) to --out.
"""

import argparse
import importlib.util
import inspect
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODEL_FILE = {model_file!r}
CLASS_NAME = {class_name!r}
INPUT_SHAPE = {input_shape!r}
DEFAULTS = {{
{defaults}
}}


def load_model_class(path):
    spec = importlib.util.spec_from_file_location("exported_model", path)
    if spec is None:
        sys.exit(f"error: cannot import the model file {{path}}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, CLASS_NAME)


def load_split(folder, split):
    fx, fy = folder / f"x_{{split}}.npy", folder / f"y_{{split}}.npy"
    if not fx.exists() and not fy.exists() and split != "train":
        return None
    for f in (fx, fy):
        if not f.is_file():
            sys.exit(f"error: {{f}} is missing")
    x, y = np.load(fx, allow_pickle=False), np.load(fy, allow_pickle=False)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        sys.exit(f"error: {{fy}} must hold {{len(x)}} integer labels 0..K-1, got shape {{y.shape}} dtype {{y.dtype}}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.ascontiguousarray(x, dtype=np.float32)
    return x, y.astype(np.int64)


def standardise(x_train, *others):
    axes = tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return [None if a is None else ((a - mean) / std).astype(np.float32) for a in (x_train, *others)]


def evaluate(model, x, y, batch_size):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            out = model(x[i:i + batch_size])
            loss += F.cross_entropy(out, y[i:i + batch_size], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(y), correct / len(y)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    p.add_argument("--data", required=True, help="folder with x_train.npy, y_train.npy (and optional val/test)")
    p.add_argument("--model", default=str(HERE / MODEL_FILE), help="the exported model file")
    p.add_argument("--out", default=None, help="where to save the trained state dict (default: next to --model)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=DEFAULTS["optimizer"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--momentum", type=float, default=DEFAULTS["momentum"], help="SGD momentum")
    p.add_argument("--label-smoothing", type=float, default=DEFAULTS["label_smoothing"])
    p.add_argument("--schedule", choices=("cosine", "constant"), default=DEFAULTS["schedule"],
                   help="per-step cosine from --lr to 0 over all epochs, or a constant rate")
    p.add_argument("--aux-weight", type=float, default=DEFAULTS["aux_weight"], help="weight of auxiliary heads' loss")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--num-classes", type=int, default=None, help="resize the classifier (default: the found one)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--epochs and --batch-size must be >= 1 and --lr > 0")

    folder = Path(args.data)
    if not folder.is_dir():
        sys.exit(f"error: data folder {{folder}} does not exist")
    train, val, test = (load_split(folder, s) for s in ("train", "val", "test"))
    x_train, y_train = train
    rng = np.random.default_rng(args.seed)
    if val is None and args.val_fraction > 0:
        n_val = max(1, int(round(args.val_fraction * len(y_train))))
        if n_val >= len(y_train):
            sys.exit(f"error: cannot hold out {{n_val}} validation examples from {{len(y_train)}}")
        perm = rng.permutation(len(y_train))
        val = (x_train[perm[:n_val]], y_train[perm[:n_val]])
        x_train, y_train = x_train[perm[n_val:]], y_train[perm[n_val:]]
    x_train, x_val, x_test = standardise(x_train, val[0] if val else None, test[0] if test else None)
    if tuple(x_train.shape[1:]) != INPUT_SHAPE:
        print(f"note: inputs have shape {{tuple(x_train.shape[1:])}}; the architecture was found for {{INPUT_SHAPE}}")

    torch.manual_seed(args.seed)
    cls = load_model_class(args.model)
    kwargs = {{}}
    if args.num_classes is not None:
        if "num_classes" not in inspect.signature(cls).parameters:
            sys.exit("error: this model has no num_classes argument; its classifier cannot be resized")
        kwargs["num_classes"] = args.num_classes
    device = torch.device(args.device)
    model = cls(**kwargs).to(device)
    dev = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    xt, yt = dev(x_train), dev(y_train)
    with torch.no_grad():
        n_out = model.eval()(xt[:2]).shape[1]
    labels = [y_train] + [s[1] for s in (val, test) if s is not None]
    if max(int(y.max()) for y in labels) >= n_out:
        sys.exit(f"error: labels go up to {{max(int(y.max()) for y in labels)}} but the model has {{n_out}} outputs; "
                 "pass --num-classes")

    params = [q for q in model.parameters() if q.requires_grad]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    batch = min(args.batch_size, len(yt))
    steps_per_epoch = len(yt) // batch + (len(yt) % batch > 1)  # a last batch of one is dropped (batch norm)
    total = steps_per_epoch * args.epochs
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    print(f"training {{CLASS_NAME}}: {{sum(q.numel() for q in params):,}} parameters, {{len(yt)}} training examples, "
          f"{{args.epochs}} epochs of {{steps_per_epoch}} steps, {{args.optimizer}} lr {{args.lr}}", flush=True)
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(yt), generator=gen).to(device)
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            x, y = xt[idx], yt[idx]
            progress = min(step, total) / total
            lr = args.lr if args.schedule == "constant" else args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            for group in opt.param_groups:
                group["lr"] = lr
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=args.label_smoothing)
            for j, a in enumerate(getattr(model, "aux_outputs", None) or []):
                if a.dim() != 2 or a.shape[1] != out.shape[1]:  # not a classifier of these labels
                    if step == 0:
                        print(f"note: auxiliary output {{j}} has shape {{tuple(a.shape[1:])}}, not "
                              f"({{out.shape[1]}},): left out of the loss", flush=True)
                    continue
                loss = loss + args.aux_weight * F.cross_entropy(a, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if not math.isfinite(loss.item()):
                sys.exit(f"error: the loss is not finite at epoch {{epoch}} step {{i + 1}}; try a smaller --lr")
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        line = (f"epoch {{epoch}}/{{args.epochs}}  train_loss {{loss_sum / seen:.4f}}  "
                f"train_accuracy {{correct / seen:.4f}}")
        if val is not None:
            vl, va = evaluate(model, dev(x_val), dev(val[1]), 512)
            line += f"  val_loss {{vl:.4f}}  val_accuracy {{va:.4f}}"
        print(f"{{line}}  ({{time.perf_counter() - start:.1f}} s)", flush=True)
    if test is not None:
        tl, ta = evaluate(model, dev(x_test), dev(test[1]), 512)
        print(f"test_loss {{tl:.4f}}  test_accuracy {{ta:.4f}}", flush=True)
    out_path = Path(args.out) if args.out else Path(args.model).with_suffix(".trained.pt")
    torch.save({{k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}, out_path)
    print(f"saved trained weights to {{out_path}}", flush=True)


if __name__ == "__main__":
    main()
'''
