"""The Ray Tune function trainable that runs one DARTS search: a supernet, trained bilevel, one trial.

It is the ``supernet`` kind of evaluation (`SupernetEvaluation`, the `nas.evaluation` contract), which
DARTS' plan (`nas.darts.plan`) runs as a one-proposal search. Config contract (what
`SupernetEvaluation.trial_config` gives)::

    config["supernet"]  the supernet graph, as `nas.graph.to_dict` (mixed nodes; see nas.darts.supernet)
    config["darts"]     `nas.darts.settings.DartsSettings` as a dict (unknown keys fail the trial)
    config["train"]     the search's training settings; only the data keys are used here (dataset,
                        data_root, data_seed, val_fraction, test_fraction, image_size, strict, data_cache)

The worker needs no search space: the supernet graph says everything. It splits the data set's training
split into two seeded halves (weights, alphas; `workers.darts_bilevel.split_indices`: index sets into the one
copy of the data on the device, kept as stored: uint8 images stay uint8 and are standardised per batch there),
and after every epoch
calls ``ray.tune.report`` with the epoch's metrics (epoch, train_loss/accuracy on the weight half,
search_loss/accuracy on the alpha half, val_loss/accuracy of the supernet, lr, epoch_seconds, steps;
tau with Gumbel sampling), status="ok", supernet_params and ``alphas_json`` (variable -> softmax
weights, in candidate order). Checkpoints (every `checkpoint_every` epochs and with the last report)
hold ``supernet.pt`` (state dict), ``search_state.pth`` (optimizers, RNG, history) and
``darts_history.json`` (every epoch's metrics and weights); a trial restarted by Tune resumes from its
last checkpoint.

With ``--gpus-per-trial N`` (N > 1) the trial is `workers.distributed.ddp_trainable` running
`darts_loop_per_worker` on N Ray Train workers (one GPU each; CPUs and gloo in tests): each trains on its slice of
every global batch of both halves, the gradients of weights and alphas all-reduced (`workers.darts_bilevel`), first
and second order, so N workers at batch B take the steps one device takes at batch B. It reports every epoch and
checkpoints the same files (rank 0 writes them), and a Tune retry resumes from its last epoch checkpoint.

A search that fails (a supernet that cannot be built or mismatches the data, a NaN loss, out of memory)
makes one final report with status="failed" (or "oom") and error="<type>: <message>", as `workers.trainable`
does for candidates (`run_trial`); errors raised by Ray while reporting are not caught.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nas.evaluation import DataInfo, Evaluation
from workers.data import InputTransform
from workers.devices import trial_devices
from workers.trainable import _limit_threads, _report, cached_dataset, run_trial, train_settings

SUPERNET_FILE = "supernet.pt"
STATE_FILE = "search_state.pth"
HISTORY_FILE = "darts_history.json"


def darts_search_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: build `config["supernet"]`, search, report every epoch (failures as
    `workers.trainable.run_trial` handles them)."""
    run_trial(_search, config)


def _search(config: dict[str, Any], progress: dict[str, Any], tune) -> None:
    _limit_threads()
    devices = trial_devices()
    progress["device"] = devices.describe()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        _report(tune, metrics, checkpoint_dir)

    run_search(config, progress, devices.device, tune.get_checkpoint(), report)


def darts_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop of a data-parallel DARTS search (`workers.distributed.ddp_trainable`): every
    worker runs the search on its slice of each global batch (`BilevelSearch`'s ``shard``); rank 0 writes the
    checkpoints; Ray Train restores the latest one when the run is started again under the same name."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    progress: dict[str, Any] = {"device": f"{world} DDP workers ({device.type})", "workers": world}

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir and rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)

    run_search(config, progress, device, ray.train.get_checkpoint(), report, shard=(rank, world))


def run_search(config: dict[str, Any], progress: dict[str, Any], device: torch.device, checkpoint,
               report: Callable[[dict[str, Any], str | None], None], shard: tuple[int, int] = (0, 1)) -> None:
    """The search of `config` on `device` (on one device, or as rank ``shard[0]`` of ``shard[1]``), resumed from
    `checkpoint` (a Ray checkpoint, or None); ``report(metrics, checkpoint_dir or None)`` after every epoch, with
    the checkpoint folder every `checkpoint_every` epochs and with the last (written by rank 0 only)."""
    from nas.darts.mixed import build_supernet_module
    from nas.darts.settings import DartsSettings
    from nas.graph import from_dict
    from workers.darts_bilevel import BilevelSearch

    for key in ("supernet", "darts"):
        if key not in config:
            raise KeyError(f"config has no {key!r} (see workers.darts_trainable's docstring)")
    settings = DartsSettings.from_options(config["darts"])
    t = train_settings(config.get("train"))
    g = from_dict(config["supernet"], "config['supernet']")
    data = cached_dataset(t)
    if tuple(g.graph["input_shape"]) != tuple(data.input_shape):
        raise ValueError(f"the supernet's input_shape {g.graph['input_shape']} differs from data set "
                         f"{data.name!r}'s {list(data.input_shape)}")
    torch.manual_seed(settings.seed)
    model = build_supernet_module(g)
    if tuple(model.output_shape) != (data.num_classes,):
        raise ValueError(f"the supernet's output shape {list(model.output_shape)} does not match data set "
                         f"{data.name!r}'s {data.num_classes} classes")
    if shard[1] > 1 and device.type == "cuda":  # batch statistics over the global batch (gloo has no SyncBN)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    x = data.inputs[0]
    train, val = data.splits["train"].gather(), data.splits["val"].gather()  # as stored: uint8 images stay uint8
    search = BilevelSearch.on_training_split(
        model, torch.from_numpy(train[x]), torch.from_numpy(train["y"]), settings, device,
        x_val=torch.from_numpy(val[x]), y_val=torch.from_numpy(val["y"]),
        prepare=InputTransform(data.preprocessing, device, len(data.input_shape)), shard=shard)
    progress["supernet_params"] = sum(p.numel() for p in search.weights)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            model.load_state_dict(torch.load(Path(d) / SUPERNET_FILE, map_location=device, weights_only=True))
            search.load_state_dict(torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True))
        progress["resumed_from_epoch"] = search.epoch
    if search.done and search.history:  # resumed from the last checkpoint: report the result again
        last = {k: v for k, v in search.history[-1].items() if k != "weights"}
        _checkpointed_report(report, model, search, {**last, "status": "ok", **progress,
                                                     "alphas_json": json.dumps(search.history[-1]["weights"])},
                             shard[0] == 0)
        return
    every = settings.checkpoint_every
    while not search.done:
        progress["epoch"] = search.epoch + 1
        metrics = {**search.run_epoch(), "status": "ok", **progress,
                   "alphas_json": json.dumps(search.history[-1]["weights"])}
        if search.done or (every > 0 and search.epoch % every == 0):
            _checkpointed_report(report, model, search, metrics, shard[0] == 0)
        else:
            report(metrics, None)


def _checkpointed_report(report, model, search, metrics: dict[str, Any], writes: bool) -> None:
    """`report` with a checkpoint folder holding the supernet, the search state and the history (written where
    `writes`: the one rank of a data-parallel search that checkpoints)."""
    with tempfile.TemporaryDirectory(prefix="graphnas-darts-") as d:
        if writes:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(d) / SUPERNET_FILE)
            torch.save(search.state_dict(), Path(d) / STATE_FILE)
            (Path(d) / HISTORY_FILE).write_text(json.dumps(search.history))
        report(metrics, d)


class SupernetEvaluation(Evaluation):
    """One DARTS supernet search as an evaluation: the proposal's architecture is the supernet graph, the
    DARTS settings are the search's strategy options; the trial reports every epoch (logged by the
    driver through `epoch_line`) and checkpoints ``darts_history.json`` with its last report."""

    kind = "supernet"
    weights_file = SUPERNET_FILE
    data_keys = ("dataset", "data_root", "data_seed", "val_fraction", "test_fraction", "image_size", "strict",
                 "data_cache")

    def settings(self):
        from nas.darts.settings import DartsSettings

        return DartsSettings.from_options(self.cfg.strategy_options, seed=self.cfg.seed)

    def check(self) -> None:
        from nas.evaluation import EvaluationError, get_evaluation

        try:
            settings = self.settings()
        except (TypeError, ValueError) as e:
            raise EvaluationError(str(e)) from None
        gpus = self.cfg.gpus_per_trial
        if gpus > 1 and settings.batch_size < gpus:
            raise EvaluationError(f"--gpus-per-trial {gpus:g}: the DARTS batch_size {settings.batch_size} (the global "
                                  f"batch, which the {gpus:g} GPUs share) is smaller than the number of GPUs")
        self.data_info()
        task = get_evaluation(self.cfg, "train").task
        if task != "classification":
            raise EvaluationError(f"data set {self.cfg.train.dataset!r} is for the {task} task; the DARTS supernet "
                                  "trains classification only (search it with random, evolution or combo)")

    def data_info(self) -> DataInfo:
        from nas.evaluation import get_evaluation

        return get_evaluation(self.cfg, "train").data_info()

    def trial_config(self, proposal) -> dict[str, Any]:
        import dataclasses

        from nas.graph import to_dict

        train = {k: v for k, v in dataclasses.asdict(self.cfg.train).items() if k in self.data_keys}
        return {"supernet": to_dict(proposal.arch), "darts": self.settings().to_dict(), "train": train}

    def trainable(self):
        gpus = self.cfg.gpus_per_trial
        if gpus > 1:  # the supernet on several GPUs: data-parallel Ray Train workers (workers.distributed)
            from workers.distributed import ddp_trainable

            return ddp_trainable(int(gpus), self.cfg.cpus_per_trial, use_gpu=True, loop=darts_loop_per_worker)
        return darts_search_trial

    def describe(self) -> str:
        return f"a DARTS supernet on {self.cfg.train.dataset}, {self.settings().epochs} search epoch(s)"

    def epoch_line(self, result: dict[str, Any]) -> str | None:
        if result.get("status") != "ok":
            return None
        parts = [f"[darts] epoch {result.get('epoch')}/{self.settings().epochs}"]
        for key in ("train_accuracy", "search_accuracy", "val_accuracy"):
            if isinstance(result.get(key), float):
                parts.append(f"{key} {result[key]:.4f}")
        parts.append(f"{result.get('epoch_seconds', 0.0):.1f}s")
        return " | ".join(parts)

    def history(self, checkpoint_dir: str | Path) -> list[dict[str, Any]]:
        """Every epoch's metrics and architecture weights, from a checkpoint the trial wrote."""
        return json.loads((Path(checkpoint_dir) / HISTORY_FILE).read_text())
