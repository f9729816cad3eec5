"""The contract of what hspace-train trains: a LightningModule that exports its result when training ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl

from hspace.lightning.random_states import random_states, restore_random_states


class ExportableModule(pl.LightningModule, ABC):
    """A LightningModule with `export(directory)`: hspace-train calls it once training has ended, and a module
    without it is refused before training starts (`module=` must name a subclass). `exported_files` names what
    the export writes, so that an export directory holding other files is refused before training, not after
    (None: checked only when the export is written). Its checkpoints keep the random streams' states, so a
    resumed training does not draw its first steps' batches and noise again (hspace.lightning.random_states)."""

    exported_files: tuple[str, ...] | None = None
    # Whether the module needs the training's length when it starts (a learning rate spread over all of it):
    # hspace-train then refuses a run limited by trainer.max_time alone.
    needs_known_length: ClassVar[bool] = False
    # Why the module cannot train with every tensor in half precision (trainer.precision=16-true or bf16-true),
    # or None where it can: hspace-train then refuses those precisions.
    not_in_half_precision: ClassVar[str | None] = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["random_states"] = random_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed training goes on drawing where it stopped (a checkpoint from before the states were saved
        resumes with the run's seed)."""
        if "random_states" in checkpoint:
            restore_random_states(checkpoint["random_states"])

    @abstractmethod
    def export(self, directory: str | Path) -> Path:
        """Write what was trained (the weights a later command loads) to `directory`, atomically; its path."""
