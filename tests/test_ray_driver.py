"""The driver's Ray life cycle with real processes, no mocks of Ray: without --address a search runs on a private
local instance (never on a cluster found on the machine) and leaves no Ray process behind; resource requests no
node can give and unreachable addresses fail within seconds, naming what is wrong; SIGINT and SIGTERM stop a
running `nas search` with 130 / 143 and the resume command, and --resume completes the journal.

Every `nas search` here runs with RAY_TMPDIR in this module's temp dir, where a foreign `ray start --head`
cluster is up (and RAY_ADDRESS names it): the old driver (`ray.init(address=None)`) joined exactly that."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nas.ray_cluster import SearchError, check_resources, trial_concurrency

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO.parent / "shared/data/nb201/nb201.csv"
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes() -> dict[int, tuple[str, int, str]]:
    """pid -> (state, parent pid, command line) of every process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        out[int(d.name)] = (state, int(ppid), cmd)
    return out


def descendants(pid: int) -> dict[int, str]:
    procs, found = processes(), {pid}
    grew = True
    while grew:
        grew = False
        for p, (_, ppid, _) in procs.items():
            if ppid in found and p not in found:
                found.add(p)
                grew = True
    return {p: procs[p][2] for p in found - {pid}}


def alive(pids) -> dict[int, str]:
    procs = processes()
    return {p: procs[p][2] for p in pids if p in procs and procs[p][0] != "Z"}


def of_session(marker: str) -> dict[int, str]:
    return {p: cmd for p, (state, _, cmd) in processes().items() if marker in cmd and state != "Z"}


def stop_pids(pids) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive(pids):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A `ray start --head` cluster in this module's temp dir (another user's test cluster, as far as the
    searches here know); yields (RAY_TMPDIR root, its address, its session dir). Stopped by its pids, never by
    `ray stop` (that stops every Ray on the machine)."""
    if RAY is None:
        pytest.skip("the `ray` command is not installed")
    root = tmp_path_factory.mktemp("r")
    short = None
    if len(str(root)) > 40:  # Ray's socket paths under the temp dir must fit in 107 bytes
        short = root = Path(tempfile.mkdtemp(prefix="gn-"))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(root)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={root / 'ray'}", "--num-cpus=1",
                          "--include-dashboard=false",
                          f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                          "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    session = root / "ray" / "session_latest"
    assert out.returncode == 0, out.stdout + out.stderr
    session_dir = session.resolve()
    head = of_session(str(session_dir))
    try:
        assert (root / "ray" / "ray_current_cluster").is_file(), "ray start did not record its cluster"
        yield root, f"127.0.0.1:{port}", session_dir
    finally:  # the head's processes and their children (Ray's agents rename themselves), and any a search left
        pids = set(head) | set(of_session(str(session_dir))) | set(of_session(str(root / "ray")))
        for pid in list(pids):
            pids |= set(descendants(pid))
        stop_pids(pids)
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def nas_env(root: Path, address: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(root), "RAY_ADDRESS": address}


def nas_search(*flags: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "search", *flags]


def table_search(out: Path, *flags: str) -> list[str]:
    return nas_search("--space", "nb201", "--table", str(TABLE), "--strategy", "random", "--seed", "3",
                      "--workers", "1", "--out", str(out), *flags)


# ---------------------------------------------------------------------------------------------------
# the resource checks and the concurrency, as functions


def test_resource_checks_name_the_resource():
    cpu_node = [{"ip": "a", "CPU": 2.0, "GPU": 0.0}]
    with pytest.raises(SearchError, match=r"--gpus-per-trial 0.5: the Ray cluster has no GPUs"):
        check_resources(1, 0.5, cpu_node)
    with pytest.raises(SearchError, match=r"--cpus-per-trial 64: no node has 64 CPUs \(the most on one node is 2"):
        check_resources(64, 0, cpu_node)
    two = [{"ip": "a", "CPU": 8.0, "GPU": 0.0}, {"ip": "b", "CPU": 2.0, "GPU": 1.0}]
    check_resources(8, 0, two)
    check_resources(2, 0.25, two)
    with pytest.raises(SearchError, match="--cpus-per-trial 16: no node has 16 CPUs"):  # 10 in all, 8 at most
        check_resources(16, 0, [{"ip": "a", "CPU": 8.0, "GPU": 0.0}, {"ip": "b", "CPU": 8.0, "GPU": 0.0}])
    with pytest.raises(SearchError, match=r"--gpus-per-trial 2: the cluster has room for 1 worker\(s\) of one GPU"):
        check_resources(1, 2, two)  # data-parallel over nodes: 2 workers of one GPU each, 1 GPU in all
    check_resources(1, 2, [{"ip": "a", "CPU": 8.0, "GPU": 1.0}, {"ip": "b", "CPU": 2.0, "GPU": 1.0}])
    assert trial_concurrency(2, 2, [{"CPU": 16.0, "GPU": 4.0}, {"CPU": 4.0, "GPU": 4.0}]) == 3  # 4 + 2 workers
    # a data-parallel trial also holds 0.01 CPU itself while its workers train: 2 workers of 1 CPU on a node of 2
    # CPUs would wait for it forever
    with pytest.raises(SearchError, match="leave no 0.01 CPU for the trial itself.*e.g. 0.99"):
        check_resources(1, 2, [{"ip": "a", "CPU": 2.0, "GPU": 2.0}])
    check_resources(0.99, 2, [{"ip": "a", "CPU": 2.0, "GPU": 2.0}])
    assert trial_concurrency(1, 2, [{"CPU": 4.0, "GPU": 4.0}]) == 1  # 4 workers fit, but not 2 trials' own CPU
    assert trial_concurrency(1, 2, [{"CPU": 4.0, "GPU": 4.0}, {"CPU": 1.0, "GPU": 0.0}]) == 2  # they sit there
    with pytest.raises(SearchError, match="--gpus-per-trial 1.5: above 1 a trial must ask for whole GPUs"):
        check_resources(1, 1.5, [{"ip": "a", "CPU": 8.0, "GPU": 4.0}])
    with pytest.raises(SearchError, match="--cpus-per-trial 4 with --gpus-per-trial 1: no node has both"):
        check_resources(4, 1, two)
    assert trial_concurrency(1, 0, {"CPU": 8.0}) == 8
    assert trial_concurrency(2, 0.5, {"CPU": 16.0, "GPU": 2.0}) == 4  # GPUs bound it, not CPUs
    assert trial_concurrency(1, 0.1, {"CPU": 16.0, "GPU": 1.0}) == 10  # 1.0 / 0.1 is 9.999...
    assert trial_concurrency(4, 0, {"CPU": 2.0}) == 1
    # a trial runs on one node: counted node by node, not from the cluster's totals (which say 3 and 4)
    assert trial_concurrency(2, 0, [{"CPU": 3.0, "GPU": 0.0}, {"CPU": 3.0, "GPU": 0.0}]) == 2
    assert trial_concurrency(2, 1, [{"CPU": 16.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 3.0}]) == 2


# ---------------------------------------------------------------------------------------------------
# fast failures: before any trial, within seconds


def test_impossible_requests_and_unreachable_addresses_fail_within_seconds(foreign, tmp_path):
    root, address, session = foreign
    nothing = free_port()
    digits = ["--space", "resnet", "--strategy", "random", "--budget", "2", "--epochs", "1", "--max-params", "30000"]
    cases = {
        "gpus": (["--gpus-per-trial", "0.5"], r"--gpus-per-trial 0.5: this machine has no GPUs"),
        "cpus": (["--cpus-per-trial", "64"], r"--cpus-per-trial 64: no node has 64 CPUs"),
        "refused": (["--address", f"127.0.0.1:{nothing}"], rf"--address 127.0.0.1:{nothing}: no Ray cluster answers"),
    }
    sessions_before = set((root / "ray").glob("session_2*"))
    drivers_before = set((session / "logs").glob("python-core-driver-*"))
    results = {}
    for k, (flags, _) in cases.items():  # one after another: each alone is ~5 s, most of it imports
        started = time.monotonic()
        done = subprocess.run(nas_search(*digits, "--out", str(tmp_path / k), *flags), cwd=tmp_path,
                              env=nas_env(root, address), capture_output=True, text=True, timeout=60)
        results[k] = (done.stdout, done.stderr, done.returncode, time.monotonic() - started)
    for k, (stdout, stderr, rc, seconds) in results.items():
        errors = [line for line in stderr.splitlines() if re.match(r"nas( search)?: error: ", line)]
        assert rc == 2 and len(errors) == 1, (k, rc, stdout[-2000:], stderr[-2000:])
        assert re.search(cases[k][1], errors[0]), (k, errors[0])
        assert seconds < 20, f"{k}: {seconds:.1f} s"  # ~5 s on 2 idle CPUs, below 10 s on loaded ones
        assert not (tmp_path / k / "evaluations.jsonl").exists() or not (tmp_path / k / "evaluations.jsonl").read_text()
        assert "[1/" not in stdout  # no trial ran
    # none of them started a Ray instance (the checks come first) or joined the foreign one
    assert set((root / "ray").glob("session_2*")) == sessions_before
    assert set((session / "logs").glob("python-core-driver-*")) == drivers_before


def test_joining_a_cluster_checks_its_nodes(foreign, tmp_path):
    """--address joins the cluster given (and says so); a trial bigger than each of its nodes fails before any
    trial. Also the positive control of the other tests' check: a driver that joined leaves its log there."""
    root, address, session = foreign
    drivers_before = set((session / "logs").glob("python-core-driver-*"))
    started = time.monotonic()
    done = subprocess.run(nas_search("--space", "resnet", "--budget", "2", "--epochs", "1", "--max-params", "30000",
                                     "--out", str(tmp_path / "run"), "--address", address, "--cpus-per-trial", "2"),
                          cwd=tmp_path, env=nas_env(root, address), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    port = address.rsplit(":", 1)[1]
    assert re.search(rf"^ray: cluster at \S+:{port}: 1 node, 1 CPUs, 0 GPUs$", done.stdout, re.M), done.stdout
    assert re.search(r"error: --cpus-per-trial 2: no node has 2 CPUs \(the most on one node is 1", done.stderr)
    assert time.monotonic() - started < 30
    assert set((session / "logs").glob("python-core-driver-*")) - drivers_before, "the join left no driver log"


def test_an_address_that_answers_but_not_as_ray_fails_within_seconds(foreign):
    from nas.ray_cluster import reachable_address

    root, address, _ = foreign
    assert reachable_address(address).endswith(address.rsplit(":", 1)[1])  # the real head passes the probe
    for answer in (None, b"HTTP/1.0 400 Bad request\r\n\r\n"):  # silent, or another protocol
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def serve(server=server, answer=answer):
            try:
                conn, _ = server.accept()
                with conn:
                    if answer:
                        conn.recv(1024)
                        conn.sendall(answer)
                    time.sleep(5)
            except OSError:  # closed before this thread got to accept, or the probe hung up first
                return

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with pytest.raises(SearchError, match=rf"--address 127.0.0.1:{port}: .*(not as a Ray|within 3 s)"):
                reachable_address(f"127.0.0.1:{port}")
        finally:
            server.close()
        assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------------
# a private instance, and SIGINT / SIGTERM / --resume


def run_until_evaluation(cmd: list[str], env: dict[str, str], cwd: Path, sig: int, group: bool):
    """Start `cmd` in its own session, send `sig` once an evaluation line appears (to the process group,
    as Ctrl-C in a terminal does, or to the driver alone, as `kill` does); return (rc, stdout, stderr, the
    driver's pid, its descendants just before the signal)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    kids: dict[int, str] = {}
    watchdog = threading.Timer(180, lambda: os.killpg(proc.pid, signal.SIGKILL))  # a hung driver
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[") and "] val_accuracy" in line:
                kids = descendants(proc.pid)
                (os.killpg if group else os.kill)(proc.pid, sig)
                break
        lines.extend(proc.stdout)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=5)
    assert kids, "".join(lines)[-3000:] + "".join(err)[-3000:]
    return proc.returncode, "".join(lines), "".join(err), proc.pid, kids


def journal(out: Path) -> list[dict]:
    text = (out / "evaluations.jsonl").read_text()
    assert text.endswith("\n"), "a half-written last line"
    return [json.loads(line) for line in text.splitlines()]


def assert_no_ray_left(pid: int, kids: dict[int, str], root: Path) -> None:
    assert any("raylet" in c for c in kids.values()) and any("gcs_server" in c for c in kids.values()), \
        f"the driver's own Ray processes were not its children: {kids}"
    sessions = [p for p in (root / "ray").glob(f"session_2*_{pid}")]
    assert len(sessions) == 1, "the private instance's session dir is not under RAY_TMPDIR"
    deadline = time.monotonic() + 10
    while (alive(kids) or of_session(str(sessions[0]))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(kids), f"Ray processes outlived the driver: {alive(kids)}"
    left = of_session(str(sessions[0]))
    assert not left, f"processes of the driver's Ray session remain: {left}"


@pytest.mark.skipif(not TABLE.is_file(), reason=f"the NAS-Bench-201 table is not at {TABLE}")
def test_private_instance_interrupted_by_sigint_and_sigterm_then_resumed(foreign, tmp_path):
    root, address, session = foreign
    env, out, budget = nas_env(root, address), tmp_path / "run", 30
    hint = f"resume with: nas search --out {out} --resume"
    sessions_before = set((root / "ray").glob("session_2*"))
    drivers_before = set((session / "logs").glob("python-core-driver-*"))

    # Ctrl-C (SIGINT to the whole process group, Ray's processes included) after the first evaluation
    rc, stdout, stderr, pid, kids = run_until_evaluation(table_search(out, "--budget", str(budget)), env,
                                                         tmp_path, signal.SIGINT, group=True)
    assert rc == 130, (stdout[-3000:], stderr[-3000:])
    assert "ray: private local instance on this machine" in stdout and f"RAY_ADDRESS={address} is not used" in stdout
    first = journal(out)
    assert 1 <= len(first) < budget
    assert f"nas: interrupted: {len(first)} evaluations on record in {out}; {hint}" in stderr
    assert "Tuner.restore" not in stdout + stderr and "Traceback" not in stderr
    assert_no_ray_left(pid, kids, root)

    # resumed, then SIGTERM to the driver alone
    rc, stdout, stderr, pid, kids = run_until_evaluation(table_search(out, "--budget", str(budget), "--resume"), env,
                                                         tmp_path, signal.SIGTERM, group=False)
    assert rc == 143, (stdout[-3000:], stderr[-3000:])
    second = journal(out)
    assert len(first) < len(second) < budget and second[: len(first)] == first
    assert f"nas: interrupted: {len(second)} evaluations on record in {out}; {hint}" in stderr
    assert "Tuner.restore" not in stdout + stderr and "Traceback" not in stderr
    assert_no_ray_left(pid, kids, root)

    # resumed to the budget: nothing lost, nothing twice
    done = subprocess.run(table_search(out, "--budget", str(budget), "--resume"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "ray: private local instance" in done.stdout
    rows = journal(out)
    ids = [r["trial_id"] for r in rows]
    assert len(rows) == budget and len(set(ids)) == budget and rows[: len(second)] == second
    assert [r["index"] for r in rows] == list(range(budget))
    # the foreign cluster never had a driver: every search ran on its own instance
    assert set((session / "logs").glob("python-core-driver-*")) == drivers_before, "a search joined the foreign one"
    assert len(set((root / "ray").glob("session_2*")) - sessions_before) == 3  # one private instance each


# ---------------------------------------------------------------------------------------------------
# a process already connected keeps its connection


def test_an_existing_connection_is_used_and_kept(cluster):
    import ray

    from nas.ray_cluster import connect_ray, ray_session, release_ray

    with ray_session():
        line = connect_ray(None)
    release_ray()
    assert line.startswith("ray: this process's connection to ") and "CPUs" in line
    assert ray.is_initialized()
