"""How a candidate is trained: the one definition of the training settings.

`TrainSettings` is what a search's ``[train]`` table, the ``nas search`` training flags, the Ray worker
(`workers.trainable`, `workers.training`) and an exported ``train.py`` all use. Its defaults are the
search's: short trials that rank candidates, not a long final training. Each field carries a one-line
``help`` (``dataclasses.fields(TrainSettings)[i].metadata["help"]``), from which ``nas search`` makes its
flags. No torch and no workers here: the driver validates settings before any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


class SettingsError(ValueError):
    """A training setting is unknown or invalid; `setting` names it (None for unknown keys), `want` says
    what it must be, `value` is what it was."""

    def __init__(self, message: str, setting: str | None = None, want: str | None = None, value: Any = None):
        super().__init__(message)
        self.setting, self.want, self.value = setting, want, value


def _setting(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainSettings:
    """How each candidate is trained; `check()` validates, `from_dict` reads a mapping."""

    # data (the worker loads and splits them; a train.py exported has its own --data)
    dataset: str = _setting("digits", "data set: digits | cifar10 | npy | moving_digits[:options] | clips")
    data_root: str | None = _setting(None, "folder of the data set (cifar10, npy, clips)")
    data_seed: int = _setting(0, "seed of the train / validation / test split")
    val_fraction: float = _setting(0.2, "share of the training examples held out for validation, in (0, 1) "
                                        "(data sets without a validation split)")
    test_fraction: float = _setting(0.2, "share of all examples held out as the test split, in (0, 1) "
                                         "(data sets without a test split)")
    # optimisation
    epochs: int = _setting(3, "training epochs per candidate")
    batch_size: int = _setting(64, "training batch size")
    optimizer: str = _setting("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = _setting(0.05, "peak learning rate")
    weight_decay: float = _setting(5e-4, "weight decay")
    momentum: float = _setting(0.9, "SGD momentum")
    label_smoothing: float = _setting(0.0, "label smoothing of the training loss, in [0, 1)")
    schedule: str = _setting("cosine", "learning rate: per-step cosine from lr to 0, or constant", choices=SCHEDULES)
    seed: int = _setting(0, "seed of weight initialisation and shuffling")
    aux_weight: float = _setting(0.3, "weight of each auxiliary head's loss")
    # run time
    amp: bool | None = _setting(None, "mixed precision (bf16, else fp16); default: on with CUDA")
    channels_last: bool | None = _setting(None, "channels-last memory format; default: on with CUDA")
    deterministic: bool = _setting(False, "deterministic GPU kernels (cuDNN deterministic, no benchmarking, "
                                          "torch.use_deterministic_algorithms); slower; default: cuDNN benchmark")
    max_seconds: float | None = _setting(None, "stop a candidate (after evaluating) once it has trained this many "
                                                "seconds")
    eval_batch_size: int = _setting(512, "batch size of evaluation")
    bn_recalibration: int = _setting(256, "training examples to re-estimate batch-norm statistics on before "
                                          "each validation; 0: off")
    checkpoint_every: int = _setting(0, "checkpoint every N epochs; 0: only the final model")
    latency_reps: int = _setting(20, "timed forward passes for latency_ms; 0: do not measure")
    latency_batch_size: int = _setting(1, "batch size of the latency measurement")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "training settings") -> TrainSettings:
        """Settings from a mapping (missing keys: defaults), checked. An unknown key raises `SettingsError`
        naming it and the known ones; an int is taken for a float setting."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected a mapping of training settings, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            what = f"setting {unknown[0]!r}" if len(unknown) == 1 else f"settings {unknown}"
            raise SettingsError(f"{where}: unknown {what}; known: {sorted(known)}")
        kinds = setting_types()
        values = {k: float(v) if kinds[k][0] is float and type(v) is int else v for k, v in data.items()}
        settings = cls(**values)
        try:
            settings.check()
        except SettingsError as e:
            raise SettingsError(f"{where}: {e}", e.setting, e.want, e.value) from None
        return settings

    def check(self) -> None:
        """Raise `SettingsError` naming the first invalid setting."""

        def bad(name: str, want: str) -> SettingsError:
            value = getattr(self, name)
            return SettingsError(f"training setting {name!r} must be {want}, got {value!r}", name, want, value)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.dataset, str) or not self.dataset:
            raise bad("dataset", "a non-empty string")
        if self.data_root is not None and (not isinstance(self.data_root, str) or not self.data_root):
            raise bad("data_root", "None or a non-empty string")
        for name, least in (("data_seed", 0), ("epochs", 1), ("batch_size", 1), ("seed", 0),
                            ("eval_batch_size", 1), ("bn_recalibration", 0), ("checkpoint_every", 0),
                            ("latency_reps", 0), ("latency_batch_size", 1)):
            v = getattr(self, name)
            if not is_int(v) or v < least:
                raise bad(name, f"an int >= {least}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not (is_number(v) and 0 < v < 1):
                raise bad(name, "a number in (0, 1)")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        if not (is_number(self.lr) and self.lr > 0):
            raise bad("lr", "a positive number")
        for name in ("weight_decay", "momentum", "aux_weight"):
            v = getattr(self, name)
            if not (is_number(v) and v >= 0):
                raise bad(name, "a non-negative number")
        if not (is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise bad("label_smoothing", "a number in [0, 1)")
        for name in ("amp", "channels_last"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise bad(name, "None, true or false")
        if not isinstance(self.deterministic, bool):
            raise bad("deterministic", "true or false")
        limit = self.max_seconds
        if limit is not None and not (is_number(limit) and limit > 0):
            raise bad("max_seconds", "None or a positive number")


def setting_types() -> dict[str, tuple[type, bool]]:
    """Each setting's (value type, whether None is allowed): int, float, str or bool."""
    hints = typing.get_type_hints(TrainSettings)
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None)) if args else hint
        out[name] = (base, nullable)
    return out


def setting_help() -> dict[str, str]:
    """Each setting's one-line help."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(TrainSettings)}
