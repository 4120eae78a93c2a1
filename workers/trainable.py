"""The Ray Tune function trainable that trains one candidate architecture.

Config contract (what the search driver passes as a trial's config)::

    config["arch"]   the architecture, as `nas.graph.to_dict(g)` (required)
    config["train"]  training settings, the fields of `nas.train_settings.TrainSettings` (data set, its
                     cache and placement, augmentation, optimizer and schedule, ...); every key is optional
                     (defaults in TRAIN_DEFAULTS; a ``recipe`` supplies others); an unknown key or a bad
                     value fails the trial, naming it
    other keys (assignment, arch_id, ...) are ignored.

Every epoch it calls ``ray.tune.report`` with the metrics of `workers.training.Trainer.run_epoch` (epoch,
train_loss, train_accuracy, val_loss, val_accuracy, lr, train_seconds, epoch_seconds, steps, time_limited; the
scores being the data set's task's: val_miou, val_map, ...) plus status="ok", device, params, flops and latency_ms
(the median of `latency_reps` timed eval-mode forwards of a batch of `latency_batch_size`, reported beside it, after
warm-up passes; on a GPU shared with other trials measured while none of them trains on it,
`workers.devices.DeviceLease`; ``latency_seconds`` is what the measurement took); the last report adds the test
split's loss and scores of the final model (test_loss, test_accuracy: the task's, `workers.tasks`) and
``test_seconds``, what that evaluation took (neither time is in ``train_seconds``). The test split is evaluated
once, at the end, and only reported.

Checkpoints hold ``model.pt`` (the model's state_dict, contiguous CPU tensors, loadable into
`nas.build(graph)`), ``train_state.pth`` (optimizer, step, RNG states: what a resume needs),
``arch.json`` and ``preprocessing.json`` (what was done to the data set's inputs before training: scale and
per-channel mean and std, `nas.preprocessing`; an exported model applies it to raw inputs). They are
written every `checkpoint_every` epochs and always with the final report (`checkpoint_every=0`: final
only, which keeps short trials fast). A trial restarted by Tune resumes
from `ray.tune.get_checkpoint()`.

Devices: the trial trains on exactly the GPUs Ray assigned it, on the CPU when it was given none
(`workers.devices.trial_devices`; reported as ``device``).

Failures (`run_trial`): a candidate that cannot be built, mismatches the data or produces a NaN loss does not crash
the Ray trial. The trainable catches the exception and makes a final report with status="failed", error="<type>:
<message>", val_accuracy and every other task's validation metric NaN (Tune requires the search metric in every
result; NaN is ignored by Tune's best-result selection and by ASHA's cut-offs) and the epoch it reached. The driver
records such a trial as failed and the search goes on, without Ray retrying a candidate that would fail again the
same way.
Running out of memory reports status="oom" instead (the driver retries it once alone on a whole GPU before
it counts). Any other CUDA error leaves the process's CUDA context unusable: after reporting it
(status="failed"), the trainable raises `WorkerRetired`, so Tune ends this worker process instead of reusing
it and runs the trial again in a fresh one (up to the search's ``max_failures``). Errors raised by Ray itself
while reporting are not caught.

Data: the data set is decoded once per node into the node's cache (`workers.data`; the first trial on a node
builds it, the others wait for it and then read it), and opened once per worker process (kept for the trials
that follow on a reused actor): a trial's data cost is opening the cache entry, and its memory a few batches
(or the split on the training device, where it is small; ``data_placement``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from nas.drop_path import drop_path_nodes
from nas.graph import input_shapes
from nas.preprocessing import PREPROCESSING_FILE
from nas.train_settings import TrainSettings
from workers.data import DatasetSplits, load_dataset
from workers.devices import CUDA, OOM, DeviceLease, failure_kind, seed_torch, trial_devices
from workers.tasks import FAILED_METRICS, task_for
from workers.training import Trainer, measure_latency

WEIGHTS_FILE = "model.pt"
STATE_FILE = "train_state.pth"  # not *.pt: the driver copies the checkpoint's *.pt file as the weights
ARCH_FILE = "arch.json"

TRAIN_DEFAULTS: dict[str, Any] = TrainSettings().to_dict()  # nas.train_settings: the one definition

_DATA_CACHE: OrderedDict[tuple, DatasetSplits] = OrderedDict()
_CACHE_SIZE = 2


class _ReportError(Exception):
    """Ray failed while taking a report: not the candidate's fault, so it must not become status=failed."""


class WorkerRetired(RuntimeError):
    """A CUDA error left this worker process unusable: raised (after the failure was reported) so that Tune
    ends the process rather than reuse it, and runs the trial again in a fresh one."""


def trial_resources(cpus: float = 1.0, gpus: float = 0.0) -> dict[str, float]:
    """Per-trial resources for ``tune.with_resources(train_architecture, ...)``.

    `gpus` may be fractional (e.g. 0.25: four trials share a GPU; each must fit in its memory) or a
    whole number; Ray allows nothing in between (1.5). A trial given a GPU trains on it (CUDA is
    visible only to trials that were given one).
    """
    for name, v in (("cpus", cpus), ("gpus", gpus)):
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"trial_resources: {name} must be a non-negative number, got {v!r}")
    if cpus <= 0:
        raise ValueError(f"trial_resources: cpus must be positive, got {cpus!r}")
    if gpus > 1 and gpus != int(gpus):
        raise ValueError(f"trial_resources: gpus above 1 must be a whole number, got {gpus!r}")
    return {"cpu": float(cpus), "gpu": float(gpus)}


def train_settings(train: dict[str, Any] | None) -> dict[str, Any]:
    """`config["train"]` with defaults filled in, checked (`TrainSettings.from_dict`); an unknown key or a
    bad value raises `SettingsError` (a ValueError), naming the setting."""
    return TrainSettings.from_dict(dict(train or {}), "config['train']").to_dict()


def dataset_options(t: dict[str, Any]) -> dict[str, Any]:
    """`workers.data.load_dataset`'s keyword arguments from training settings `t` (a dict)."""
    return {"root": resolve_data_root(t["data_root"]), "seed": t["data_seed"], "val_fraction": t["val_fraction"],
            "test_fraction": t["test_fraction"], "image_size": t["image_size"], "strict": t["strict"],
            "cache_dir": t["data_cache"]}


def cached_dataset(t: dict[str, Any]) -> DatasetSplits:
    """The data set of training settings `t` (`load_dataset`: built into the node's cache on first use), opened
    once per worker process and kept for later trials on this actor."""
    options = dataset_options(t)
    key = (t["dataset"], *sorted(options.items()))
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    data = load_dataset(t["dataset"], **options)
    _DATA_CACHE[key] = data
    while len(_DATA_CACHE) > _CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return data


def resolve_data_root(root: str | None) -> str | None:
    """A relative `data_root` is relative to the driver's working directory, not the trial folder Tune
    changes into (Tune keeps the original in $TUNE_ORIG_WORKING_DIR). The driver should pass absolute
    paths anyway: on a multi-node cluster a relative path means nothing."""
    if root is None or Path(root).expanduser().is_absolute():
        return root
    base = os.environ.get("TUNE_ORIG_WORKING_DIR")
    return str(Path(base) / root) if base else root


def load_trained_model(checkpoint_dir: str | Path):
    """(graph, model) from a checkpoint folder written by `train_architecture`."""
    from nas.builder import build
    from nas.graph import from_json

    folder = Path(checkpoint_dir)
    g = from_json((folder / ARCH_FILE).read_text(), str(folder / ARCH_FILE))
    model = build(g)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return g, model


def train_architecture(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: build `config["arch"]`, train it, report every epoch."""
    run_trial(_train, config, dict(FAILED_METRICS))


def run_trial(body, config: dict[str, Any], failed_metrics: dict[str, Any] | None = None) -> None:
    """Run ``body(config, progress, tune)`` as a Tune trial with the failure handling of the module docstring:
    a failure of the candidate is reported (status "failed", or "oom", with `failed_metrics` and `progress`, the
    dict `body` keeps up to date); after a CUDA error the process retires (`WorkerRetired`)."""
    from ray import tune

    progress: dict[str, Any] = {"epoch": 0}
    try:
        body(config, progress, tune)
        return
    except _ReportError as e:
        raise e.__cause__ from None
    except Exception as e:  # the candidate failed; report it and let the search go on (module docstring)
        kind = failure_kind(e)
        error = f"{type(e).__name__}: {e}"[:2000]
    gc.collect()  # the exception's frames held the model; free its (GPU) memory before the next trial
    if torch.cuda.is_initialized() and kind != CUDA:
        torch.cuda.empty_cache()
    status = "oom" if kind == OOM else "failed"
    tune.report({"status": status, "error": error, **(failed_metrics or {}), **progress})
    if kind == CUDA:
        raise WorkerRetired(f"{error} (this worker process's CUDA context is unusable after it: the process ends "
                            "and the trial runs again in a fresh one)")


def _report(tune, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
    try:
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=ckpt)
    except Exception as e:
        raise _ReportError() from e


def _limit_threads() -> dict[str, float]:
    """Match torch's intra-op threads to the CPUs Tune gave this trial (avoid oversubscribing); returns the
    trial's resources ({"CPU": ..., "GPU": ...}; {} outside a Tune session)."""
    try:
        from ray import tune

        resources = dict(tune.get_context().get_trial_resources().required_resources)
    except Exception:  # not in a Tune session
        return {}
    if resources.get("CPU", 0) >= 1:
        torch.set_num_threads(int(resources["CPU"]))
    return resources


def _train(config: dict[str, Any], progress: dict[str, Any], tune) -> None:
    from nas.builder import build, count_flops
    from nas.graph import from_dict, to_json

    if "arch" not in config:
        raise KeyError("config has no 'arch' (the architecture as nas.graph.to_dict output)")
    t = train_settings(config.get("train"))
    settings = TrainSettings(**t)
    g = from_dict(config["arch"], "config['arch']")
    seed_torch(settings.seed)
    model = build(g)  # on the CPU; its parameters are the count (no second build on the meta device)
    progress.update(params=sum(p.numel() for p in model.parameters()), flops=count_flops(g))
    resources = _limit_threads()
    devices = trial_devices()
    device = devices.device
    progress["device"] = devices.describe()
    lease = DeviceLease.for_devices(devices, resources.get("GPU", 0.0))  # None unless it shares a GPU
    data = cached_dataset(t)
    check_inputs(g, data)
    task = task_for(data)
    task.check(tuple(model.output_shape), data)
    trainer = Trainer(model, data, settings, device, task=task, drop_path_nodes=drop_path_nodes(g))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            load_checkpoint(Path(d), trainer, device)
        progress["resumed_from_epoch"] = trainer.epoch
    progress["epoch"] = trainer.epoch
    if t["latency_reps"] > 0:  # alone on the device: no trial sharing its GPU trains meanwhile
        with lease.alone() if lease is not None else contextlib.nullcontext():
            start = time.perf_counter()
            lat = measure_latency(trainer.model, input_shapes(g), batch_size=t["latency_batch_size"],
                                  reps=t["latency_reps"], amp=trainer.amp,
                                  channels_last=trainer.memory_format is not None)
        progress.update(latency_ms=lat * 1e3, latency_batch_size=t["latency_batch_size"],
                        latency_seconds=time.perf_counter() - start)
    arch_json = to_json(g)

    if trainer.done:  # resumed from the final checkpoint: report the final result again
        _report(tune, {**trainer.history[-1], **_final(trainer, data), "status": "ok", **progress})
        return
    every = int(t["checkpoint_every"])
    while not trainer.done:
        progress["epoch"] = trainer.epoch + 1  # a failure during this epoch reports it
        with lease.training() if lease is not None else contextlib.nullcontext():
            metrics = {**trainer.run_epoch(), "status": "ok"}
        progress["train_seconds"] = metrics["train_seconds"]
        if trainer.done:
            metrics.update(_final(trainer, data))
        metrics.update(progress)
        if trainer.done or (every > 0 and trainer.epoch % every == 0):
            with tempfile.TemporaryDirectory(prefix="graphnas-ckpt-") as d:
                write_checkpoint(Path(d), trainer, arch_json, data)
                _report(tune, metrics, d)
        else:
            _report(tune, metrics)


def write_checkpoint(folder: Path, trainer: Trainer, arch_json: str, data: DatasetSplits,
                     state: dict[str, Any] | None = None) -> None:
    """A trial's checkpoint files in `folder`: the model's weights (unwrapped from DDP; contiguous CPU tensors), the
    training state (`state`, else the trainer's), the architecture, and how the inputs were prepared (export
    applies the same)."""
    core = getattr(trainer.model, "module", trainer.model)
    torch.save({k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()}, folder / WEIGHTS_FILE)
    torch.save(trainer.state_dict() if state is None else state, folder / STATE_FILE)
    (folder / ARCH_FILE).write_text(arch_json)
    if data.preprocessing is not None:
        (folder / PREPROCESSING_FILE).write_text(json.dumps(data.preprocessing))


def load_checkpoint(folder: Path, trainer: Trainer, device: torch.device | str, own_state: Path | None = None) -> None:
    """Resume `trainer` from the checkpoint files in `folder` (`write_checkpoint`); `own_state`, where the file
    exists, overrides part of the training state (a data-parallel rank's own random streams)."""
    core = getattr(trainer.model, "module", trainer.model)
    core.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location=device, weights_only=True))
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if own_state is not None and own_state.is_file():
        state.update(torch.load(own_state, map_location="cpu", weights_only=True))
    trainer.load_state_dict(state)


def _final(trainer: Trainer, data: DatasetSplits) -> dict[str, float]:
    """The test split's loss and the task's scores (``test_accuracy``, ``test_miou``, ...) and the task's extras
    (the contrastive task's tracking ``test_success_rate``), once, at the end; ``test_seconds`` is what that took."""
    start = time.perf_counter()
    test = trainer.evaluate("test")
    extras = trainer.task.test_extras(getattr(trainer.model, "module", trainer.model), data, trainer.device)
    return {**{f"test_{k}": v for k, v in {**test, **extras}.items()}, "test_seconds": time.perf_counter() - start}


def check_inputs(g, data: DatasetSplits) -> None:
    """Raise ValueError unless the architecture's inputs are the data set's network inputs, in number and shape."""
    from nas.graph import input_shapes

    shapes = [tuple(s) for s in input_shapes(g)]
    fields = list(data.inputs)
    want = [tuple(data.input_shape)] + [tuple(data.splits["train"].arrays[f].shape[1:]) for f in fields[1:]]
    if len(shapes) != len(want):
        raise ValueError(f"the architecture takes {len(shapes)} input(s) {[list(s) for s in shapes]}; data set "
                         f"{data.name!r} gives {len(want)}: " + ", ".join(f"{f} {list(w)}" for f, w in zip(
                             fields, want, strict=True)))
    if shapes[0] != want[0]:
        raise ValueError(f"the architecture's input_shape {list(shapes[0])} differs from data set "
                         f"{data.name!r}'s {list(want[0])}")
    for f, have, need in zip(fields[1:], shapes[1:], want[1:], strict=True):
        if have != need:
            raise ValueError(f"the architecture's input {fields.index(f) + 1} has shape {list(have)}; data set "
                             f"{data.name!r}'s {f!r} is {list(need)}")
