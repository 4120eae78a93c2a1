"""Workers: data sets, the training loop, and the Ray Tune trainable that trains one candidate."""

from workers.data import DatasetError, DatasetSplits, load_dataset
from workers.trainable import TRAIN_DEFAULTS, load_trained_model, train_architecture, trial_resources
from workers.training import (
    CandidateFailed,
    Trainer,
    TrainSettings,
    evaluate,
    measure_latency,
    train_candidate,
)

__all__ = [
    "TRAIN_DEFAULTS", "CandidateFailed", "DatasetError", "DatasetSplits", "TrainSettings", "Trainer",
    "evaluate", "load_dataset", "load_trained_model", "measure_latency", "train_architecture",
    "train_candidate", "trial_resources",
]
