"""A search's configuration: one dataclass that flags, TOML and YAML files all fill."""

from __future__ import annotations

import dataclasses
import json
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
    workers: int | None = None  # trials at once; default: cluster CPUs // cpus_per_trial
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = False
    max_failures: int = 2  # retries of a trial whose worker or node died
    reuse_actors: bool = True
    max_params: int | None = None  # larger proposals are rejected before evaluation (no budget used)
    max_flops: int | None = None  # likewise, multiply-accumulates per sample
    table: str | None = None  # a NAS-Bench-201 CSV: look candidates up instead of training them (workers/tabular.py)
    space_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    train: TrainSettings = field(default_factory=TrainSettings)  # how each candidate is trained

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
        return _fill(cls(train=settings), data, where)


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
