"""A search's configuration: one dataclass that flags, TOML and YAML files all fill."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.train_settings import SettingsError, TrainSettings


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and the key."""


TrainConfig = TrainSettings  # the former name of a search's training settings


@dataclass
class SearchConfig:
    space: str = "resnet"
    strategy: str = "evolution"
    budget: int = 20
    seed: int = 0
    out: str = "runs/search"
    address: str | None = None
    storage: str | None = None  # Ray's storage for trial checkpoints: s3://, gs://, or a path every node sees
    workers: int | None = None  # trials at once; default: cluster CPUs // cpus_per_trial
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = False
    max_failures: int = 2  # retries of a trial whose worker or node died
    reuse_actors: bool = True
    max_params: int | None = None  # larger proposals are rejected before evaluation (no budget used)
    max_flops: int | None = None  # likewise, multiply-accumulates per sample
    table: str | None = None  # a NAS-Bench-201 CSV: look candidates up instead of training them (workers/tabular.py)
    # what the search optimises (nas.objectives): METRIC:max|min each; none: the evaluation's own objective
    # (val_accuracy:max for the built-in kinds); two or more: a multi-objective search (a Pareto front)
    objectives: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)  # METRIC<=BOUND (>=, <, >) each
    latency_table: str | None = None  # measured latencies per architecture (nas.latency_table): metric latency_ms
    reference_point: dict[str, float] = field(default_factory=dict)  # metric -> value, for the hypervolume
    space_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    train: TrainSettings = field(default_factory=TrainSettings)  # how each candidate is trained

    def __post_init__(self) -> None:
        self.space = absolute_space(self.space)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> SearchConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
        data = dict(data)
        train = data.pop("train", {}) or {}
        if not isinstance(train, dict):
            raise ConfigError(f"{where}: 'train' must be a table of settings")
        try:  # every training setting is checked here, so a bad one stops the search before it starts
            settings = TrainSettings.from_dict(train, f"{where} [train]")
        except SettingsError as e:
            raise ConfigError(str(e)) from None
        cfg = _fill(cls(train=settings), data, where)
        cfg.space = absolute_space(cfg.space)
        cfg.check(where)
        return cfg

    def check(self, where: str = "config") -> None:
        """Raise `ConfigError` naming the first setting that cannot work (the training settings included),
        so that a bad one stops the search before Ray starts or a trial is spent on it."""

        def bad(key: str, want: str) -> ConfigError:
            return ConfigError(f"{where}: setting {key!r} must be {want}, got {getattr(self, key)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        for key in ("space", "strategy", "out"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise bad(key, "a non-empty string")
        if not is_int(self.budget) or self.budget < 1:
            raise bad("budget", "an int >= 1 (evaluations)")
        if not is_int(self.seed):
            raise bad("seed", "an int")
        if self.workers is not None and (not is_int(self.workers) or self.workers < 1):
            raise bad("workers", "an int >= 1 (trials at once)")
        if not is_number(self.cpus_per_trial) or self.cpus_per_trial <= 0:
            raise bad("cpus_per_trial", "a number > 0")
        if not is_number(self.gpus_per_trial) or self.gpus_per_trial < 0:
            raise bad("gpus_per_trial", "a number >= 0")
        for key in ("max_params", "max_flops"):
            v = getattr(self, key)
            if v is not None and (not is_int(v) or v < 1):
                raise bad(key, "None or an int >= 1")
        if not is_int(self.max_failures) or self.max_failures < -1:
            raise bad("max_failures", "an int >= 0 (or -1: retry without limit)")
        for key in ("asha", "reuse_actors"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "true or false")
        for key in ("address", "table", "storage"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, str) or not v):
                raise bad(key, "None or a non-empty string")
        for key in ("space_options", "strategy_options", "reference_point"):
            if not isinstance(getattr(self, key), dict):
                raise bad(key, "a table (mapping) of options")
        if any(not isinstance(k, str) or not is_number(v) for k, v in self.reference_point.items()):
            raise bad("reference_point", "a table of metric = number")
        if self.latency_table is not None and (not isinstance(self.latency_table, str) or not self.latency_table):
            raise bad("latency_table", "None or a non-empty string")
        self.check_objectives(where)
        if not isinstance(self.train, TrainSettings):
            raise ConfigError(f"{where}: 'train' must be a table of settings")
        try:
            self.train.check()
        except SettingsError as e:
            raise ConfigError(f"{where} [train]: {e}") from None


    def check_objectives(self, where: str = "config") -> None:
        """Parse the objectives and constraints (with --max-params / --max-flops): a malformed one, one given
        twice or contradictory ones raise `ConfigError` naming them."""
        from nas.objectives import (
            ObjectiveError,
            check_consistent,
            parse_constraints,
            parse_objectives,
            size_constraints,
        )

        for key in ("objectives", "constraints"):
            items = getattr(self, key)
            if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
                raise ConfigError(f"{where}: setting {key!r} must be a list of strings, got {items!r}")
        try:
            parse_objectives(self.objectives)
            check_consistent(size_constraints(self.max_params, self.max_flops) + parse_constraints(self.constraints))
        except ObjectiveError as e:
            raise ConfigError(f"{where}: {e}") from None


def absolute_space(space: Any) -> Any:
    """A space given by file (``path/to/file.py:name``) with the file's path made absolute (from the working
    directory, as the registry reads it), so that the run's config.json finds it from any directory (export,
    resume); other references (names, ``package.module:name``) are returned unchanged."""
    if not isinstance(space, str) or ":" not in space:
        return space
    target, attr = space.rsplit(":", 1)
    if not target.endswith(".py") or os.path.isabs(os.path.expanduser(target)):
        return space
    return f"{os.path.abspath(os.path.expanduser(target))}:{attr}"


def _fill(obj: Any, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in fields or key == "train":
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {sorted(fields)}")
        expected = getattr(obj, key)
        if value is not None and expected is not None and not _compatible(expected, value):
            raise ConfigError(f"{where}: setting {key!r} must be {type(expected).__name__}, got {value!r}")
        setattr(obj, key, float(value) if isinstance(expected, float) and isinstance(value, int) else value)
    return obj


def _compatible(expected: Any, value: Any) -> bool:
    if isinstance(expected, bool):
        return isinstance(value, bool)
    if isinstance(expected, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(expected))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML (.toml) or YAML (.yaml/.yml) file, or the config.json of a run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            data = {} if data is None else data
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"config file {path} is malformed: {e}") from None
    except ConfigError:
        raise
    except Exception as e:  # yaml's errors
        raise ConfigError(f"config file {path} is malformed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings, got {type(data).__name__}")
    return data
