"""The architecture and scheduler of the google/ddpm-ema-{celebahq,church,bedroom}-256 DDPMs (their
config.json and scheduler_config.json), for building models of that shape with random weights: benchmarks
of the real sizes without a download, and tiny stand-ins in the same block layout for tests."""

from __future__ import annotations

from pathlib import Path

import torch

UNET_256 = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    norm_eps=1e-6,
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    center_input_sample=False,
)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    clip_sample=True,
    variance_type="fixed_small",
)


def unet_config(
    channels: tuple[int, ...] | None = None,
    sample_size: int | None = None,
    layers_per_block: int | None = None,
    norm_num_groups: int | None = None,
) -> dict:
    """The published UNet config, with channel counts, image size, depth or group count replaced."""
    config = dict(UNET_256)
    for key, value in dict(
        block_out_channels=channels,
        sample_size=sample_size,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
    ).items():
        if value is not None:
            config[key] = tuple(value) if key == "block_out_channels" else value
    return config


def save_random_model(directory: Path, config: dict | None = None, seed: int = 0) -> Path:
    """A save_pretrained directory (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json)
    holding a UNet2DModel of `config` (default: the published 256-pixel one) with random weights."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    directory = Path(directory)
    UNet2DModel(**(config or UNET_256)).save_pretrained(directory, safe_serialization=True)
    DDPMScheduler(**SCHEDULER).save_pretrained(directory)
    return directory
