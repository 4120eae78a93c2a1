"""How a candidate is trained: the one definition of the training settings.

`TrainSettings` is what a search's ``[train]`` table, the ``nas search`` training flags, the Ray worker
(`workers.trainable`, `workers.training`) and an exported ``train.py`` all use. Its defaults are the
search's: short trials that rank candidates, not a long final training. Each field carries a one-line
``help`` (``dataclasses.fields(TrainSettings)[i].metadata["help"]``), from which ``nas search`` makes its
flags. No workers here: the driver validates settings before any trial starts.

A *recipe* (``recipe = "darts"``, `RECIPES`) is a paper's training recipe: its settings become the defaults
of the settings not given explicitly. It is applied by `TrainSettings.from_dict`, the way every config file,
flag set and worker reads settings.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from nas.augment import AugmentError, parse_augment
from nas.lr_schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
PLACEMENTS = ("auto", "device", "stream")

# a paper's recipe: settings that replace the defaults (explicit settings still win); the help of `recipe`
# and the README list them
RECIPES: dict[str, dict[str, Any]] = {
    # DARTS (Liu, Simonyan & Yang, ICLR 2019), training the derived CIFAR-10 network from scratch: 600 epochs of
    # batch 96, SGD lr 0.025 cosine, momentum 0.9, weight decay 3e-4, cutout 16, drop-path 0.2, auxiliary head
    # weight 0.4, gradient norm clipped at 5
    "darts": {"epochs": 600, "batch_size": 96, "optimizer": "sgd", "lr": 0.025, "momentum": 0.9,
              "weight_decay": 3e-4, "schedule": "cosine", "augment": "crop:4,flip,cutout:16", "drop_path": 0.2,
              "aux_weight": 0.4, "grad_clip": 5.0},
    # ResNets on CIFAR-10 (He et al., CVPR 2016, section 4.2): SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch
    # 128, divided by 10 at 32k and 48k of 64k iterations (epochs 91 and 136 of 182 at 45k training images)
    "resnet_cifar": {"epochs": 182, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                     "weight_decay": 1e-4, "schedule": "step", "lr_milestones": "91,136", "lr_gamma": 0.1,
                     "augment": "crop:4,flip"},
    # VGG (Simonyan & Zisserman, ICLR 2015): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, the rate
    # divided by 10 when the validation accuracy stopped improving, 74 epochs (the patience is not given: 3)
    "vgg": {"epochs": 74, "batch_size": 256, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
            "schedule": "plateau", "lr_gamma": 0.1, "plateau_patience": 3},
    # Inception-v3 (Szegedy et al., CVPR 2016): RMSProp (decay 0.9, epsilon 1.0) lr 0.045 multiplied by 0.94 every
    # two epochs, gradient clipping at 2.0, label smoothing 0.1, auxiliary head weight 0.4 (as the authors'
    # slim code), weight decay 4e-5, batch 32, random-resized crops and flips
    "inception": {"epochs": 100, "batch_size": 32, "optimizer": "rmsprop", "lr": 0.045, "momentum": 0.9,
                  "weight_decay": 4e-5, "schedule": "step", "lr_gamma": 0.94,
                  "lr_milestones": ",".join(str(e) for e in range(2, 100, 2)), "grad_clip": 2.0,
                  "label_smoothing": 0.1, "aux_weight": 0.4, "augment": "resized_crop:0.08,flip"},
}


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
    dataset: str = _setting("digits", "data set: digits | cifar10 | folder | npy | moving_digits[:options] | clips")
    data_root: str | None = _setting(None, "folder of the data set (cifar10, folder, npy, clips)")
    data_seed: int = _setting(0, "seed of the train / validation / test split")
    val_fraction: float = _setting(0.2, "share of the training examples held out for validation, in (0, 1) "
                                        "(data sets without a validation split)")
    test_fraction: float = _setting(0.2, "share of all examples held out as the test split, in (0, 1) "
                                         "(data sets without a test split)")
    image_size: str | None = _setting(None, "size images (image folders, frame folders) are resized and "
                                            "centre-cropped to: SIDE or HxW; default: the most common size")
    strict: bool = _setting(False, "fail on an unreadable or truncated image instead of skipping it")
    data_cache: str | None = _setting(None, "folder of the decoded-data cache on each node; default: "
                                            "$GRAPHNAS_CACHE, else ~/.cache/graphnas/cache")
    data_placement: str = _setting("auto", "where training reads batches from: device (the whole split on the "
                                           "training device), stream (from the node's cache, prefetched), or "
                                           "auto (device when small)", choices=PLACEMENTS)
    augment: str | None = _setting(None, "training augmentation, ops in order, e.g. crop:4,flip,cutout:16 "
                                         "(crop:P flip cutout:S resized_crop:A jitter:S tcrop:P tflip) or none; "
                                         "default: the data set's (cifar10 crop:4,flip; image folders a crop and "
                                         "flip; others none)")
    # optimisation
    recipe: str | None = _setting(None, "a paper's recipe as the defaults of the settings not given: "
                                        + " | ".join(RECIPES))
    epochs: int = _setting(3, "training epochs per candidate")
    batch_size: int = _setting(64, "training batch size")
    optimizer: str = _setting("sgd", "optimizer (rmsprop: decay 0.9, epsilon 1.0, as Inception)",
                              choices=OPTIMIZERS)
    lr: float = _setting(0.05, "peak learning rate")
    weight_decay: float = _setting(5e-4, "weight decay")
    momentum: float = _setting(0.9, "momentum of SGD and RMSprop")
    label_smoothing: float = _setting(0.0, "label smoothing of the training loss, in [0, 1)")
    schedule: str = _setting("cosine", "learning rate: per-step cosine from lr to 0, constant, step (times "
                                       "lr_gamma at each of lr_milestones) or plateau (times lr_gamma when the "
                                       "validation accuracy stops improving)", choices=SCHEDULES)
    lr_milestones: str | None = _setting(None, "epochs after which schedule step multiplies the rate by lr_gamma, "
                                               "e.g. 30,60,90")
    lr_gamma: float = _setting(0.1, "factor of schedules step and plateau, in (0, 1]")
    plateau_patience: int = _setting(5, "epochs without a better validation accuracy before schedule plateau "
                                        "lowers the rate")
    warmup_epochs: float = _setting(0.0, "epochs of linear warm-up (per step) to lr before the schedule")
    grad_clip: float = _setting(0.0, "clip the gradients' global norm to this; 0: off")
    drop_path: float = _setting(0.0, "drop-path probability of the branches that feed a sum, rising linearly "
                                     "over the epochs (DARTS); in [0, 1)")
    seed: int = _setting(0, "seed of weight initialisation, shuffling and augmentation")
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
        if type(values.get("image_size")) is int:  # image_size = 32 in a config file
            values["image_size"] = str(values["image_size"])
        if isinstance(values.get("lr_milestones"), list | tuple):  # lr_milestones = [30, 60] in a config file
            values["lr_milestones"] = ",".join(str(v) for v in values["lr_milestones"])
        recipe = values.get("recipe")
        if recipe is not None:
            if recipe not in RECIPES:
                raise SettingsError(f"{where}: training setting 'recipe' must be one of {tuple(RECIPES)}, got "
                                    f"{recipe!r}", "recipe", f"one of {tuple(RECIPES)}", recipe)
            values = {**RECIPES[recipe], **values}
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
        if self.data_placement not in PLACEMENTS:
            raise bad("data_placement", f"one of {PLACEMENTS}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise bad("recipe", f"None or one of {tuple(RECIPES)}")
        if not isinstance(self.strict, bool):
            raise bad("strict", "true or false")
        if self.data_cache is not None and (not isinstance(self.data_cache, str) or not self.data_cache):
            raise bad("data_cache", "None or a non-empty string")
        if self.image_size is not None:
            try:
                image_size_of(self.image_size)
            except ValueError:
                raise bad("image_size", "None, a positive SIDE or HxW (e.g. 32 or 48x64)") from None
        if self.augment is not None:
            try:
                parse_augment(self.augment)
            except AugmentError as e:
                raise bad("augment", f"augmentation ops such as crop:4,flip,cutout:16 or none ({e})") from None
        if self.lr_milestones is not None:
            try:
                lr_milestones_of(self.lr_milestones)
            except ValueError:
                raise bad("lr_milestones", "None or increasing positive epochs, e.g. 30,60,90") from None
        elif self.schedule == "step":
            raise bad("lr_milestones", "the epochs of schedule 'step', e.g. 30,60,90")
        if not is_int(self.plateau_patience) or self.plateau_patience < 0:
            raise bad("plateau_patience", "an int >= 0")
        if not (is_number(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            raise bad("lr_gamma", "a number in (0, 1]")
        for name in ("warmup_epochs", "grad_clip"):
            v = getattr(self, name)
            if not (is_number(v) and v >= 0):
                raise bad(name, "a non-negative number")
        if not (is_number(self.drop_path) and 0 <= self.drop_path < 1):
            raise bad("drop_path", "a number in [0, 1)")
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


def image_size_of(value: str | int | None) -> tuple[int, int] | None:
    """(height, width) of an ``image_size`` setting (``"32"``, ``32`` or ``"48x64"``), None for None; a
    ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"image size {value!r} is not SIDE or HxW")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) is not None else h
    if h < 1 or w < 1:
        raise ValueError(f"image size {value!r} must be positive")
    return h, w


def lr_milestones_of(value: str | None) -> tuple[int, ...]:
    """The epochs of an ``lr_milestones`` setting ("30,60,90"), increasing and positive; a ValueError otherwise."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise ValueError(f"lr_milestones {value!r} is not a string")
    epochs = tuple(int(v) for v in value.split(","))
    if not epochs or epochs[0] < 1 or any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise ValueError(f"lr_milestones {value!r} are not increasing positive epochs")
    return epochs


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
