"""Train a candidate network on a `DatasetSplits`: the loop every trial runs.

`Trainer` holds one run (model, optimizer, schedule, shuffling generator) and trains one epoch per
`run_epoch()` call, so the Ray trainable can report and checkpoint between epochs and resume from a
`state_dict()`. `train_candidate` is the plain loop around it.

The settings are `nas.train_settings.TrainSettings` (re-exported here), the one definition that the
search's config, its flags and an exported train.py share. Choices, all deterministic for a seed on CPU:
- the data live as tensors on the training device and are shuffled by a seeded `torch.Generator`
  (no DataLoader: the data sets are small and already normalised); a last batch of one example is
  dropped, since batch norm cannot train on it;
- the learning rate follows a per-step cosine from `lr` to 0 over all epochs (or stays constant);
- auxiliary heads (`model.aux_outputs` after a training-mode forward) add their losses with weight
  `aux_weight` (default 0.3);
- a non-finite training loss raises `CandidateFailed`. On CUDA the check runs on the device and is
  read every 32 steps to avoid a host sync per step (the step it names is still the first bad one);
- AMP (bf16 where the GPU has it natively, compute capability >= 8.0, else fp16 with a GradScaler;
  `workers.devices.amp_dtype`) and channels-last are on by default on CUDA; cuDNN benchmarking is on unless
  the ``deterministic`` setting asks for deterministic kernels (`workers.devices.configure_backends`);
- before each validation, batch-norm running statistics are re-estimated on `bn_recalibration` training
  examples (default 256) with the current weights. Short trials need this: after one epoch the
  momentum-averaged statistics lag the fast-moving weights, and a ResNet that is 90% accurate with
  fresh statistics scores 10% (chance) with the lagged ones (measured on digits, 18 steps). The
  recalibrated statistics are the ones saved with the model.

`train_loss` is the optimised objective (main head with label smoothing, plus weighted aux heads);
`val_loss` is the plain cross entropy of the main head. `train_seconds` counts training and
validation time only, cumulatively over epochs (also across a resume).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.train_settings import OPTIMIZERS, SCHEDULES, SettingsError, TrainSettings
from workers.datasets import DatasetSplits
from workers.devices import amp_dtype, configure_backends, trial_devices

__all__ = ["AUX_WEIGHT", "OPTIMIZERS", "SCHEDULES", "CandidateFailed", "SettingsError", "TrainSettings", "Trainer",
           "default_device", "evaluate", "measure_latency", "recalibrate_bn", "train_candidate"]

AUX_WEIGHT = TrainSettings.aux_weight  # the default of the setting (DARTS' bilevel search uses it)


class CandidateFailed(RuntimeError):
    """Training a candidate failed for a reason of the candidate's own (e.g. a NaN loss)."""


def default_device() -> torch.device:
    """Where this process trains: inside a Ray worker the first GPU Ray assigned it, or the CPU when it was given
    none (`workers.devices.trial_devices`); elsewhere CUDA when torch has it, else the CPU."""
    return trial_devices().device


def _memory_format(ndim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


class Trainer:
    """One training run of `model` on `data`; call `run_epoch()` until `done`."""

    def __init__(self, model: nn.Module, data: DatasetSplits, settings: TrainSettings,
                 device: str | torch.device | None = None, shard: tuple[int, int] = (0, 1)):
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
        self.amp = s.amp if s.amp is not None else self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.device)
        fmt = _memory_format(data.x_train.dim())
        use_cl = s.channels_last if s.channels_last is not None else self.device.type == "cuda"
        self.memory_format = fmt if use_cl else None
        self.model = model.to(self.device)
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.x_train, self.y_train = data.x_train.to(self.device), data.y_train.to(self.device)
        self.x_val, self.y_val = data.x_val.to(self.device), data.y_val.to(self.device)
        n = len(self.y_train)
        self.batch_size = min(s.batch_size, n)
        # a last partial batch is trained on when batch norm can use it: 2 examples, on every rank
        self.steps_per_epoch = n // self.batch_size + (n % self.batch_size >= 2 * self.world)
        self.total_steps = self.steps_per_epoch * s.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        if s.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                                             weight_decay=s.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(s.seed)
        torch.manual_seed(s.seed)  # dropout and other in-graph randomness
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.train_seconds = 0.0
        self.time_limited = False
        self.history: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs or self.time_limited

    def lr_at(self, step: int) -> float:
        if self.settings.schedule == "constant":
            return self.settings.lr
        progress = min(step, self.total_steps) / self.total_steps
        return self.settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if self.memory_format is not None else x

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate on the validation split, and return the epoch's metrics."""
        s, model, dev = self.settings, self.model, self.device
        epoch = self.epoch + 1
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(self.y_train), generator=self.generator).to(dev)
        check_every = 32 if dev.type == "cuda" else 1
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        seen = 0
        for i in range(self.steps_per_epoch):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            weight = 1.0
            if self.world > 1:  # this rank's slice of the global batch
                n_global, idx = len(idx), idx[self.rank::self.world]
                weight = len(idx) * self.world / n_global
            x, y = self._input(self.x_train[idx]), self.y_train[idx]
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp):
                out = model(x)
                loss = F.cross_entropy(out, y, label_smoothing=s.label_smoothing)
                aux = getattr(getattr(model, "module", model), "aux_outputs", None) or []  # DDP wraps the model
                for a in aux:
                    loss = loss + s.aux_weight * F.cross_entropy(a, y, label_smoothing=s.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            lossd = loss.detach()
            first_bad = torch.where(~torch.isfinite(lossd) & (first_bad < 0), i + 1, first_bad)
            loss_sum += lossd.double() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
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
        if self.world > 1:  # the global batches' loss and accuracy, as one device would have them
            import torch.distributed as dist

            totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=dev,
                                                                            dtype=torch.float64)])
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1].long(), int(totals[2])
        if s.bn_recalibration > 0:
            recalibrate_bn(model, self.x_train[perm[:s.bn_recalibration]], batch_size=self.batch_size,
                           amp=self.amp, memory_format=self.memory_format)
        val = evaluate(model, self.x_val, self.y_val, batch_size=s.eval_batch_size, amp=self.amp,
                       memory_format=self.memory_format)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        epoch_seconds = time.perf_counter() - start
        self.train_seconds += epoch_seconds
        self.epoch = epoch
        if s.max_seconds is not None and self.train_seconds > s.max_seconds and epoch < s.epochs:
            self.time_limited = True
        metrics = {
            "epoch": epoch, "train_loss": float(loss_sum) / seen, "train_accuracy": int(correct) / seen,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": self.lr_at(self.step),
            "train_seconds": self.train_seconds, "epoch_seconds": epoch_seconds, "steps": self.step,
            "time_limited": self.time_limited,
        }
        self.history.append(metrics)
        return metrics

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the model weights needed to continue this run exactly where it stopped."""
        return {"settings": asdict(self.settings), "epoch": self.epoch, "step": self.step,
                "train_seconds": self.train_seconds, "time_limited": self.time_limited,
                "history": self.history, "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "generator": self.generator.get_state(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds, self.time_limited = float(state["train_seconds"]), bool(state["time_limited"])
        self.history = list(state["history"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["cpu_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def train_candidate(model: nn.Module, data: DatasetSplits, *, device: str | torch.device | None = None,
                    report: Callable[[dict], None] | None = None, **settings: Any) -> dict[str, Any]:
    """Train `model` on `data`'s train split, validating every epoch; `report(metrics)` after each epoch.

    `settings` are `TrainSettings` fields (epochs, batch_size, optimizer, lr, ..., the defaults for the
    others; the data settings are unused, `data` being given); an unknown one raises `SettingsError`.
    Returns the last epoch's metrics plus ``history`` (every epoch's metrics). Never touches the test
    split. Raises `CandidateFailed` on a non-finite training loss.
    """
    trainer = Trainer(model, data, TrainSettings.from_dict(settings, "train_candidate"), device)
    while not trainer.done:
        metrics = trainer.run_epoch()
        if report is not None:
            report(dict(metrics))
    return {**trainer.history[-1], "history": [dict(h) for h in trainer.history]}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, *, batch_size: int = 64, amp: bool = False,
                   memory_format: torch.memory_format | None = None) -> None:
    """Re-estimate every batch-norm layer's running mean and variance on `x` with the current weights
    (an equal-weight average over training-mode batches, as `torch.optim.swa_utils.update_bn` does)."""
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(x) < 2:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    dev = x.device
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if len(xb) < 2:
                break  # batch norm cannot use a batch of one
            if memory_format is not None:
                xb = xb.contiguous(memory_format=memory_format)
            with torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp):
                model(xb)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
        if hasattr(model, "aux_outputs"):
            model.aux_outputs = []


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512, amp: bool = False,
             memory_format: torch.memory_format | None = None) -> dict[str, float]:
    """Mean cross entropy and accuracy of `model` (in eval mode) on (x, y), on the model's device."""
    if len(y) == 0:
        raise ValueError("evaluate: no examples")
    first = next(model.parameters(), None)
    dev = first.device if first is not None else x.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    try:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            if memory_format is not None:
                xb = xb.contiguous(memory_format=memory_format)
            with torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp):
                out = model(xb)
            loss_sum += F.cross_entropy(out.float(), yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    return {"loss": float(loss_sum) / len(y), "accuracy": int(correct) / len(y)}


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device | None = None,
                    batch_size: int = 1, reps: int = 20, warmup: int = 5, amp: bool = False,
                    channels_last: bool | None = None) -> float:
    """Median wall time in seconds of one eval-mode forward pass of a batch of `batch_size` random inputs,
    after `warmup` untimed passes. With `device` given the model is moved there; by default it is timed
    where its parameters are. channels_last (None: on for CUDA) applies to 4D/5D inputs."""
    if reps < 1:
        raise ValueError(f"measure_latency: reps must be >= 1, got {reps}")
    if device is not None:
        model = model.to(device)
    first = next(model.parameters(), None)
    dev = first.device if first is not None else torch.device(device or "cpu")
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0)).to(dev)
    fmt = _memory_format(x.dim())
    if fmt is not None and (channels_last if channels_last is not None else dev.type == "cuda"):
        x = x.contiguous(memory_format=fmt)
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + reps):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            with torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp):
                model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    finally:
        model.train(was_training)
    return statistics.median(times)
