"""How much does a UNet's output depend on its bottleneck h? Swap h between samples and measure.

For each timestep, the UNet runs on x_t of different samples (their own deterministic 50-step samples,
noised to that level), once as is and once with each sample's h replaced by another sample's (a cyclic
shift of the batch); the result is the relative change of the output, ||out_swapped - out|| / ||out||.
A decoder that ignores h (everything arrives through skip connections) gives values near 0.
"""

from __future__ import annotations

import torch

from hspace.bottleneck import HSpace
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import make_schedule


@torch.no_grad()
def h_swap_change(
    model: DiffusionModel, num_samples: int = 16, timesteps=(999, 799, 599, 399, 199, 49)
) -> dict[int, float]:
    """Relative change of the output with h swapped between samples, per timestep."""
    schedule = make_schedule(model.alphas_cumprod, 50, "trailing")
    x_T, _ = noise_for(range(num_samples), model, schedule)
    x0 = sample(model, schedule, x_T).x0
    changes = {}
    for tau in timesteps:
        a = model.alphas_cumprod[tau]
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(tau)).to(x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        t = torch.full((num_samples,), tau, device=x0.device)
        with HSpace(model.unet, capture=True) as hs:
            out = model.unet(x_t, t).sample
            hs.replace(hs.captured[0].roll(1, dims=0))
            swapped = model.unet(x_t, t).sample
        changes[tau] = float((swapped - out).norm() / out.norm())
    return changes
