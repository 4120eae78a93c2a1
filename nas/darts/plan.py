"""``nas search --strategy darts``: a short plan over the search driver's public steps (`nas.search`).

1. **Supernet search**: a one-proposal search whose evaluation is the ``supernet`` kind
   (`workers.darts_trainable.SupernetEvaluation`: one GPU with ``--gpus-per-trial 1``, else the trial's
   CPUs), journaled in the run folder's ``supernet/`` sub-folder like any search; the driver records
   where its checkpoint is. ``darts_alphas.json`` holds every epoch's metrics and architecture weights
   per op choice and ``darts_alphas.png`` plots them;
2. **derive**: the final weights give the discrete assignment (`nas.darts.derive`); ``derived.json``
   holds it, the architecture, its op choices and their share of parameter-free ops (skip, pooling,
   none: DARTS' known collapse, logged as a warning at 50% or more);
3. **retrain**: an ordinary one-proposal search of the derived assignment (`FixedAssignment`) with the
   search's training settings (``--epochs``, ...), as the paper's evaluation phase (at other space
   options with the strategy option ``retrain_space_options``, e.g. more cells); its result is journaled
   in ``evaluations.jsonl``, so ``best.json``, ``best_weights.pt``, ``leaderboard.md`` and
   ``best_so_far.png`` are written as for the other strategies.

``--budget`` is not used (DARTS trains one supernet and one derived network). ``--resume`` skips the
steps whose results are on file: a finished search (``darts_alphas.json``) is not run again, and a
journaled retraining is not repeated; an unfinished search starts over.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.builder import count_params
from nas.config import SearchConfig
from nas.darts.derive import derive, op_choice_report, parameter_free_share
from nas.darts.settings import DartsSettings
from nas.darts.supernet import Supernet, build_supernet
from nas.graph import arch_id, to_dict
from nas.io import atomic_write_json
from nas.loop import Constraints
from nas.registry import get_space
from nas.results import RunFolder
from nas.search import SearchError, SearchOutcome, evaluation_of, search
from nas.strategies.fixed import FixedAssignment

ALPHAS_FILE = "darts_alphas.json"
ALPHAS_PLOT = "darts_alphas.png"
DERIVED_FILE = "derived.json"
SUPERNET_FOLDER = "supernet"
COLLAPSE_WARNING = 0.5


def run_darts(cfg: SearchConfig, folder: RunFolder, log: Callable[[str], None] = print) -> SearchOutcome:
    """Search, derive and retrain (module docstring)."""
    try:
        settings = DartsSettings.from_options(cfg.strategy_options, seed=cfg.seed)
    except (TypeError, ValueError) as e:
        raise SearchError(str(e)) from None
    space = get_space(cfg.space)
    info = evaluation_of(cfg, "train").data_info()
    shape, n_classes = info.input_shape, info.num_classes
    net = build_supernet(space, settings.assignment, num_classes=n_classes, input_shape=shape,
                         options=cfg.space_options, partial_channels=settings.partial_channels,
                         affine=settings.affine)
    atomic_write_json(folder.config_file, cfg.to_dict())
    alphas_file = folder.path / ALPHAS_FILE
    saved = json.loads(alphas_file.read_text()) if alphas_file.exists() else {}
    if saved.get("finished"):
        log(f"resuming {folder.path}: the DARTS search is on file ({len(saved['epochs'])} epochs)")
        history = saved["epochs"]
    else:
        history = _search_supernet(cfg, settings, net, folder, log)
        history = [{**h, "derived_param_free_share": _share(net, h["weights"], settings, n_classes, shape, cfg)}
                   for h in history]
        atomic_write_json(alphas_file, _alphas_record(net, history))
    plot_alphas(net, history, folder.path / ALPHAS_PLOT)

    assignment = derive(net, history[-1]["weights"], settings.exclude_none)
    retrain = dataclasses.replace(cfg, budget=1, space_options={**cfg.space_options,
                                                                **settings.retrain_space_options})
    g = space.graph(assignment, num_classes=n_classes, input_shape=shape, **retrain.space_options)
    report = op_choice_report(space, g, assignment)
    share = parameter_free_share(report)
    derived = {
        "space": space.name, "assignment": assignment, "arch_id": arch_id(g), "params": count_params(g),
        "parameter_free_share": share,
        "parameter_free_choices": sorted(v for v, r in report.items() if r["params"] == 0),
        "op_choices": report, "weights": history[-1]["weights"], "values": net.values,
        "search_epochs": len(history), "space_options": retrain.space_options, "settings": settings.to_dict(),
        "arch": to_dict(g),
    }
    atomic_write_json(folder.path / DERIVED_FILE, derived)
    log(f"derived architecture {derived['arch_id']}: {derived['params']:,} parameters; "
        f"{len(derived['parameter_free_choices'])} of {len(report)} op choices are parameter-free "
        f"(skip, pooling, none): share {share:.2f}")
    if share >= COLLAPSE_WARNING:
        log(f"warning: the derived architecture is {share:.0%} parameter-free ops, DARTS' known collapse onto "
            "skip connections and pooling; consider fewer search epochs, partial_channels=4 or sampling=gumbel")

    too_large = Constraints(retrain.max_params, retrain.max_flops).violation(g)
    if too_large:
        raise SearchError(f"the derived architecture exceeds the search's limits ({too_large}); it is in "
                          f"{folder.path / DERIVED_FILE}")
    if folder.records():
        log(f"resuming {folder.path}: the derived architecture's training is on record")
    else:
        log(f"training the derived architecture from scratch: {cfg.train.epochs} epoch(s) on {cfg.train.dataset}"
            + (f", space options {retrain.space_options}" if settings.retrain_space_options else ""))
    return search(retrain, folder, FixedAssignment(space, assignment, seed=cfg.seed), evaluation_of(retrain), log,
                  write_config=False)


def _search_supernet(cfg: SearchConfig, settings: DartsSettings, net: Supernet, folder: RunFolder,
                     log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The supernet search as a one-proposal search in ``supernet/``; returns its per-epoch history."""
    sub = RunFolder(folder.path / SUPERNET_FOLDER)
    for stale in (sub.evaluations_file, sub.strategy_file, sub.checkpoints_file):
        stale.unlink(missing_ok=True)  # an unfinished search starts over (module docstring)
    one = dataclasses.replace(cfg, budget=1, out=str(sub.path), asha=False, max_params=None, max_flops=None)
    n_mixed = sum(len(v) for v in net.nodes.values())
    log(f"DARTS on {cfg.space}: {len(net.values)} op choices relaxed ({n_mixed} mixed nodes"
        + (f", all edges of {net.relaxed.name!r}" if net.relaxation is not None else "")
        + f"), {settings.epochs} search epoch(s), order {settings.order}, one trial -> {folder.path}")
    fixed = FixedAssignment(net.target, net.target.complete(settings.assignment or {}), seed=cfg.seed)
    evaluation = evaluation_of(one, "supernet")
    outcome = search(one, sub, fixed, evaluation, lambda line: _quiet(line, log), build=lambda a: net.graph,
                     session="darts")
    rec = outcome.records[-1] if outcome.records else None
    if rec is None or rec.get("status") != "ok":
        m = (rec or {}).get("metrics", {})
        raise SearchError(f"the DARTS search failed at epoch {m.get('epoch')}: {(rec or {}).get('error')}")
    ckpt = sub.checkpoint_of(rec["trial_id"])
    if ckpt is None:
        raise SearchError(f"the DARTS search trial ended without a checkpoint; see the Ray trial logs in {sub.path}")
    return evaluation.history(ckpt["checkpoint"])


def _quiet(line: str, log: Callable[[str], None]) -> None:
    """The supernet search's own lines, without the one-evaluation progress line of the driver."""
    if not line.startswith("[1/1]"):
        log(line)


def _share(net: Supernet, weights: dict, settings: DartsSettings, n_classes: int, shape: tuple,
           cfg: SearchConfig) -> float:
    assignment = derive(net, weights, settings.exclude_none)
    g = net.target.graph(assignment, num_classes=n_classes, input_shape=shape, **cfg.space_options)
    return parameter_free_share(op_choice_report(net.target, g, assignment))


def _alphas_record(net: Supernet, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"space": net.target.name, "relaxed_space": net.relaxed.name, "finished": True,
            "values": net.values, "ops": net.ops, "epochs": history}


def plot_alphas(net: Supernet, history: list[dict[str, Any]], path: Path, max_panels: int = 60) -> Path | None:
    """One panel per op choice (its alternatives' weights over epochs) plus the derived network's share of
    parameter-free ops, when known."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variables = list(net.values)[:max_panels]
    share = [h.get("derived_param_free_share") for h in history]
    panels = len(variables) + (share[0] is not None)
    cols = min(6, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    flat = list(axes.flat)
    k = 0
    if share[0] is not None:
        ax = flat[0]
        ax.plot(epochs, share, marker=".", color="black")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("derived: param-free share", fontsize=8)
        k = 1
    for var in variables:
        ax = flat[k]
        k += 1
        for i, value in enumerate(net.values[var]):
            ax.plot(epochs, [h["weights"][var][i] for h in history], label=str(value))
        ax.set_title(var, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in flat[k:]:
        ax.axis("off")
    labels = {}
    for ax in flat:
        for line in ax.get_lines():
            labels.setdefault(line.get_label(), line)
    fig.legend([labels[name] for name in labels if not name.startswith("_")],
               [name for name in labels if not name.startswith("_")], loc="lower center",
               ncol=min(8, len(labels)), fontsize=7)
    more = f" (first {max_panels} of {len(net.values)})" if len(net.values) > max_panels else ""
    fig.suptitle(f"DARTS architecture weights (softmax) per op choice over search epochs{more}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path
