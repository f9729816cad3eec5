"""Reading a training checkpoint as weights only (tensors and plain values: nothing unpickled that could run
code), with one line for a file that is missing, damaged or pickles anything else. Free of Lightning, so that
hspace-train checks a checkpoint before anything loads."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from hspace.errors import UserError

if TYPE_CHECKING:
    from hspace.lightning.exportable import ExportableModule


def read_checkpoint(path: str | Path, setting: str) -> dict:
    """The checkpoint at `path` as loaded by torch.load(weights_only=True); `setting` names it in the error."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"no checkpoint at {setting}: point it at a .ckpt file, e.g. <run_dir>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = f"it pickles {unsafe.group(1)}" if unsafe else "it is damaged or not a torch checkpoint"
        raise UserError(
            f"{setting} does not load as weights only ({reason}): use a checkpoint hspace-train wrote"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UserError(
            f"{setting} holds a {type(checkpoint).__name__}, not a training checkpoint: use one hspace-train wrote"
        )
    return checkpoint


def state_mismatch(saved: dict, expected: dict) -> str | None:
    """How the tensors of a state dict `saved` (a file's) differ from those a module `expected`, in a few words for
    an error line (a tensor of another shape first, then missing ones, then extra ones); None where they fit."""
    wrong = [key for key in expected if key in saved and tuple(saved[key].shape) != tuple(expected[key].shape)]
    if wrong:
        return (
            f"shape of {wrong[0]}: {tuple(saved[wrong[0]].shape)} saved, {tuple(expected[wrong[0]].shape)} configured"
        )
    missing = [key for key in expected if key not in saved]
    if missing:
        return f"{len(missing)} weights missing, e.g. {missing[0]}"
    unexpected = [key for key in saved if key not in expected]
    if unexpected:
        return f"{len(unexpected)} weights it does not have, e.g. {unexpected[0]}"
    return None


def check_resumes(module: ExportableModule, checkpoint: dict, setting: str, max_steps: int | None) -> list[str]:
    """Refuse, in one line before any training, a checkpoint that the configured module cannot resume: weights of
    another module or architecture, or (for a module whose learning rate spans the whole training) another number
    of steps than its schedule was built for. Returns the module settings that differ from the checkpoint's
    (`name: old -> new`), which the resume takes from the command line."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise UserError(f"{setting} holds no weights (state_dict): use a checkpoint hspace-train wrote")
    detail = state_mismatch(saved, module.state_dict())
    if detail is not None:
        raise UserError(
            f"{setting} holds weights that do not fit the configured {type(module).__name__} ({detail}): resume with "
            "the settings it was trained with (its run's config.yaml), or start a new run"
        )
    totals = [s.get("total_steps") for s in checkpoint.get("lr_schedulers") or [] if isinstance(s, dict)]
    total = next((t for t in totals if isinstance(t, int)), None)
    # max_steps -1 (or none): the limit is max_epochs or max_time, whose length the resume does not change here
    if module.needs_known_length and total is not None and max_steps is not None and 0 < max_steps != total:
        raise UserError(
            f"{setting} follows a learning-rate schedule over {total} steps, which a resume cannot change: resume with "
            f"trainer.max_steps={total}, or start a new run"
        )
    from hspace.tables.build import setting_text

    before = checkpoint.get("hyper_parameters") or {}
    now = dict(module.hparams)
    return [
        f"{key}: {setting_text(before[key])} -> {setting_text(value)}"
        for key, value in now.items()
        if key in before and setting_text(before[key]) != setting_text(value)
    ]
