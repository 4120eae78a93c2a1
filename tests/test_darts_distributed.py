"""The DARTS supernet data-parallel through Ray Train (`workers.darts_trainable.darts_loop_per_worker`, run by
`workers.distributed`), on CPUs with gloo: 2 workers at batch B/2 each search as 1 device at batch B (the same
per-epoch losses, alphas and weights, first and second order; B = 63, so the slices are of 32 and 31 examples, each
weighted by its share of the batch), and a run interrupted after an epoch's checkpoint, started again under its
name, resumes there and ends as the uninterrupted search.

The supernet has no batch norm: on CPUs each worker's batch statistics are its slice's (gloo has no SyncBatchNorm),
so the equality holds only without it. Tolerance rtol 1e-5, atol 1e-6: the ranks' gradients are summed by an
all-reduce, in another order than one device's reduction over the whole batch, so results differ by float32
rounding carried along the steps: measured here, losses within 4e-8 (relative), the alphas' softmax weights and the
supernet's weights within 1e-7 (absolute). Slices weighted as halves of the batch instead of 32/63 and 31/63 fail
the train_loss comparison."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.darts.settings import DartsSettings
from nas.darts.supernet import build_supernet
from nas.graph import to_dict
from workers.darts_trainable import HISTORY_FILE, SUPERNET_FILE, darts_loop_per_worker, run_search

pytest.importorskip("ray.train.torch")

OPS = {"conv3x3": ("conv", {"out_channels": 4, "kernel_size": 3}),
       "conv1x1": ("conv", {"out_channels": 4, "kernel_size": 1}),
       "pool": ("avgpool", {"kernel_size": 3, "stride": 1, "padding": 1}),
       "skip": ("identity", {})}


def tiny_space() -> nas.SearchSpace:
    """Digits (1x8x8, 10 classes): a stem convolution, two searched edges, a linear head; no batch norm."""

    def build(a, *, num_classes, input_shape):
        g = nas.ArchGraph(input_shape)
        x = g.add_op("stem", "conv", "input", out_channels=4, kernel_size=3)
        for var in ("op1", "op2"):
            x = g.add_op(f"{var}_relu", "relu", x)
            op, p = OPS[a[var]]
            x = g.add_op(var, op, x, choice=var, **p)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("tiny", [nas.Categorical(v, tuple(OPS), op_choice=True) for v in ("op1", "op2")], build)


def search_config(order: int, epochs: int = 2) -> dict:
    supernet = build_supernet(tiny_space())
    darts = DartsSettings(epochs=epochs, batch_size=63, order=order, seed=0, w_lr=0.1, alpha_lr=0.03).to_dict()
    return {"supernet": to_dict(supernet.graph), "darts": darts, "train": {"dataset": "digits"}}


def one_device(config: dict) -> tuple[list[dict], dict, dict]:
    """(every report's metrics, the last checkpoint's history, its supernet weights) of the search in this process."""
    reports, last = [], {}

    def report(metrics, checkpoint_dir):
        reports.append(metrics)
        if checkpoint_dir is not None:
            last["history"] = json.loads((Path(checkpoint_dir) / HISTORY_FILE).read_text())
            last["weights"] = torch.load(Path(checkpoint_dir) / SUPERNET_FILE, weights_only=True)

    run_search(config, {"epoch": 0}, torch.device("cpu"), None, report)
    return reports, last["history"], last["weights"]


def assert_same_search(history: list[dict], weights: dict, reference: tuple[list[dict], list[dict], dict]) -> None:
    reports, ref_history, ref_weights = reference
    assert [h["epoch"] for h in history] == [h["epoch"] for h in ref_history]
    for key in ("train_loss", "search_loss", "train_accuracy", "val_loss"):
        torch.testing.assert_close([h[key] for h in history], [h[key] for h in ref_history], rtol=1e-5, atol=1e-6,
                                   msg=key)
    for var, w in ref_history[-1]["weights"].items():  # the final alphas' softmax weights
        torch.testing.assert_close(history[-1]["weights"][var], w, rtol=1e-5, atol=1e-6, msg=var)
    for k, v in ref_weights.items():  # the alphas themselves and every supernet weight
        torch.testing.assert_close(weights[k], v, rtol=1e-5, atol=1e-6, msg=k)
    moved = [abs(w - 0.25) for w in ref_history[-1]["weights"]["op1"]]
    assert max(moved) > 1e-3  # the alphas moved: the comparison is not of initial values


def test_the_supernet_evaluation_runs_several_gpus_as_a_data_parallel_trial():
    """Milliseconds, no Ray: ``--gpus-per-trial 2`` gives the data-parallel trial (it used to be refused); a global
    batch smaller than the GPUs sharing it is refused before any trial, naming both."""
    from nas.config import SearchConfig
    from nas.evaluation import EvaluationError
    from workers.darts_trainable import SupernetEvaluation, darts_search_trial

    cfg = SearchConfig(space="darts", strategy="darts", gpus_per_trial=2)
    assert SupernetEvaluation(cfg).trainable().__qualname__.startswith("ddp_trainable.")
    assert SupernetEvaluation(SearchConfig(space="darts", strategy="darts", gpus_per_trial=1)).trainable() \
        is darts_search_trial
    cfg = SearchConfig(space="darts", strategy="darts", gpus_per_trial=4, strategy_options={"batch_size": 3})
    with pytest.raises(EvaluationError, match="--gpus-per-trial 4: the DARTS batch_size 3 .* smaller than the number"):
        SupernetEvaluation(cfg).check()


def checkpoint_files(result) -> tuple[list[dict], dict]:
    with result.checkpoint.as_directory() as d:
        return (json.loads((Path(d) / HISTORY_FILE).read_text()),
                torch.load(Path(d) / SUPERNET_FILE, weights_only=True))


def test_a_two_worker_supernet_trial_searches_as_one_device_second_order(cluster, tmp_path):
    """The Tune trial of ``--gpus-per-trial 2`` (`ddp_trainable` with the supernet's loop; CPUs and gloo here):
    Tune gets every epoch's report and the final one with the checkpoint the driver reads (history, supernet), and
    the search, second order (every gradient of the unrolled step and of the finite-difference term all-reduced), is
    one device's at the whole batch. (First order: the resume test below compares it with one device too.)"""
    from ray import tune

    from workers.distributed import ddp_trainable

    config = search_config(order=2)
    trainable = ddp_trainable(2, 0.99, use_gpu=False, loop=darts_loop_per_worker)  # + the trial's 0.01: 2 CPUs
    grid = tune.Tuner(tune.with_resources(trainable, {"cpu": 0.01}), param_space=config,
                      run_config=tune.RunConfig(name="darts", storage_path=str(tmp_path / "tune"), verbose=0)).fit()
    result = grid[0]
    assert result.error is None and result.metrics["status"] == "ok", result.metrics.get("error")
    assert result.metrics["workers"] == 2 and result.metrics["epoch"] == 2
    assert result.metrics["device"] == "2 DDP workers" and result.metrics["supernet_params"] > 0
    epochs = result.metrics_dataframe
    assert list(epochs["epoch"])[:2] == [1, 2] and set(epochs["status"]) == {"ok"}  # each epoch, then the final
    history, weights = checkpoint_files(result)
    assert json.loads(result.metrics["alphas_json"]) == history[-1]["weights"]
    assert_same_search(history, weights, one_device(config))


def test_an_interrupted_search_resumes_from_its_last_epoch(cluster, tmp_path):
    """First order. The first run fails on rank 0 right after epoch 1's checkpointed report; a run of the same name
    (as a Tune retry of the trial starts it) resumes at epoch 2 and ends as the uninterrupted search on one device."""
    import conftest
    import ray.train

    from workers.distributed import run_distributed

    config = search_config(order=1, epochs=3)
    marker = tmp_path / "crashed"
    loop = conftest.crash_once_after_epoch(darts_loop_per_worker, marker, epoch=1)
    run = {"use_gpu": False, "cpus_per_worker": 1, "storage_path": str(tmp_path / "ray"), "name": "resumed",
           "loop": loop}
    with conftest.pickled_by_value(conftest, sys.modules[__name__]):
        with pytest.raises(ray.train.TrainingFailedError, match="injected failure after epoch 1"):
            run_distributed(config, 2, **run)
        result = run_distributed(config, 2, **run)
    assert marker.exists() and result.metrics["resumed_from_epoch"] == 1 and result.metrics["epoch"] == 3
    history, weights = checkpoint_files(result)
    assert_same_search(history, weights, one_device(config))
