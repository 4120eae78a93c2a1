"""What a trial trains a network for: the loss and the scores of a batch, the piece of the training loop that
depends on what an example is.

A batch is a dict of tensors, one per field of the data set (`workers.data.batches`); the network takes the
task's `inputs` fields in order (those among `images` prepared on the device by the trainer: scaled, augmented,
standardised; the others, e.g. proposal boxes, as float32) and the task reads the others. A task has:

- ``inputs`` / ``images``: the fields the network takes, and which of them are images;
- ``loss(output, batch, label_smoothing)``: the mean training loss of the main output (the trainer adds each
  auxiliary head's ``loss`` times ``aux_weight``);
- ``loss_sum(output, batch)``: (sum of the evaluation loss, number of items it is over);
- ``scorer()``: a fresh `Scorer` that adds up batches (``add(output, batch)``) and gives the split's scores
  (``result()``: a dict, ``metrics`` in order, the first, ``metric``, being what the search ranks by: reported
  as ``val_<name>`` / ``test_<name>``, and ``train_<name>`` where ``train_scored``);
- ``objective``: the search's default objective, ``val_<metric>:max``;
- ``augments``: whether training may augment the images (False where augmentation would move pixels but not
  the masks or boxes that go with them);
- ``check(output_shape, data)``: raise ValueError unless the network's output suits the data set;
- ``test_extras(model, data, device)``: further test metrics computed once at the end (the contrastive task's
  tracking success rate), default none.

The tasks (losses and metrics from `nas.tasks`, the functions an exported train.py copies):

- ``classification``: one label per example (field ``y``), cross entropy, ``accuracy``;
- ``contrastive``: Siamese pairs (``x``, ``x2``, ``y`` = 1 for the same class), the marginal contrastive loss
  with margin sigma = 1, ``auc`` (ROC AUC of the matching score f(x_j) . f(x_k)) and ``pair_accuracy``
  (positive when D^2 < sigma / 2); at the end, ``success_rate`` of tracking on generated ``digit_tracking``
  sequences with the shared branch (`Contrastive.test_extras`);
- ``segmentation``: per-pixel cross entropy against ``mask``, ``miou`` (mean IoU) and ``pixel_accuracy``;
- ``detection``: Fast R-CNN's loss over the given ``proposals`` against ``gt_boxes`` / ``gt_labels``, ``map``
  (mAP at IoU 0.5; not scored on training batches: detection and NMS per batch would cost more than the step);
- ``multilabel``: binary cross entropy against the (N, K) 0/1 ``y``, ``map`` (mean average precision).

A data set names its task (``DatasetSplits.task``, from the source's metadata); `TASKS` maps names to tasks and
`task_for(data)` makes the data set's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from nas.tasks import contrastive, detection, multilabel, segmentation


class Scorer:
    """Adds up a split's batches; `result()` gives its scores. Additive scorers keep their counts in the tensor
    ``sums`` (data-parallel training all-reduces it); the others keep the outputs they need."""

    sums: torch.Tensor | None = None

    def add(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        raise NotImplementedError


class Task:
    """Base of the tasks (see the module docstring)."""

    name = "task"
    metrics: tuple[str, ...] = ("accuracy",)
    augments = True
    train_scored = True

    def __init__(self, inputs: tuple[str, ...] = ("x",), num_classes: int = 0, input_shape: tuple[int, ...] = ()):
        self.inputs = tuple(inputs)
        self.images = self.inputs
        self.num_classes, self.input_shape = int(num_classes), tuple(input_shape)

    @property
    def input(self) -> str:
        """The first input field (the image)."""
        return self.inputs[0]

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def objective(self) -> str:
        return f"val_{self.metric}:max"

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def loss_sum(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        n = len(output)
        return self.loss(output, batch) * n, n

    def scorer(self) -> Scorer:
        raise NotImplementedError

    def check(self, output_shape: tuple[int, ...], data: Any) -> None:
        pass

    def test_extras(self, model: torch.nn.Module, data: Any, device: torch.device) -> dict[str, float]:
        return {}

    def _mismatch(self, output_shape: tuple[int, ...], want: tuple[int, ...], data: Any, what: str) -> None:
        if tuple(output_shape) != tuple(want):
            raise ValueError(f"the architecture's output shape {list(output_shape)} does not suit data set "
                             f"{data.name!r} ({self.name} task): it needs {list(want)}, {what}")


# -- classification ------------------------------------------------------------------------------------------------


class _Accuracy(Scorer):
    def __init__(self, target: str):
        self.target, self.sums = target, None

    def add(self, output, batch):
        y = batch[self.target]
        counts = torch.stack([(output.argmax(1) == y).sum().double(), torch.tensor(float(len(y)), dtype=torch.float64,
                                                                                    device=y.device)])
        self.sums = counts if self.sums is None else self.sums + counts

    def result(self):
        return {"accuracy": float(self.sums[0] / self.sums[1]) if self.sums is not None else float("nan")}


class Classification(Task):
    """One class label per example (field `target`, int64 0..K-1) from the network's (B, K) logits."""

    name = "classification"

    def __init__(self, inputs: tuple[str, ...] | str = ("x",), num_classes: int = 0, input_shape: tuple[int, ...] = (),
                 target: str = "y", input: str | None = None):
        if input is not None:  # Classification(input="x") as before tasks took several inputs
            inputs = (input,)
        super().__init__((inputs,) if isinstance(inputs, str) else inputs, num_classes, input_shape)
        self.target = target

    def loss(self, output, batch, label_smoothing=0.0):
        return F.cross_entropy(output, batch[self.target], label_smoothing=label_smoothing)

    def loss_sum(self, output, batch):
        y = batch[self.target]
        return F.cross_entropy(output.float(), y, reduction="sum"), len(y)

    def score(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(number right, number of examples) of a batch."""
        y = batch[self.target]
        return (output.argmax(1) == y).sum(), len(y)

    def scorer(self):
        return _Accuracy(self.target)

    def check(self, output_shape, data):
        if tuple(output_shape) != (data.num_classes,):
            raise ValueError(f"the architecture's output shape {list(output_shape)} does not match data set "
                             f"{data.name!r}'s {data.num_classes} classes")


# -- contrastive: Siamese pairs ----------------------------------------------------------------------------------------


class _Pairs(Scorer):
    def __init__(self, margin: float):
        self.margin, self.scores, self.same, self.right = margin, [], [], 0.0

    def add(self, output, batch):
        f1, f2 = contrastive.split_pair(output.float())
        self.scores.append(contrastive.matching_score(f1, f2).detach())
        self.same.append(batch["y"].detach())
        self.right += contrastive.pair_accuracy(f1, f2, batch["y"], self.margin).double()

    def result(self):
        if not self.scores:
            return {"auc": float("nan"), "pair_accuracy": float("nan")}
        same = torch.cat(self.same)
        return {"auc": contrastive.pair_auc(torch.cat(self.scores).cpu(), same.cpu()),
                "pair_accuracy": float(self.right) / len(same)}


class Contrastive(Task):
    """Pairs ``x``, ``x2`` (inputs, both images) and ``y`` (1: same class); the network's output is the two
    embeddings side by side (space ``siamese``)."""

    name = "contrastive"
    metrics = ("auc", "pair_accuracy")
    margin = 1.0
    TRACKING = {"sequences": 4, "frames": 8, "seed": 0}  # the tracking evaluation: 28 frames, ~1 s on a CPU

    def loss(self, output, batch, label_smoothing=0.0):
        f1, f2 = contrastive.split_pair(output)
        return contrastive.contrastive_loss(f1, f2, batch["y"], self.margin)

    def scorer(self):
        return _Pairs(self.margin)

    def check(self, output_shape, data):
        if len(self.inputs) != 2:
            raise ValueError(f"the contrastive task needs a data set of pairs (two inputs); {data.name!r} has "
                             f"{list(self.inputs)}")
        if len(output_shape) != 1 or output_shape[0] % 2:
            raise ValueError(f"the architecture's output shape {list(output_shape)} does not suit data set "
                             f"{data.name!r} (contrastive task): it needs a pair's two embeddings, (2E,)")

    @torch.no_grad()
    def test_extras(self, model, data, device):
        """Tracking (`nas.tasks.contrastive.track`) on generated ``digit_tracking`` sequences whose target crop is
        the pairs' side, with the network's shared branch as the embedding: ``success_rate``. Nothing where the
        network has no one shared branch or the pairs' crops are no tracking crop."""
        from nas.builder import GraphModule
        from workers.data.arrays import DatasetError
        from workers.data.generated import generate
        from workers.data.inputs import InputTransform

        branches = [m for m in model.children() if isinstance(m, GraphModule)]
        side = self.input_shape[-1] if self.input_shape else 0
        if len(branches) != 1 or len(self.input_shape) != 3 or self.input_shape[0] != 1:
            return {}
        options = {**self.TRACKING, "crop": side, "side": max(48, 3 * side)}
        try:
            seq = generate("digit_tracking:" + ",".join(f"{k}={v}" for k, v in options.items()))
        except DatasetError:
            return {}
        branch, prepare = branches[0], InputTransform(data.preprocessing, device, 3)
        was_training = model.training
        model.eval()
        try:
            frames = torch.from_numpy(seq["frames"]).float()
            boxes = torch.from_numpy(seq["boxes"])
            found = [contrastive.track(lambda c: branch(prepare(c.to(device))).float().cpu(), frames[m], boxes[m, 0],
                                       side) for m in range(len(frames))]
        finally:
            model.train(was_training)
        return {"success_rate": contrastive.success_rate(torch.stack(found), boxes)}


# -- segmentation --------------------------------------------------------------------------------------------------


class _Confusion(Scorer):
    def __init__(self, num_classes: int):
        self.k, self.sums = num_classes, None

    def add(self, output, batch):
        c = segmentation.confusion_matrix(output, batch["mask"], self.k).flatten().double()
        self.sums = c if self.sums is None else self.sums + c

    def result(self):
        if self.sums is None:
            return {"miou": float("nan"), "pixel_accuracy": float("nan")}
        c = self.sums.reshape(self.k, self.k).cpu()
        return {"miou": segmentation.mean_iou(c), "pixel_accuracy": segmentation.pixel_accuracy(c)}


class Segmentation(Task):
    """Images ``x`` and per-pixel classes ``mask`` (N, H, W); the network gives (N, K, H, W) scores."""

    name = "segmentation"
    metrics = ("miou", "pixel_accuracy")
    augments = False

    def loss(self, output, batch, label_smoothing=0.0):
        return segmentation.pixel_cross_entropy(output, batch["mask"])

    def loss_sum(self, output, batch):
        n = batch["mask"].numel()
        return segmentation.pixel_cross_entropy(output, batch["mask"]) * n, n

    def scorer(self):
        return _Confusion(self.num_classes)

    def check(self, output_shape, data):
        self._mismatch(output_shape, (data.num_classes, *data.input_shape[1:]), data,
                       f"{data.num_classes} class scores per pixel")


# -- detection -----------------------------------------------------------------------------------------------------


class _Detections(Scorer):
    def __init__(self, num_classes: int, image_size: tuple[int, int]):
        self.k, self.size, self.found, self.boxes, self.labels = num_classes, image_size, [], [], []

    def add(self, output, batch):
        self.found += [d.cpu() for d in detection.detect(output.float().cpu(), batch["proposals"].cpu(), self.k,
                                                         self.size)]
        self.boxes.append(batch["gt_boxes"].cpu())
        self.labels.append(batch["gt_labels"].cpu())

    def result(self):
        if not self.found:
            return {"map": float("nan")}
        return {"map": detection.map_at_50(self.found, torch.cat(self.boxes), torch.cat(self.labels), self.k)}


class Detection(Task):
    """Images ``x`` and their ``proposals`` (N, R, 4) (the two inputs), ground truth ``gt_boxes`` (N, G, 4) and
    ``gt_labels`` (N, G) (-1: none); the network gives (N, K + 1 + 4K, R, 1, 1) (space ``detection``)."""

    name = "detection"
    metrics = ("map",)
    augments = False
    train_scored = False

    def __init__(self, inputs=("x", "proposals"), num_classes=0, input_shape=()):
        super().__init__(inputs, num_classes, input_shape)
        self.images = self.inputs[:1]

    def loss(self, output, batch, label_smoothing=0.0):
        return detection.fast_rcnn_loss(output, batch["proposals"], batch["gt_boxes"], batch["gt_labels"],
                                        self.num_classes)

    def scorer(self):
        return _Detections(self.num_classes, tuple(self.input_shape[1:]))

    def check(self, output_shape, data):
        if len(self.inputs) != 2:
            raise ValueError(f"the detection task needs images and their proposals (two inputs); {data.name!r} has "
                             f"{list(self.inputs)}")
        r = data.splits["train"].arrays["proposals"].shape[1]
        k = data.num_classes
        self._mismatch(output_shape, (k + 1 + 4 * k, r, 1, 1), data,
                       f"{k} + 1 scores and 4 x {k} box deltas for each of {r} proposals (space option proposals={r})")


# -- multilabel ----------------------------------------------------------------------------------------------------


class _AveragePrecision(Scorer):
    def __init__(self):
        self.scores, self.targets = [], []

    def add(self, output, batch):
        self.scores.append(output.detach().float())
        self.targets.append(batch["y"].detach())

    def result(self):
        if not self.scores:
            return {"map": float("nan")}
        return {"map": multilabel.mean_average_precision(torch.cat(self.scores).cpu(), torch.cat(self.targets).cpu())}


class Multilabel(Task):
    """Inputs ``x`` and (N, K) 0/1 targets ``y`` (several labels per example); the network gives (N, K) logits."""

    name = "multilabel"
    metrics = ("map",)

    def loss(self, output, batch, label_smoothing=0.0):
        return multilabel.multilabel_bce(output, batch["y"])

    def loss_sum(self, output, batch):
        n = batch["y"].numel()
        return multilabel.multilabel_bce(output, batch["y"]) * n, n

    def scorer(self):
        return _AveragePrecision()

    def check(self, output_shape, data):
        self._mismatch(output_shape, (data.num_classes,), data, f"one score for each of {data.num_classes} labels")


TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Contrastive, Segmentation, Detection, Multilabel)}

# what a failed trial reports: NaN for every validation metric a task may be searched on (Tune wants the search's
# metric in every result, and a failure may come before the data set, hence the task, is known)
FAILED_METRICS: dict[str, float] = {"val_loss": math.nan, **{f"val_{m}": math.nan for t in TASKS.values()
                                                             for m in t.metrics}}


def task_for(data: Any) -> Task:
    """The task of data set `data` (a `DatasetSplits`), reading its input fields."""
    try:
        cls = TASKS[data.task]
    except KeyError:
        raise ValueError(f"data set {data.name!r} asks for task {data.task!r}; known: {sorted(TASKS)}") from None
    return cls(inputs=tuple(data.inputs), num_classes=data.num_classes, input_shape=tuple(data.input_shape))


def reported_metrics(task: str) -> set[str]:
    """The metrics a training evaluation of task `task` reports each epoch (validation, and training where scored)."""
    cls = TASKS[task]
    return {f"val_{m}" for m in cls.metrics} | ({f"train_{m}" for m in cls.metrics} if cls.train_scored else set())
