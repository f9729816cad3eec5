"""Writing files so that a reader never sees a half-written one: bytes, text, safetensors and whole directories
are written beside their target and renamed into place: a killed writer leaves only a temporary file, which the
next writer of a cache entry (hspace.cache), of a directory (`clear_dead_writers`) or of a run's outputs
(hspace.cli.run.clear_outputs) clears."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by what writes tensors, not by every reader of a run's files
    import torch


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (setting and restoring it would
    race with a thread that creates a file in between)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
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


def check_replaceable(directory: str | Path, names: Iterable[str], setting: str | None = None) -> None:
    """Refuse (UserError), in one line, a `directory` that a write of the files `names` may not replace: a file,
    or a folder holding anything else (an earlier write of the same kind is replaced; other files would be
    deleted). Callable before the work that produces the files, so a long job is not refused at its end."""
    from hspace.errors import UserError

    directory = Path(directory)
    where = f"{setting}={directory}" if setting else str(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{where} is a file, where the write needs a folder: choose a new or empty folder")
    if directory.is_dir():
        foreign = sorted({p.name for p in directory.iterdir()} - set(names))
        if foreign:
            held = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise UserError(
                f"{where} already exists and holds {held}, which this write would delete: choose a new or empty folder"
            )


def clear_dead_writers(directory: Path) -> None:
    """Remove the staging folders that killed writers of `directory` left beside it, and put back an earlier
    `directory` that one of them had moved aside if nothing took its place. Called under the directory's write
    lock (`atomic_write_directory`), so every such folder is a dead writer's."""
    import re
    import shutil

    pattern = re.compile(rf"^\.{re.escape(directory.name)}\.(old\.)?[a-z0-9_]{{8}}$")  # tempfile.mkdtemp's names
    for leftover in sorted(directory.parent.glob(f".{directory.name}.*")):
        match = pattern.match(leftover.name)
        if match is None or not leftover.is_dir():
            continue
        aside = leftover / directory.name
        if match.group(1) and aside.is_dir() and not directory.exists():
            aside.rename(directory)
        shutil.rmtree(leftover, ignore_errors=True)


def atomic_write_directory(directory: str | Path, fill) -> Path:
    """Call fill(staging_dir) on a new directory beside `directory`, then rename it into place, so a reader
    never sees a half-written directory. An existing `directory` is replaced only if it holds nothing but
    files the new one also has (`check_replaceable`); anything else is refused with a UserError before it is
    touched. The old directory is renamed aside before the new one takes its place, and removed after.
    Writers of one directory take turns under a file lock beside it (`.<name>.lock`), and each first clears
    what a killed one left (`clear_dead_writers`)."""
    import shutil

    from filelock import FileLock

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f".{directory.name}.lock")):
        clear_dead_writers(directory)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
        try:
            fill(staging)
            check_replaceable(directory, [p.name for p in staging.iterdir()])
            if directory.exists():
                old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
                directory.rename(old / directory.name)
                try:
                    staging.rename(directory)
                except BaseException:
                    (old / directory.name).rename(directory)  # the earlier write stays where it was
                    raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
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


def check_writable(folder: str | Path, setting: str) -> None:
    """Refuse, in one line and before any work, a folder a command will write into (or create) whose nearest
    existing ancestor cannot be written. Nothing is created."""
    from hspace.errors import UserError

    existing = Path(folder).expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        probe_write(existing)
    except OSError as error:
        raise UserError(
            f"{setting}: {existing} cannot be written ({error.strerror or type(error).__name__}): choose a "
            "writable place"
        ) from None


def probe_write(directory: Path) -> None:
    """Create and remove a temporary file in `directory`: an OSError when it cannot be written."""
    tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test.", delete=True).close()
