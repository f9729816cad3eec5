"""Shared fixtures: tiny UNets in the real diffusers formats, built on the fly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from hspace.diffusion import google_ddpm
from hspace.diffusion.model import DiffusionModel

# The scheduler of google/ddpm-ema-celebahq-256 and its block layout with tiny channel counts.
GOOGLE_SCHEDULER = google_ddpm.SCHEDULER
GOOGLE_LAYOUT = google_ddpm.unet_config(
    channels=(4, 4, 8, 8, 16, 16), sample_size=64, layers_per_block=1, norm_num_groups=4
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


def tiny_plain_unet(seed: int = 0) -> UNet2DModel:
    """Three levels of plain DownBlock2D / UpBlock2D (8, 24, 24 channels): what widening and deepening take."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 24, 24),
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=4,
        attention_head_dim=24,
    ).eval()


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
    return google_ddpm.save_random_model(tmp_path / "ddpm-ema-celebahq-256", GOOGLE_LAYOUT)
