"""The README's custom-space example runs as written: its code, its `nas describe` and `nas search` lines."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end > 0 else None]


def test_custom_space_example_runs_as_written(tmp_path):
    sec = section("## Your own search space")
    code = re.findall(r"```python\n(.*?)```", sec, re.S)[0]
    (tmp_path / "my_space.py").write_text(code)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", sec, re.S) for line in block.splitlines()
                if line.startswith("nas ")]
    assert any(c.startswith("nas search") for c in commands) and any(c.startswith("nas describe") for c in commands)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    for command in commands:
        argv = shlex.split(command.split("#")[0])
        p = subprocess.run([sys.executable, "-m", "nas.cli", *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, f"{command}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert (tmp_path / "runs" / "mine" / "best.json").is_file()


def test_the_search_training_flags_are_all_listed():
    import dataclasses

    from nas.train_settings import TrainSettings

    sec = section("## Searching")
    for f in dataclasses.fields(TrainSettings):
        flag = "--train-seed" if f.name == "seed" else "--" + f.name.replace("_", "-")
        assert f"`{flag}" in sec, flag
    assert "[train]" in sec
