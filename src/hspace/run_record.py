"""What a run directory records about how it was made: git SHA, package versions, command line."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from hspace.files import atomic_write_text

# Settings that change where a run writes or what it shows, not what it computes (skip_done and hspace-table
# compare runs without them).
PRESENTATION_SETTINGS = ("run_dir", "cache_dir", "logger", "progress", "verbose", "skip_done", "hydra")
PACKAGES = (
    "hspace",
    "torch",
    "diffusers",
    "pytorch-lightning",
    "hydra-core",
    "wandb",
    "scikit-learn",
    "numpy",
    "safetensors",
)


def git_sha() -> str | None:
    """The commit of the hspace checkout, with "-dirty" when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info() -> dict:
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def write_json(path: str | Path, value) -> Path:
    """Strict JSON (atomically): a number that is not finite (NaN, inf: not measured) is written as null."""
    text = json.dumps(finite(value), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text)


def finite(value):
    """`value` with every non-finite float replaced by None, through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
