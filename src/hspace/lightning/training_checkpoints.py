"""A training's checkpoints: step_<n>.ckpt every n steps (only the newest kept) and last.ckpt at the final step.

Lightning's ModelCheckpoint writes last.ckpt beside each step checkpoint and, when training ends, only if it never
wrote it: a training stopped by max_steps or max_time between two saves kept the earlier step in last.ckpt, and a
resume from it trained the steps after it again. Here last.ckpt is rewritten whenever training ends at a step it
does not hold: at max_steps or max_time, and at a SIGTERM (kill, timeout, a scheduler's time limit), which
Lightning raises between two steps, so the checkpoint holds whole steps (under gradient accumulation, between
two batches). A SIGTERM during a validation stops it between two of its batches; the checkpoint then makes the
resume run that validation again, whole. The last one (at max_steps or max_epochs, or once max_time or another
callback has asked training to stop) Lightning's resume would not run again: the checkpoint records it
(FINAL_VALIDATION_CUT_SHORT), and hspace-train runs it after a resumed fit that took no step (one that went on
past it says so in a note). Inside a gradient accumulation, whose gradients no checkpoint holds, the
checkpoint is not rewritten there, and the resume validates again when it reaches that batch.

A resume writes on into the same checkpoints/ folder. ModelCheckpoint finds its own state in a checkpoint under a
key made of its settings, so a resume with another checkpoint_every_n_steps found none and wrote last-v1.ckpt
beside the old last.ckpt, which a further resume from last.ckpt would have gone back to. Here the key is the same
whatever the interval, and last.ckpt is always rewritten in place. Checkpoints are written to a temporary file
and renamed into place (AtomicCheckpointIO), so a process killed while writing leaves the previous one whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hspace.files import atomic_write_bytes

# checkpoint key: a SIGTERM stopped the last validation; its value is the step Lightning logged that validation at
FINAL_VALIDATION_CUT_SHORT = "final_validation_cut_short"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing each file under a temporary name and renaming it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write_bytes(path, lambda file: torch.save(checkpoint, file))


class TrainingCheckpoints(ModelCheckpoint):
    def __init__(self, directory: Path, every_n_steps: int):
        # No "=" in checkpoint names: they are passed back as ckpt_path=... overrides.
        super().__init__(
            directory,
            "step_{step:07d}",
            every_n_train_steps=every_n_steps,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resume into another run directory keeps a list of step checkpoints of its own (the old run's stay
        where they are), so nothing of the old list is reloaded, and Lightning's warning that it is not is left
        unsaid."""
        if Path(state_dict.get("dirpath") or self.dirpath) == Path(self.dirpath):
            super().load_state_dict(state_dict)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_final_step(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        # Lightning stops a validation between two batches: its metrics are lost
        if validation_to_run_again(trainer):
            self._cut_short = "validation"
        elif trainer.validating and not trainer.fit_loop.epoch_loop._should_accumulate():
            self._cut_short = "final validation"
        else:
            self._save_final_step(trainer)
            return
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._cut_short = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._cut_short == "validation":
            validate_again_on_resume(checkpoint)
        elif self._cut_short == "final validation":  # also the one hspace-train runs after a resumed fit
            counts = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
            checkpoint[FINAL_VALIDATION_CUT_SHORT] = counts["_batches_that_stepped"]
            # Lightning counts a step for its loggers once the step's validation is over, and a resume inside an
            # epoch from a checkpoint written during it does not count it again (at an epoch's end it does): one
            # that trains on would log every later step one step early
            if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                counts["_batches_that_stepped"] += 1

    def _save_final_step(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    _cut_short: str | None = None


def validation_to_run_again(trainer: pl.Trainer) -> bool:
    """Whether a SIGTERM stopped a validation that a resume can run again: one at a whole step (inside a
    gradient accumulation the step's gradients, which no checkpoint holds, would be lost) with training steps
    still to take (Lightning ends a resume at max_steps or max_epochs before any validation, and does not run
    again the one it ran because training was to stop, e.g. at max_time, which need not fall on a step that
    validates)."""
    loop = trainer.fit_loop.epoch_loop
    if not trainer.validating or loop._should_accumulate() or trainer.should_stop:
        return False
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return False
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return not (last_epoch and loop._num_ready_batches_reached())


def validate_again_on_resume(checkpoint: dict) -> None:
    """Make a checkpoint written while a validation ran resume by running that validation again, whole, before
    the next training step. Lightning stops a validation at a SIGTERM between two of its batches. Its counts
    then read as finished, so a resume skipped it, and its metrics, summed in memory, were lost. Counted as one
    batch short of its last start, the validation reads as stopped inside a batch, which Lightning restarts; with
    no batch of it counted as done, the restart reads the validation data from its first batch to its last."""
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    total = progress["total"]
    total["processed"] = total["completed"] = total["started"] - 1
    progress["current"] = {count: 0 for count in progress["current"]}


def run_owed_validation(trainer: pl.Trainer, module, datamodule, resumed: dict, resumed_from: Path, last: Path) -> None:
    """After a fit resumed from the checkpoint `resumed` (read from `resumed_from`), where it owes the validation at
    its step: run it when the fit took no step (the training had ended there), at the step the training logged it
    at, and then clear the mark where the checkpoint is this run's own last.ckpt, so that a further resume from it
    does not run it again (another run's checkpoint is left as it is). A fit that went on past that step cannot
    log it at its step any more: a note says so."""
    from hspace.checks import note

    logged_at = resumed.get(FINAL_VALIDATION_CUT_SHORT)
    if logged_at is None:
        return
    owed = int(resumed["global_step"])
    if trainer.global_step != owed:
        note(f"the validation at step {owed}, which a SIGTERM cut short, was not run again: the training went on")
        return
    loop = trainer.fit_loop.epoch_loop
    counted, loop._batches_that_stepped = loop._batches_that_stepped, logged_at  # where the training logged it
    try:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    finally:
        loop._batches_that_stepped = counted
    if trainer.is_global_zero and resumed_from.resolve() == last.resolve():  # the checkpoint read before the fit
        cleared = {key: value for key, value in resumed.items() if key != FINAL_VALIDATION_CUT_SHORT}
        atomic_write_bytes(last, lambda file: torch.save(cleared, file))
