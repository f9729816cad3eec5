"""Writing files so that a reader never sees a half-written one: bytes, text, safetensors and whole directories
are written beside their target and renamed into place (a killed writer leaves only a temporary file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> Path:
    """Call write(file) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a shared cache needs the usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_directory(directory: str | Path, fill) -> Path:
    """Call fill(staging_dir) on a new directory beside `directory`, then rename it into place, so a reader
    never sees a half-written directory. An existing `directory` is replaced only if it holds nothing but
    files the new one also has (an earlier write of the same kind); anything else is refused with a
    UserError before it is touched, since replacing it would delete files that are not this write's."""
    import shutil

    from hspace.errors import UserError

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        fill(staging)
        if directory.exists():
            foreign = sorted({p.name for p in directory.iterdir()} - {p.name for p in staging.iterdir()})
            if foreign or not directory.is_dir():
                held = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
                raise UserError(
                    f"{directory} already exists and holds {held or 'a file'}, which this write would delete: "
                    "choose a new or empty folder"
                )
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def atomic_write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """`tensors` (moved to the CPU and made contiguous) as a safetensors file with string `metadata`, atomically."""
    from safetensors.torch import save

    data = save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, lambda f: f.write(data))
