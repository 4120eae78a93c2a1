"""An exported model reproduces the search's results on the data as the data set gives it (issue #16).

The worker trains on inputs it prepared (digits' 0..16 pixels divided by 16, then standardised with the
training split's per-channel mean and std); the export carries that preprocessing into the network, so the
exported files, loaded where graphnas cannot be imported and applied to digits' raw test pixels, score
exactly what the search reported. Also: the trained weights are the default of an export from a run (random
ones need --untrained), the generated train.py feeds raw data and can start from the search's weights, and a
space given by a relative file path is stored absolute so that export works from any directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.cli import main as cli
from nas.config import SearchConfig, TrainConfig
from nas.export import export
from nas.export.verify import isolated_command
from nas.graph import ArchGraph
from nas.preprocessing import PREPROCESSING_FILE, input_normalization, with_input_normalization
from nas.results import RunFolder
from workers.data import load_dataset
from workers.data.splits import hold_out

REPO = Path(__file__).resolve().parents[1]

SPACE = '''
import nas
from nas.graph import ArchGraph


def _build(a, *, num_classes, input_shape):
    g = ArchGraph(input_shape)
    x = "input"
    for i in range(a["depth"]):
        x = g.add_op(f"conv{i}", "conv", x, out_channels=a["width"], kernel_size=3, bias=False)
        x = g.add_op(f"bn{i}", "bn", x)
        x = g.add_op(f"relu{i}", "relu", x)
    x = g.add_op("flat", "flatten", x)
    g.add_op("fc", "linear", x, out_features=num_classes)
    return g


space = nas.SearchSpace("tiny", [nas.Ordinal("width", (8, 16)), nas.Ordinal("depth", (1, 2))], _build)
'''

# evaluates the three exported files on the raw test split in an interpreter that cannot import graphnas
CHILD = r'''
import importlib.abc, importlib.util, json, sys

BLOCKED = ("nas", "workers", "search_spaces")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"graphnas' module {name} must not be imported here")
        return None


sys.meta_path.insert(0, Block())
import warnings

import numpy as np
import onnxruntime
import torch

data, models = sys.argv[1], sys.argv[2]
x, y = np.load(f"{data}/x_test.npy"), np.load(f"{data}/y_test.npy")
out = {"dtype": str(x.dtype), "max": float(x.max())}
spec = importlib.util.spec_from_file_location("exported_net", f"{models}/net.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
net = module.Net()
net.load_state_dict(torch.load(f"{models}/net.weights.pt", weights_only=True))
net.eval()
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    out["python"] = int((net(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    ts = torch.jit.load(f"{models}/net.ts")
    out["torchscript"] = int((ts(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
session = onnxruntime.InferenceSession(f"{models}/net.onnx", providers=["CPUExecutionProvider"])
out["onnx"] = int((session.run(None, {"input": x})[0].argmax(1) == y).sum())
out["n"] = int(len(y))
out["graphnas_modules"] = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
print(json.dumps(out))
'''


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str):
    """(x_keep, y_keep, x_held, y_held): the worker's seeded hold-out (workers.data.splits.hold_out)."""
    keep, held = hold_out(y, fraction, seed, what)
    return x[keep], y[keep], x[held], y[held]


def _raw_digits_splits(folder: Path, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Path:
    """Digits' raw pixels (0..16, float32) split as `workers.data.load_dataset` splits them, as .npy."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype(np.float32)[:, None], d.target.astype(np.int64)
    x, y, x_test, y_test = _split(x, y, test_fraction, seed, "test")
    x, y, x_val, y_val = _split(x, y, val_fraction, seed + 1, "validation")
    folder.mkdir(parents=True)
    for name, a in (("x_train", x), ("y_train", y), ("x_val", x_val), ("y_val", y_val), ("x_test", x_test),
                    ("y_test", y_test)):
        np.save(folder / f"{name}.npy", a)
    return folder


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    """A real search on digits through Ray, its space given by a relative file path."""
    from nas.search import run_search

    base = tmp_path_factory.mktemp("reproduce")
    (base / "spaces").mkdir()
    (base / "spaces" / "tiny_space.py").write_text(SPACE)
    old = os.getcwd()
    os.chdir(base)
    try:
        cfg = SearchConfig(space="spaces/tiny_space.py:space", strategy="random", budget=2, seed=0, workers=2,
                           out=str(base / "run"), train=TrainConfig(epochs=2, lr=0.1, latency_reps=0))
    finally:
        os.chdir(old)
    outcome = run_search(cfg, log=lambda s: None)
    data = _raw_digits_splits(base / "digits")
    return {"base": base, "folder": base / "run", "outcome": outcome, "data": data}


def _trained(run) -> list[dict]:
    ok = [r for r in run["outcome"].records if r["status"] == "ok" and not r.get("cached")]
    return sorted(ok, key=lambda r: r["value"], reverse=True)


def test_the_run_records_the_preprocessing_with_the_weights(run):
    folder = run["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["space"] == f"{run['base'] / 'spaces' / 'tiny_space.py'}:space"  # stored absolute
    want = load_dataset("digits").preprocessing
    assert want["scale"] == 1 / 16 and len(want["mean"]) == len(want["std"]) == 1
    folder_run = RunFolder(folder)
    trained = _trained(run)
    assert len(trained) >= 2, run["outcome"].records
    for r in trained:
        rec = folder_run.checkpoint_of(r["trial_id"])
        assert rec["preprocessing"] == want
        assert json.loads((Path(rec["checkpoint"]) / PREPROCESSING_FILE).read_text()) == want
    best = json.loads((folder / "best_weights.json").read_text())
    assert best["preprocessing"] == want and best["trial_id"] == trained[0]["trial_id"]


def test_exports_score_the_searchs_test_accuracy_on_raw_inputs(run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    best = _trained(run)[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # outside the repository and the run
    models = elsewhere / "model"
    for fmt, name in (("python", "net.py"), ("torchscript", "net.ts"), ("onnx", "net.onnx")):
        assert cli(["export", str(run["folder"]), "--format", fmt, "--out", str(models / name)]) == 0
        out = capsys.readouterr().out
        assert "with the search's trained weights" in out and "UNTRAINED" not in out, out
        assert "the network first applies the search's preprocessing (inputs * 0.0625" in out, out
    assert "Normalize(input_scale, input_mean, input_std" in (models / "net.py").read_text()
    trained = torch.load(run["folder"] / "best_weights.pt", weights_only=True)
    assert list(torch.load(models / "net.weights.pt", weights_only=True)) == list(trained)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    p = subprocess.run([sys.executable, "-I", str(script), str(run["data"]), str(models)], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["graphnas_modules"] == [] and got["dtype"] == "float32" and got["max"] == 16.0
    reported = best["metrics"]["test_accuracy"]
    assert reported > 0.5, best  # a search that learnt something, so that agreement means something
    for fmt in ("python", "torchscript", "onnx"):
        assert got[fmt] == round(reported * got["n"]), (fmt, got, reported)
        assert abs(got[fmt] / got["n"] - reported) < 1e-6


def test_export_of_another_rank_from_another_directory(run, tmp_path):
    """config.json names the space by absolute path, so a fresh `nas export --rank 2` finds it from anywhere."""
    second = _trained(run)[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "nas.cli", "export", str(run["folder"]), "--rank", "2", "--format",
                        "python", "--out", "m2/net.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert second["arch_id"] in p.stdout and "trained weights" in p.stdout
    assert f"# arch_id: {second['arch_id']}" in (tmp_path / "m2" / "net.py").read_text()


def test_untrained_exports_are_explicit(run, tmp_path, capsys):
    folder = run["folder"]
    trained = torch.load(folder / "best_weights.pt", weights_only=True)
    assert cli(["export", str(folder), "--format", "python", "--out", str(tmp_path / "u" / "net.py"),
                "--untrained"]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "--untrained" in out
    assert not (tmp_path / "u" / "net.weights.pt").exists()
    assert cli(["export", str(folder), "--format", "torchscript", "--out", str(tmp_path / "u" / "net.ts"),
                "--untrained"]) == 0
    capsys.readouterr()
    ts = torch.jit.load(str(tmp_path / "u" / "net.ts"))
    assert any(not torch.equal(v, trained[k]) for k, v in ts.state_dict().items() if k in trained)
    # the README's `nas export runs/r1 --rank 3 --format onnx` (no flag) is trained now; --weights still accepted
    assert cli(["export", str(folder), "--format", "torchscript", "--out", str(tmp_path / "t" / "net.ts"),
                "--weights"]) == 0
    assert "with the search's trained weights" in capsys.readouterr().out
    ts = torch.jit.load(str(tmp_path / "t" / "net.ts"))
    assert all(torch.equal(v, trained[k]) for k, v in ts.state_dict().items() if k in trained)
    assert cli(["export", str(folder), "--format", "python", "--out", str(tmp_path / "x.py"), "--untrained",
                "--weights"]) == 2
    assert "--untrained" in capsys.readouterr().err
    # a run whose weights are gone: an error that names --untrained, not random weights
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "evaluations.jsonl", "best.json"):
        (bare / name).write_bytes((folder / name).read_bytes())
    assert cli(["export", str(bare), "--format", "onnx", "--out", str(tmp_path / "b.onnx")]) == 2
    assert "pass --untrained" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()
    # a space's preset has no weights: untrained, and it says so
    assert cli(["export", "resnet", "--preset", "resnet18_cifar", "--format", "python", "--out",
                str(tmp_path / "r.py")]) == 0
    assert "UNTRAINED" in capsys.readouterr().out


def _run_train(args: list[str], cwd: Path) -> str:
    p = subprocess.run(isolated_command(*args), cwd=cwd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "graphnas modules imported: []"
    return p.stdout


def _test_accuracy(out: str) -> tuple[float, int]:
    line = next(line for line in out.splitlines() if line.startswith("test_loss"))
    return float(line.split()[3]), int(line.split("(")[1].split()[0])


def test_train_py_takes_raw_data_and_the_searchs_weights(run, tmp_path):
    best = _trained(run)[0]
    model = tmp_path / "model"
    assert cli(["export", str(run["folder"]), "--format", "python", "--out", str(model / "net.py"),
                "--with-train"]) == 0
    train = str(model / "train.py")
    data = str(run["data"])
    # from scratch, one epoch on raw pixels: the network normalises them, batch norm is recalibrated
    out = _run_train([train, "--data", data, "--epochs", "1", "--out", str(tmp_path / "scratch.pt")], tmp_path)
    assert "the network normalises them as the search did: scale 0.0625" in out, out
    acc, _ = _test_accuracy(out)
    assert acc > 0.6, out  # chance is 0.1
    # the search's weights, no training: exactly the search's test accuracy
    out = _run_train([train, "--data", data, "--epochs", "0", "--init-weights", str(model / "net.weights.pt"),
                      "--out", str(tmp_path / "same.pt")], tmp_path)
    acc, correct = _test_accuracy(out)
    n = len(np.load(run["data"] / "y_test.npy"))
    assert correct == round(best["metrics"]["test_accuracy"] * n), (out, best["metrics"])
    assert abs(acc - best["metrics"]["test_accuracy"]) < 1e-4
    # three-channel uint8 data: Net(in_channels=3) with this data's statistics
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for split in ("train", "val", "test"):
        x = np.load(run["data"] / f"x_{split}.npy")
        np.save(rgb / f"x_{split}.npy", (np.repeat(x, 3, axis=1) * 15).astype(np.uint8))
        np.save(rgb / f"y_{split}.npy", np.load(run["data"] / f"y_{split}.npy"))
    out = _run_train([train, "--data", str(rgb), "--epochs", "1", "--out", str(tmp_path / "rgb.pt")], tmp_path)
    assert "this data's statistics" in out and '"in_channels": 3' in out, out
    assert _test_accuracy(out)[0] > 0.5, out
    kwargs = json.loads((tmp_path / "rgb.kwargs.json").read_text())
    assert kwargs["in_channels"] == 3 and len(kwargs["input_mean"]) == 3 and kwargs["input_scale"] == 1 / 255


def test_train_py_stops_where_in_channels_cannot_change(tmp_path):
    g = ArchGraph((1, 8, 8))
    a = g.add_op("a", "conv", "input", out_channels=4, kernel_size=3)
    m = g.add_op("m", "identity", ["input", a], merge="concat")
    x = g.add_op("pool", "global_avgpool", m)
    g.add_op("fc", "linear", x, out_features=3)
    pre = {"scale": 1 / 255, "mean": [0.5], "std": [0.25]}
    files = export(g, "python", tmp_path / "model" / "net.py", with_train=True, preprocessing=pre)
    assert "in_channels" not in files[0].read_text().split("def __init__(")[1].split(")")[0]
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "x_train.npy", rng.integers(0, 256, (12, 3, 8, 8)).astype(np.uint8))
    np.save(data / "y_train.npy", rng.integers(0, 3, 12))
    p = subprocess.run(isolated_command(files[1], "--data", str(data)), cwd=tmp_path, capture_output=True, text=True,
                       timeout=180)
    assert p.returncode != 0
    assert "3 input channel(s)" in p.stderr and "has no in_channels argument" in p.stderr, p.stderr


def test_preprocessing_reproduces_the_workers_inputs_exactly(tmp_path):
    from sklearn.datasets import load_digits

    from nas.ops import Normalize

    data = load_dataset("digits")
    pre = data.preprocessing
    raw = load_digits().images.astype(np.float32)[:, None]
    y = load_digits().target.astype(np.int64)
    raw_train, _, _, _ = _split(*_split(raw, y, 0.2, 0, "test")[:2], 0.2, 1, "validation")
    norm = Normalize(pre["scale"], pre["mean"], pre["std"], channels=1, rank=3)
    assert torch.equal(norm(torch.from_numpy(raw_train)), data.x_train)
    # uint8 arrays are divided by 255 first
    folder = tmp_path / "npy"
    folder.mkdir()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 3, 4, 4)).astype(np.uint8)
    np.save(folder / "x_train.npy", x)
    np.save(folder / "y_train.npy", rng.integers(0, 2, 40))
    data = load_dataset("npy", root=folder)
    pre = data.preprocessing
    assert pre["scale"] == 1 / 255 and len(pre["mean"]) == 3
    norm = Normalize(pre["scale"], pre["mean"], pre["std"], channels=3, rank=3)
    x_train = np.load(folder / "x_train.npy")
    keep = _split(*_split(x_train, np.load(folder / "y_train.npy"), 0.2, 0, "test")[:2], 0.2, 1, "validation")[0]
    assert torch.equal(norm(torch.from_numpy(keep)), data.x_train)  # uint8 in, cast inside
    unnormalised = load_dataset("npy", root=folder, normalize=False).preprocessing
    assert unnormalised == {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}


def test_the_normalize_node_keeps_the_weights_and_travels_in_json(tmp_path):
    g = ArchGraph((3, 8, 8))
    x = g.add_op("conv", "conv", "input", out_channels=4, kernel_size=3)
    x = g.add_op("bn", "bn", x)
    x = g.add_op("pool", "global_avgpool", x)
    g.add_op("fc", "linear", x, out_features=5)
    pre = {"scale": 1 / 255, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    gn = with_input_normalization(g, pre)
    assert input_normalization(gn) == pre and input_normalization(g) is None
    torch.manual_seed(0)
    plain = nas.build(g).eval()
    normed = nas.build(gn).eval()
    assert list(normed.state_dict()) == list(plain.state_dict())
    normed.load_state_dict(plain.state_dict())
    raw = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor(pre["mean"]).view(1, 3, 1, 1), torch.tensor(pre["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = plain((raw.float() / 255.0 - mean) / std)
        assert torch.equal(normed(raw), want)
        files = export(g, "json", tmp_path / "net.json", preprocessing=pre)
        again = nas.build(nas.load_architecture(files[0])).eval()
        again.load_state_dict(plain.state_dict())
        assert torch.equal(again(raw), want)
    # the python export: the search's arch_id, keyword constants, and in_channels checked against them
    files = export(g, "python", tmp_path / "net.py", weights=plain, preprocessing=pre)
    text = files[0].read_text()
    assert f"# arch_id: {nas.arch_id(g)}" in text and "input_mean: tuple[float, ...] = (0.4, 0.5, 0.6)" in text
    namespace: dict = {}
    exec(compile(text, str(files[0]), "exec"), namespace)
    net = namespace["Net"]().eval()
    net.load_state_dict(torch.load(files[1], weights_only=True))
    with torch.no_grad():
        assert torch.equal(net(raw), want)
    with pytest.raises(ValueError, match="3 mean"):
        namespace["Net"](in_channels=1)
    one = namespace["Net"](in_channels=1, input_mean=(0.5,), input_std=(0.2,))
    assert one(torch.zeros(2, 1, 8, 8)).shape == (2, 5)


def test_a_space_file_is_stored_with_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = SearchConfig.from_dict({"space": "my/space.py:space"})
    assert cfg.space == f"{tmp_path / 'my' / 'space.py'}:space"
    assert SearchConfig(space="x.py:s").space == f"{tmp_path / 'x.py'}:s"
    for name in ("resnet", "package.module:space", "/abs/space.py:space"):
        assert SearchConfig.from_dict({"space": name}).space == name
