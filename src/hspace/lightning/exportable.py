"""The contract of what hspace-train trains: a LightningModule that exports its result when training ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import pytorch_lightning as pl


class ExportableModule(pl.LightningModule, ABC):
    """A LightningModule with `export(directory)`: hspace-train calls it once training has ended, and a module
    without it is refused before training starts (`module=` must name a subclass). `exported_files` names what
    the export writes, so that an export directory holding other files is refused before training, not after
    (None: checked only when the export is written)."""

    exported_files: tuple[str, ...] | None = None

    @abstractmethod
    def export(self, directory: str | Path) -> Path:
        """Write what was trained (the weights a later command loads) to `directory`, atomically; its path."""
