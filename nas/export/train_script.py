"""A standalone ``train.py`` (torch and numpy only) that trains an exported model, from scratch or from the
search's weights (``--init-weights``).

The script imports the exported model file next to it and reads a folder of ``.npy`` arrays
(``x_train.npy``/``y_train.npy``, optional ``x_val``/``y_val`` and ``x_test``/``y_test``) as they are. A
model exported from a search normalises its inputs itself (a ``Normalize`` step first, with the search's
scale and per-channel mean and std as ``Net(input_scale=, input_mean=, input_std=)`` defaults), so train.py
feeds it the raw arrays; where the data's channels differ from the model's it passes ``in_channels=`` (where
``Net`` has it; else it stops, saying why) and that data's own statistics, computed as graphnas' workers do
(uint8 scaled by 1/255, then the training split's per-channel mean and std). A model without the step gets
the arrays standardised that way by train.py. Training follows the search's worker (`workers.training`):
SGD (momentum), AdamW or RMSprop, weight decay, label smoothing, the learning rate of `nas.lr_schedule` (warm-up,
cosine, constant, step or reduce-on-plateau), gradient clipping, drop-path on the branches `nas.drop_path` names
(computed from the architecture at export), the augmentation of `nas.augment` (the search's, or the data set's
default; seeded as the worker seeds it), auxiliary heads (``model.aux_outputs``) weighted like the search's loss
(heads whose output shape is not the main output's are left out, with a note), a last batch of one dropped, and the
batch-norm statistics re-estimated on ``bn_recalibration`` training examples before each evaluation. The
augmentation, schedule and drop-path code is that of the worker, copied into train.py from `nas.augment`,
`nas.lr_schedule` and `nas.drop_path.DropPath` at export (so train.py still needs only torch and numpy). It
prints the loss and scores of every epoch and saves the trained state dict.

The task (classification, or one of `nas.tasks`: contrastive, segmentation, detection, multilabel) changes only
the arrays read (``<field>_<split>.npy``), the loss and the scores, whose functions are copied from `nas.tasks`;
one training loop serves every task, with what the worker's `workers.tasks` gives each: label smoothing for
classification only, training batches scored except for detection, and augmentation refused where it would move
the images but not their masks or boxes (segmentation, detection), as the worker refuses it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import nas.augment
import nas.lr_schedule
from nas.augment import default_augment
from nas.drop_path import DropPath
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
# channels-last, time limit, checkpoints, latency) are accepted and ignored: train.py reads --data, runs in
# float32 and trains every epoch. `augment` is written resolved: the search's, else the data set's default.
USED = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "label_smoothing", "schedule",
        "lr_milestones", "lr_gamma", "plateau_patience", "warmup_epochs", "grad_clip", "drop_path", "augment",
        "seed", "aux_weight", "val_fraction", "bn_recalibration", "eval_batch_size")


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


def _module_code(module) -> str:
    """A module's top-level definitions, without its docstring and imports: to copy into train.py."""
    text = Path(module.__file__).read_text()
    tree = ast.parse(text)
    keep = [n for n in tree.body if not isinstance(n, ast.Import | ast.ImportFrom)
            and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return "\n\n\n".join(ast.get_source_segment(text, n, padded=True) for n in keep)


TASKS = ("classification", "contrastive", "segmentation", "detection", "multilabel")


def task_code(task: str) -> str:
    """The loss and metric functions of `task` (`nas.tasks.<task>`, torch only) as train.py embeds them."""
    import importlib

    if task == "classification":
        return ""
    module = importlib.import_module(f"nas.tasks.{task}")
    text = Path(module.__file__).read_text()
    tree = ast.parse(text)
    imports = [ast.get_source_segment(text, n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return (f"# ---- copied from graphnas nas/tasks/{task}.py (the search's worker computes the same) ----\n\n"
            + "\n".join(imports) + "\n\n\n" + _module_code(module).strip() + "\n")


def shared_code() -> str:
    """The worker's code that train.py runs too: augmentation, the learning-rate schedule, drop-path."""
    parts = [("nas/augment.py", _module_code(nas.augment)), ("nas/lr_schedule.py", _module_code(nas.lr_schedule)),
             ("nas/drop_path.py: DropPath", inspect.getsource(DropPath))]
    return "\n\n".join(f"# ---- copied from graphnas {where} (the search's worker runs the same code) ----\n\n"
                         f"{code.strip()}\n" for where, code in parts)


def train_script(model_file: str, class_name: str, arch_id: str, input_shape: tuple[int, ...],
                 config: TrainSettings, drop_path_nodes: list[str] | tuple[str, ...] = (),
                 task: str = "classification", preprocessing: Mapping[str, Any] | None = None) -> str:
    """The text of train.py for the exported model file `model_file` (a name next to train.py); its
    DEFAULTS are `config`'s settings that train.py uses (`USED`; the augmentation resolved to the data set's
    default where the search left it to that), `drop_path_nodes` the modules drop-path may drop; `task` what it
    trains the network for (`TASKS`; the loss and metrics of `nas.tasks` copied in); `preprocessing`: the search's
    (``{"scale", "mean", "std"}``) where the network normalises its image inputs itself (built in), else None."""
    if task not in TASKS:
        raise ExportError(f"train.py trains tasks {', '.join(TASKS)}; got {task!r}")
    defaults = {k: getattr(config, k) for k in USED}
    if defaults["augment"] is None:
        defaults["augment"] = default_augment(config.dataset, input_shape)
    lines = [f"    {k!r}: {v!r}," for k, v in defaults.items()]
    fill = {"__CLASS_NAME__": class_name, "__ARCH_ID__": arch_id, "__MODEL_FILE__": repr(model_file),
            "__CLASS_REPR__": repr(class_name), "__INPUT_SHAPE__": repr(tuple(input_shape)),
            "__DEFAULTS__": "\n".join(lines), "__DROP_PATH_NODES__": repr(list(drop_path_nodes)),
            "__SHARED_CODE__": shared_code(), "__TASK__": repr(task), "__TASK_CODE__": task_code(task),
            "__PREPROCESSING__": repr(None if preprocessing is None else {
                "scale": float(preprocessing["scale"]), "mean": [float(v) for v in preprocessing["mean"]],
                "std": [float(v) for v in preprocessing["std"]]})}
    text = _TEMPLATE
    for key, value in fill.items():
        text = text.replace(key, value)
    return text


_TEMPLATE = r'''"""Train __CLASS_NAME__ (graphnas architecture __ARCH_ID__). Needs only torch and numpy.

    python train.py --data DIR [--epochs N] [--init-weights FILE] [--lr LR] [--optimizer sgd|adamw] ...

DIR holds x_train.npy and y_train.npy (optionally x_val.npy/y_val.npy and x_test.npy/y_test.npy): inputs of
shape (N, C, H, W) (or (N, D), (N, C, T, H, W)) as the data set gives them (e.g. uint8 pixels), labels
integers 0..K-1. A network trained for another task reads its own fields, <field>_<split>.npy (TASK_FIELDS
below: x2 for the second image of a pair, mask, proposals, gt_boxes, gt_labels). Without a validation split,
--val-fraction of the training examples (seeded) are held out.

Inputs: a network exported from a search normalises its inputs itself with the search's preprocessing
(Net's input_scale, input_mean, input_std), so the arrays are fed to it as they are. Where their channels
differ from the network's, or with --data-stats, Net gets in_channels= and the statistics of this data
(uint8 scaled to [0, 1], the training split's per-channel mean and std, as graphnas' workers compute them).
A network without that step gets the arrays standardised that way here.

--init-weights FILE starts from a state dict (e.g. the search's net.weights.pt); --epochs 0 then only
evaluates it. Training is the search worker's: its optimizers, learning-rate schedules (warm-up; cosine,
constant, step, plateau), gradient clipping, drop-path, augmentation of training batches (--augment, e.g.
crop:4,flip,cutout:16; none: off; refused for segmentation and detection), auxiliary heads in the loss,
batch-norm statistics re-estimated on --bn-recalibration training examples before every evaluation; the
augmentation, schedule and drop-path code below is the worker's own, copied at export, and so are the task's
loss and scores. The defaults below are the hyperparameters given at export. Prints the loss and the task's
scores (accuracy; auc; miou; map) every epoch; saves the weights (a plain state dict: torch.load(path,
weights_only=True)) to --out.
"""

import argparse
import importlib.util
import inspect
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODEL_FILE = __MODEL_FILE__
CLASS_NAME = __CLASS_REPR__
INPUT_SHAPE = __INPUT_SHAPE__
DEFAULTS = {
__DEFAULTS__
}
DROP_PATH_NODES = __DROP_PATH_NODES__  # the modules drop-path may drop: branches that feed a sum
TASK = __TASK__  # what the network is trained for: classification, contrastive, segmentation, detection, multilabel
# the search's preprocessing, which the network applies to its images itself (None: train.py standardises them)
PREPROCESSING = __PREPROCESSING__


__SHARED_CODE__

__TASK_CODE__


def load_model_class(path):
    spec = importlib.util.spec_from_file_location("exported_model", path)
    if spec is None:
        sys.exit(f"error: cannot import the model file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, CLASS_NAME)


# each task's arrays, <field>_<split>.npy: (the network's inputs in order, those of them that are images, the
# targets), as graphnas' data sets store them; classification's are x_<split>.npy and y_<split>.npy
TASK_FIELDS = {
    "classification": (("x",), ("x",), ("y",)),  # y: (N,) integer labels 0..K-1
    "contrastive": (("x", "x2"), ("x", "x2"), ("y",)),  # pairs, y = 1 for the same class
    "segmentation": (("x",), ("x",), ("mask",)),  # (N, H, W) class of each pixel
    "detection": (("x", "proposals"), ("x",), ("gt_boxes", "gt_labels")),  # (N, R, 4); (N, G, 4), (N, G) -1: none
    "multilabel": (("x",), ("x",), ("y",)),  # (N, K) 0/1
}
INPUTS, IMAGES, TARGETS = TASK_FIELDS[TASK]
# the worker's choices per task (workers/tasks.py): the score the plateau schedule follows (the search's metric),
# whether training batches are scored, whether augmentation may move the images (not where it would leave the
# masks or boxes behind)
MAIN_SCORE = {"classification": "accuracy", "contrastive": "auc", "segmentation": "miou"}.get(TASK, "map")
TRAIN_SCORED = TASK != "detection"
AUGMENTS = TASK not in ("segmentation", "detection")
MARGIN = 1.0  # the contrastive loss's sigma, as the worker's


def load_split(folder, split):
    """The split's arrays of TASK_FIELDS (a dict), None for a missing optional split; stops on bad files."""
    files = {f: folder / f"{f}_{split}.npy" for f in INPUTS + TARGETS}
    if split != "train" and not any(p.exists() for p in files.values()):
        return None
    out = {}
    for f, path in files.items():
        if not path.is_file():
            sys.exit(f"error: {path} is missing" + ("" if TASK == "classification" else
                                                     f" (the {TASK} task reads {', '.join(INPUTS + TARGETS)})"))
        out[f] = np.load(path, allow_pickle=False)
    if TASK == "classification":
        (fx, x), (fy, y) = ((files[f], out[f]) for f in ("x", "y"))
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            sys.exit(f"error: {fy} must hold {len(x)} integer labels 0..K-1, got shape {y.shape} dtype {y.dtype}")
        if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            sys.exit(f"error: {fx} must hold numeric inputs of shape (N, C, ...) or (N, D), got {x.shape} {x.dtype}")
    n = {f: len(a) for f, a in out.items()}
    if len(set(n.values())) != 1:
        sys.exit(f"error: the {split} arrays differ in length: {n}")
    return out


def as_float(x):
    """The worker's conversion: uint8 scaled to [0, 1], anything else cast to float32."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.ascontiguousarray(x, dtype=np.float32)


def data_stats(x_train):
    """The preprocessing graphnas' workers apply to this data: scale, per-channel mean and std."""
    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0
    x = as_float(x_train)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return {"scale": scale, "mean": [float(v) for v in mean.astype(np.float32)],
            "std": [float(v) for v in std.astype(np.float32)]}


def standardise(x, pre):
    view = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(pre["mean"], np.float32).reshape(view)
    std = np.asarray(pre["std"], np.float32).reshape(view)
    return ((as_float(x) - mean) / std).astype(np.float32)


def model_preprocessing(cls):
    """The preprocessing the network applies itself (its constructor's defaults), or None."""
    params = inspect.signature(cls).parameters
    if not all(k in params for k in ("input_scale", "input_mean", "input_std")):
        return None
    return {"scale": params["input_scale"].default, "mean": list(params["input_mean"].default),
            "std": list(params["input_std"].default)}


@torch.no_grad()
def recalibrate_bn(model, xs, batch_size):
    """Re-estimate batch-norm running statistics on the network inputs `xs` (a list of tensors, one per input)
    with the current weights (an equal-weight average over training-mode batches), as the search's worker does
    before every evaluation."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    n = len(xs[0])
    if not bns or n < 2:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i in range(0, n, batch_size):
            if len(xs[0][i:i + batch_size]) < 2:
                break
            model(*[x[i:i + batch_size] for x in xs])
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        if hasattr(model, "aux_outputs"):
            model.aux_outputs = []


# -- what depends on the task: its loss and scores (the worker's, workers/tasks.py) -------------------------------


def task_loss(out, b, num_classes, label_smoothing=0.0):
    """The mean training loss of an output (the main one or an auxiliary head's) for batch `b` (a dict of fields)."""
    if TASK == "classification":
        return F.cross_entropy(out, b["y"], label_smoothing=label_smoothing)
    if TASK == "contrastive":
        f1, f2 = split_pair(out)
        return contrastive_loss(f1, f2, b["y"], MARGIN)
    if TASK == "segmentation":
        return pixel_cross_entropy(out, b["mask"])
    if TASK == "detection":
        return fast_rcnn_loss(out, b["proposals"], b["gt_boxes"], b["gt_labels"], num_classes)
    return multilabel_bce(out, b["y"])


def loss_sum(out, b, num_classes):
    """(The evaluation loss of a batch summed, the number of items it is over): per example, per pixel
    (segmentation) or per label (multilabel), as the worker averages it."""
    if TASK == "classification":
        return F.cross_entropy(out.float(), b["y"], reduction="sum").item(), len(b["y"])
    n = b["mask"].numel() if TASK == "segmentation" else b["y"].numel() if TASK == "multilabel" else len(out)
    return task_loss(out, b, num_classes).item() * n, n


def batch_scores(out, b, num_classes):
    """What a batch adds to its split's scores (`scores_of`)."""
    if TASK == "classification":
        return (out.argmax(1) == b["y"]).sum().item(), len(b["y"])
    if TASK == "contrastive":
        f1, f2 = split_pair(out.float())
        return matching_score(f1, f2).cpu(), b["y"].cpu(), float(pair_accuracy(f1, f2, b["y"], MARGIN))
    if TASK == "segmentation":
        return confusion_matrix(out, b["mask"], num_classes).cpu()
    if TASK == "detection":
        return (detect(out.float().cpu(), b["proposals"].cpu(), num_classes, tuple(b["x"].shape[-2:])),
                b["gt_boxes"].cpu(), b["gt_labels"].cpu())
    return out.float().cpu(), b["y"].cpu()


def scores_of(parts, num_classes):
    """A split's scores from its batches' `batch_scores`: accuracy; auc and pair_accuracy; miou and
    pixel_accuracy; map (the first is the search's metric)."""
    if TASK == "classification":
        return {"accuracy": sum(p[0] for p in parts) / sum(p[1] for p in parts)}
    if TASK == "contrastive":
        same = torch.cat([p[1] for p in parts])
        return {"auc": pair_auc(torch.cat([p[0] for p in parts]), same),
                "pair_accuracy": sum(p[2] for p in parts) / len(same)}
    if TASK == "segmentation":
        conf = sum(parts[1:], parts[0])
        return {"miou": mean_iou(conf), "pixel_accuracy": pixel_accuracy(conf)}
    if TASK == "detection":
        return {"map": map_at_50([d for p in parts for d in p[0]], torch.cat([p[1] for p in parts]),
                                 torch.cat([p[2] for p in parts]), num_classes)}
    return {"map": mean_average_precision(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))}


@torch.no_grad()
def evaluate(model, data, batch_size, num_classes):
    """Mean loss and the task's scores of `model` (in eval mode) on a split's tensors (a dict of fields), never
    augmented."""
    model.eval()
    n = len(data[INPUTS[0]])
    total, items, parts = 0.0, 0, []
    for i in range(0, n, batch_size):
        b = {f: t[i:i + batch_size] for f, t in data.items()}
        out = model(*[b[f] for f in INPUTS])
        s, k = loss_sum(out, b, num_classes)
        total, items = total + s, items + k
        parts.append(batch_scores(out, b, num_classes))
    return {"loss": total / items, **scores_of(parts, num_classes)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with x_train.npy, y_train.npy (and optional val/test)")
    p.add_argument("--model", default=str(HERE / MODEL_FILE), help="the exported model file")
    p.add_argument("--init-weights", default=None, metavar="FILE",
                   help="start from this state dict (e.g. the search's weights) instead of random weights")
    p.add_argument("--out", default=None, help="where to save the trained state dict (default: next to --model)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="0: only evaluate")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--optimizer", choices=("sgd", "adamw", "rmsprop"), default=DEFAULTS["optimizer"],
                   help="rmsprop: decay 0.9, epsilon 1.0, as Inception")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--momentum", type=float, default=DEFAULTS["momentum"], help="SGD and RMSprop momentum")
    p.add_argument("--label-smoothing", type=float, default=DEFAULTS["label_smoothing"])
    p.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS["schedule"],
                   help="per-step cosine from --lr to 0, constant, step (times --lr-gamma at each of --lr-milestones) "
                        "or plateau (times --lr-gamma when the validation score, the task's, stops improving)")
    p.add_argument("--lr-milestones", default=DEFAULTS["lr_milestones"], help="epochs of --schedule step, e.g. 30,60")
    p.add_argument("--lr-gamma", type=float, default=DEFAULTS["lr_gamma"])
    p.add_argument("--plateau-patience", type=int, default=DEFAULTS["plateau_patience"])
    p.add_argument("--warmup-epochs", type=float, default=DEFAULTS["warmup_epochs"], help="linear warm-up to --lr")
    p.add_argument("--grad-clip", type=float, default=DEFAULTS["grad_clip"], help="max gradient norm; 0: off")
    p.add_argument("--drop-path", type=float, default=DEFAULTS["drop_path"],
                   help="drop-path probability, rising linearly over the epochs; 0: off")
    p.add_argument("--augment", default=DEFAULTS["augment"], help="augmentation of training batches, e.g. "
                   "crop:4,flip,cutout:16 (" + ", ".join(AUGMENT_OPS) + "); none: off")
    p.add_argument("--aux-weight", type=float, default=DEFAULTS["aux_weight"], help="weight of auxiliary heads' loss")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"])
    p.add_argument("--bn-recalibration", type=int, default=DEFAULTS["bn_recalibration"],
                   help="training examples to re-estimate batch-norm statistics on before each evaluation; 0: off")
    p.add_argument("--eval-batch-size", type=int, default=DEFAULTS["eval_batch_size"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--num-classes", type=int, default=None, help="resize the classifier (default: the found one)")
    p.add_argument("--data-stats", action="store_true",
                   help="normalise with this data's statistics instead of the ones the network was exported with")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.epochs < 0 or args.batch_size < 1 or args.lr <= 0 or args.eval_batch_size < 1 or args.bn_recalibration < 0:
        p.error("--epochs must be >= 0, --batch-size and --eval-batch-size >= 1, --bn-recalibration >= 0, --lr > 0")
    if not (0 <= args.drop_path < 1) or args.grad_clip < 0 or args.warmup_epochs < 0 or not (0 < args.lr_gamma <= 1):
        p.error("--drop-path must be in [0, 1), --grad-clip and --warmup-epochs >= 0, --lr-gamma in (0, 1]")
    try:
        milestones = tuple(int(v) for v in args.lr_milestones.split(",")) if args.lr_milestones else ()
        augment_ops = parse_augment(args.augment)
    except (ValueError, AugmentError) as e:
        p.error(str(e))
    if args.schedule == "step" and not milestones:
        p.error("--schedule step needs --lr-milestones, e.g. 30,60")

    folder = Path(args.data)
    if not folder.is_dir():
        sys.exit(f"error: data folder {folder} does not exist")
    train, val, test = (load_split(folder, s) for s in ("train", "val", "test"))
    if TASK == "classification":
        for name, split in (("val", val), ("test", test)):
            if split is not None and split["x"].shape[1:] != train["x"].shape[1:]:
                sys.exit(f"error: x_{name}.npy has per-example shape {split['x'].shape[1:]}, x_train.npy "
                         f"{train['x'].shape[1:]}")
    n_train = len(train[INPUTS[0]])
    rng = np.random.default_rng(args.seed)
    if val is None and args.val_fraction > 0:
        n_val = max(1, int(round(args.val_fraction * n_train)))
        if n_val >= n_train:
            sys.exit(f"error: cannot hold out {n_val} validation examples from {n_train}")
        perm = rng.permutation(n_train)
        val = {f: a[perm[:n_val]] for f, a in train.items()}
        train = {f: a[perm[n_val:]] for f, a in train.items()}
        n_train -= n_val
    x_train = train[IMAGES[0]]

    # -- the network for this data: input channels and input normalisation -----------------------------
    cls = load_model_class(args.model)
    arguments = inspect.signature(cls).parameters
    kwargs = {}
    shape = tuple(int(v) for v in x_train.shape[1:])
    channels = shape[0]
    if channels != INPUT_SHAPE[0]:
        if "in_channels" not in arguments:
            sys.exit(f"error: the data have {channels} input channel(s) (examples of shape {shape}) but this network "
                     f"takes {INPUT_SHAPE[0]} ({INPUT_SHAPE}), and {CLASS_NAME} has no in_channels argument: the "
                     "exporter offers one only where every layer reading the input can be resized by its input "
                     "width alone, which is not so here (e.g. the input feeds a merge); export a network found "
                     "for inputs of this shape")
        kwargs["in_channels"] = channels
    notes = []  # printed after the first line
    if shape[1:] != tuple(INPUT_SHAPE[1:]):
        notes.append(f"note: inputs have shape {shape}; the architecture was found for {INPUT_SHAPE}")
    if args.num_classes is not None:
        if "num_classes" not in arguments:
            sys.exit("error: this model has no num_classes argument; its classifier cannot be resized")
        kwargs["num_classes"] = args.num_classes
    exposed = model_preprocessing(cls)  # Net's input_scale, input_mean, input_std
    embedded = exposed if exposed is not None else PREPROCESSING  # what the network does to its images itself
    them = "them" if TASK == "classification" else "its images"
    transform = None  # numpy preprocessing done here, for a network that does not normalise its inputs
    if embedded is not None and (args.data_stats or channels != INPUT_SHAPE[0]):
        why = "--data-stats" if args.data_stats else f"the network's preprocessing is for {INPUT_SHAPE[0]} channel(s)"
        if exposed is None:
            sys.exit(f"error: cannot normalise with this data's statistics ({why}): {CLASS_NAME} normalises {them} "
                     "with the search's and has no input_scale, input_mean, input_std arguments")
        pre = data_stats(x_train)
        kwargs.update(input_scale=pre["scale"], input_mean=tuple(pre["mean"]), input_std=tuple(pre["std"]))
        notes.append(f"inputs: raw; the network normalises {them} with this data's statistics ({why}): scale "
                     f"{pre['scale']:.6g}, mean {[round(v, 4) for v in pre['mean']]}, "
                     f"std {[round(v, 4) for v in pre['std']]}")
    elif embedded is not None:
        notes.append(f"inputs: raw; the network normalises {them} as the search did: scale {embedded['scale']:.6g}, "
                     f"mean {[round(v, 4) for v in embedded['mean']]}, std {[round(v, 4) for v in embedded['std']]}")
    else:
        transform = data_stats(x_train)
        notes.append(f"note: this network does not normalise its inputs; train.py standardises {them} with the "
                     f"training split's statistics (scale {transform['scale']:.6g}, mean "
                     f"{[round(v, 4) for v in transform['mean']]}, std {[round(v, 4) for v in transform['std']]}); "
                     "do the same before using the trained network")

    torch.manual_seed(args.seed)
    try:
        model = cls(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        sys.exit(f"error: {CLASS_NAME}(**{kwargs}) failed: {e}")
    if args.init_weights:
        try:
            state = torch.load(args.init_weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:  # a missing file, a pickle of other objects, other keys or shapes
            sys.exit(f"error: --init-weights {args.init_weights} does not load into {CLASS_NAME}(**{kwargs}): "
                     f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        notes.append(f"starting from the weights in {args.init_weights}")
    device = torch.device(args.device)
    model = model.to(device)
    torch.manual_seed(args.seed)  # dropout, drop-path and other in-graph randomness, as the worker seeds it

    def tensors(split):
        """A split's arrays on the device: the images as they are (standardised here for a network that does not
        normalise them), class labels int64, the rest float32."""
        out = {}
        for f, a in split.items():
            if f in IMAGES:
                a = standardise(a, transform) if transform is not None else a
            elif f in ("y", "mask", "gt_labels") and TASK != "multilabel":
                a = a.astype(np.int64)
            else:
                a = a.astype(np.float32)
            out[f] = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        return out

    try:
        check_augment_shape(augment_ops, shape)
    except AugmentError as e:
        sys.exit(f"error: --augment {args.augment}: {e}")
    if augment_ops and not AUGMENTS:  # as the worker refuses it
        sys.exit(f"error: --augment {args.augment} would move the pixels of the images but not their {TASK} targets "
                 f"({', '.join(TARGETS)}); use --augment none")
    # augmentation works on pixel values where black is `low` and white `high`, as the worker's (its inputs scaled
    # to [0, 1]); here the network is fed raw values (it normalises them), or values standardised above
    if transform is not None:
        low = [-m / s for m, s in zip(transform["mean"], transform["std"])]
        high = [(1 - m) / s for m, s in zip(transform["mean"], transform["std"])]
        fill = [0.0] * channels
    else:
        pre = ({"scale": kwargs["input_scale"], "mean": kwargs["input_mean"]} if "input_scale" in kwargs
               else embedded)
        low, high = [0.0] * channels, [1.0 / pre["scale"]] * channels
        fill = [m / pre["scale"] for m in pre["mean"]]
    augment = Augment(args.augment, low, high, fill)
    seed = int(np.random.SeedSequence([args.seed, 1]).generate_state(1, np.uint64)[0])  # the worker's stream
    augment_gen = torch.Generator().manual_seed(seed)
    drop = DropPath(model, DROP_PATH_NODES) if args.drop_path > 0 and DROP_PATH_NODES else None
    if args.drop_path > 0 and not DROP_PATH_NODES:
        notes.append("note: --drop-path has no branch to drop in this network (no sum of op outputs)")
    if augment:
        notes.append(f"augmentation of training batches: {format_augment(augment.ops)}")

    tr = tensors(train)
    try:
        with torch.no_grad():
            out_shape = tuple(model.eval()(*[tr[f][:2] for f in INPUTS]).shape[1:])
    except RuntimeError as e:
        sys.exit(f"error: the network cannot take inputs of shape {shape}: {str(e).splitlines()[0]}")
    num_classes = (out_shape[0] - 1) // 5 if TASK == "detection" else out_shape[0]  # detection: K + 1 + 4K
    if TASK == "classification":
        top = max(int(s["y"].max()) for s in (train, val, test) if s is not None)
        if top >= num_classes:
            sys.exit(f"error: labels go up to {top} but the model has {num_classes} outputs; pass --num-classes")
    tv = tensors(val) if val is not None else None

    params = [q for q in model.parameters() if q.requires_grad]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    elif args.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=args.lr, alpha=0.9, eps=1.0, momentum=args.momentum,
                                  weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    batch = min(args.batch_size, n_train)
    steps_per_epoch = n_train // batch + (n_train % batch > 1)  # a last batch of one is dropped (batch norm)
    schedule = LRSchedule(args.lr, args.schedule, steps_per_epoch, max(args.epochs, 1), args.warmup_epochs,
                          milestones, args.lr_gamma, args.plateau_patience)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    print(f"training {CLASS_NAME}{'' if TASK == 'classification' else ' for ' + TASK}: "
          f"{sum(q.numel() for q in params):,} parameters, {n_train} training examples, "
          f"{args.epochs} epochs of {steps_per_epoch} steps, {args.optimizer} lr {args.lr}", flush=True)
    for line in notes:
        print(line, flush=True)
    if args.epochs == 0 and tv is not None:
        scores = evaluate(model, tv, args.eval_batch_size, num_classes)
        print("epoch 0/0" + "".join(f"  val_{k} {v:.4f}" for k, v in scores.items()), flush=True)
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        if drop is not None:
            drop.set_epoch(epoch - 1, args.epochs, args.drop_path)
        perm = torch.randperm(n_train, generator=gen).to(device)
        loss_total, seen, parts = 0.0, 0, []
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch].sort().values  # a batch in order, as the worker reads it
            b = {f: t[idx] for f, t in tr.items()}
            xs = [augment(b[f].float(), augment_gen) if augment and f in IMAGES else b[f] for f in INPUTS]
            for group in opt.param_groups:
                group["lr"] = schedule.at(step)
            out = model(*xs)
            loss = task_loss(out, b, num_classes, args.label_smoothing)
            for j, a in enumerate(getattr(model, "aux_outputs", None) or []):
                if a.shape[1:] != out.shape[1:]:  # not a head of these targets (e.g. other classes)
                    if step == 0:
                        print(f"note: auxiliary output {j} has shape {tuple(a.shape[1:])}, not "
                              f"{tuple(out.shape[1:])}: left out of the loss", flush=True)
                    continue
                loss = loss + args.aux_weight * task_loss(a, b, num_classes, args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
            step += 1
            if not math.isfinite(loss.item()):
                sys.exit(f"error: the loss is not finite at epoch {epoch} step {i + 1}; try a smaller --lr")
            loss_total += loss.item() * len(idx)
            seen += len(idx)
            if TRAIN_SCORED:
                parts.append(batch_scores(out.detach(), b, num_classes))
        if args.bn_recalibration > 0:
            p_drop = drop.p if drop is not None else 0.0
            if drop is not None:
                drop.p = 0.0  # the statistics of the network that is evaluated
            recalibrate_bn(model, [tr[f][perm[:args.bn_recalibration]] for f in INPUTS], batch)
            if drop is not None:
                drop.p = p_drop
        line = f"epoch {epoch}/{args.epochs}  train_loss {loss_total / seen:.4f}"
        if parts:
            line += "".join(f"  train_{k} {v:.4f}" for k, v in scores_of(parts, num_classes).items())
        if tv is not None:
            scores = evaluate(model, tv, args.eval_batch_size, num_classes)
            line += "".join(f"  val_{k} {v:.4f}" for k, v in scores.items())
            if schedule.end_epoch(scores[MAIN_SCORE]):
                line += f"  (lr now {schedule.at(step):.3g})"
        print(f"{line}  ({time.perf_counter() - start:.1f} s)", flush=True)
    if test is not None:
        scores = evaluate(model, tensors(test), args.eval_batch_size, num_classes)
        line = "  ".join(f"test_{k} {v:.4f}" for k, v in scores.items())
        if TASK == "classification":
            n = len(test["y"])
            line += f"  ({round(scores['accuracy'] * n)} of {n} correct)"
        print(line, flush=True)
    out_path = Path(args.out) if args.out else Path(args.model).with_suffix(".trained.pt")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out_path)
    print(f"saved trained weights to {out_path}", flush=True)
    if kwargs:  # the network was built with other arguments than its defaults
        side = out_path.with_suffix(".kwargs.json")
        side.write_text(json.dumps(kwargs, indent=1) + "\n")
        print(f"load them into {CLASS_NAME}(**{json.dumps(kwargs)}) (saved to {side})", flush=True)
    if transform is not None:
        side = out_path.with_suffix(".preprocessing.json")
        side.write_text(json.dumps(transform, indent=1) + "\n")
        print(f"the inputs' standardisation is saved to {side}", flush=True)


if __name__ == "__main__":
    main()
'''
