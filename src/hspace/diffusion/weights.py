"""Where a model's weights are: a local directory, a shipped model, the Hugging Face cache or the hub.

Neither torch nor diffusers is imported here, so a command names missing weights in one line before it imports
what loads them (hspace.diffusion.loading).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hspace.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
# What a save_pretrained model directory holds, and what is fetched from the hub: the UNet's config and weights,
# and the scheduler's config.
PRETRAINED_FILES = ("config.json", WEIGHTS_FILE, "scheduler_config.json")


def shipped_models() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED_DIR.glob(f"*/{WEIGHTS_FILE}"))


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def looked_for(source: str) -> str:
    path = Path(source).expanduser()
    return f"no directory {path.resolve()}, no shipped model of that name ({', '.join(shipped_models())})"


def local_weights(source: str, setting: str = "model.weights") -> Path | None:
    """The directory of `source` when it is a local directory or a shipped model; None when it may be a Hugging
    Face id (owner/name); one line when it can only be local (a bare name, an absolute path, ./ or ../) and is
    neither."""
    source = str(source)  # a Path works as well as its text
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_file():  # a weights file or a training checkpoint: the directory that holds the export is wanted
        raise UserError(
            f"{setting}={source} is a file, not a save_pretrained directory: give the directory that holds "
            f"{WEIGHTS_FILE} and its configs (a training's export, <run_dir>/model)"
        )
    if (SHIPPED_DIR / source / WEIGHTS_FILE).is_file():
        return SHIPPED_DIR / source
    if "/" not in source or path.is_absolute() or source.startswith("."):
        raise UserError(
            f"weights {source!r} not found: {looked_for(source)}; set {setting} to a save_pretrained directory"
        )
    return None


def resolve_weights(
    source: str,
    cache_dir: str | None = None,
    offline: bool | None = None,
    patterns: Sequence[str] = PRETRAINED_FILES,
    setting: str = "model.weights",
) -> Path:
    """The directory holding the weights of `source`: a local path, then a shipped model, then the
    Hugging Face cache, then (unless offline) the hub. `patterns` are the files fetched from the hub;
    `setting` is the config key named in the error."""
    local = local_weights(source, setting)
    if local is not None:
        return local
    from huggingface_hub import constants, snapshot_download

    source = str(source)
    offline = hub_offline() if offline is None else offline
    cache = cache_dir or constants.HF_HUB_CACHE
    try:
        return Path(
            snapshot_download(source, cache_dir=cache_dir, allow_patterns=list(patterns), local_files_only=offline)
        )
    except Exception as error:  # offline, unreachable hub, unknown id: all end the same way for the user
        reason = "offline" if offline else f"the hub could not be reached ({type(error).__name__})"
        raise UserError(
            f"weights {source!r} not found: {looked_for(source)}, not in the Hugging Face cache {cache}, and {reason}; "
            f"download it where there is network (huggingface-cli download {source}) or set "
            f"{setting}=/path/to/local/copy"
        ) from None


def check_not_source(weights: str, out: str | Path, weights_setting: str, out_setting: str) -> None:
    """Refuse, in one line, writing to `out` when it is where `weights` (a local path or shipped name, or a
    Hugging Face id) are read from: the write would replace the weights it starts from."""
    if resolve_weights(weights, setting=weights_setting).resolve() == Path(out).expanduser().resolve():
        raise UserError(
            f"{out_setting}={out} is where {weights_setting} are read from, and the write would replace them: "
            "choose another folder"
        )


def check_derived_output(weights: str, out: str) -> None:
    """Refuse, before any work, an `--out` that is the model it derives from (`--weights`, which the write would
    replace) or a folder holding other files than a model's."""
    from hspace.files import check_replaceable

    check_not_source(weights, out, "--weights", "--out")
    check_replaceable(Path(out).expanduser(), PRETRAINED_FILES, "--out")


def adm_checkpoint(weights: str, setting: str = "model.weights") -> Path:
    """The file of an ADM / iDDPM checkpoint, or one line when there is none."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"no ADM checkpoint at {setting}={weights}: download the guided-diffusion checkpoint (e.g. the "
            "AFHQ-dog model) and set the path"
        )
    return path


def check_model_weights(weights: str, adm: bool, setting: str = "model.weights") -> None:
    """One line, before anything is imported to load them, when a model's weights cannot be found on this machine:
    an ADM checkpoint file, or a local directory or shipped model (a Hugging Face id is looked up when loaded)."""
    if adm:
        adm_checkpoint(weights, setting)
    else:
        local_weights(weights, setting)
