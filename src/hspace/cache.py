"""A content-addressed artifact store: h collections, directions, anything a run can recompute.

The key of an entry is a hash of everything that determines it (model weight hash, sampler settings,
seeds, method settings). Writes go to a temporary file that is renamed into place, under a file lock, so
concurrent sweep jobs compute an entry once and a killed run never leaves a partial entry. An entry that
fails to parse (truncated, corrupt) is discarded and recomputed; a read error of the disk stops the run and
keeps the entry. The ranks of a split collection that build an entry together (`get_across_ranks`) compute it
outside the lock, so two such jobs may both compute it; the last write wins, with the same content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from filelock import FileLock

from hspace.checks import note
from hspace.errors import UserError
from hspace.files import probe_write

if TYPE_CHECKING:
    from hspace.distributed import Shard

T = TypeVar("T")

# The version of the code that computes each kind of entry, part of every key: bump a kind's number when a change
# makes the same inputs give other numbers (a fix to the sampler, the PCA or the statistics), so that entries
# computed before the change are not served after it. Kinds not listed are at version 1.
ALGORITHM_VERSIONS: dict[str, int] = {
    "h": 1,
    "directions": 1,
    "boundary_bank": 1,
    "fid_reference": 1,
    "inverted_h": 1,
}


def content_key(parts: dict) -> str:
    """A stable hash of a JSON-able description of an artifact."""
    # no fallback: every part must be JSON (hspace.identity)
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ArtifactCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, kind: str, parts: dict, suffix: str = ".safetensors") -> Path:
        key = content_key({**parts, "algorithm_version": ALGORITHM_VERSIONS.get(kind, 1)})
        return self.root / kind / f"{key}{suffix}"

    def check_writable(self) -> None:
        """Refuse, in one line, a cache root that is a file or cannot be written (before any work)."""
        where = f"the cache directory {self.root} (cache_dir, or $HSPACE_CACHE)"
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{where} is a file: point cache_dir or HSPACE_CACHE at a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe_write(self.root)
        except OSError as error:
            raise UserError(
                f"{where} cannot be written ({error.strerror or type(error).__name__}): point cache_dir or "
                "HSPACE_CACHE at a writable directory"
            ) from None

    def get(
        self,
        kind: str,
        parts: dict,
        compute: Callable[[], T],
        save: Callable[[T, Path], object],
        load: Callable[[Path], T],
    ) -> T:
        """The entry for `parts`: loaded when present and readable, else computed, saved and returned.

        `save` must write atomically (see hspace.files.atomic_write_bytes); `load` must raise on a
        damaged file (an OSError is taken as the disk's failure, not the entry's: a UserError, the entry kept).
        Temporary files that a killed writer of this key left behind are removed.
        """
        path = self.path(kind, parts)
        with self._holding(path):
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # only a writer holding the lock makes these
                stale.unlink(missing_ok=True)
            if path.exists():
                value = self._read(path, load)
                if value is not None:
                    self.hits.append(f"{kind}/{path.name}")
                    return value
                path.unlink(missing_ok=True)
            value = compute()
            self._write(kind, path, value, save)
            return value

    def get_across_ranks(
        self,
        kind: str,
        parts: dict,
        compute: Callable[[], T],
        save: Callable[[T, Path], object],
        load: Callable[[Path], T],
        shard: Shard,
    ) -> T:
        """`get` for a `compute` that every rank of `shard` runs together (it gathers across them), so no rank
        may wait on another's lock while that one computes. The ranks use the entry only when every one of them
        could read it; otherwise they all compute, and rank 0 saves the result before any rank goes on."""
        if not shard.is_split:
            return self.get(kind, parts, compute, save, load)
        path = self.path(kind, parts)
        value = self._read(path, load) if path.exists() else None  # a bad entry is rank 0's to replace
        if shard.all_agree(value is not None):
            self.hits.append(f"{kind}/{path.name}")
            return value
        value = compute()
        if shard.rank == 0:
            with self._holding(path):
                self._write(kind, path, value, save)
        shard.barrier()  # the entry is in place before any rank asks for it again
        return value

    @contextmanager
    def _holding(self, path: Path) -> Iterator[None]:
        """The entry's file lock, held: concurrent writers of one key compute it once."""
        lock = FileLock(str(path) + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as error:
            raise UserError(
                f"cannot use the cache entry {path} ({error.strerror or type(error).__name__}): point cache_dir or "
                "HSPACE_CACHE at a writable directory with free space"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _read(self, path: Path, load: Callable[[Path], T]) -> T | None:
        """The entry at `path`, or None (with a note) when its content cannot be parsed. A failure of the disk or
        of memory is not the entry's: it stops the run instead of discarding an entry that may be expensive."""
        try:
            value = load(path)
        except FileNotFoundError:  # removed in between by a job that found it damaged: a miss
            return None
        except MemoryError:
            raise
        except OSError as error:
            raise UserError(
                f"cannot read the cache entry {path} ({error.strerror or type(error).__name__}): check the disk, "
                "or point cache_dir or HSPACE_CACHE elsewhere"
            ) from None
        except Exception as error:  # truncated, corrupt or of another layout: the entry is unusable
            note(f"discarding the unreadable cache entry {path} ({type(error).__name__}); recomputing it")
            return None
        return value

    def _write(self, kind: str, path: Path, value: T, save: Callable[[T, Path], object]) -> None:
        try:
            save(value, path)
        except OSError as error:
            raise UserError(
                f"cannot write the cache entry {path} ({error.strerror or type(error).__name__}): free space or "
                "point cache_dir or HSPACE_CACHE elsewhere"
            ) from None
        self.misses.append(f"{kind}/{path.name}")
