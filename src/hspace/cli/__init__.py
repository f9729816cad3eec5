"""Composition roots: the only code that sees a DictConfig. Library imports happen inside the tasks,
so `--help` and `--cfg job` answer quickly."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def user_errors_exit(task):
    """Print a UserError as one line on stderr and exit with status 2 instead of a traceback, also when
    it was raised inside hydra.utils.instantiate (which wraps it)."""

    @functools.wraps(task)
    def wrapped(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except Exception as error:
            cause = user_error_in(error)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def user_error_in(error: BaseException | None):
    """The UserError that `error` is or was raised from, if any."""
    from hspace.errors import UserError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def resolve_device(name: str):
    """auto: CUDA when available, else CPU; gpu/cuda; cpu."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if name in ("gpu", "cuda") else name)


def sampler_settings(cfg):
    """The sampler config group as SamplerSettings."""
    from omegaconf import OmegaConf

    from hspace.diffusion.schedule import SamplerSettings

    settings = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(settings["eta"], list):
        settings["eta"] = tuple(settings["eta"])
    return SamplerSettings(**settings)
