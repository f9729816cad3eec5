"""A content-addressed artifact store: h collections, directions, anything a run can recompute.

The key of an entry is a hash of everything that determines it (model weight hash, sampler settings,
seeds, method settings). Writes go to a temporary file that is renamed into place, under a file lock, so
concurrent sweep jobs compute an entry once and a killed run never leaves a partial entry. An entry that
fails to load (truncated, corrupt) is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

log = logging.getLogger(__name__)
T = TypeVar("T")


def content_key(parts: dict) -> str:
    """A stable hash of a JSON-able description of an artifact."""
    canonical = json.dumps(
        parts, sort_keys=True, separators=(",", ":")
    )  # no fallback: every part must be JSON (hspace.identity)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ArtifactCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, kind: str, parts: dict, suffix: str = ".safetensors") -> Path:
        return self.root / kind / f"{content_key(parts)}{suffix}"

    def get(
        self,
        kind: str,
        parts: dict,
        compute: Callable[[], T],
        save: Callable[[T, Path], object],
        load: Callable[[Path], T],
    ) -> T:
        """The entry for `parts`: loaded when present and readable, else computed, saved and returned.

        `save` must write atomically (see hspace.images.atomic_write_bytes); `load` must raise on a
        damaged file.
        """
        path = self.path(kind, parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    value = load(path)
                    self.hits.append(f"{kind}/{path.name}")
                    return value
                except Exception as error:  # any failure to read means the entry is unusable
                    log.warning("discarding unreadable cache entry %s (%s); recomputing", path, error)
                    path.unlink()
            value = compute()
            save(value, path)
            self.misses.append(f"{kind}/{path.name}")
            return value
