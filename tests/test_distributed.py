"""Data-parallel training of one candidate through Ray Train's TorchTrainer (`workers.distributed`), on CPUs with
the gloo backend: 2 workers at batch B/2 each train exactly as 1 worker at batch B (same loss curve, same weights,
within float tolerance). The model has no batch norm: per-worker batch statistics would differ from the global
batch's (on GPUs the workers use SyncBatchNorm, which gloo lacks), so the equality is exact only without it."""

from __future__ import annotations

import json

import pytest
import torch

from nas.builder import build
from nas.graph import ArchGraph, to_dict
from nas.train_settings import TrainSettings
from workers.trainable import WEIGHTS_FILE, cached_dataset, train_settings
from workers.training import Trainer

pytest.importorskip("ray.train.torch")


def conv_net() -> ArchGraph:
    g = ArchGraph((1, 8, 8))
    x = g.add_op("conv", "conv", "input", out_channels=8, kernel_size=3)
    x = g.add_op("relu", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=10)
    return g


def test_nas_train_retrains_an_architecture_file(tmp_path):
    from nas.cli import main
    from nas.graph import to_json

    (tmp_path / "net.json").write_text(to_json(conv_net()))
    assert main(["train", str(tmp_path / "net.json"), "--out", str(tmp_path / "out"), "--epochs", "1",
                 "--batch-size", "32"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and metrics["workers"] == 1 and 0 <= metrics["test_accuracy"] <= 1
    build(conv_net()).load_state_dict(torch.load(tmp_path / "out" / "weights.pt", weights_only=True))


def test_two_workers_at_half_the_batch_train_as_one_worker_across_an_interruption(cluster, tmp_path):
    """2 workers at batch 32 each (with ``checkpoint_every=1`` checkpointing every epoch) fail on rank 0 right after
    epoch 1's report; a run of the same name (as a Tune retry of the trial starts it) resumes at epoch 2, and the
    whole loss curve, the validation loss and the weights are those of 1 worker at batch 64 trained without a
    break. (One test for both: each Ray Train run costs ~35 s of worker start-up on this machine.)"""
    import sys

    import conftest
    import ray.train

    from workers.distributed import run_distributed, train_loop_per_worker

    train = TrainSettings(epochs=3, batch_size=64, lr=0.1, bn_recalibration=0, latency_reps=0,
                          checkpoint_every=1).to_dict()
    g = conv_net()
    marker = tmp_path / "crashed"
    run = {"use_gpu": False, "cpus_per_worker": 1, "storage_path": str(tmp_path / "ray"), "name": "resumed",
           "loop": conftest.crash_once_after_epoch(train_loop_per_worker, marker, epoch=1)}
    with conftest.pickled_by_value(conftest, sys.modules[__name__]):
        with pytest.raises(ray.train.TrainingFailedError, match="injected failure after epoch 1"):
            run_distributed({"arch": to_dict(g), "train": train}, 2, **run)
        result = run_distributed({"arch": to_dict(g), "train": train}, 2, **run)
    assert marker.exists() and result.metrics["resumed_from_epoch"] == 1 and result.metrics["epoch"] == 3
    with result.checkpoint.as_directory() as d:
        weights = torch.load(f"{d}/{WEIGHTS_FILE}", weights_only=True)

    torch.manual_seed(0)
    one = Trainer(build(g), cached_dataset(train_settings(train)), TrainSettings(**train), "cpu")
    while not one.done:
        one.run_epoch()
    curve = json.loads(result.metrics["loss_curve"])
    assert result.metrics["workers"] == 2 and len(curve) == 3
    torch.testing.assert_close(curve, [h["train_loss"] for h in one.history], rtol=1e-5, atol=1e-6)
    assert result.metrics["val_loss"] == pytest.approx(one.history[-1]["val_loss"], rel=1e-5)
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(weights[k], v, rtol=1e-4, atol=1e-5)
