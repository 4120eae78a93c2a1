"""The ``train`` kind of evaluation: each candidate is trained on the search's data set by a Ray trial
(`workers.trainable.train_architecture`); see `nas.evaluation` for the contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas.evaluation import DataInfo, Evaluation, EvaluationError
from workers.data import DatasetError, dataset_info
from workers.trainable import WEIGHTS_FILE, train_architecture


class TrainEvaluation(Evaluation):
    kind = "train"
    weights_file = WEIGHTS_FILE

    def data_info(self) -> DataInfo:
        t = self.cfg.train
        try:
            info = dataset_info(t.dataset, root=t.data_root, seed=t.data_seed)
        except DatasetError as e:
            raise EvaluationError(f"data set {t.dataset!r}: {e}") from None
        return DataInfo(tuple(info.input_shape), int(info.num_classes))

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
