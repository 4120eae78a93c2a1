"""Shared test setup: one torch thread (this project's machines have 2 cores, shared with Ray workers), one
local Ray cluster per test module that asks for it (``ray.init`` takes seconds), and the decoded-data cache
(`workers.data.cache`) in a folder of this session's, not the home directory (Ray workers and subprocesses
inherit the variable)."""

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default, so a short TorchTrainer run waits ~4 s after its
# workers finished; tests poll every 0.2 s (the variable reaches the controller: Ray Train propagates it)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
torch.set_num_threads(1)
if "GRAPHNAS_CACHE" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="graphnas-test-cache-")
    os.environ["GRAPHNAS_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)


def modules_loaded_by(imports: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``import <imports>`` (run in the repository)."""
    import subprocess
    import sys

    code = f"import sys, json; import {imports}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout.splitlines()[-1])


@contextlib.contextmanager
def ray_temp_dir():
    """A short temp dir for a Ray instance, removed afterwards: Ray's socket paths under it must fit in 107 bytes,
    which pytest's tmp paths (``/tmp/pytest-of-USER/pytest-N/popen-gwK/...`` under pytest-xdist) can exceed."""
    path = tempfile.mkdtemp(prefix="gn-ray-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray cluster on this machine for the module's tests, its temp dir a short one of its own; yields
    its address (for ``--address``)."""
    ray = pytest.importorskip("ray")
    with ray_temp_dir() as temp:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, configure_logging=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


def crash_once_after_epoch(loop, marker: Path, epoch: int = 1):
    """A Ray Train worker loop running `loop` that fails on rank 0 right after its report of `epoch`, once: while
    `marker` (a file every worker sees) does not exist, which the failure creates. For tests of resuming; its
    module must be pickled by value (``ray.cloudpickle.register_pickle_by_value``): workers cannot import it."""

    def crashing(config):
        import ray.train as train

        report = train.report

        def report_then_crash(metrics, checkpoint=None, **kw):
            report(metrics, checkpoint=checkpoint, **kw)
            if metrics.get("epoch") == epoch and train.get_context().get_world_rank() == 0 and not marker.exists():
                marker.write_text("crashed")
                raise RuntimeError(f"injected failure after epoch {epoch}")

        train.report = report_then_crash  # in this worker process, for this run
        try:
            loop(config)
        finally:
            train.report = report

    return crashing


@contextlib.contextmanager
def pickled_by_value(*modules):
    """Ray pickles the functions of `modules` (test modules, conftest: not importable in Ray's workers) by value."""
    from ray import cloudpickle

    for m in modules:
        cloudpickle.register_pickle_by_value(m)
    try:
        yield
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)
