"""A cluster without a shared disk: two Ray nodes on this machine, the worker node started in its own mount
namespace with an empty tmpfs over the driver's folder (it cannot see the run folder), and an S3-compatible
server (moto) on 127.0.0.1 as ``--storage``. The search finishes its budget on the worker node, and the run
folder on the driver gets the journal, every trial's weights and the best weights, which export reads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="`unshare --mount` (a private mount namespace for the "
                                                          "worker node) needs root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process this test started in its own session, and everything it started."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on 127.0.0.1 with a bucket "graphnas"; yields its endpoint (HOST:PORT)."""
    pytest.importorskip("moto")
    import pyarrow.fs

    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30, "moto's start")
        fs = pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                                     endpoint_override=endpoint, allow_bucket_creation=True)
        fs.create_dir("graphnas")
        yield endpoint, fs
    finally:
        stop_group(server)


def test_a_search_on_a_worker_node_without_the_run_folder_writes_to_s3(s3, tmp_path, monkeypatch):
    import ray

    endpoint, fs = s3
    driver_side = tmp_path / "driver"  # the driver's folder: the worker node sees an empty tmpfs here
    driver_side.mkdir()
    out = driver_side / "run"
    ray_tmp = tempfile.mkdtemp(prefix="gn-st-")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ray_cmd = str(BIN / "ray")
    head = subprocess.Popen([ray_cmd, "start", "--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0",
                             f"--temp-dir={ray_tmp}", "--include-dashboard=false", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        address = f"127.0.0.1:{port}"
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 60, "the head's start")
        script = (f"mount -t tmpfs graphnas-hidden {driver_side} && exec {ray_cmd} start --address={address} "
                  "--num-cpus=2 --num-gpus=0 --block")
        worker = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        wait_for(lambda: ray.cluster_resources().get("CPU", 0) >= 2, 60, "the worker node's joining")

        @ray.remote(num_cpus=1)
        def sees(path: str) -> tuple[bool, bool]:
            return os.path.isdir(path), os.path.isdir(os.path.dirname(path))

        out.mkdir()
        assert ray.get(sees.remote(str(out))) == (False, True)  # the worker node sees an empty folder there
        ray.shutdown()

        from nas.cli import main

        storage = f"s3://graphnas/searches?endpoint_override={endpoint}&scheme=http&region=us-east-1"
        rc = main(["search", "--space", "nb201", "--space-option", "C=4", "--space-option", "N=1", "--strategy",
                   "random", "--budget", "3", "--epochs", "1", "--address", address, "--storage", storage,
                   "--out", str(out)])
        assert rc == 0
    finally:
        ray.shutdown()
        for proc in (worker, head):
            if proc is not None:
                stop_group(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert not (out / "ray").exists()  # nothing of Ray's in the run folder: the trials wrote to S3
    import pyarrow.fs

    in_s3 = [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector("graphnas/searches", recursive=True))]
    assert sum(p.endswith("/model.pt") for p in in_s3) == 3
    checkpoints = [json.loads(line) for line in (out / "checkpoints.jsonl").read_text().splitlines()]
    assert all(Path(c["weights"]).is_file() and Path(c["weights"]).is_relative_to(out) for c in checkpoints)
    best = json.loads((out / "best_weights.json").read_text())
    assert (out / "best_weights.pt").is_file() and best["trial_id"] == json.loads((out / "best.json").read_text())[
        "trial_id"]
    from nas.cli import main

    assert main(["export", str(out), "--format", "python", "--out", str(tmp_path / "net.py")]) == 0
    assert (tmp_path / "net.weights.pt").is_file()
