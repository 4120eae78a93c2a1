"""Train a candidate network on a `DatasetSplits`: the loop every trial runs.

`Trainer` holds one run (model, optimizer, schedule, shuffling and augmentation generators) and trains one epoch
per `run_epoch()` call, so the Ray trainable can report and checkpoint between epochs and resume from a
`state_dict()`. `train_candidate` is the plain loop around it.

The settings are `nas.train_settings.TrainSettings` (re-exported here), the one definition that the
search's config, its flags and an exported train.py share. Choices, all deterministic for a seed on CPU:
- batches come from `workers.data.batches.Batches` (the split on the device, or streamed from the node's cache
  with prefetching), in the data's own dtype; on the device each batch's inputs are scaled, augmented (training
  only: `nas.augment`, the ``augment`` setting or the data set's default, drawn from its own seeded generator)
  and standardised (`workers.data.inputs.InputTransform`); the order is shuffled by a seeded
  `torch.Generator`; a last batch of one example is dropped, since batch norm cannot train on it;
- what is optimised and scored is the data set's task (`workers.tasks`: classification, contrastive,
  segmentation, detection, multilabel), which also says which batch fields the network takes (several inputs: a
  Siamese pair, an image and its proposals) and which of them are images; auxiliary heads (`model.aux_outputs`
  after a training-mode forward) add their losses with weight `aux_weight` (default 0.3);
- the optimizer is SGD (momentum), AdamW or RMSprop (decay 0.9, epsilon 1.0); the learning rate follows
  `nas.lr_schedule.LRSchedule` (an optional linear warm-up, then a per-step cosine from `lr` to 0, constant,
  step or reduce-on-plateau on the task's validation score); `grad_clip` clips the gradients' global norm;
  `drop_path` drops branches that feed sums (`nas.drop_path`), rising linearly over the epochs;
- a non-finite training loss raises `CandidateFailed`. On CUDA the check runs on the device and is
  read every 32 steps to avoid a host sync per step (the step it names is still the first bad one);
- AMP (bf16 where the GPU has it natively, compute capability >= 8.0, else fp16 with a GradScaler;
  `workers.devices.amp_dtype`) and channels-last are on by default on CUDA; cuDNN benchmarking is on unless
  the ``deterministic`` setting asks for deterministic kernels (`workers.devices.configure_backends`);
- before each validation, batch-norm running statistics are re-estimated on `bn_recalibration` training
  examples (default 256, not augmented) with the current weights. Short trials need this: after one epoch the
  momentum-averaged statistics lag the fast-moving weights, and a ResNet that is 90% accurate with
  fresh statistics scores 10% (chance) with the lagged ones (measured on digits, 18 steps). The
  recalibrated statistics are the ones saved with the model. Evaluation never augments.

`train_loss` is the optimised objective (main head with label smoothing, plus weighted aux heads);
`val_loss` is the plain loss of the main head (the task's: cross entropy for classification). The scores are the
task's, ``val_<name>`` for each of `Task.metrics` (``val_accuracy``; ``val_miou``, ``val_map``, ...), and
``train_<name>`` where the task scores training batches (in data-parallel training additive scores are summed
over the ranks, the others are rank 0's slice). `train_seconds` counts training and
validation time only, cumulatively over epochs (also across a resume).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.augment import Augment, AugmentError, check_augment_shape, default_augment, format_augment, parse_augment
from nas.drop_path import DropPath
from nas.lr_schedule import LRSchedule
from nas.train_settings import OPTIMIZERS, SCHEDULES, SettingsError, TrainSettings, lr_milestones_of
from workers.data import Batches, DatasetSplits, InputTransform
from workers.devices import amp_dtype, configure_backends, seed_torch, trial_devices
from workers.tasks import Classification, Task, task_for

__all__ = ["AUX_WEIGHT", "OPTIMIZERS", "SCHEDULES", "CandidateFailed", "SettingsError", "TrainSettings", "Trainer",
           "augment_spec", "default_device", "evaluate", "evaluate_batches", "make_optimizer", "measure_latency",
           "recalibrate_bn", "recalibrate_bn_batches", "train_candidate"]

AUX_WEIGHT = TrainSettings.aux_weight  # the default of the setting (DARTS' bilevel search uses it)


class CandidateFailed(RuntimeError):
    """Training a candidate failed for a reason of the candidate's own (e.g. a NaN loss)."""


def default_device() -> torch.device:
    """Where this process trains: inside a Ray worker the first GPU Ray assigned it, or the CPU when it was given
    none (`workers.devices.trial_devices`); elsewhere CUDA when torch has it, else the CPU."""
    return trial_devices().device


def _memory_format(ndim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def augment_spec(settings: TrainSettings, data: DatasetSplits) -> str:
    """The canonical augmentation a run applies: the ``augment`` setting, else the data set's default
    (`nas.augment.default_augment`), checked against the data's example shape (a ValueError naming it)."""
    spec = settings.augment if settings.augment is not None else default_augment(data.name, data.input_shape)
    try:
        ops = parse_augment(spec)
        check_augment_shape(ops, data.input_shape)
    except AugmentError as e:
        raise SettingsError(f"training setting 'augment': {e}", "augment", "ops that suit the data", spec) from None
    return format_augment(ops)


def make_optimizer(params: list[torch.Tensor], s: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer of settings `s`: SGD with momentum, AdamW, or RMSprop as Inception (decay 0.9, epsilon 1.0)."""
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=s.lr, alpha=0.9, eps=1.0, momentum=s.momentum,
                                   weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _augment_seed(seed: int, rank: int = 0) -> int:
    """The augmentation generator's seed: a stream apart from the shuffling one of the same seed, and from the other
    data-parallel ranks' (each augments its own slice of a batch)."""
    key = [seed, 1] if rank == 0 else [seed, 1, rank]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


class Trainer:
    """One training run of `model` on `data`; call `run_epoch()` until `done`. `task` (default: the data set's,
    `workers.tasks`) is what is optimised and scored; `drop_path_nodes` the modules drop-path may drop
    (`nas.drop_path.drop_path_nodes` of the model's graph)."""

    def __init__(self, model: nn.Module, data: DatasetSplits, settings: TrainSettings,
                 device: str | torch.device | None = None, task: Task | None = None,
                 drop_path_nodes: Iterable[str] = (), shard: tuple[int, int] = (0, 1)):
        """`shard` (rank, world size): data-parallel training (`workers.distributed`, the model wrapped in
        DistributedDataParallel): every rank draws the same global batches and trains on its slice of each,
        its loss weighted so that DDP's average of the ranks' gradients is the gradient of the global batch's
        mean loss, whatever the slices' sizes."""
        settings.check()
        self.settings = s = settings
        self.rank, self.world = shard
        self.device = torch.device(device) if device is not None else default_device()
        configure_backends(s.deterministic)
        self.data = data
        self.task = task if task is not None else task_for(data)
        self.amp = s.amp if s.amp is not None else self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.device)
        fmt = _memory_format(len(data.input_shape) + 1)
        use_cl = s.channels_last if s.channels_last is not None else self.device.type == "cuda"
        self.memory_format = fmt if use_cl else None
        self.model = model.to(self.device)
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.inputs = InputTransform(data.preprocessing, self.device, len(data.input_shape))
        self.augment_spec = augment_spec(s, data)
        if self.augment_spec != "none" and not self.task.augments:
            raise SettingsError(f"training setting 'augment': {self.augment_spec!r} would move the pixels of data set "
                                f"{data.name!r} but not its {self.task.name} targets; use none", "augment", "none",
                                self.augment_spec)
        channels = data.input_shape[0]
        self.augment = Augment(self.augment_spec, low=[0.0] * channels, high=[1.0] * channels,
                               fill=data.preprocessing["mean"])
        self.train_batches = Batches(data.splits["train"], self.device, s.data_placement)
        self.val_batches = Batches(data.splits["val"], self.device, s.data_placement)
        n = len(self.train_batches)
        self.batch_size = min(s.batch_size, n)
        # a last partial batch is trained on when batch norm can use it: 2 examples, on every rank
        self.steps_per_epoch = n // self.batch_size + (n % self.batch_size >= 2 * self.world)
        self.total_steps = self.steps_per_epoch * s.epochs
        self.schedule = LRSchedule(s.lr, s.schedule, self.steps_per_epoch, s.epochs, s.warmup_epochs,
                                   lr_milestones_of(s.lr_milestones), s.lr_gamma, s.plateau_patience)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, s)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(s.seed)  # shuffling
        self.augment_generator = torch.Generator().manual_seed(_augment_seed(s.seed, self.rank))
        nodes = list(drop_path_nodes)
        core = getattr(self.model, "module", self.model)  # DDP wraps the model
        self.drop_path = DropPath(core, nodes) if s.drop_path > 0 and nodes else None
        seed_torch(s.seed)  # dropout, drop-path and other in-graph randomness (the model is on its device)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.train_seconds = 0.0
        self.time_limited = False
        self.history: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs or self.time_limited

    def lr_at(self, step: int) -> float:
        return self.schedule.at(step)

    def _input(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """A batch's raw images prepared on the device: scaled, augmented (training only), standardised."""
        x = self.inputs.scaled(x)
        if train and self.augment:
            x = self.augment(x, self.augment_generator)
        x = self.inputs.standardise(x)
        return x.contiguous(memory_format=self.memory_format) if self.memory_format is not None else x

    def network_inputs(self, batch: dict[str, torch.Tensor], train: bool = False) -> list[torch.Tensor]:
        """The network's inputs of a batch, in the task's order: images prepared (`_input`), others as float32."""
        return [self._input(batch[f], train) if f in self.task.images else batch[f].float() for f in self.task.inputs]

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate on the validation split, and return the epoch's metrics."""
        s, model, dev, task = self.settings, self.model, self.device, self.task
        epoch = self.epoch + 1
        start = time.perf_counter()
        model.train()
        if self.drop_path is not None:
            self.drop_path.set_epoch(self.epoch, s.epochs, s.drop_path)
        perm = torch.randperm(len(self.train_batches), generator=self.generator)
        check_every = 32 if dev.type == "cuda" else 1
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        scorer = task.scorer() if task.train_scored else None
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        seen = 0
        shard = (self.rank, self.world)
        with closing(self.train_batches.iterate(perm, self.batch_size, self.steps_per_epoch, shard)) as batches:
            for i, batch in enumerate(batches):
                xs = self.network_inputs(batch, train=True)
                x = xs[0]
                weight = 1.0
                if self.world > 1:  # this rank's slice of the global batch
                    n_global = min(self.batch_size, len(perm) - i * self.batch_size)
                    weight = len(x) * self.world / n_global
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp):
                    out = model(*xs)
                    loss = task.loss(out, batch, s.label_smoothing)
                    aux = getattr(getattr(model, "module", model), "aux_outputs", None) or []  # DDP wraps the model
                    for a in aux:
                        loss = loss + s.aux_weight * task.loss(a, batch, s.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
                if s.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.params, s.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step += 1
                lossd = loss.detach()
                first_bad = torch.where(~torch.isfinite(lossd) & (first_bad < 0), i + 1, first_bad)
                n = len(x)
                loss_sum += lossd.double() * n
                if scorer is not None:
                    scorer.add(out.detach(), batch)
                seen += n
                last = i == self.steps_per_epoch - 1
                out_of_time = (not last and s.max_seconds is not None
                               and self.train_seconds + time.perf_counter() - start > s.max_seconds)
                if (i + 1) % check_every == 0 or last or out_of_time:
                    bad_step = int(first_bad)
                    if bad_step >= 0:
                        raise CandidateFailed(f"NaN loss at epoch {epoch} step {bad_step}")
                if out_of_time:
                    self.time_limited = True
                    break
        if self.world > 1:  # the global batches' loss and (additive) scores, as one device would have them
            import torch.distributed as dist

            totals = torch.stack([loss_sum, torch.tensor(float(seen), device=dev, dtype=torch.float64)])
            dist.all_reduce(totals)
            loss_sum, seen = totals[0], int(totals[1])
            if scorer is not None and scorer.sums is not None:
                dist.all_reduce(scorer.sums)
        if s.bn_recalibration > 0:
            self.recalibrate(perm[:s.bn_recalibration])
        val = self.evaluate("val")
        self.schedule.end_epoch(val[task.metric])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        epoch_seconds = time.perf_counter() - start
        self.train_seconds += epoch_seconds
        self.epoch = epoch
        if s.max_seconds is not None and self.train_seconds > s.max_seconds and epoch < s.epochs:
            self.time_limited = True
        train_scores = scorer.result() if scorer is not None else {}
        metrics = {
            "epoch": epoch, "train_loss": float(loss_sum) / seen, **{f"train_{k}": v for k, v in train_scores.items()},
            "val_loss": val["loss"], **{f"val_{k}": v for k, v in val.items() if k != "loss"},
            "lr": self.lr_at(self.step), "train_seconds": self.train_seconds, "epoch_seconds": epoch_seconds,
            "steps": self.step, "time_limited": self.time_limited,
        }
        self.history.append(metrics)
        return metrics

    def recalibrate(self, positions: torch.Tensor) -> None:
        """Re-estimate batch-norm statistics on the training examples at `positions` (not augmented)."""
        p = self.drop_path.p if self.drop_path is not None else 0.0
        if self.drop_path is not None:
            self.drop_path.p = 0.0  # the statistics of the network that is evaluated
        try:
            with closing(self.train_batches.iterate(positions, self.batch_size)) as batches:
                recalibrate_bn_batches(self.model, (self.network_inputs(b) for b in batches), amp=self.amp)
        finally:
            if self.drop_path is not None:
                self.drop_path.p = p

    def evaluate(self, split: str) -> dict[str, float]:
        """Mean loss and the task's scores (``accuracy`` for classification, ...) of the model on split ``val`` or
        ``test``, never augmented."""
        batches = self.val_batches if split == "val" else Batches(self.data.splits[split], self.device,
                                                                   self.settings.data_placement)
        order = torch.arange(len(batches))
        with closing(batches.iterate(order, self.settings.eval_batch_size)) as it:
            return evaluate_batches(self.model, ((self.network_inputs(b), b) for b in it), self.task, amp=self.amp)

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the model weights needed to continue this run exactly where it stopped."""
        return {"settings": asdict(self.settings), "epoch": self.epoch, "step": self.step,
                "train_seconds": self.train_seconds, "time_limited": self.time_limited,
                "history": self.history, "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "generator": self.generator.get_state(),
                "augment_generator": self.augment_generator.get_state(), "schedule": self.schedule.state_dict(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds, self.time_limited = float(state["train_seconds"]), bool(state["time_limited"])
        self.history = list(state["history"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        if "augment_generator" in state:  # absent from checkpoints written before augmentation
            self.augment_generator.set_state(state["augment_generator"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["cpu_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def train_candidate(model: nn.Module, data: DatasetSplits, *, device: str | torch.device | None = None,
                    report: Callable[[dict], None] | None = None, drop_path_nodes: Iterable[str] = (),
                    **settings: Any) -> dict[str, Any]:
    """Train `model` on `data`'s train split, validating every epoch; `report(metrics)` after each epoch.

    `settings` are `TrainSettings` fields (epochs, batch_size, optimizer, lr, ..., the defaults for the
    others; the data settings are unused, `data` being given); an unknown one raises `SettingsError`.
    Returns the last epoch's metrics plus ``history`` (every epoch's metrics). Never touches the test
    split. Raises `CandidateFailed` on a non-finite training loss.
    """
    trainer = Trainer(model, data, TrainSettings.from_dict(settings, "train_candidate"), device,
                      drop_path_nodes=drop_path_nodes)
    while not trainer.done:
        metrics = trainer.run_epoch()
        if report is not None:
            report(dict(metrics))
    return {**trainer.history[-1], "history": [dict(h) for h in trainer.history]}


def _chunks(x: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    return (x[i:i + batch_size] for i in range(0, len(x), batch_size))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, *, batch_size: int = 64, amp: bool = False,
                   memory_format: torch.memory_format | None = None) -> None:
    """Re-estimate every batch-norm layer's running mean and variance on `x` with the current weights (an
    equal-weight average over training-mode batches of `batch_size`, as `torch.optim.swa_utils.update_bn`)."""
    fmt = memory_format
    recalibrate_bn_batches(model, (xb.contiguous(memory_format=fmt) if fmt is not None else xb
                                   for xb in _chunks(x, batch_size)), amp=amp)


@torch.no_grad()
def recalibrate_bn_batches(model: nn.Module, inputs: Iterable[torch.Tensor | list[torch.Tensor]], *,
                           amp: bool = False) -> None:
    """`recalibrate_bn` over batches of prepared inputs (on the model's device; a list of tensors for a network of
    several inputs); a batch of one ends it."""
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    used = 0
    try:
        for xb in inputs:
            xs = list(xb) if isinstance(xb, list | tuple) else [xb]
            if len(xs[0]) < 2:
                break  # batch norm cannot use a batch of one
            with torch.autocast(xs[0].device.type, dtype=amp_dtype(xs[0].device), enabled=amp):
                model(*xs)
            used += 1
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        if used == 0:  # nothing to estimate on: keep the statistics there were
            for m, (mean, var, count) in zip(bns, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
        if hasattr(model, "aux_outputs"):
            model.aux_outputs = []


@torch.no_grad()
def evaluate_batches(model: nn.Module,
                     batches: Iterable[tuple[torch.Tensor | list[torch.Tensor], dict[str, torch.Tensor]]],
                     task: Task, *, amp: bool = False) -> dict[str, float]:
    """Mean loss (``loss``) and the scores of `task` (``accuracy`` for classification, `Task.metrics`) of `model`
    (in eval mode) over (prepared inputs, batch) pairs on the model's device; the inputs are a tensor or, for a
    network of several inputs, a list of them."""
    first = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    loss_sum = None
    n_loss = 0
    scorer = task.scorer()
    try:
        for xb, batch in batches:
            xs = list(xb) if isinstance(xb, list | tuple) else [xb]
            dev = first.device if first is not None else xs[0].device
            with torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp):
                out = model(*xs)
            loss, n = task.loss_sum(out, batch)
            scorer.add(out, batch)
            loss_sum = loss.double() if loss_sum is None else loss_sum + loss.double()
            n_loss += n
    finally:
        model.train(was_training)
    if n_loss == 0:
        raise ValueError("evaluate: no examples")
    return {"loss": float(loss_sum) / n_loss, **scorer.result()}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512, amp: bool = False,
             memory_format: torch.memory_format | None = None) -> dict[str, float]:
    """Mean cross entropy and accuracy of `model` (in eval mode) on prepared inputs `x` and labels `y`, on the
    model's device."""
    if len(y) == 0:
        raise ValueError("evaluate: no examples")
    first = next(model.parameters(), None)
    dev = first.device if first is not None else x.device
    fmt = memory_format

    def pairs():
        for xb, yb in zip(_chunks(x, batch_size), _chunks(y, batch_size), strict=True):
            xb = xb.to(dev)
            yield (xb.contiguous(memory_format=fmt) if fmt is not None else xb), {"y": yb.to(dev)}

    return evaluate_batches(model, pairs(), Classification(), amp=amp)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...] | list[tuple[int, ...]],
                    device: str | torch.device | None = None,
                    batch_size: int = 1, reps: int = 20, warmup: int = 5, amp: bool = False,
                    channels_last: bool | None = None) -> float:
    """Median wall time in seconds of one eval-mode forward pass of a batch of `batch_size` random inputs,
    after `warmup` untimed passes. With `device` given the model is moved there; by default it is timed
    where its parameters are. channels_last (None: on for CUDA) applies to 4D/5D inputs. A network of several
    inputs takes the list of their shapes (random values for each: proposal boxes too, which ROI pooling clips)."""
    if reps < 1:
        raise ValueError(f"measure_latency: reps must be >= 1, got {reps}")
    if device is not None:
        model = model.to(device)
    first = next(model.parameters(), None)
    dev = first.device if first is not None else torch.device(device or "cpu")
    shapes = list(input_shape) if input_shape and isinstance(input_shape[0], list | tuple) else [input_shape]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch_size, *shape, generator=gen).to(dev) for shape in shapes]
    fmt = _memory_format(xs[0].dim())
    if fmt is not None and (channels_last if channels_last is not None else dev.type == "cuda"):
        xs[0] = xs[0].contiguous(memory_format=fmt)
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + reps):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            with torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp):
                model(*xs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    finally:
        model.train(was_training)
    return statistics.median(times)
