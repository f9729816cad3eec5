"""Reading a training checkpoint as weights only (tensors and plain values: nothing unpickled that could run
code), with one line for a file that is missing, damaged or pickles anything else. Free of Lightning, so that
hspace-train checks a checkpoint before anything loads."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

from hspace.errors import UserError


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
