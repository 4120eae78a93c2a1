"""Every strategy (random, evolution, COMBO, DARTS) runs a short ``nas search`` on a video space, end to
end through real Ray and real training on generated moving_digits clips; the journal, the best
architecture (a 3D network on the data's clip shape) and, for DARTS, the derived op choices."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

import nas
from nas.cli import main

pytest.importorskip("ray")
DATA = "moving_digits:per_class=6,side=8"
CLIP = [1, 20, 8, 8]



def _search(out: Path, space: str, strategy: str, budget: int, *extra: str) -> list[dict]:
    argv = ["search", "--space", space, "--strategy", strategy, "--budget", str(budget), "--dataset", DATA,
            "--epochs", "1", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.01", "--seed", "0",
            "--workers", "2", "--max-params", "500000", "--out", str(out), *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("space,strategy,extra", [
    ("video", "random", []),
    ("video", "evolution", ["--strategy-option", "population_size=2", "--strategy-option", "sample_size=2"]),
    ("video", "combo", ["--strategy-option", "n_initial=2", "--strategy-option", "fit=map"]),
    ("timeception", "random", ["--space-option", "width=8", "--space-option", "hidden=0"]),
])
def test_strategy_searches_a_video_space(cluster, tmp_path, monkeypatch, space, strategy, extra):
    original = builtins.print  # some Ray modules replace builtins.print; the search must not pickle it
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: original(*args, **kwargs))
    rows = _search(tmp_path / "run", space, strategy, 3, *extra)
    assert len(rows) == 3
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, rows
    for r in ok:
        assert 0.0 <= r["value"] <= 1.0 and "test_accuracy" in r["metrics"]
    best = nas.load_architecture(tmp_path / "run" / "best.json")
    assert best.graph["space"] == space and list(best.graph["input_shape"]) == CLIP


def test_darts_searches_the_video_space_s_temporal_kernels(cluster, tmp_path):
    out = tmp_path / "run"
    rows = _search(out, "video", "darts", 1, "--strategy-option", "epochs=1", "--strategy-option", "batch_size=16",
                   "--max-params", "2000000")
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    derived = json.loads((out / "derived.json").read_text())
    assert sorted(derived["op_choices"]) == ["temporal1", "temporal2", "temporal3", "temporal4"]
    assert all(derived["assignment"][v] in (3, 1, 5) for v in derived["op_choices"])
    g = nas.load_architecture(out / "derived.json")
    assert g.graph["space"] == "video" and list(g.graph["input_shape"]) == CLIP
