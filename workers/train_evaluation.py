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
from workers.tasks import TASKS
from workers.tasks import reported_metrics as task_metrics
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
        self._task = "classification"

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
            self._task = info.task
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
            if self._augment != "none" and not TASKS[data.task].augments:
                raise EvaluationError(f"--augment {self._augment}: data set {t.dataset!r} is for the {data.task} "
                                      "task, whose targets (masks, boxes) augmentation would not move; use none")
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

    @property
    def task(self) -> str:
        """The data set's task (`workers.tasks`), from its metadata."""
        self.data_info()
        return self._task

    @property
    def default_objective(self) -> str:  # type: ignore[override]
        """The task's main validation score: val_accuracy for classification, val_miou for segmentation, val_map
        for detection and multilabel, val_auc for contrastive pairs."""
        return TASKS[self.task]().objective

    def reported_metrics(self) -> set[str]:
        """What `workers.trainable` reports every epoch (latency_ms only where it is measured): the task's scores
        (`workers.tasks.reported_metrics`) and the rest."""
        out = {"val_loss", "train_loss", "train_seconds", "params", "flops"} | task_metrics(self.task)
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
        task = "" if self.task == "classification" else f" ({self.task} task)"
        return f"{self.cfg.train.dataset}{task}, {self.cfg.train.epochs} epoch(s) per candidate"
