"""Quiet output by default: no third-party banners, tips or known-harmless warnings (`verbose=true` keeps them).

Each filter names what it silences; anything else a library says still shows.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARY_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch")
HARMLESS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning on torch >= 2.5, not our code
    r".*Checkpoint directory .* exists and is not empty.*",  # a resumed training writes on into its own folder
    r".*does not have many workers.*",  # the evaluation loop reads edits already in memory
    r".*The number of training batches.*",
    r".*but have no `validation_step`.*",  # the Shapes datamodule serves classifiers too; a DDPM validates nothing
)

HARMLESS_FROM = (r"torch\.fx\..*",)  # torch.func tracing notes from the Jacobian's forward-mode products


class LibraryInfoFilter(logging.Filter):
    """Drops the libraries' records below WARNING; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in LIBRARY_LOGGERS


QUIETED = False  # whether quiet() silenced this process: processes it spawns (hspace.metrics.evaluation) follow


def quiet(verbose: bool = False) -> None:
    """Silence library INFO chatter (Lightning's tips and device lines), W&B's banners and known-harmless
    warnings, unless `verbose`."""
    global QUIETED
    if verbose:
        return
    QUIETED = True
    root = logging.getLogger()
    if root.handlers:
        # Lightning sets its logger to INFO when it is imported and then hands its records to the root's
        # handlers: filtering there holds whenever it is imported, so it need not be imported here (5 s)
        for handler in root.handlers:
            if not any(isinstance(f, LibraryInfoFilter) for f in handler.filters):
                handler.addFilter(LibraryInfoFilter())
    else:
        import pytorch_lightning  # noqa: F401  (it sets its loggers to INFO when imported: import it first)

        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")
    for pattern in HARMLESS:
        warnings.filterwarnings("ignore", message=pattern)
    for module in HARMLESS_FROM:
        warnings.filterwarnings("ignore", module=module)
