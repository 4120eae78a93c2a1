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
