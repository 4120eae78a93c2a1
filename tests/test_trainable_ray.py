"""The Ray Tune trainable, run for real on one local Ray cluster shared by the whole module.

One Tuner run covers: a good architecture (metrics, final checkpoint that reloads to the reported test
accuracy), a failing one (status "failed" with an error, while the other trials succeed), and a good
one whose worker process is killed after its first epoch's checkpoint (Tune restarts the trial, which
resumes from the checkpoint instead of starting over).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import pytest
from conftest import ray_temp_dir

from nas.graph import ArchGraph, to_dict
from workers.trainable import (
    TRAIN_DEFAULTS,
    load_trained_model,
    resolve_data_root,
    train_settings,
    trial_resources,
)

ray = pytest.importorskip("ray")


def tiny_arch(classes: int = 10, channels: int = 8) -> dict:
    g = ArchGraph((1, 8, 8))
    x = "input"
    for i in range(2):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=channels, kernel_size=3)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=classes)
    return to_dict(g)


def crash_once(config: dict) -> None:
    """`train_architecture`, but when config["crash"] is set the first attempt trains one epoch of two,
    checkpoints, and then kills its worker process; Tune restarts the trial from that checkpoint."""
    from ray import tune

    from workers.trainable import train_architecture

    if config.get("crash") and tune.get_checkpoint() is None:
        train_architecture({**config, "train": {**config["train"], "epochs": 1}})
        if tune.get_checkpoint() is not None:  # it was reported, so Tune knows of it
            os._exit(1)
    train_architecture(config)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    tmp = tmp_path_factory.mktemp("ray")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    with ray_temp_dir() as temp_dir:
        yield from _results(tune, tmp, temp_dir)


def _results(tune, tmp, temp_dir):
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)
    try:
        good, bad = tiny_arch(), tiny_arch(classes=7)
        tuner = tune.Tuner(
            tune.with_resources(crash_once, trial_resources(1, 0)),
            param_space={
                "case": tune.grid_search(["good", "bad", "crash"]),
                "arch": tune.sample_from(lambda spec: bad if spec.config["case"] == "bad" else good),
                "crash": tune.sample_from(lambda spec: spec.config["case"] == "crash"),
                "train": tune.sample_from(lambda spec: {
                    "epochs": 2, "batch_size": 32, "lr": 0.1, "latency_reps": 3,
                    "checkpoint_every": int(spec.config["case"] == "good")}),
            },
            tune_config=tune.TuneConfig(reuse_actors=True, metric="val_accuracy", mode="max"),
            run_config=tune.RunConfig(storage_path=str(tmp / "storage"), name="trainable_test", verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)),
        )
        grid = tuner.fit()
        yield {r.config["case"]: r for r in grid}
    finally:
        ray.shutdown()


def test_good_trial_reports_metrics_and_a_checkpoint(results):
    r = results["good"]
    m = r.metrics
    assert r.error is None and m["status"] == "ok" and m["epoch"] == 2 and m["training_iteration"] == 2
    for key in ("val_accuracy", "val_loss", "train_loss", "train_seconds", "params", "flops", "latency_ms",
                "test_accuracy", "test_loss"):
        assert isinstance(m[key], int | float) and math.isfinite(m[key]), key
    assert m["val_accuracy"] > 0.3  # chance: 0.1
    assert m["params"] > 0 and m["flops"] > 0 and m["latency_ms"] > 0
    # per-epoch reports: every epoch has the metrics; only the final one has the test accuracy
    history = r.metrics_dataframe
    assert list(history["epoch"]) == [1, 2] and history["test_accuracy"].isna().tolist() == [True, False]
    # checkpoint_every=1: one checkpoint per epoch; the final one reloads into the network that scored
    # the reported test accuracy
    assert len(r.best_checkpoints) == 2 and r.checkpoint is not None
    with r.checkpoint.as_directory() as d:
        assert sorted(os.listdir(d)) == ["arch.json", "model.pt", "preprocessing.json", "train_state.pth"]
        g, model = load_trained_model(d)
        preprocessing = json.loads((Path(d) / "preprocessing.json").read_text())
    from workers.data import load_dataset
    from workers.training import evaluate

    data = load_dataset("digits")
    assert preprocessing == data.preprocessing  # what an export puts into the network (nas.preprocessing)
    assert evaluate(model, data.x_test, data.y_test)["accuracy"] == pytest.approx(m["test_accuracy"])


def test_failing_architecture_reports_failed_and_the_others_go_on(results):
    m = results["bad"].metrics
    assert results["bad"].error is None  # the Ray trial itself did not crash
    assert m["status"] == "failed" and m["error"].startswith("ValueError: ") and "10 classes" in m["error"]
    assert math.isnan(m["val_accuracy"]) and m["epoch"] == 0 and m["params"] > 0
    assert results["good"].metrics["status"] == "ok"


def test_restarted_trial_resumes_from_its_checkpoint(results):
    r = results["crash"]
    m = r.metrics
    assert r.error is None and m["status"] == "ok"
    assert m["resumed_from_epoch"] == 1 and m["epoch"] == 2 and "test_accuracy" in m
    assert m["iterations_since_restore"] == 1  # only epoch 2 ran after the restart


def test_relative_data_root_is_relative_to_the_driver(monkeypatch):
    monkeypatch.setenv("TUNE_ORIG_WORKING_DIR", "/work/driver")
    assert resolve_data_root("data/x") == "/work/driver/data/x"
    assert resolve_data_root("/abs/x") == "/abs/x" and resolve_data_root(None) is None
    monkeypatch.delenv("TUNE_ORIG_WORKING_DIR")
    assert resolve_data_root("data/x") == "data/x"


def test_trial_resources_and_settings():
    assert trial_resources(2, 0.25) == {"cpu": 2.0, "gpu": 0.25}
    with pytest.raises(ValueError, match="whole number"):
        trial_resources(1, 1.5)
    with pytest.raises(ValueError, match="cpus"):
        trial_resources(0, 0)
    assert train_settings({"epochs": 5})["epochs"] == 5 and train_settings(None) == TRAIN_DEFAULTS
    # the search driver's training config is accepted as is: one definition, the same defaults
    from nas.config import TrainConfig

    driver = dataclasses.asdict(TrainConfig())
    assert TRAIN_DEFAULTS == driver and train_settings(driver) == driver
    with pytest.raises(ValueError, match="'epoch'"):
        train_settings({"epoch": 5})
