"""What a trial trains a network for: the loss and the score of a batch, the piece of the training loop that
depends on what an example is.

A batch is a dict of tensors, one per field of the data set (`workers.data.batches`); the network takes the
task's `input` field (prepared on the device by the trainer) and the task reads the others. A task has:

- ``input``: the field the network takes;
- ``loss(output, batch, label_smoothing)``: the mean training loss of the main output (the trainer adds each
  auxiliary head's ``loss`` times ``aux_weight``);
- ``loss_sum(output, batch)``: (sum of the evaluation loss, number of items it is over);
- ``score(output, batch)``: (sum of the score, number of items), the score being what the search ranks by
  (reported as ``accuracy``: ``val_accuracy``, ``test_accuracy``);
- ``check(output_shape, data)``: raise ValueError unless the network's output suits the data set.

`Classification` (one label per example, cross entropy, accuracy) is the task of every built-in data set. A data
set names its task (``DatasetSplits.task``, from the source's metadata); `TASKS` maps names to tasks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Classification:
    """One class label per example (field `target`, int64 0..K-1) from the network's (B, K) logits."""

    def __init__(self, input: str = "x", target: str = "y"):
        self.input, self.target = input, target

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(output, batch[self.target], label_smoothing=label_smoothing)

    def loss_sum(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        y = batch[self.target]
        return F.cross_entropy(output.float(), y, reduction="sum"), len(y)

    def score(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        y = batch[self.target]
        return (output.argmax(1) == y).sum(), len(y)

    def check(self, output_shape: tuple[int, ...], data: Any) -> None:
        if tuple(output_shape) != (data.num_classes,):
            raise ValueError(f"the architecture's output shape {list(output_shape)} does not match data set "
                             f"{data.name!r}'s {data.num_classes} classes")


TASKS: dict[str, type] = {"classification": Classification}


def task_for(data: Any) -> Classification:
    """The task of data set `data` (a `DatasetSplits`), reading its input field."""
    try:
        cls = TASKS[data.task]
    except KeyError:
        raise ValueError(f"data set {data.name!r} asks for task {data.task!r}; known: {sorted(TASKS)}") from None
    return cls(input=data.inputs[0])
