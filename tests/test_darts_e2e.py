"""``nas search --strategy darts`` end to end through real Ray on digits: one search trial, the derived
architecture, the alpha history and plot, and the retrained network journaled like any evaluation."""

from __future__ import annotations

import json

import pytest
import torch

import nas
from nas.cli import main
from search_spaces.darts import darts_space

pytest.importorskip("ray")



def test_darts_search_writes_derived_architecture_alphas_and_retrained_result(cluster, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["search", "--space", "darts", "--strategy", "darts", "--space-option", "C=4", "--space-option", "layers=3",
            "--strategy-option", "epochs=2", "--strategy-option", "batch_size=96",
            "--strategy-option", 'retrain_space_options={"C": 6}', "--epochs", "1",
            "--batch-size", "128", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "parameter-free" in printed and "1 evaluations (0 failed)" in printed

    space = darts_space()
    derived = json.loads((out / "derived.json").read_text())
    assert space.validate(derived["assignment"]) == derived["assignment"]
    g = nas.load_architecture(out / "derived.json")
    assert nas.arch_id(g) == derived["arch_id"] and nas.count_params(g) == derived["params"]
    assert g.nodes["cell0_pre0"]["params"]["out_channels"] == 6  # searched at C=4, retrained at C=6
    assert derived["space_options"] == {"C": 6, "layers": 3}
    free = [v for v, r in derived["op_choices"].items() if r["params"] == 0]
    assert derived["parameter_free_choices"] == sorted(free)
    assert derived["parameter_free_share"] == len(free) / 16

    alphas = json.loads((out / "darts_alphas.json").read_text())
    assert alphas["finished"] and [e["epoch"] for e in alphas["epochs"]] == [1, 2]
    assert len(alphas["values"]) == 28  # every (node, input) edge of both cell types
    for epoch in alphas["epochs"]:
        assert all(abs(sum(w) - 1) < 1e-5 for w in epoch["weights"].values())
        assert 0.0 <= epoch["derived_param_free_share"] <= 1.0
    assert alphas["epochs"][-1]["weights"] == derived["weights"]
    assert (out / "darts_alphas.png").stat().st_size > 10_000

    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["arch_id"] == derived["arch_id"]
    assert rows[0]["assignment"] == derived["assignment"] and "test_accuracy" in rows[0]["metrics"]
    best = json.loads((out / "best.json").read_text())
    assert best["arch_id"] == derived["arch_id"] and best["value"] == rows[0]["value"]
    nas.build(g).load_state_dict(torch.load(out / "best_weights.pt", weights_only=True))
    assert derived["arch_id"] in (out / "leaderboard.md").read_text()

    # resuming finds everything on file: no second search, no second training
    assert main([*argv, "--resume"]) == 0
    assert "the DARTS search is on file" in capsys.readouterr().out
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == 1
