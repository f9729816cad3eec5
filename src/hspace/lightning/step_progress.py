"""A training progress bar on stderr that counts toward the limit that ends the training, one bar for the whole
run: optimiser steps of max_steps (or of max_epochs' epochs), or, when only trainer.max_time limits it, the
seconds of that limit with the step reached beside them. Lightning's own bar starts again at every epoch
("Epoch 6: 2/4"), which says nothing of how far a training of thousands of steps has come."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from tqdm import tqdm


def time_limit(trainer: pl.Trainer) -> Timer | None:
    """The Timer Lightning adds for trainer.max_time, or None."""
    return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)


def seconds(timer: Timer) -> tuple[float, float]:
    """The seconds a time-limited training has spent (over all its resumes) and may spend."""
    spent = timer.time_elapsed("train")
    # time_remaining() reads the clock again, a moment later: max_time is whole seconds, and so is the limit
    limit = float(round(spent + timer.time_remaining()))
    return min(spent, limit), limit


@dataclass(frozen=True)
class TrainingLimit:
    """What ends a training, as a bar counts it: `total` steps, or `total` seconds of `timer` when one is given."""

    total: int
    timer: Timer | None = None

    def reached(self, trainer: pl.Trainer) -> int:
        if self.timer is not None:
            return int(seconds(self.timer)[0])
        return trainer.global_step  # a resumed run starts where it stopped

    @property
    def description(self) -> str:
        return "train steps" if self.timer is None else "train time"


def training_limit(trainer: pl.Trainer) -> TrainingLimit | None:
    """Steps when max_steps or max_epochs bound them (whichever comes first), else the seconds of max_time;
    None for a training bounded by none of them (an endless loader without max_steps)."""
    steps = trainer.estimated_stepping_batches
    if math.isfinite(steps) and steps > 0:
        return TrainingLimit(int(steps))
    timer = time_limit(trainer)
    return None if timer is None else TrainingLimit(int(seconds(timer)[1]), timer)


class StepProgressBar(TQDMProgressBar):
    _limit: TrainingLimit | None = None
    _timer: Timer | None = None  # max_time's, also where steps bound the bar

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(desc="train steps", leave=True, dynamic_ncols=True, file=sys.stderr, smoothing=0)

    def on_train_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        self._limit, self._timer = training_limit(trainer), time_limit(trainer)
        if self._limit is not None:
            bar = self.train_progress_bar
            bar.reset(total=self._limit.total)
            bar.n = bar.initial = self._limit.reached(trainer)  # tqdm's rate counts from here
            bar.set_description(self._limit.description)
            if self._limit.timer is not None:  # seconds are not items: the time left, and the step in the postfix
                bar.bar_format = "{l_bar}{bar}| {remaining} left{postfix}"

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        if self._limit is None:  # no limit to count toward: Lightning's bar of each epoch
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._limit is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._should_update(trainer.global_step, self._limit.total):
            self.train_progress_bar.n = self._limit.reached(trainer)
            metrics = self.get_metrics(trainer, pl_module)
            if self._limit.timer is not None:
                metrics = {"step": trainer.global_step, **metrics}
            elif self._timer is not None:  # steps bound the bar, and max_time may end the training first
                spent, limit = seconds(self._timer)
                metrics = {"time": f"{tqdm.format_interval(spent)} of {tqdm.format_interval(limit)}", **metrics}
            self.train_progress_bar.set_postfix(metrics)
            self.train_progress_bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._limit is None:
            super().on_train_epoch_end(trainer, pl_module)
