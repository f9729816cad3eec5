"""Finding and loading pretrained DDPM weights: a local directory, a shipped model, or a Hugging Face id.

Every source is a diffusers `save_pretrained` directory in the layout of google/ddpm-ema-celebahq-256:
config.json and diffusion_pytorch_model.safetensors (the UNet2DModel) beside scheduler_config.json.
Diffusers weights are read from safetensors only; ADM checkpoints (load_adm) also from a .pt state dict, with
torch.load(weights_only=True), which unpickles tensors and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from hspace.checkpoints import state_mismatch
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.weights import PRETRAINED_FILES, WEIGHTS_FILE, adm_checkpoint, resolve_weights
from hspace.errors import UserError
from hspace.identity import state_hash


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    source: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | None = None,
) -> DiffusionModel:
    """Load a UNet2DModel and its scheduler config from `source` (see resolve_weights), frozen, in eval mode. The
    device and dtype are checked before the weights are read."""
    from diffusers import UNet2DModel

    device = checked_device(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UserError(f"dtype={dtype!r} is not a floating torch dtype: give e.g. dtype=torch.float32")
    directory = resolve_weights(source, cache_dir)
    for name in PRETRAINED_FILES:
        if not (directory / name).is_file():
            raise UserError(
                f"{directory} has no {name}: expected a diffusers save_pretrained directory with "
                f"{', '.join(PRETRAINED_FILES)}"
            )
    config = read_json(directory / "config.json")
    if config.get("_class_name") != "UNet2DModel":
        raise UserError(
            f"{directory / 'config.json'} describes a {config.get('_class_name', 'model without _class_name')}, not a "
            "UNet2DModel: point the weights at a diffusers UNet2DModel save_pretrained directory"
        )
    scheduler_config = read_json(directory / "scheduler_config.json")
    try:
        unet = UNet2DModel.from_pretrained(directory, use_safetensors=True, torch_dtype=dtype, low_cpu_mem_usage=False)
    except Exception as error:  # a truncated or foreign weights file fails deep inside diffusers
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot load the UNet weights of {directory} ({reason}): the weights file is damaged or does not fit "
            "config.json; download or export it again"
        ) from None
    unet = unet.to(device).eval().requires_grad_(False)
    file_hash = file_sha256(directory / WEIGHTS_FILE)
    return DiffusionModel(
        unet, scheduler_config, name=str(source), weight_hash=file_hash, loaded_state=state_hash(unet)
    )


def checked_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine has, or one line naming it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device={device!r} is not a torch device: give cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device} but this machine has no CUDA GPU: give device=cpu")
    return device


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or one line saying the file is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} as JSON ({type(error).__name__}): restore the file") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not an object: restore the file")
    return value


def load_adm(
    weights: str, adm: dict, scheduler: dict, name: str = "adm", device: str | torch.device = "cpu"
) -> DiffusionModel:
    """An ADM / iDDPM UNet (hspace.diffusion.adm) from a guided-diffusion checkpoint: a plain state dict in a
    .pt file (read with torch.load(weights_only=True), so nothing but tensors is unpickled) or .safetensors."""
    from safetensors.torch import load_file

    from hspace.diffusion.adm import ADMConfig, ADMUNet

    path = adm_checkpoint(weights)
    try:
        state = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
    except Exception as error:
        raise UserError(
            f"cannot read {path} as a state dict of tensors ({type(error).__name__}): expected a guided-diffusion .pt "
            "or a .safetensors file"
        ) from None
    unet = ADMUNet(ADMConfig(**adm))
    detail = state_mismatch(state, unet.state_dict())
    if detail is not None:
        raise UserError(
            f"{path} does not fit the configured ADM architecture ({detail}): check model.adm against the "
            "checkpoint's flags"
        )
    unet.load_state_dict(state)
    unet = unet.to(device).eval().requires_grad_(False)
    return DiffusionModel(
        unet, dict(scheduler), name=name, weight_hash=file_sha256(path), loaded_state=state_hash(unet)
    )


def load_configured_model(model_cfg: dict, device: str | torch.device = "cpu") -> DiffusionModel:
    """The model a `model` config names: an ADM checkpoint when it has an `adm` section, else diffusers weights."""
    if model_cfg.get("adm"):
        return load_adm(
            model_cfg["weights"], model_cfg["adm"], model_cfg["scheduler"], model_cfg.get("name", "adm"), device
        )
    return load_model(model_cfg["weights"], device=device)
