"""A UNet derived from a trained model (widened, deepened): saved beside the model's scheduler, and how far its
output has moved from the model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from hspace.diffusion.model import DiffusionModel


def save_pretrained_model(unet: UNet2DModel, scheduler_config: dict, out: str | Path) -> Path:
    """Write `unet` and its scheduler config as a save_pretrained directory (hspace.diffusion.weights.
    PRETRAINED_FILES), atomically."""
    from hspace.files import atomic_write_directory

    def fill(staging: Path) -> None:
        unet.save_pretrained(staging, safe_serialization=True)
        DDPMScheduler.from_config(scheduler_config).save_pretrained(staging)

    return atomic_write_directory(out, fill)


def output_change(
    model: DiffusionModel, unet: UNet2DModel, num_images: int = 64, resolution: int = 32, seed: int = 0
) -> float:
    """Relative RMS change from `model`'s prediction to `unet`'s on `num_images` Shapes training images of
    `resolution` pixels, each noised to a random timestep."""
    from hspace.data.batch import image_batch
    from hspace.data.shapes import ShapesDataset

    generator = torch.Generator().manual_seed(seed)
    dataset = ShapesDataset(num_images, "train", resolution=resolution)
    x0 = image_batch(dataset, range(num_images))
    t = torch.randint(0, model.num_train_timesteps, (num_images,), generator=generator)
    a = model.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator)).to(model.device)
    t = t.to(model.device)
    with torch.no_grad():
        before, after = model.unet(x_t, t).sample, unet(x_t, t).sample
    return float((after - before).pow(2).mean().sqrt() / before.pow(2).mean().sqrt())
