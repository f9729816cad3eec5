"""A training's checkpoints: step_<n>.ckpt every n steps (only the newest kept) and last.ckpt at the final step.

Lightning's ModelCheckpoint writes last.ckpt beside each step checkpoint and, when training ends, only if it never
wrote it: a training stopped by max_steps or max_time between two saves kept the earlier step in last.ckpt, and a
resume from it trained the steps after it again. Here last.ckpt is rewritten whenever training ends at a step it
does not hold: at max_steps or max_time, and at a SIGTERM (kill, timeout, a scheduler's time limit), which
Lightning raises between two steps, so the checkpoint holds whole steps.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException


class TrainingCheckpoints(ModelCheckpoint):
    def __init__(self, directory: Path, every_n_steps: int):
        # No "=" in checkpoint names: they are passed back as ckpt_path=... overrides.
        super().__init__(
            directory,
            "step_{step:07d}",
            every_n_train_steps=every_n_steps,
            save_last=True,
            auto_insert_metric_name=False,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_final_step(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self._save_final_step(trainer)

    def _save_final_step(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
