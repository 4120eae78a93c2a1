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


def run_objectives(config: dict[str, Any], where: str) -> list:
    """The objectives of the search whose config.json holds `config` (its own, else its evaluation's default)."""
    from nas.config import SearchConfig
    from nas.evaluation import get_evaluation
    from nas.objectives import search_objectives

    cfg = SearchConfig.from_dict(config, where)
    return search_objectives(cfg, get_evaluation(cfg), check=False)[0]


def from_run_folder(folder: Path, rank: int = 1, pareto: int | None = None) -> ExportSource:
    run = RunFolder(folder)
    if not run.config_file.is_file():
        raise ExportSourceError(f"{folder} is not a search's output folder (no config.json)")
    config = json.loads(run.config_file.read_text())
    objectives = run_objectives(config, str(run.config_file))
    records = run.records()
    if pareto is not None:
        return _from_front(run, config, objectives, records, pareto)
    first = objectives[0]
    ranked = run.ranked([r for r in records if not r.get("cached")], first.mode)
    if not ranked:
        raise ExportSourceError(f"{folder}: no candidate finished successfully; nothing to export")
    if not 1 <= rank <= len(ranked):
        raise ExportSourceError(f"{folder}: --rank must be 1..{len(ranked)} (architectures trained), got {rank}")
    rec = ranked[rank - 1]
    return _export_record(run, config, rec, f"rank {rank}", f"({rec['arch_id']}, {first.metric} {rec['value']:.4f})",
                          use_best=rank == 1)


def _from_front(run: RunFolder, config: dict[str, Any], objectives: list, records: list[dict[str, Any]],
                k: int) -> ExportSource:
    from nas import pareto_report

    folder = run.path
    if len(objectives) < 2:
        raise ExportSourceError(f"{folder}: --pareto: this search has one objective ({objectives[0].spec()}), so it "
                                "has no Pareto front; use --rank K")
    points = pareto_report.front(records, objectives)
    if not points:
        raise ExportSourceError(f"{folder}: no candidate finished successfully; the front is empty")
    if not 1 <= k <= len(points):
        raise ExportSourceError(f"{folder}: --pareto must be 1..{len(points)} (points of the front, pareto.md), "
                                f"got {k}")
    rec = points[k - 1]
    values = ", ".join(f"{o.metric} {v:.6g}" for o, v in zip(objectives, rec["values"], strict=True))
    return _export_record(run, config, rec, f"point {k} of the Pareto front", f"({rec['arch_id']}, {values})",
                          use_best=False)


def _export_record(run: RunFolder, config: dict[str, Any], rec: dict[str, Any], what: str, detail: str,
                   use_best: bool) -> ExportSource:
    """The export of record `rec` (`what`: "rank 3", ...): its architecture, rebuilt and checked against its
    arch_id, with the trial's weights (the run's best weights for the best, `use_best`)."""
    folder = run.path
    description = f"{what} of {folder} {detail}"
    if use_best and run.best_file.is_file():
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
        raise ExportSourceError(f"{folder}: {what} is architecture {rec['arch_id']}, but rebuilding it gave "
                                f"{arch_id(arch)}; was the space changed since the search?")
    weights, pre = _trial_weights(run, rec["trial_id"])
    if weights is None and use_best and run.weights_file.is_file():
        weights, pre = run.weights_file, _best_weights_preprocessing(run.path)
    return ExportSource(arch, weights, _train_settings(config.get("train")), description, pre)


def _train_settings(train: Any) -> dict[str, Any]:
    """The search's training settings (`nas.train_settings.TrainSettings` fields; train.py uses those it
    can, its data being --data); keys that are not settings (a run of another version) are dropped."""
    from dataclasses import fields

    from nas.train_settings import TrainSettings

    keep = {f.name for f in fields(TrainSettings)}
    return {k: v for k, v in train.items() if k in keep} if isinstance(train, dict) else {}


def resolve(source: str, rank: int = 1, pareto: int | None = None) -> ExportSource:
    path = Path(source)
    if pareto is not None and not path.is_dir():
        raise ExportSourceError(f"--pareto takes a multi-objective search's output folder, not {source!r}")
    if path.is_dir():
        return from_run_folder(path, rank, pareto)
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
