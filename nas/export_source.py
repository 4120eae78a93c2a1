"""What `nas export SOURCE` exports: a search's output folder (best, or --rank K), an architecture JSON
file, or a space's preset/assignment; with the trained weights and training settings where they exist."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from nas.graph import arch_id, load
from nas.results import RunFolder


class ExportSourceError(ValueError):
    """SOURCE names nothing exportable; the message says what was looked for."""


@dataclass
class ExportSource:
    arch: nx.DiGraph
    weights: Path | None = None
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # the input preprocessing `weights` were trained with (nas.preprocessing: scale, per-channel mean and
    # std), where the run recorded it; export puts it into the network
    preprocessing: dict[str, Any] | None = None


def _trial_weights(run: RunFolder, trial_id: str) -> tuple[Path | None, dict[str, Any] | None]:
    """The trial's final weights, where the driver recorded them (``checkpoints.jsonl``) and they still are,
    and the input preprocessing recorded with them."""
    rec = run.checkpoint_of(trial_id)
    weights = Path(rec["weights"]) if rec and rec.get("weights") else None
    if weights is None or not weights.is_file():
        return None, None
    return weights, _checked(rec.get("preprocessing"))


def _checked(pre: Any) -> dict[str, Any] | None:
    from nas.preprocessing import PreprocessingError, check_preprocessing

    if pre is None:
        return None
    try:
        return check_preprocessing(pre)
    except PreprocessingError:
        return None


def _best_weights_preprocessing(folder: Path) -> dict[str, Any] | None:
    """The preprocessing recorded beside a run folder's ``best_weights.pt`` (in ``best_weights.json``)."""
    try:
        info = json.loads((folder / "best_weights.json").read_text())
    except (OSError, ValueError):
        return None
    return _checked(info.get("preprocessing")) if isinstance(info, dict) else None


def from_run_folder(folder: Path, rank: int = 1) -> ExportSource:
    run = RunFolder(folder)
    if not run.config_file.is_file():
        raise ExportSourceError(f"{folder} is not a search's output folder (no config.json)")
    config = json.loads(run.config_file.read_text())
    ranked = run.ranked([r for r in run.records() if not r.get("cached")], "max")
    if not ranked:
        raise ExportSourceError(f"{folder}: no candidate finished successfully; nothing to export")
    if not 1 <= rank <= len(ranked):
        raise ExportSourceError(f"{folder}: --rank must be 1..{len(ranked)} (architectures trained), got {rank}")
    rec = ranked[rank - 1]
    if rank == 1 and run.best_file.is_file():
        arch = load(run.best_file)
    else:
        from nas.config import SearchConfig
        from nas.registry import get_space
        from nas.search import data_info

        cfg = SearchConfig.from_dict(config, str(run.config_file))
        info = data_info(cfg)
        arch = get_space(cfg.space).graph(rec["assignment"], num_classes=info.num_classes,
                                          input_shape=info.input_shape, **cfg.space_options)
    if arch_id(arch) != rec["arch_id"]:
        raise ExportSourceError(f"{folder}: rank {rank} is architecture {rec['arch_id']}, but rebuilding it gave "
                                f"{arch_id(arch)}; was the space changed since the search?")
    weights, pre = _trial_weights(run, rec["trial_id"])
    if weights is None and rank == 1 and run.weights_file.is_file():
        weights, pre = run.weights_file, _best_weights_preprocessing(run.path)
    return ExportSource(arch, weights, _train_settings(config.get("train")),
                        f"rank {rank} of {folder} ({rec['arch_id']}, val_accuracy {rec['value']:.4f})", pre)


def _train_settings(train: Any) -> dict[str, Any]:
    """The search's training settings (`nas.train_settings.TrainSettings` fields; train.py uses those it
    can, its data being --data); keys that are not settings (a run of another version) are dropped."""
    from dataclasses import fields

    from nas.train_settings import TrainSettings

    keep = {f.name for f in fields(TrainSettings)}
    return {k: v for k, v in train.items() if k in keep} if isinstance(train, dict) else {}


def resolve(source: str, rank: int = 1) -> ExportSource:
    path = Path(source)
    if path.is_dir():
        return from_run_folder(path, rank)
    if path.is_file():
        data = json.loads(path.read_text()) if path.suffix == ".json" else None
        if data is None:
            raise ExportSourceError(f"{path}: expected an architecture .json file or a search's output folder")
        arch = load(path)
        if "arch" in data:  # a run's best.json: the run's best weights beside it
            weights = path.parent / "best_weights.pt"
            weights = weights if weights.is_file() else None
            pre = _best_weights_preprocessing(path.parent) if weights is not None else None
        else:  # an exported architecture: the weights exported beside it (it holds its preprocessing node)
            weights = path.with_name(path.stem + ".weights.pt")
            weights, pre = (weights if weights.is_file() else None), None
        return ExportSource(arch, weights, _train_settings(data.get("train")) if isinstance(data, dict) else {},
                            str(path), pre)
    raise ExportSourceError(f"{source!r} is neither a folder nor a file; for a space use --preset or --set")
