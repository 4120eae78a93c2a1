"""The command line: describe, spaces, and how search settings combine (file, resumed run, flags)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.cli import main, make_parser, search_config_from_args
from nas.config import ConfigError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, timeout=120)


def test_describe_json_prints_the_exact_count():
    p = run_cli("describe", "resnet", "--preset", "resnet50", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["params"] == 25557032 and out["output_shape"] == [1000]
    assert isinstance(out["flops"], int) and len(out["arch_id"]) == 16


def test_describe_table_and_overrides(capsys):
    assert main(["describe", "resnet", "--set", "depth1=2", "--num-classes", "5", "--input-shape", "3,32,32"]) == 0
    text = capsys.readouterr().out
    assert "params:" in text and "output: 5" in text and "input: 3x32x32" in text


@pytest.mark.parametrize("args,needle", [
    (["describe", "resnet", "--set", "depth9=1"], "no variable 'depth9'"),
    (["describe", "resnet", "--set", "depth1=99"], "'depth1'"),
    (["describe", "resnet", "--preset", "resnet9000"], "no preset 'resnet9000'"),
    (["describe", "nonexistent"], "unknown search space"),
    (["describe", "resnet", "--input-shape", "3,x,9"], "--input-shape"),
])
def test_bad_input_is_a_clear_error(args, needle, capsys):
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_spaces_lists_builtins(capsys):
    assert main(["spaces", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("vgg", "inception", "resnet", "densenet", "highway"):
        assert rows[name]["presets"], name


def parse(*argv: str):
    return search_config_from_args(make_parser().parse_args(["search", *argv]))


def test_search_settings_file_then_flags(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('space = "vgg"\nbudget = 7\n[strategy_options]\npopulation_size = 5\n[train]\nepochs = 2\n')
    cfg = parse("--config", str(toml), "--budget", "9", "--lr", "0.1")
    assert (cfg.space, cfg.budget, cfg.train.epochs, cfg.train.lr) == ("vgg", 9, 2, 0.1)
    assert cfg.strategy_options == {"population_size": 5}
    yml = tmp_path / "s.yaml"
    yml.write_text("space: densenet\ntrain:\n  dataset: digits\n  batch_size: 32\n")
    cfg = parse("--config", str(yml), "--strategy-option", "sample_size=3")
    assert (cfg.space, cfg.train.batch_size, cfg.strategy_options) == ("densenet", 32, {"sample_size": 3})


def test_resume_reads_the_runs_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"space": "highway", "budget": 3, "train": {"epochs": 1}}))
    cfg = parse("--out", str(tmp_path), "--resume", "--budget", "5")
    assert (cfg.space, cfg.budget, cfg.train.epochs) == ("highway", 5, 1)


@pytest.mark.parametrize("text,suffix,needle", [
    ("budget = 'many'", ".toml", "'budget' must be int"),
    ("colour = 'red'", ".toml", "unknown setting 'colour'"),
    ("[train]\nepoch = 3", ".toml", "[train]: unknown setting 'epoch'"),
    ("budget = [", ".toml", "malformed"),
    ("space: [unclosed", ".yaml", "malformed"),
    ("- just\n- a list", ".yaml", "expected a mapping"),
])
def test_bad_config_files_name_the_problem(tmp_path, text, suffix, needle):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        parse("--config", str(path))
    assert needle in str(err.value) and str(path) in str(err.value)
