"""Soak test: SIGKILL the search driver at random moments, resume it, repeat; then check the journal.

Runs `nas search` (real Ray, real training on digits) against a Ray cluster started here, over a space
whose candidates fail in every way a user's space can (see soak_space.py). Prints how many kills the
search survived, evaluations lost or duplicated (both must be 0), and failures recorded.

    python benchmarks/soak_kill_resume.py --kills 8 --budget 150 | tee results/soak_kill_resume.txt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def journal(out: Path) -> list[dict]:
    path = out / "evaluations.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line; the next resume drops it
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait", type=float, default=4.0, help="seconds after the run's first new evaluation")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="gn-soak-"))
    out = tmp / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    port = 6390 + rng.randrange(100)
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    base = [sys.executable, "-m", "nas.cli", "search", "--space", f"{REPO}/benchmarks/soak_space.py:space",
            "--strategy", "evolution", "--strategy-option", "population_size=8", "--strategy-option", "sample_size=3",
            "--budget", str(args.budget), "--epochs", "1", "--workers", "2", "--seed", str(args.seed),
            "--out", str(out), "--address", address]
    seen: dict[str, dict] = {}
    lost = changed = kills = 0
    start = time.monotonic()
    try:
        for k in range(args.kills + 1):
            cmd = base + (["--resume"] if k else [])
            proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            if k < args.kills:
                # kill mid-search: once this run has journaled something, at a random moment after
                n0, deadline = len(journal(out)), time.monotonic() + 120
                while len(journal(out)) == n0 and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                try:
                    proc.wait(timeout=rng.uniform(0.0, args.max_wait))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
            else:
                proc.wait(timeout=1800)
                if proc.returncode != 0:
                    print(proc.stderr.read().decode()[-2000:])
                    return 1
            rows = journal(out)
            ids = {r["trial_id"]: r for r in rows}
            for tid, r in seen.items():  # nothing journaled before may vanish or change
                if tid not in ids:
                    lost += 1
                elif ids[tid] != r:
                    changed += 1
            seen.update(ids)
            print(f"run {k + 1}: {'killed after' if k < args.kills else 'finished at'} {len(rows)} evaluations "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
            if len(rows) >= args.budget:
                break
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = journal(out)
    ids = [r["trial_id"] for r in rows]
    state = json.loads((out / "strategy_state.json").read_text())
    failed = [r for r in rows if r["status"] != "ok"]
    kinds: dict[str, int] = {}
    for r in failed:
        kind = r["error"].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print()
    print(f"budget {args.budget}, kills survived: {kills} (SIGKILL of the driver's process group)")
    print(f"evaluations recorded: {len(rows)} (distinct trial ids: {len(set(ids))})")
    print(f"evaluations lost: {lost + (args.budget - len(set(ids)))}, duplicated: {len(ids) - len(set(ids))}, "
          f"changed after journaling: {changed}")
    print(f"strategy told {state['state']['n_told']} results, snapshot covers {state['n_records']} records")
    print(f"failures recorded: {len(failed)} {kinds}")
    print(f"wall time {time.monotonic() - start:.0f} s")
    ok = lost == 0 and changed == 0 and len(ids) == len(set(ids)) == args.budget
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
