"""The one definition of the training settings: defaults, checks, and every setting reaching every user of it
(`nas search` flags, a TOML config, the worker's trainable, an exported train.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nas.cli import main, make_parser, search_config_from_args
from nas.config import ConfigError, SearchConfig, TrainConfig
from nas.train_settings import SettingsError, TrainSettings, setting_help

NAMES = [f.name for f in dataclasses.fields(TrainSettings)]

# the worker's defaults before there was one definition: a search must train as it did
WORKER_DEFAULTS = {
    "dataset": "digits", "data_root": None, "data_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2,
    "epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "momentum": 0.9,
    "label_smoothing": 0.0, "schedule": "cosine", "seed": 0, "aux_weight": 0.3, "amp": None, "channels_last": None,
    "deterministic": False, "max_seconds": None, "eval_batch_size": 512, "bn_recalibration": 256, "checkpoint_every": 0,
    "latency_reps": 20, "latency_batch_size": 1,
    # data and recipe settings added with the data pipeline: their defaults leave a search as it was
    "image_size": None, "strict": False, "data_cache": None, "data_placement": "auto", "augment": None,
    "recipe": None, "lr_milestones": None, "lr_gamma": 0.1, "plateau_patience": 5, "warmup_epochs": 0.0,
    "grad_clip": 0.0, "drop_path": 0.0,
}
# a valid value other than the default, for every setting
OTHER = {
    "dataset": "cifar10", "data_root": "/data/cifar", "data_seed": 7, "val_fraction": 0.1, "test_fraction": 0.3,
    "epochs": 5, "batch_size": 32, "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.001, "momentum": 0.8,
    "label_smoothing": 0.1, "schedule": "constant", "seed": 4, "aux_weight": 0.5, "amp": True, "channels_last": False,
    "deterministic": True, "max_seconds": 60.0, "eval_batch_size": 256, "bn_recalibration": 0, "checkpoint_every": 2,
    "latency_reps": 0, "latency_batch_size": 4,
    "image_size": "48x64", "strict": True, "data_cache": "/tmp/cache", "data_placement": "stream",
    "augment": "crop:4,flip,cutout:16", "recipe": "vgg", "lr_milestones": "30,60", "lr_gamma": 0.5,
    "plateau_patience": 2, "warmup_epochs": 1.5, "grad_clip": 5.0, "drop_path": 0.2,
}
# an invalid value for every setting
BAD = {
    "dataset": "", "data_root": 3, "data_seed": -1, "val_fraction": 0.0, "test_fraction": 1.0, "epochs": 0,
    "batch_size": 1.5, "optimizer": "adam", "lr": 0.0, "weight_decay": -1.0, "momentum": math.nan,
    "label_smoothing": 1.0, "schedule": "linear", "seed": True, "aux_weight": -0.1, "amp": "yes", "channels_last": 1,
    "deterministic": None, "max_seconds": 0, "eval_batch_size": 0, "bn_recalibration": -1, "checkpoint_every": -1,
    "latency_reps": -1, "latency_batch_size": 0,
    "image_size": "big", "strict": "no", "data_cache": "", "data_placement": "gpu", "augment": "rotate:10",
    "recipe": "alexnet", "lr_milestones": "60,30", "lr_gamma": 0.0, "plateau_patience": -1, "warmup_epochs": -1.0,
    "grad_clip": -0.5, "drop_path": 1.0,
}


def flag(name: str) -> str:
    return "--train-seed" if name == "seed" else "--" + name.replace("_", "-")


def flags_for(values: dict) -> list[str]:
    argv = []
    for name, value in values.items():
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            argv += [flag(name), str(value)]
    return argv


def parse(*argv: str) -> SearchConfig:
    return search_config_from_args(make_parser().parse_args(["search", *argv]))


def test_the_tables_cover_every_setting():
    assert set(WORKER_DEFAULTS) == set(OTHER) == set(BAD) == set(NAMES)
    assert all(OTHER[k] != WORKER_DEFAULTS[k] for k in NAMES)


def test_defaults_are_the_workers_and_every_setting_has_help():
    assert TrainSettings().to_dict() == WORKER_DEFAULTS
    TrainSettings().check()
    helps = setting_help()
    assert set(helps) == set(NAMES) and all(h and "\n" not in h for h in helps.values())
    import workers.training
    from nas.export import TrainConfig as ExportTrainConfig

    assert TrainConfig is TrainSettings and ExportTrainConfig is TrainSettings
    assert workers.training.TrainSettings is TrainSettings and workers.training.AUX_WEIGHT == 0.3


@pytest.mark.parametrize("name", NAMES)
def test_check_names_every_bad_setting(name):
    settings = TrainSettings(**{name: BAD[name]})
    with pytest.raises(SettingsError, match=f"training setting '{name}' must be ") as err:
        settings.check()
    assert err.value.setting == name and isinstance(err.value, ValueError)
    with pytest.raises(SettingsError, match=f"^here: training setting '{name}'"):
        TrainSettings.from_dict({name: BAD[name]}, "here")


def test_from_dict_fills_defaults_takes_ints_for_floats_and_names_unknown_keys():
    s = TrainSettings.from_dict({"lr": 1, "epochs": 2}, "x")
    assert s.lr == 1.0 and isinstance(s.lr, float) and s.epochs == 2 and s.batch_size == 64
    assert TrainSettings.from_dict(None) == TrainSettings()
    with pytest.raises(SettingsError, match=r"^x: unknown setting 'epoch'; known: \['amp', 'augment', 'aux_weight'"):
        TrainSettings.from_dict({"epoch": 3}, "x")
    with pytest.raises(SettingsError, match=r"unknown settings \['colour', 'epoch'\]"):
        TrainSettings.from_dict({"epoch": 3, "colour": "red"}, "x")
    with pytest.raises(SettingsError, match="expected a mapping"):
        TrainSettings.from_dict([1], "x")


def test_every_setting_is_a_search_flag():
    assert parse().train == TrainSettings()
    cfg = parse(*flags_for(OTHER))
    assert cfg.train == TrainSettings(**OTHER) and cfg.seed == 0  # --train-seed is not the search's --seed
    cfg = parse("--amp", "--no-channels-last", "--seed", "9")
    assert (cfg.train.amp, cfg.train.channels_last, cfg.train.seed, cfg.seed) == (True, False, 0, 9)


def test_every_setting_is_a_key_of_the_config_files_train_table(tmp_path):
    lines = ["[train]"] + [f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v).replace(chr(39), chr(34))}"
                           for k, v in OTHER.items()]
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    assert parse("--config", str(path)).train == TrainSettings(**OTHER)
    assert SearchConfig.from_dict({"train": OTHER}).train == TrainSettings(**OTHER)
    # flags override the file, setting by setting
    cfg = parse("--config", str(path), "--epochs", "9", "--no-amp")
    assert (cfg.train.epochs, cfg.train.amp, cfg.train.batch_size) == (9, False, 32)


def test_bad_settings_stop_the_search_before_it_starts(tmp_path, monkeypatch, capsys):
    import nas.search

    def never(*a, **k):
        raise AssertionError("the search started")

    monkeypatch.setattr(nas.search, "run_search", never)
    assert main(["search", "--out", str(tmp_path / "r"), "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training setting 'lr' must be a positive number, got -1.0" in err
    assert main(["search", "--out", str(tmp_path / "r"), "--val-fraction", "1.5"]) == 2
    assert "'val_fraction' must be a number in (0, 1)" in capsys.readouterr().err
    path = tmp_path / "c.toml"
    path.write_text('[train]\nschedule = "linear"\n')
    with pytest.raises(ConfigError, match=r"c\.toml \[train\]: training setting 'schedule' must be one of"):
        parse("--config", str(path))


def test_a_recipe_gives_the_defaults_of_the_settings_not_given(tmp_path):
    from nas.train_settings import RECIPES

    darts = TrainSettings.from_dict({"recipe": "darts"})
    assert (darts.epochs, darts.batch_size, darts.lr, darts.augment, darts.drop_path, darts.aux_weight,
            darts.grad_clip) == (600, 96, 0.025, "crop:4,flip,cutout:16", 0.2, 0.4, 5.0)
    cfg = parse("--recipe", "darts", "--epochs", "2")
    assert cfg.train.epochs == 2 and cfg.train.drop_path == 0.2 and cfg.train.recipe == "darts"
    path = tmp_path / "r.toml"
    path.write_text('[train]\nrecipe = "resnet_cifar"\nlr_milestones = [3, 5]\nimage_size = 32\n')
    t = parse("--config", str(path)).train
    assert (t.schedule, t.lr_milestones, t.lr, t.image_size) == ("step", "3,5", 0.1, "32")
    assert TrainSettings.from_dict(t.to_dict()) == t  # a run's config.json reads back the same
    for name in RECIPES:
        TrainSettings.from_dict({"recipe": name})
    with pytest.raises(SettingsError, match="'lr_milestones' must be the epochs of schedule 'step'"):
        TrainSettings.from_dict({"schedule": "step"})


def test_nas_train_with_a_recipe_replaces_the_searchs_settings():
    from nas.cli import retrain_settings

    search = TrainSettings(epochs=3, lr=0.05, dataset="cifar10", data_root="/data").to_dict()
    t = retrain_settings(search, {"recipe": "darts", "epochs": 20})
    assert (t.epochs, t.lr, t.drop_path, t.augment, t.dataset, t.data_root) == (20, 0.025, 0.2, "crop:4,flip,cutout:16",
                                                                               "cifar10", "/data")
    assert retrain_settings(search, {"lr": 0.1}) == TrainSettings(**{**search, "lr": 0.1})


def test_a_resumed_runs_config_without_the_newer_settings_gets_their_defaults(tmp_path):
    old = {"dataset": "digits", "data_root": None, "data_seed": 0, "epochs": 1, "batch_size": 64, "optimizer": "sgd",
           "lr": 0.05, "weight_decay": 5e-4, "momentum": 0.9, "label_smoothing": 0.0, "checkpoint_every": 0}
    cfg = SearchConfig.from_dict({"space": "resnet", "train": old})
    assert cfg.train == TrainSettings(epochs=1)


def test_the_worker_accepts_every_setting():
    from workers.trainable import TRAIN_DEFAULTS, train_settings

    assert TRAIN_DEFAULTS == WORKER_DEFAULTS
    assert train_settings(OTHER) == OTHER and train_settings(None) == WORKER_DEFAULTS
    # the driver's config goes to the trial as asdict(cfg.train)
    assert train_settings(dataclasses.asdict(parse(*flags_for(OTHER)).train)) == OTHER
    with pytest.raises(ValueError, match="'epoch'"):
        train_settings({"epoch": 3})
    with pytest.raises(ValueError, match="'bn_recalibration'"):
        train_settings({"bn_recalibration": -1})


def test_an_exported_train_py_uses_the_same_settings(tmp_path):
    from nas.export.train_script import USED, train_config_of, train_script

    assert set(USED) <= set(NAMES)
    assert train_config_of(None) == TrainSettings() and train_config_of(OTHER) == TrainSettings(**OTHER)
    text = train_script("net.py", "Net", "abc", (1, 8, 8), train_config_of({"epochs": 7}))
    defaults = {k: TrainSettings().to_dict()[k] for k in USED}
    defaults["augment"] = "none"  # written resolved: digits' default
    assert all(f"    {k!r}: {v!r}," in text for k, v in {**defaults, "epochs": 7}.items())
    assert "'amp'" not in text and "'dataset'" not in text  # accepted, not used by train.py
