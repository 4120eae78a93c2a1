"""Check exported Python models the way a user would run them: in a fresh interpreter where graphnas
cannot be imported.

`FreshInterpreter` starts ``python -I -S -B`` (isolated: no PYTHONPATH, no current folder, no site
packages processed, so no editable install of graphnas) in a folder of its own, with only the folders
that hold torch and numpy on its path. It then checks jobs sent to it one at a time (so a caller can
prepare the next model while the last one is checked): import the exported file, build its class with
no arguments, load the weights file with ``torch.load(weights_only=True)`` (strictly: every key), count
parameters, and compare its outputs with reference outputs computed by `nas.build`'s module, in
evaluation mode and, where given, in training mode with its auxiliary outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CHILD = r'''
import importlib.util, json, sys
sys.path[:0] = json.loads(sys.argv[1])
import torch

torch.set_num_threads(1)
hello = {"graphnas_importable": [m for m in ("nas", "search_spaces", "workers")
                                 if importlib.util.find_spec(m) is not None],
         "sys_path": sys.path, "torch": torch.__version__}
print(json.dumps(hello), flush=True)


def dropout_off(model):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()


def check(job):
    spec = importlib.util.spec_from_file_location(f"exported_{job['id']}", job["model"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = getattr(module, job.get("class", "Net"))()
    out = {"id": job["id"], "params": sum(p.numel() for p in net.parameters()),
           "module_file": getattr(module, "__file__", None),
           "imports_graphnas": [m for m in ("nas", "search_spaces", "workers") if m in sys.modules]}
    if job.get("weights"):
        state = torch.load(job["weights"], map_location="cpu", weights_only=True)
        out["keys_equal"] = list(state) == list(net.state_dict())
        net.load_state_dict(state)
    ref = torch.load(job["reference"], map_location="cpu", weights_only=True)
    net.eval()
    xs = ref["x"] if isinstance(ref["x"], (list, tuple)) else [ref["x"]]
    with torch.no_grad():
        y = net(*xs)
        out["eval_shape"] = list(y.shape)
        out["eval_diff"] = (y - ref["eval"]).abs().max().item() if y.shape == ref["eval"].shape else None
        out["aux_in_eval"] = len(net.aux_outputs)
        if "train" in ref:
            net.train()
            dropout_off(net)
            y = net(*xs)
            out["train_diff"] = (y - ref["train"]).abs().max().item()
            aux = list(net.aux_outputs)
            out["aux_count"] = len(aux)
            out["aux_diff"] = max([(a - b).abs().max().item() for a, b in zip(aux, ref["aux"])] or [0.0])
    return out


for line in sys.stdin:
    job = json.loads(line)
    try:
        result = check(job)
    except Exception as e:
        result = {"id": job.get("id"), "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
'''


def _dependency_paths() -> list[str]:
    """The folders holding torch and numpy (usually one site-packages), nothing of graphnas."""
    import numpy

    paths = []
    for mod in (torch, numpy):
        root = str(Path(mod.__file__).resolve().parent.parent)
        if root not in paths:
            paths.append(root)
    return paths


_RUN_SCRIPT = r'''
import json, runpy, sys
paths, script, args = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
sys.path[:0] = paths
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    leaked = [m for m in ("nas", "search_spaces", "workers") if m in sys.modules]
    print("graphnas modules imported: " + json.dumps(leaked), flush=True)
'''


def isolated_command(script: str | os.PathLike, *args: str) -> list[str]:
    """A command running `script` as __main__ in an isolated interpreter (``-I -S``) that sees only the
    folders of torch and numpy; it ends by printing which graphnas modules were imported (none, if the
    script is standalone)."""
    return [sys.executable, "-I", "-S", "-B", "-c", _RUN_SCRIPT, json.dumps(_dependency_paths()), str(script), *args]


def reference_outputs(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], *,
                      training: bool = False) -> dict[str, Any]:
    """Outputs of `model` on `x` (a tensor, or a tuple with one tensor per input) in evaluation mode and,
    with `training`, in training mode (dropout off, batch norm on batch statistics) with its auxiliary
    outputs; `model` is left in evaluation mode."""
    ref: dict[str, Any] = {"x": x}
    xs = x if isinstance(x, tuple | list) else (x,)
    model.eval()
    with torch.no_grad():
        ref["eval"] = model(*xs)
        if training:
            model.train()
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.eval()
            ref["train"] = model(*xs)
            ref["aux"] = list(getattr(model, "aux_outputs", []))
            model.eval()
    return ref


class FreshInterpreter:
    """A long-lived isolated interpreter that checks exported model files; use as a context manager."""

    def __init__(self, cwd: str | os.PathLike):
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.stderr_file = self.cwd / "fresh-interpreter.stderr"
        self._stderr = open(self.stderr_file, "w")  # noqa: SIM115  (closed in close())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", _CHILD, json.dumps(_dependency_paths())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=self.cwd,
            env=env,
        )
        self.hello = self._read()
        self._pending = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            self._stderr.flush()
            err = self.stderr_file.read_text()
            raise RuntimeError(f"the fresh interpreter stopped (exit {self.proc.returncode}): {err[-2000:]}")
        return json.loads(line)

    def submit(self, *, id: str, model: str | os.PathLike, reference: str | os.PathLike,
               weights: str | os.PathLike | None = None, class_name: str = "Net") -> None:
        """Queue a check of `model` (an exported file) against `reference` (a `reference_outputs` file)."""
        job = {"id": id, "model": str(model), "reference": str(reference), "class": class_name,
               "weights": str(weights) if weights is not None else None}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self._pending += 1

    def result(self) -> dict:
        """The result of the oldest queued check (a dict; ``error`` holds the exception if one was raised)."""
        if self._pending == 0:
            raise RuntimeError("no check is queued")
        self._pending -= 1
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> FreshInterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
