"""Shared fixtures: tiny UNets in the real diffusers formats, built on the fly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from hspace.diffusion.model import DiffusionModel

# The scheduler of google/ddpm-ema-celebahq-256 (scheduler_config.json).
GOOGLE_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True, variance_type="fixed_small"
)
# The block layout of google/ddpm-ema-{celebahq,church,bedroom}-256 with tiny channel counts.
GOOGLE_LAYOUT = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(4, 4, 8, 8, 16, 16),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=None,
)
ZERO_SNR_V = dict(GOOGLE_SCHEDULER, rescale_betas_zero_snr=True, prediction_type="v_prediction", clip_sample=False)


def tiny_unet(seed: int = 0, sample_size: int = 16) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return unet.eval().requires_grad_(False)


@pytest.fixture
def unet() -> UNet2DModel:
    return tiny_unet()


@pytest.fixture
def model(unet) -> DiffusionModel:
    return DiffusionModel(unet, dict(DDPMScheduler(**GOOGLE_SCHEDULER).config), name="tiny")


@pytest.fixture
def v_model(unet) -> DiffusionModel:
    return DiffusionModel(unet, dict(DDPMScheduler(**ZERO_SNR_V).config), name="tiny-v")


@pytest.fixture
def google_layout_dir(tmp_path):
    """A tiny model saved with save_pretrained in the on-disk layout of google/ddpm-ema-celebahq-256."""
    torch.manual_seed(0)
    directory = tmp_path / "ddpm-ema-celebahq-256"
    UNet2DModel(**GOOGLE_LAYOUT).save_pretrained(directory, safe_serialization=True)
    DDPMScheduler(**GOOGLE_SCHEDULER).save_pretrained(directory)
    return directory
