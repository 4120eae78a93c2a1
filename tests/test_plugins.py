"""Custom search spaces as plug-ins: a throwaway package on a temporary path, found through the
`graphnas.search_spaces` entry point group, then searched through the real CLI and Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nas
from nas import registry
from nas.space import SpaceError

REPO = Path(__file__).resolve().parents[1]

PLUGIN_CODE = '''
"""A user's space, written only against graphnas' public API."""
import nas


def build(a, *, num_classes, input_shape):
    g = nas.ArchGraph(input_shape)
    x = "input"
    for i in range(a["depth"]):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=a["width"], kernel_size=3)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=num_classes)
    return g


def toy_space():
    return nas.SearchSpace("toy", [nas.Ordinal("depth", (1, 2, 3)), nas.Ordinal("width", (8, 16, 32))], build,
                           presets={"small": nas.Preset({"depth": 1, "width": 8})})


def broken_space():
    raise RuntimeError("the plug-in's author made a mistake")
'''


def install_plugin(root: Path) -> Path:
    """A package and its dist-info (with entry points) in `root`, as pip would lay them out."""
    site = root / "site"
    (site / "toy_plugin").mkdir(parents=True)
    (site / "toy_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN_CODE))
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[graphnas.search_spaces]\ntoy = toy_plugin:toy_space\nbroken = toy_plugin:broken_space\n"
        "missing = toy_plugin_nowhere:space\n")
    return site


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    site = install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    registry._cache.clear()
    yield site
    registry._cache.clear()
    sys.modules.pop("toy_plugin", None)


def test_entry_point_spaces_are_discovered(plugin_path):
    assert {"toy", "broken", "missing"} <= set(nas.list_spaces())
    space = nas.get_space("toy")
    assert space.name == "toy" and nas.count_params(space.graph(preset="small")) > 0


def test_broken_plugins_name_themselves(plugin_path):
    with pytest.raises(SpaceError, match=r"'broken'.*toy_plugin:broken_space.*RuntimeError: the plug-in's author"):
        nas.get_space("broken")
    with pytest.raises(SpaceError, match=r"'missing'.*toy_plugin_nowhere:space.*loading failed"):
        nas.get_space("missing")


def test_plugin_space_searched_through_the_cli(tmp_path):
    site = install_plugin(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "RAY_AUTH_MODE": "disabled"}
    p = subprocess.run([sys.executable, "-m", "nas.cli", "search", "--space", "toy", "--strategy", "random",
                        "--budget", "3", "--epochs", "1", "--out", str(out)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "best: val_accuracy" in p.stdout
    best = json.loads((out / "best.json").read_text())
    assert best["arch"]["graph"]["space"] == "toy"
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == 3
    # ... and exported as a ready-to-train model with the trial's trained weights
    p = subprocess.run([sys.executable, "-m", "nas.cli", "export", str(out), "--format", "python", "--out",
                        str(tmp_path / "model" / "net.py"), "--weights", "--with-train"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("exported_net", tmp_path / "model" / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(torch.load(tmp_path / "model" / "net.weights.pt", weights_only=True))
    trained = torch.load(out / "best_weights.pt", weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in net.state_dict().items())
    assert (tmp_path / "model" / "train.py").is_file()
