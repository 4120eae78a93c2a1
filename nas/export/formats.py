"""`export`: an architecture as a ready-to-train model in one of `FORMATS`.

- ``python``: one standalone PyTorch file (`python_source`); with weights, ``<stem>.weights.pt`` beside it;
  with ``with_train=True``, a standalone ``train.py`` beside it.
- ``json``: the architecture graph (node-link JSON, `nas.load_architecture` reads it back); with weights,
  ``<stem>.weights.pt`` beside it.
- ``torchscript``: the generated module scripted (or traced where scripting fails), weights inside; the
  architecture JSON rides along as the extra file ``graphnas_arch.json``. (torch 2.13 marks
  TorchScript deprecated in favour of torch.export; its DeprecationWarnings are silenced here.)
- ``onnx``: opset 18 via the dynamo exporter, dynamic batch dimension, weights inside (a large model's
  weights may land in a ``.data`` file beside it, which is returned too). Needs the ``export`` extra. Its
  input is named ``input``; a network with several inputs names the others by their input nodes' ids.

TorchScript and ONNX files hold the evaluation-mode network (auxiliary heads and dropout off). Exports
built without weights carry the initial weights `Net()` draws under seed 0. With `preprocessing` the network
normalises its inputs itself (a ``normalize`` node first); an ONNX model takes float32 inputs (cast uint8
pixels to float32, unscaled).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import nn

from nas.builder import GraphModule
from nas.drop_path import drop_path_nodes
from nas.export.python_codegen import ExportError, python_source
from nas.export.train_script import train_config_of, train_script
from nas.export.weights import check_fits, save_weights, state_dict_of
from nas.graph import arch_id, infer_shapes, input_nodes, input_shapes, to_json
from nas.graph import load as load_graph
from nas.graph import save as save_graph
from nas.io import atomic_write_text
from nas.preprocessing import PreprocessingError, input_normalization, with_input_normalization
from nas.train_settings import TrainSettings

FORMATS = ("python", "json", "torchscript", "onnx")
ONNX_OPSET = 18
ARCH_EXTRA_FILE = "graphnas_arch.json"
Weights = Mapping[str, torch.Tensor] | nn.Module | str | os.PathLike


def export(arch: nx.DiGraph | str | os.PathLike, format: str, path: str | os.PathLike, *,
           weights: Weights | None = None, with_train: bool = False,
           train_config: TrainSettings | Mapping[str, Any] | Any | None = None,
           class_name: str = "Net", preprocessing: Mapping[str, Any] | None = None,
           task: str | None = None) -> list[Path]:
    """Write `arch` (a graph, or an architecture / best.json file) to `path` as `format`.

    `weights`: a state dict, a module, or a weights file (loaded with weights_only=True); its keys must be
    the architecture's (``nas.build(arch).state_dict()``). `preprocessing` (`nas.preprocessing`: ``{"scale",
    "mean", "std"}``, what the search did to the data set's inputs) becomes a parameter-free ``normalize``
    node at the network's input, so that the exported model takes inputs as the data set gives them; the
    state dict keys stay the same. `with_train` (python only) adds ``train.py``,
    whose defaults are `train_config` (`nas.train_settings.TrainSettings`, alias `nas.export.TrainConfig`,
    or a mapping of its settings; None: its defaults), training for `task` (``classification``, ``contrastive``,
    ``segmentation``, ``detection``, ``multilabel``; default: the space's, `space_task`).
    Returns the files written, the model file first.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    g = arch if isinstance(arch, nx.DiGraph) else load_graph(arch)
    infer_shapes(g)
    if preprocessing is not None:
        try:
            g = with_input_normalization(g, preprocessing)
        except PreprocessingError as e:
            raise ExportError(f"preprocessing: {e}") from None
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"export path {path} is a folder; give the model file's path (e.g. {path / 'net.py'})")
    if with_train and format != "python":
        raise ExportError(f"with_train needs format 'python' (train.py imports the Python model), not {format!r}")
    if format == "onnx":
        for mod in ("onnx", "onnxscript"):
            if importlib.util.find_spec(mod) is None:
                raise ExportError(f"ONNX export needs the {mod!r} package: pip install 'graphnas[export]'")
    config = train_config_of(train_config) if with_train else None
    state = None
    if weights is not None:
        state = state_dict_of(weights)
        with torch.device("meta"):
            reference = GraphModule(g)
        check_fits(state, reference, f"weights for architecture {arch_id(g)}")
    path.parent.mkdir(parents=True, exist_ok=True)

    if format == "json":
        written = [save_graph(g, path)]
    elif format == "python":
        source = python_source(g, class_name=class_name)
        written = [atomic_write_text(path, source)]
        if with_train:
            text = train_script(path.name, class_name, arch_id(g), tuple(g.graph["input_shape"]), config,
                                drop_path_nodes(g), task=task or space_task(g),
                                preprocessing=input_normalization(g))
            written.append(atomic_write_text(path.parent / "train.py", text))
    else:
        model = _prepare(g, class_name, state)
        xs = _example_inputs(g)
        written = _torchscript(g, model, xs, path) if format == "torchscript" else _onnx(g, model, xs, path)
        return written
    if state is not None:
        written.insert(1, save_weights(state, weights_path(path)))
    return written


def space_task(g: nx.DiGraph) -> str:
    """The task of the space `g` was drawn from (`nas.space.SearchSpace.task`), classification where unknown."""
    from nas.registry import get_space

    try:
        return get_space(g.graph["space"]).task if g.graph.get("space") else "classification"
    except (ImportError, AttributeError, ValueError, KeyError):
        return "classification"


def weights_path(model_path: str | os.PathLike) -> Path:
    """Where `export` puts the weights of the python or json model file `model_path`."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".weights.pt")


# ---------------------------------------------------------------------------------------------------
# the generated module, imported from a real file (TorchScript reads a module's source from its file)


def _with_module(source: str, fn):
    """Call `fn(module)` with `source` imported from a temporary file under a unique module name."""
    name = f"graphnas_export_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="graphnas-export-") as tmp:
        file = Path(tmp) / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            return fn(module)
        finally:
            sys.modules.pop(name, None)


class _Prepared(nn.Module):
    """The eager module with its scripted form (None where scripting failed, with the reason)."""

    def __init__(self, eager: nn.Module, scripted: torch.jit.ScriptModule | None, why: str = ""):
        super().__init__()
        self.eager = eager
        self.scripted = scripted
        self.why = why

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.eager(*xs)


def _prepare(g: nx.DiGraph, class_name: str, state: Mapping[str, torch.Tensor] | None) -> _Prepared:
    """The generated module in evaluation mode (seed-0 initial weights, or `state`), and its scripted form."""
    source = python_source(g, class_name=class_name)

    def make(module: Any) -> _Prepared:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = getattr(module, class_name)()
        if state is not None:
            model.load_state_dict(state)
        model.eval()
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream; the user asked for it
                warnings.simplefilter("ignore", DeprecationWarning)
                return _Prepared(model, torch.jit.script(model))
        except Exception as e:  # TorchScript cannot compile some modules (e.g. super() calls)
            return _Prepared(model, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    return _with_module(source, make)


def _example_inputs(g: nx.DiGraph) -> tuple[torch.Tensor, ...]:
    """One random batch of 2 per input of `g`, in index order."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn((2, *shape), generator=gen) for shape in input_shapes(g))


def onnx_input_names(g: nx.DiGraph) -> list[str]:
    """The ONNX model's input names: ``input``, then the ids of any further input nodes, in index order."""
    return ["input", *input_nodes(g)[1:]]


def _meta(g: nx.DiGraph, method: str) -> str:
    return json.dumps({"arch_id": arch_id(g), "exported_by": "graphnas", "method": method}, sort_keys=True)


def _torchscript(g: nx.DiGraph, prepared: _Prepared, xs: tuple[torch.Tensor, ...], path: Path) -> list[Path]:
    if prepared.scripted is not None:
        module, method = prepared.scripted, "script"
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.trace(prepared.eager, xs, check_trace=True)
        method = "trace"
    module.eval()
    with torch.no_grad():
        want, got = prepared.eager(*xs), module(*xs)
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ExportError(f"TorchScript ({method}) output differs from the eager module's by "
                          f"{(want - got).abs().max().item():.3g}")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, str(tmp), _extra_files={ARCH_EXTRA_FILE: to_json(g),
                                                          "graphnas_export.json": _meta(g, method)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return [path]


def _onnx(g: nx.DiGraph, prepared: _Prepared, xs: tuple[torch.Tensor, ...], path: Path) -> list[Path]:
    model = prepared.eager
    before = set(path.parent.iterdir())
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():  # torch's exporter warns about its own internals (pytree specs)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")  # several inputs
            program = torch.onnx.export(model, xs, dynamo=True, opset_version=ONNX_OPSET,
                                        input_names=onnx_input_names(g), output_names=["output"],
                                        dynamic_shapes=tuple({0: batch} for _ in xs), verbose=False)
    except Exception as e:
        raise ExportError(f"ONNX export of architecture {arch_id(g)} failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    program.model.metadata_props.update({"graphnas_arch_id": arch_id(g), "graphnas_arch": to_json(g, indent=None)})
    program.save(str(path))
    # a model over 2 GB keeps its weights in a data file beside it
    return [path] + sorted(p for p in path.parent.iterdir() if p not in before and p != path
                           and p.name.startswith(path.name))
