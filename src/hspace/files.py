"""Writing files so that a reader never sees a half-written one: bytes, text, safetensors and whole directories
are written beside their target and renamed into place: a killed writer leaves only a temporary file, which the
next writer of a cache entry (hspace.cache), of a directory (`clear_dead_writers`) or of a run's outputs
(hspace.cli.run.clear_outputs) clears."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

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


def writer_tag() -> str:
    """This process as the writer of a staging folder: host and process id, so that a later writer on the same
    host can tell a folder left by a killed one (on a shared disk, another host's folders are left alone)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clear_dead_writers(directory: Path) -> None:
    """Remove the staging folders that killed writers of `directory` on this host left beside it; an earlier
    `directory` that one of them had renamed aside goes back into place if nothing took it."""
    import re
    import shutil

    pattern = re.compile(rf"^\.{re.escape(directory.name)}\.{re.escape(socket.gethostname())}-(\d+)\.(old\.)?")
    for leftover in directory.parent.glob(f".{directory.name}.*"):
        match = pattern.match(leftover.name)
        if match is None or not leftover.is_dir() or process_alive(int(match.group(1))):
            continue
        aside = leftover / directory.name
        if match.group(2) and aside.is_dir() and not directory.exists():
            aside.rename(directory)
        shutil.rmtree(leftover, ignore_errors=True)


def atomic_write_directory(directory: str | Path, fill) -> Path:
    """Call fill(staging_dir) on a new directory beside `directory`, then rename it into place, so a reader
    never sees a half-written directory. An existing `directory` is replaced only if it holds nothing but
    files the new one also has (`check_replaceable`); anything else is refused with a UserError before it is
    touched. The old directory is renamed aside before the new one takes its place, and removed after.
    What a killed writer on this host left beside `directory` is cleared first (`clear_dead_writers`)."""
    import shutil

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    clear_dead_writers(directory)
    prefix = f".{directory.name}.{writer_tag()}."
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=prefix))
    try:
        fill(staging)
        check_replaceable(directory, [p.name for p in staging.iterdir()])
        if directory.exists():
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f"{prefix}old."))
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
