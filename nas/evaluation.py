"""The evaluation contract: what a kind of evaluation gives the driver, whichever kind it is.

A kind of evaluation is what it costs to score an architecture: train it (``train``), look it up in a
benchmark table (``table``), or train a DARTS supernet (``supernet``). The kinds live in `workers/`
and are found through the one table `EVALUATIONS` (import paths, so importing `nas` never imports
`workers`); the driver calls them only through `Evaluation`:

- `check()`: the settings are usable (files exist, the space fits), before Ray starts;
- `data_info()`: the network's input shape and number of classes, from metadata (never by loading the
  whole data set);
- `trial_config(proposal)`: a Ray trial's config for one proposal;
- `trainable()`: the Ray Tune function trainable that evaluates such a config and reports metrics with
  ``status`` ("ok" / "failed") and the search metric;
- `in_process()`: optionally, a function ``proposal -> nas.loop.Outcome`` that evaluates here, without
  Ray (``nas bench``); None where the kind needs a worker;
- `default_objective`: what a search optimises when it names no objective (``val_accuracy:max`` for the
  built-in kinds; a task whose main metric is another, say ``val_miou:max``, says so here), and
  `reported_metrics()`: the metrics it reports, which objectives and constraints may read (`nas.objectives`);
- `retrain(arch, out, workers, use_gpu)`: train one architecture to the end outside a search (``nas train``),
  on this process's device or data-parallel on several Ray Train workers; None where the kind trains nothing;
- `describe()`: what an evaluation is, for the log line; `notes()`: lines about the data for the log, once
  (e.g. the image size chosen, files skipped); `epoch_line(result)`: a progress line for an intermediate result,
  or None; `weights_file`: the checkpoint file that holds a trained model's
  weights, if the kind trains one.

Errors in the settings raise `EvaluationError`, whose message names the setting or file at fault.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.config import SearchConfig
    from nas.loop import Outcome, Proposal

EVALUATIONS: dict[str, str] = {
    "train": "workers.train_evaluation:TrainEvaluation",
    "table": "workers.tabular:TableEvaluation",
    "supernet": "workers.darts_trainable:SupernetEvaluation",
}


class EvaluationError(ValueError):
    """An evaluation's settings cannot work; the message names the setting or file at fault."""


@dataclass(frozen=True)
class DataInfo:
    """What a network needs to know of its data: input shape (no batch dimension) and classes."""

    input_shape: tuple[int, ...]
    num_classes: int


class Evaluation:
    """Base of the kinds: holds the search's config; the defaults suit a kind that trains networks."""

    kind = "evaluation"
    weights_file: str | None = None
    default_objective = "val_accuracy:max"

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg

    def reported_metrics(self) -> set[str]:
        """The metrics a successful evaluation reports (default: the default objective's)."""
        return {self.default_objective.partition(":")[0]}

    def check(self) -> None:
        """Raise `EvaluationError` unless the settings can work (default: `data_info` succeeds)."""
        self.data_info()

    def data_info(self) -> DataInfo:
        raise NotImplementedError

    def trial_config(self, proposal: Proposal) -> dict[str, Any]:
        from nas.graph import to_dict

        return {"assignment": proposal.assignment, "arch_id": proposal.arch_id, "arch": to_dict(proposal.arch),
                "train": dataclasses.asdict(self.cfg.train)}

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        raise NotImplementedError

    def in_process(self) -> Callable[[Proposal], Outcome] | None:
        return None

    def retrain(self, arch: Any, out: Any, workers: int = 1, use_gpu: bool = False) -> dict[str, Any] | None:
        """Train `arch` with the search's training settings, writing its weights into folder `out`; returns
        the final metrics (None: this kind trains no network)."""
        return None

    def describe(self) -> str:
        return self.kind

    def notes(self) -> list[str]:
        return []

    def epoch_line(self, result: dict[str, Any]) -> str | None:
        return None


def evaluation_kind(cfg: SearchConfig) -> str:
    """The kind a search's settings ask for: ``table`` when a table is given, else ``train``."""
    return "table" if cfg.table is not None else "train"


def get_evaluation(cfg: SearchConfig, kind: str | None = None) -> Evaluation:
    """The evaluation of `kind` (default: `evaluation_kind(cfg)`) for the search `cfg`."""
    kind = evaluation_kind(cfg) if kind is None else kind
    try:
        module, attr = EVALUATIONS[kind].split(":")
    except KeyError:
        raise EvaluationError(f"unknown kind of evaluation {kind!r}; known: {sorted(EVALUATIONS)}") from None
    return getattr(importlib.import_module(module), attr)(cfg)
