"""Weights files that never run code when loaded: a plain ``{name: tensor}`` state dict written with
`torch.save` and read with ``torch.load(weights_only=True)``, whose unpickler builds only tensors and
plain containers and refuses every other global (so a pickle whose ``__reduce__`` calls ``os.system`` is
rejected before anything runs). This is the format the search already writes (``best_weights.pt``), so
no extra dependency (safetensors) is needed to read or write it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nas.export.python_codegen import ExportError


class WeightsError(ExportError):
    """A weights file cannot be loaded safely, or does not fit the model; the message names the file."""


def state_dict_of(weights: Mapping[str, torch.Tensor] | nn.Module | str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain CPU state dict from a module, a mapping of tensors, or a weights file (loaded safely)."""
    if isinstance(weights, nn.Module):
        weights = weights.state_dict()
    elif isinstance(weights, str | os.PathLike):
        return load_weights(weights)
    if not isinstance(weights, Mapping):
        raise WeightsError(f"weights must be a state dict, an nn.Module or a file path, got {type(weights).__name__}")
    out = {}
    for k, v in weights.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise WeightsError(f"weights: entry {k!r} is not a (name, tensor) pair (got {type(v).__name__})")
        out[k] = v.detach().cpu().contiguous()
    return out


def save_weights(weights: Mapping[str, torch.Tensor] | nn.Module, path: str | os.PathLike) -> Path:
    """Write a state dict (or a module's) to `path` atomically; read it back with `load_weights`."""
    state = state_dict_of(weights)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from `path` without unpickling anything but tensors; raises `WeightsError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"weights file {path} holds Python objects other than tensors, which are never "
                           f"unpickled (torch.load(weights_only=True) refused it: {first}); save a plain "
                           "state dict: torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"weights file {path} is not a readable torch.save file: {type(e).__name__}: {e}") from None
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"weights file {path} does not hold a state dict ({{name: tensor}}), got "
                           f"{type(state).__name__}")
    return dict(state)


def check_fits(state: Mapping[str, torch.Tensor], model: nn.Module, where: str) -> None:
    """Raise naming the missing, unexpected or mis-shaped keys if `state` does not fit `model` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch (file vs model) {shapes[:5]}")
        raise WeightsError(f"{where}: the weights do not fit the architecture: {'; '.join(parts)}")
