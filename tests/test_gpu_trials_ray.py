"""GPU trials on a real Ray cluster whose two GPUs are declared, not present (this machine has none): Ray's
accounting, assignment and ``CUDA_VISIBLE_DEVICES`` are real; no candidate trains on a GPU. Pinned here:
- a worker given no GPU sees none (Ray 2.60 leaves them visible), one given a GPU gets exactly it;
- a trial out of memory runs again alone on a whole GPU, once, before the strategy hears of it; a trial whose
  worker hit a sticky CUDA error ends that worker process (the next trial gets a fresh one) and runs again;
- no more trials are proposed than the cluster can run at once (asking for --workers 4 on room for 2).
The trials' bodies raise the errors a GPU would (`torch.OutOfMemoryError`, `torch.AcceleratorError`) through the
trainables' own failure handling (`workers.trainable.run_trial`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import ray_temp_dir

import nas
from nas.config import SearchConfig
from nas.evaluation import DataInfo, Evaluation
from nas.graph import ArchGraph
from nas.registry import register_space
from nas.results import RunFolder
from nas.search import SearchState, restore_strategy, run_trials
from nas.strategies import make_strategy

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_cluster():
    """A Ray instance with 2 CPUs and 2 declared GPUs."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the trainables below, in the workers
    # Ray refuses 2 declared GPUs where CUDA_VISIBLE_DEVICES lists fewer
    with pytest.MonkeyPatch.context() as env, ray_temp_dir() as temp:
        env.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=temp, configure_logging=False,
                 log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        yield
        ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_worker_gets_exactly_the_gpus_ray_assigned_it(gpu_cluster):
    @ray.remote(num_gpus=0)
    def cpu_task():
        from workers.devices import trial_devices

        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        return before, str(trial_devices().device), os.environ.get("CUDA_VISIBLE_DEVICES")

    @ray.remote(num_gpus=1)
    def gpu_task():
        from workers.devices import DeviceError, trial_devices

        try:
            trial_devices()
        except DeviceError as e:  # torch here is a CPU build: the assigned GPU is named
            return os.environ.get("CUDA_VISIBLE_DEVICES"), str(e)

    before, device, after = ray.get(cpu_task.remote())
    assert before is None  # Ray 2.60 does not hide the GPUs from a task given none ...
    assert device == "cpu" and after == ""  # ... the worker hides them itself
    visible, error = ray.get(gpu_task.remote())
    assert visible in ("0", "1") and f"GPU(s) {visible} to this trial" in error


def test_the_driver_keeps_its_gpus_visible_with_ray_initialised(gpu_cluster):
    # a driver is no Ray worker: ray.get_gpu_ids() is [] there, which must not hide its GPUs (it once leaked
    # CUDA_VISIBLE_DEVICES="" from an in-process evaluation into this process and every Ray node started after)
    from workers.devices import assigned_gpu_ids, trial_devices

    assert assigned_gpu_ids() is None
    trial_devices()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


# ---------------------------------------------------------------------------------------------------
# a search whose candidates fail the ways a GPU makes them fail


def widths_space() -> nas.SearchSpace:
    def build(a, *, num_classes, input_shape):
        g = ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=3)
        x = g.add_op("pool", "global_avgpool", x)
        g.add_op("fc", "linear", x, out_features=num_classes)
        return g

    return nas.SearchSpace("gpu_widths", [nas.Categorical("width", (2, 4, 8, 16))], build)


def faulty_trainable(config):
    from workers.trainable import run_trial

    run_trial(_faulty, config, {"val_accuracy": float("nan")})


def _faulty(config, progress, tune):
    """width 2: out of memory always; 4: out of memory unless alone on a whole GPU; 8: a sticky CUDA error on
    its first attempt; 16: fine. Every attempt appends (width, pid, GPUs given, outcome) to a log."""
    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    width = config["assignment"]["width"]
    log = Path(config["log"])
    first = width == 8 and not any(json.loads(line)[0] == 8 for line in log.read_text().splitlines()) \
        if log.exists() else width == 8
    outcome = ("oom" if width == 2 or (width == 4 and gpus < 1) else "cuda" if first else "ok")
    with log.open("a") as f:
        f.write(json.dumps([width, os.getpid(), gpus, outcome]) + "\n")
    if outcome == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if outcome == "cuda":
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    tune.report({"status": "ok", "val_accuracy": width / 100, "epoch": 1})


class Faulty(Evaluation):
    kind = "faulty"

    def __init__(self, cfg, log: Path):
        super().__init__(cfg)
        self.log = log

    def data_info(self) -> DataInfo:
        return DataInfo((1, 8, 8), 10)

    def trial_config(self, proposal):
        return {"assignment": proposal.assignment, "arch_id": proposal.arch_id, "log": str(self.log)}

    def trainable(self):
        return faulty_trainable


def test_out_of_memory_sticky_cuda_errors_and_no_stale_proposals(gpu_cluster, tmp_path):
    register_space("gpu_widths", widths_space)
    log = tmp_path / "attempts.jsonl"
    cfg = SearchConfig(space="gpu_widths", strategy="random", budget=4, seed=0, out=str(tmp_path / "run"),
                       workers=4, cpus_per_trial=1, gpus_per_trial=0.5, max_failures=1)
    space = widths_space()
    strategy = make_strategy("random", space, seed=0)
    folder = RunFolder(cfg.out)
    lines: list[str] = []
    state = SearchState(cfg, space, strategy, folder, Faulty(cfg, log), log=lines.append)
    restore_strategy(strategy, folder, state.records)
    run_trials(state)

    recs = {r["assignment"]["width"]: r for r in state.records}
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(recs) == [2, 4, 8, 16] and len(state.records) == 4
    # out of memory beside another trial (half a GPU), then alone (a whole GPU): once, then told as "oom"
    assert [(g, o) for w, _, g, o in attempts if w == 2] == [(0.5, "oom"), (1.0, "oom")]
    assert recs[2]["status"] == "oom" and "also when run again alone" in recs[2]["error"] and recs[2]["retry_of"]
    assert [(g, o) for w, _, g, o in attempts if w == 4] == [(0.5, "oom"), (1.0, "ok")]
    assert recs[4]["status"] == "ok" and recs[4]["retry_of"] != recs[4]["trial_id"]
    assert state.strategy.n_told == 4 and any("running it again alone" in s for s in lines)
    # the sticky error: reported, the worker process ended, the trial ran again in a fresh process
    (_, bad_pid, _, _), (_, retry_pid, _, _) = [a for a in attempts if a[0] == 8]
    assert recs[8]["status"] == "ok" and retry_pid != bad_pid
    after = attempts[[a[0] for a in attempts].index(8) + 1:]
    assert all(pid != bad_pid for _, pid, _, _ in after), attempts  # no later trial ran in that process
    # asked for 4 at once, the cluster runs 2 (2 CPUs): never more proposals ahead than it can run
    assert any("runs 2 such trial(s) at once" in s for s in lines)
    made = sorted(r["proposed_after"] for r in state.records)
    assert all(n >= i - 2 + 1 for i, n in enumerate(made) if i >= 2), made
