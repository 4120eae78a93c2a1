"""The learning rate of a training run, step by step: an optional linear warm-up, then a schedule.

One definition for the search's worker and an exported ``train.py``, which embeds this file's source
verbatim (it imports nothing but `math`):

- ``cosine``: per step from ``lr`` to 0 over the steps after the warm-up;
- ``constant``: ``lr``;
- ``step``: ``lr`` times ``gamma`` for every milestone epoch reached (``milestones=(30, 60)``: ``lr`` for
  epochs 1-30, ``lr * gamma`` for 31-60, then ``lr * gamma**2``), as torch's MultiStepLR;
- ``plateau``: ``lr`` times ``gamma`` each time the validation score has not improved for ``patience``
  epochs in a row (VGG's "divided by 10 when the validation accuracy stopped improving"); improving means
  beating the best score so far by a relative 1e-4, as torch's ReduceLROnPlateau. Call `end_epoch`.

Warm-up (``warmup_epochs``, fractions allowed) raises the rate linearly per step from ``lr / W`` to ``lr``
over its W steps; the schedule then runs over the remaining steps (cosine) or by epoch (step, plateau).
"""

import math

SCHEDULES = ("cosine", "constant", "step", "plateau")


class LRSchedule:
    """The learning rate at each optimizer step of a run of `epochs` epochs of `steps_per_epoch` steps."""

    def __init__(self, lr, schedule, steps_per_epoch, epochs, warmup_epochs=0.0, milestones=(), gamma=0.1,
                 patience=5):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; schedules: {', '.join(SCHEDULES)}")
        self.lr, self.schedule, self.gamma, self.patience = lr, schedule, gamma, patience
        self.steps_per_epoch = steps_per_epoch
        self.total = steps_per_epoch * epochs
        self.warmup = min(int(round(warmup_epochs * steps_per_epoch)), self.total)
        self.milestones = tuple(milestones)
        self.factor = 1.0  # plateau: the reductions so far
        self.best = None  # plateau: the best validation score so far
        self.bad_epochs = 0

    def at(self, step):
        """The learning rate of optimizer step `step` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "cosine":
            span = self.total - self.warmup
            if span <= 0:
                return self.lr
            progress = min(step - self.warmup, span) / span
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.schedule == "step":
            epoch = step // self.steps_per_epoch  # epochs completed before this step
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "plateau":
            return self.lr * self.factor
        return self.lr

    def end_epoch(self, score):
        """Record an epoch's validation score (higher is better); True where the plateau rule lowered the rate."""
        if self.schedule != "plateau":
            return False
        if score is not None and math.isfinite(score) and (
                self.best is None or score > self.best + 1e-4 * abs(self.best)):
            self.best, self.bad_epochs = score, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.factor *= self.gamma
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self):
        return {"factor": self.factor, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.factor, self.best, self.bad_epochs = float(state["factor"]), state["best"], int(state["bad_epochs"])
