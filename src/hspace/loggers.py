"""Loggers for runs: W&B online when the user is logged in and offline otherwise (`wandb sync` later)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from hspace.errors import UserError


def wandb_logged_in() -> bool:
    """Whether `wandb login` stored a key (in ~/.netrc, where it puts it) or WANDB_API_KEY is set."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


WANDB_MODES = ("auto", "online", "offline")


def wandb_logger(
    project: str,
    save_dir: str,
    group: str | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
    mode: str = "auto",
    job_type: str | None = None,
):
    """A Lightning WandbLogger; mode "auto" is online when logged in, else offline. `group` gathers the runs
    of a sweep, `job_type` tells a run from a training, `tags` let the dashboard filter."""
    from pytorch_lightning.loggers import WandbLogger

    if mode not in WANDB_MODES:
        raise UserError(f"logger.wandb.mode={mode!r} must be one of {', '.join(WANDB_MODES)}")
    offline = mode == "offline" or (mode == "auto" and not wandb_logged_in())
    logger = WandbLogger(
        project=project, save_dir=save_dir, group=group, tags=list(tags), name=name, offline=offline, job_type=job_type
    )
    # Lightning always passes anonymous=None, which recent wandb answers with a deprecation banner per run.
    logger._wandb_init.pop("anonymous", None)
    return logger


def close_wandb(failed: bool = False) -> None:
    """Finish the W&B run, if one was started, so that each (multirun) job gets its own; a `failed` one with exit
    code 1, so that W&B marks it failed rather than finished (hspace-table reads finished runs only)."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish(exit_code=1 if failed else 0)
