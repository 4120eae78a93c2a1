"""One candidate on several GPUs: data-parallel training (DistributedDataParallel) through Ray Train's
`TorchTrainer`, its workers on one node or several.

`run_distributed` starts ``num_workers`` Ray Train workers (one GPU each, or CPUs with the gloo backend), each
running `train_loop_per_worker`: the same model (``ray.train.torch.prepare_model``: moved to the worker's
device and wrapped in DDP; batch norm made ``SyncBatchNorm`` on GPUs, so its statistics are the global batch's
as on one device), the same global batches in the same order (one seeded permutation), each worker training on
its slice (`workers.training.Trainer`'s ``shard``): 2 workers at batch B/2 take the steps 1 worker takes at
batch B. Rank 0 reports every epoch (its slice's training loss, the validation of the whole split, which every
rank evaluates on identical weights) and the final weights (the unwrapped model's state dict, loadable into
`nas.build(graph)`).

`ddp_trainable(num_workers, cpus_per_worker, use_gpu, loop)` is the Ray Tune trainable of a search with
``--gpus-per-trial N`` (N > 1): the Tune trial itself only waits for its `TorchTrainer` (its epoch reports are
forwarded to Tune by Ray's ``TuneReportCallback``) and reports the final result with the final checkpoint. `loop`
is the per-worker loop: a candidate's (`train_loop_per_worker`) or the DARTS supernet's
(`workers.darts_trainable.darts_loop_per_worker`). Its failures are handled as a single-device trial's
(`workers.trainable.run_trial`).

Resume: the workers checkpoint every ``checkpoint_every`` epochs (and at the end) into Ray Train's run, named
after the Tune trial; a Tune retry of the trial starts a run of the same name, which Ray Train resumes from its
latest checkpoint (``ray.train.get_checkpoint()``): the weights, the training state, and each rank's own random
streams (`RANK_RNG_FILE`), so it continues as the interrupted run would have.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.tasks import FAILED_METRICS
from workers.trainable import (
    WEIGHTS_FILE,
    _final,
    cached_dataset,
    load_checkpoint,
    run_trial,
    train_settings,
    write_checkpoint,
)

RANK_RNG_FILE = "rng_rank{rank}.pth"  # a rank's own random streams in a checkpoint (every rank writes its own)
_RANK_STATE = ("augment_generator", "cpu_rng", "cuda_rng")  # the Trainer state that differs between ranks


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: `config` is a trial config (``arch``, ``train``)."""
    import ray.train
    import ray.train.torch

    from nas.builder import build
    from nas.drop_path import drop_path_nodes
    from nas.graph import from_dict, to_json
    from nas.train_settings import TrainSettings
    from workers.devices import configure_backends
    from workers.training import Trainer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t = train_settings(config.get("train"))
    settings = TrainSettings(**t)
    if settings.batch_size < world:
        raise ValueError(f"batch size {settings.batch_size} is smaller than the {world} workers sharing each batch")
    g = from_dict(config["arch"], "config['arch']")
    device = ray.train.torch.get_device()
    configure_backends(settings.deterministic)
    data = cached_dataset(t)
    torch.manual_seed(settings.seed)
    model = build(g)
    if device.type == "cuda":  # batch statistics over the global batch, as on one device (gloo has no SyncBN)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        rank_of_batch = len(data.input_shape) + 1
        if rank_of_batch in (4, 5) and settings.channels_last is not False:
            fmt = torch.channels_last if rank_of_batch == 4 else torch.channels_last_3d
            model = model.to(device, memory_format=fmt)  # before DDP takes its gradient views
    model = ray.train.torch.prepare_model(model)
    trainer = Trainer(model, data, settings, device, shard=(rank, world), drop_path_nodes=drop_path_nodes(g))
    resumed = {}
    checkpoint = ray.train.get_checkpoint()  # Ray Train's latest of this run: a Tune retry of the trial
    if checkpoint is not None:
        with checkpoint.as_directory() as d:  # with this rank's own augmentation and RNG streams
            load_checkpoint(Path(d), trainer, device, own_state=Path(d) / RANK_RNG_FILE.format(rank=rank))
        resumed = {"resumed_from_epoch": trainer.epoch}
    arch_json = to_json(g)
    every = int(t["checkpoint_every"])
    if trainer.done and trainer.history:  # resumed from the final checkpoint: report the final result again
        metrics = {**trainer.history[-1], "status": "ok", "workers": world, **resumed}
        _report_checkpoint(metrics, trainer, data, arch_json, final=True)
        return
    while not trainer.done:
        metrics = {**trainer.run_epoch(), "status": "ok", "workers": world, **resumed}
        if trainer.done:
            _report_checkpoint(metrics, trainer, data, arch_json, final=True)
        elif every > 0 and trainer.epoch % every == 0:
            _report_checkpoint(metrics, trainer, data, arch_json, final=False)
        else:
            ray.train.report(metrics)


def _report_checkpoint(metrics: dict[str, Any], trainer, data, arch_json: str, final: bool) -> None:
    """``ray.train.report`` with a checkpoint: rank 0 writes the unwrapped model's weights, the training state,
    the architecture and the preprocessing; every rank its own RNG streams (`RANK_RNG_FILE`), so that a resumed run
    continues as this one would have. With `final`, the test split's scores and the loss curve join the metrics."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    if final:
        metrics.update(_final(trainer, data), loss_curve=json.dumps([h["train_loss"] for h in trainer.history]))
    with tempfile.TemporaryDirectory(prefix="graphnas-ddp-") as d:
        state = trainer.state_dict()
        torch.save({k: state[k] for k in _RANK_STATE}, Path(d) / RANK_RNG_FILE.format(rank=rank))
        if rank == 0:
            write_checkpoint(Path(d), trainer, arch_json, data, state=state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run_distributed(config: dict[str, Any], num_workers: int, *, use_gpu: bool, cpus_per_worker: float = 1.0,
                    storage_path: str | None = None, storage_filesystem: Any = None, name: str | None = None,
                    callbacks: list | None = None,
                    loop: Callable[[dict[str, Any]], None] = train_loop_per_worker):
    """Run `loop` (default: train the trial config's architecture, `train_loop_per_worker`; the DARTS supernet's is
    `workers.darts_trainable.darts_loop_per_worker`) on `num_workers` Ray Train workers; returns Ray Train's
    ``Result`` (``metrics``: rank 0's last report; ``checkpoint``: the last one). A run started again under the same
    `name` and storage resumes from its latest checkpoint (Ray Train gives it to the loop)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        loop, train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             callbacks=callbacks or []))
    return trainer.fit()


def ddp_trainable(num_workers: int, cpus_per_worker: float, use_gpu: bool = True,
                  loop: Callable[[dict[str, Any]], None] = train_loop_per_worker) -> Callable[[dict], None]:
    """The Ray Tune function trainable of a trial trained by `loop` on `num_workers` GPUs (see the module
    docstring; `run_distributed`)."""

    def ddp_trial(config: dict[str, Any]) -> None:
        run_trial(_ddp_trial, {**config, "_workers": (num_workers, cpus_per_worker, use_gpu, loop)},
                  dict(FAILED_METRICS))

    return ddp_trial


def _ddp_trial(config: dict[str, Any], progress: dict[str, Any], tune) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    num_workers, cpus, use_gpu, loop = config.pop("_workers")
    if "arch" in config:  # a candidate (the supernet's loop reports its own size)
        from nas.builder import count_flops, count_params
        from nas.graph import from_dict

        g = from_dict(config["arch"], "config['arch']")
        progress.update(params=count_params(g), flops=count_flops(g))
    progress["device"] = f"{num_workers} DDP workers"
    storage = tune.get_context().get_storage()
    # the same name on a Tune retry of this trial (its id stays): Ray Train then resumes from the latest checkpoint
    result = run_distributed(config, num_workers, use_gpu=use_gpu, cpus_per_worker=cpus,
                             storage_path=storage.storage_fs_path, storage_filesystem=storage.storage_filesystem,
                             name=f"{storage.experiment_dir_name}-ddp-{tune.get_context().get_trial_id()}",
                             callbacks=[TuneReportCallback()], loop=loop)
    metrics = {k: v for k, v in result.metrics.items() if k != "checkpoint_path"}
    tune.report({**metrics, **progress, "epoch": metrics.get("epoch", 0)}, checkpoint=result.checkpoint)


def retrain(arch: Any, out: str | Path, cfg: Any, workers: int = 1, use_gpu: bool = False) -> dict[str, Any]:
    """Train `arch` (an ArchGraph) with `cfg.train` to the end (``nas train``): here on this process's device with
    one worker, else data-parallel on `workers` Ray Train workers (GPUs with `use_gpu`, else CPUs and gloo) of the
    Ray cluster at ``cfg.address`` (default: a private local instance). Writes ``weights.pt`` (loadable into
    ``nas.build(arch)``), ``arch.json``, ``preprocessing.json`` and ``metrics.json`` into `out`."""
    import dataclasses
    import shutil

    from nas.graph import to_dict, to_json
    from nas.io import atomic_write_json
    from nas.preprocessing import PREPROCESSING_FILE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"arch": to_dict(arch), "train": dataclasses.asdict(cfg.train)}
    if workers <= 1:
        metrics = _train_here(config, out)
    else:
        from nas.ray_cluster import connect_ray, release_ray

        print(connect_ray(cfg.address), flush=True)
        try:
            result = run_distributed(config, workers, use_gpu=use_gpu, cpus_per_worker=cfg.cpus_per_trial,
                                     storage_path=str((out / "ray").resolve()), name="train")
            with result.checkpoint.as_directory() as d:
                for name in (WEIGHTS_FILE, PREPROCESSING_FILE):
                    if (Path(d) / name).is_file():
                        shutil.copyfile(Path(d) / name, out / ("weights.pt" if name == WEIGHTS_FILE else name))
            metrics = {k: v for k, v in result.metrics.items() if k != "checkpoint_path"}
        finally:
            release_ray()
    (out / "arch.json").write_text(to_json(arch))
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _train_here(config: dict[str, Any], out: Path) -> dict[str, Any]:
    from nas.builder import build
    from nas.drop_path import drop_path_nodes
    from nas.graph import from_dict
    from nas.preprocessing import PREPROCESSING_FILE
    from nas.train_settings import TrainSettings
    from workers.training import Trainer, default_device

    t = train_settings(config["train"])
    device = default_device()
    data = cached_dataset(t)
    torch.manual_seed(t["seed"])
    g = from_dict(config["arch"])
    trainer = Trainer(build(g), data, TrainSettings(**t), device, drop_path_nodes=drop_path_nodes(g))
    while not trainer.done:
        metrics = trainer.run_epoch()
        main = f"val_{trainer.task.metric}"
        print(f"epoch {metrics['epoch']}: train_loss {metrics['train_loss']:.4f}, {main} {metrics[main]:.4f}",
              flush=True)
    metrics = {**trainer.history[-1], **_final(trainer, data), "device": str(device), "workers": 1}
    torch.save({k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")
    if data.preprocessing is not None:
        (out / PREPROCESSING_FILE).write_text(json.dumps(data.preprocessing))
    return metrics
