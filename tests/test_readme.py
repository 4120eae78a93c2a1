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


# -- the "Searching" and "Exporting what was found" sections, in order -------------------------------------------

# Where a README line says it is an example of a longer run (its comment says "longer run"), its --budget and
# --epochs are replaced by a small run's (and given as flags, which override a config file's values, where the
# line has none because they live in its config file): one epoch per candidate, and one candidate more than the
# largest --rank the export lines ask for where the export lines read that run's folder (else one candidate).
# Nothing else of any command is changed; each `nas search` starts its own private Ray, as for a user.
LONGER_RUN = "longer run"


def bash_commands(text: str) -> list[tuple[str, str]]:
    """(command, comment) of each `nas ...` line of the text's bash blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith("nas "):
                command, _, comment = line.partition("#")
                out.append((command.strip(), comment.strip()))
    return out


def searching_text() -> str:
    """The "Searching" section itself, without its subsections (a cluster, COMBO, DARTS, NAS-Bench-201)."""
    sec = section("## Searching")
    return sec.split("\n### ", 1)[0]


def shortened(argv: list[str], comment: str, budget: int) -> list[str]:
    if LONGER_RUN not in comment or argv[:2] != ["nas", "search"]:
        return argv
    argv = list(argv)
    for flag, value in (("--budget", str(budget)), ("--epochs", "1")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def test_the_readme_toml_example_uses_the_real_keys():
    import dataclasses
    import tomllib

    from nas.config import SearchConfig

    (toml,) = re.findall(r"```toml\n(.*?)```", searching_text(), re.S)[:1]
    data = tomllib.loads(toml)
    cfg = SearchConfig.from_dict(data, "README search.toml")
    for key, value in data.items():
        if key == "train":
            for k, v in value.items():
                assert getattr(cfg.train, k) == v, k
                assert k in {f.name for f in dataclasses.fields(cfg.train)}
        else:
            assert getattr(cfg, key) == value, key


def test_the_searching_and_exporting_commands_run_in_order(tmp_path):
    searching = bash_commands(searching_text())
    exporting = [shlex.split(c) for c, _ in bash_commands(section("## Exporting what was found"))]
    assert any(c.startswith("nas search") for c, _ in searching) and exporting
    ranks = [int(a[a.index("--rank") + 1]) for a in exporting if "--rank" in a]
    exported = {a[2] for a in exporting}  # the run folders (or files) the export lines read
    tomls = re.findall(r"```toml\n(.*?)```", searching_text(), re.S)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ran = []
    for command, comment in searching + [(" ".join(map(shlex.quote, a)), "") for a in exporting]:
        argv = shlex.split(command)
        read = "--out" in argv and argv[argv.index("--out") + 1] in exported
        argv = shortened(argv, comment, max(ranks, default=1) + 1 if read else 1)
        if "--config" in argv:  # the config file the README shows below the commands
            (tmp_path / argv[argv.index("--config") + 1]).write_text(tomls[0])
        p = subprocess.run([sys.executable, "-m", "nas.cli", *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, f"{' '.join(argv)}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        ran.append((argv, p.stdout))
    import json
    import tomllib

    from nas.config import SearchConfig

    for argv, out in ran:
        if argv[1] == "search":  # the end-of-search summary says what was trained
            assert "evaluations (" in out and "architectures trained to the end" in out, out[-1500:]
        if "--config" in argv:  # the run took the file's settings (and the flags over them)
            data = tomllib.loads(tomls[0])
            saved = json.loads((tmp_path / data.get("out", SearchConfig().out) / "config.json").read_text())
            assert {k: saved["train"][k] for k in data.get("train", {})} == {**data.get("train", {}), "epochs": 1}
            assert saved["space"] == data["space"] and saved["budget"] == 1
        if argv[1] == "export":  # every file an export line names was written
            assert (tmp_path / argv[argv.index("--out") + 1]).is_file(), argv
