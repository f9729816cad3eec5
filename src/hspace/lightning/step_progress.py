"""A training progress bar in optimiser steps of max_steps, on stderr: the datamodules stream endless data, so
Lightning's epoch counter ("Epoch 0/-2") says nothing."""

from __future__ import annotations

import sys

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


class StepProgressBar(TQDMProgressBar):
    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(desc="train steps", leave=True, dynamic_ncols=True, file=sys.stderr, smoothing=0)

    def on_train_epoch_start(self, trainer, *args):
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_steps > 0:
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.n = trainer.global_step  # a resumed run starts where it stopped
            self.train_progress_bar.set_description("train steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.max_steps <= 0:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._should_update(trainer.global_step, trainer.max_steps):
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()
