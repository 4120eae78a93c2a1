"""End to end through real Ray and real training on digits: the output folder, failing candidates,
and a driver killed with SIGKILL then resumed; and a search on a folder of images (decoded once into this
node's cache before Ray starts, a corrupt file skipped and said so, the trials reading that cache and
augmenting with the folder's default, the uint8 inputs' preprocessing recorded with the weights)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas
from nas.cli import main
from nas.config import SearchConfig, TrainConfig
from nas.graph import ArchGraph
from nas.search import SearchError, run_search

pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]



def quick(out: Path, **kw) -> SearchConfig:
    train = TrainConfig(epochs=1, batch_size=128, lr=0.05)
    return SearchConfig(out=str(out), train=train, workers=2, **kw)


def test_search_writes_the_run_folder(cluster, tmp_path):
    cfg = quick(tmp_path / "run", space="resnet", strategy="evolution", budget=6, seed=1, max_params=150_000,
                strategy_options={"population_size": 4, "sample_size": 2})
    outcome = run_search(cfg, log=lambda s: None)
    folder = tmp_path / "run"
    rows = [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["trial_id"] for r in rows}) == 6
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, rows
    for r in ok:
        assert 0.0 <= r["value"] <= 1.0 and r["metrics"]["params"] > 0 and "test_accuracy" in r["metrics"]
        assert set(r["assignment"]) == set(nas.get_space("resnet").names)
    best = json.loads((folder / "best.json").read_text())
    assert best["value"] == max(r["value"] for r in ok)
    arch = nas.load_architecture(folder / "best.json")
    assert nas.arch_id(arch) == best["arch_id"] == outcome.best["arch_id"]
    model = nas.build(arch)
    state = torch.load(folder / "best_weights.pt", weights_only=True)
    model.load_state_dict(state)
    assert (folder / "leaderboard.md").read_text().count("\n| 1 |") == 1
    assert (folder / "best_so_far.png").stat().st_size > 1000
    assert json.loads((folder / "config.json").read_text())["budget"] == 6
    # the driver records where every trained trial's weights are; export reads that, not Ray's layout
    from nas.export_source import from_run_folder
    from nas.results import RunFolder

    run = RunFolder(folder)
    trained = [r for r in ok if not r.get("cached")]
    for r in trained:
        weights = run.checkpoint_of(r["trial_id"])["weights"]
        nas.build(nas.get_space("resnet").graph(r["assignment"])).load_state_dict(
            torch.load(weights, weights_only=True))
    if len(trained) >= 2:
        second = from_run_folder(folder, rank=2)
        ranked = sorted(trained, key=lambda r: r["value"], reverse=True)
        assert second.weights == Path(run.checkpoint_of(ranked[1]["trial_id"])["weights"])
    with pytest.raises(SearchError, match="--resume"):
        run_search(cfg, log=lambda s: None)


def flaky_space() -> nas.SearchSpace:
    """Candidates that fail in each way a user's space can: in the build, with NaN loss, with a shape
    error in training, or not at all."""

    def build(a, *, num_classes, input_shape):
        if a["mode"] == "build_error":
            raise RuntimeError("this candidate cannot be built")
        g = ArchGraph(input_shape)
        x = g.add_op("conv", "conv", "input", out_channels=a["width"], kernel_size=3)
        x = g.add_op("relu", "relu", x)
        x = g.add_op("pool", "global_avgpool", x)
        if a["mode"] == "oom":  # about 400 GB of weights: the allocation fails in the worker
            x = g.add_op("huge", "linear", x, out_features=10**10)
        n_out = 7 if a["mode"] == "shape_error" else num_classes
        bias_init = math.inf if a["mode"] == "nan" else None
        g.add_op("fc", "linear", x, out_features=n_out, bias_init=bias_init)
        return g

    return nas.SearchSpace("flaky", [nas.Categorical("mode", ("ok", "build_error", "nan", "shape_error", "oom")),
                                     nas.Ordinal("width", (4, 8, 16, 32))], build)


def test_failing_candidates_are_recorded_and_the_search_goes_on(cluster, tmp_path):
    nas.register_space("flaky", flaky_space)
    cfg = quick(tmp_path / "flaky", space="flaky", strategy="random", budget=12, seed=3)
    outcome = run_search(cfg, log=lambda s: None)
    rows = outcome.records
    assert len(rows) == 12
    by_mode: dict[str, list[dict]] = {}
    for r in rows:
        by_mode.setdefault(r["assignment"]["mode"], []).append(r)
    assert all(r["status"] == "ok" for r in by_mode.get("ok", []))
    for mode, needle in (("build_error", "cannot be built"), ("nan", "NaN"), ("shape_error", "")):
        for r in by_mode.get(mode, []):
            assert r["status"] == "failed" and r["value"] is None and needle in r["error"], r
    for r in by_mode.get("oom", []):  # out of memory (the host's allocator here): run again once, then "oom"
        assert r["status"] == "oom" and r["value"] is None and "also when run again alone" in r["error"], r
        assert "memory" in r["error"] and (r.get("cached") or r["retry_of"] != r["trial_id"]), r
    assert len(by_mode) >= 4, f"the seed should draw several failure modes, drew {sorted(by_mode)}"
    assert any(r["status"] == "failed" for r in rows) and any(r["status"] == "ok" for r in rows)
    assert outcome.n_failed == sum(r["status"] in ("failed", "oom") and not r.get("cached") for r in rows)


def test_killed_driver_resumes_without_losing_or_repeating(cluster, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nas.cli", "search", "--space", "resnet", "--strategy", "random", "--budget", "8",
           "--epochs", "1", "--max-params", "150000", "--workers", "1", "--seed", "5", "--out", str(out),
           "--address", cluster]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journal = out / "evaluations.jsonl"
    deadline = time.monotonic() + 600  # a deadline against hanging, not a speed check: CI machines are shared
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"the search ended early with code {proc.returncode}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert 3 <= len(before) < 8
    cfg = SearchConfig.from_dict(json.loads((out / "config.json").read_text()))
    cfg.address = None
    outcome = run_search(cfg, resume=True, log=lambda s: None)
    ids = [r["trial_id"] for r in outcome.records]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert [r["trial_id"] for r in outcome.records[: len(before)]] == [r["trial_id"] for r in before]
    state = json.loads((out / "strategy_state.json").read_text())
    assert state["n_records"] == 8 and state["state"]["n_told"] == 8


def test_asha_stops_weak_candidates_early(cluster, tmp_path):
    cfg = SearchConfig(out=str(tmp_path / "asha"), space="resnet", strategy="random", budget=8, seed=4, workers=2,
                       asha=True, max_params=200_000, train=TrainConfig(epochs=4, batch_size=128))
    outcome = run_search(cfg, log=lambda s: None)
    ok = [r for r in outcome.records if r["status"] == "ok" and not r.get("cached")]
    assert len(outcome.records) == 8 and ok
    epochs = [r["metrics"]["epoch"] for r in ok]
    assert max(epochs) == 4
    assert all(bool(r.get("stopped_early")) == (r["metrics"]["epoch"] < 4) for r in ok), epochs


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 120, (12, 12, 3)).astype(np.uint8)
            img[:, :, 2 * c] += 120  # the class is the dominant colour
            Image.fromarray(img).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "blue" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_a_search_on_an_image_folder(cluster, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRAPHNAS_CACHE", str(cache))  # the driver's; trials are given it as data_cache below
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    argv = ["search", "--space", "resnet", "--strategy", "random", "--budget", "1", "--dataset", "folder",
            "--data-root", str(data), "--data-cache", str(cache), "--epochs", "1", "--batch-size", "8",
            "--latency-reps", "0", "--max-params", "100000", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "data: folder" in log and "25 images in 2 classes" in log and "image size 12x12 (every image's)" in log
    assert "1 of 25 images cannot be read and are skipped: blue/broken.png" in log
    assert "augmentation crop:2,flip" in log
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    for r in rows:
        assert 0 <= r["metrics"]["test_accuracy"] <= 1
    entries = [p for p in cache.iterdir() if p.name.startswith("folder-")]
    assert len(entries) == 1  # built once, by the driver; the trials read it
    best = json.loads((out / "best_weights.json").read_text())
    pre = best["preprocessing"]
    assert pre["scale"] == 1 / 255 and len(pre["mean"]) == len(pre["std"]) == 3
    assert pre["mean"][0] > pre["mean"][1]  # red adds to channel 0 of half the images, nothing to channel 1
