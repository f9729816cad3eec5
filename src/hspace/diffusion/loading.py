"""Finding and loading pretrained DDPM weights: a local directory, a shipped model, or a Hugging Face id.

Every source is a diffusers `save_pretrained` directory in the layout of google/ddpm-ema-celebahq-256:
config.json and diffusion_pytorch_model.safetensors (the UNet2DModel) beside scheduler_config.json.
Only safetensors weights are loaded; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from hspace.diffusion.model import DiffusionModel
from hspace.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
HUB_FILES = ["config.json", "scheduler_config.json", WEIGHTS_FILE]


def shipped_models() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED_DIR.glob(f"*/{WEIGHTS_FILE}"))


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def resolve_weights(source: str, cache_dir: str | None = None, offline: bool | None = None, patterns: list[str] = HUB_FILES, setting: str = "model.weights") -> Path:
    """The directory holding the weights of `source`: a local path, then a shipped model, then the
    Hugging Face cache, then (unless offline) the hub. `patterns` are the files fetched from the hub;
    `setting` is the config key named in the error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if (SHIPPED_DIR / source / WEIGHTS_FILE).is_file():
        return SHIPPED_DIR / source
    from huggingface_hub import constants, snapshot_download

    looked = f"no directory {path.resolve()}, no shipped model of that name ({', '.join(shipped_models())})"
    if "/" not in source or path.is_absolute() or source.startswith("."):
        raise UserError(f"weights {source!r} not found: {looked}; set {setting} to a save_pretrained directory")
    offline = hub_offline() if offline is None else offline
    cache = cache_dir or constants.HF_HUB_CACHE
    try:
        return Path(snapshot_download(source, cache_dir=cache_dir, allow_patterns=patterns, local_files_only=offline))
    except Exception as error:  # offline, unreachable hub, unknown id: all end the same way for the user
        reason = "offline" if offline else f"the hub could not be reached ({type(error).__name__})"
        raise UserError(
            f"weights {source!r} not found: {looked}, not in the Hugging Face cache {cache}, and {reason}; "
            f"download it where there is network (huggingface-cli download {source}) or set {setting}=/path/to/local/copy"
        ) from None


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(source: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, cache_dir: str | None = None) -> DiffusionModel:
    """Load a UNet2DModel and its scheduler config from `source` (see resolve_weights), frozen, in eval mode."""
    from diffusers import UNet2DModel

    directory = resolve_weights(source, cache_dir)
    for name in HUB_FILES:
        if not (directory / name).is_file():
            raise UserError(f"{directory} has no {name}: expected a diffusers save_pretrained directory with {', '.join(HUB_FILES)}")
    unet = UNet2DModel.from_pretrained(directory, use_safetensors=True, torch_dtype=dtype, low_cpu_mem_usage=False)
    unet = unet.to(device).eval().requires_grad_(False)
    scheduler_config = json.loads((directory / "scheduler_config.json").read_text())
    return DiffusionModel(unet, scheduler_config, name=source, weight_hash=file_sha256(directory / WEIGHTS_FILE))
