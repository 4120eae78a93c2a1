"""The ``train`` kind of evaluation: each candidate is trained on the search's data set by a Ray trial
(`workers.trainable.train_architecture`); see `nas.evaluation` for the contract.

`check()` reads the data set's metadata (shape, classes, notes such as the image size chosen) and, where the
search runs on a private Ray instance on this machine (no ``--address``), also decodes the data set into this
node's cache before Ray starts: the trials then find it ready, and a data error (an unreadable image with
``strict``, NaN inputs) stops the search before any trial. On a cluster each node's first trial builds its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.evaluation import DataInfo, Evaluation, EvaluationError
from nas.train_settings import SettingsError
from workers.data import DatasetError, dataset_info, load_dataset
from workers.trainable import WEIGHTS_FILE, dataset_options, train_architecture
from workers.training import augment_spec


class TrainEvaluation(Evaluation):
    kind = "train"
    weights_file = WEIGHTS_FILE

    def __init__(self, cfg):
        super().__init__(cfg)
        self._info = None
        self._notes: list[str] = []
        self._augment: str | None = None

    def _options(self) -> dict[str, Any]:
        return dataset_options(self.cfg.train.to_dict())

    def data_info(self) -> DataInfo:
        if self._info is None:
            t = self.cfg.train
            try:
                info = dataset_info(t.dataset, **self._options())
            except DatasetError as e:
                raise EvaluationError(f"data set {t.dataset!r}: {e}") from None
            self._info = DataInfo(tuple(info.input_shape), int(info.num_classes))
            self._notes = [f"data: {n}" for n in info.notes]
        return self._info

    def check(self) -> None:
        self.data_info()
        if self.cfg.address not in (None, "", "local"):
            return  # the trials run on other nodes, each of which decodes the data into its own cache
        t = self.cfg.train
        built: list[str] = []
        try:
            data = load_dataset(t.dataset, **self._options(), log=built.append)
            self._augment = augment_spec(t, data)
        except DatasetError as e:
            raise EvaluationError(f"data set {t.dataset!r}: {e}") from None
        except SettingsError as e:
            raise EvaluationError(str(e)) from None
        sizes = data.sizes()
        self._notes = [*(built or [f"data: {n}" for n in data.notes]),
                       f"data: {data.name} in this node's cache: train {sizes['train']}, val {sizes['val']}, "
                       f"test {sizes['test']} examples of shape {data.input_shape}; augmentation {self._augment}"]

    def notes(self) -> list[str]:
        return list(self._notes)

    def reported_metrics(self) -> set[str]:
        """What `workers.trainable` reports every epoch (latency_ms only where it is measured)."""
        out = {"val_accuracy", "val_loss", "train_accuracy", "train_loss", "train_seconds", "params", "flops"}
        return out | ({"latency_ms"} if self.cfg.train.latency_reps > 0 else set())

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        gpus = self.cfg.gpus_per_trial
        if gpus > 1:  # one candidate on several GPUs: DDP through Ray Train (workers.distributed)
            from workers.distributed import ddp_trainable

            return ddp_trainable(int(gpus), self.cfg.cpus_per_trial, use_gpu=True)
        return train_architecture

    def retrain(self, arch, out, workers: int = 1, use_gpu: bool = False) -> dict[str, Any]:
        from workers.distributed import retrain

        return retrain(arch, out, self.cfg, workers=workers, use_gpu=use_gpu)

    def describe(self) -> str:
        return f"{self.cfg.train.dataset}, {self.cfg.train.epochs} epoch(s) per candidate"
