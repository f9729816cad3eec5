"""The exact denoiser of a finite set of images: the model a diffusion model would be if it learned its training
set perfectly.

When the data is the set {x_i} (each equally likely) and x_t = sqrt(a) x0 + sqrt(1 - a) eps, the posterior of
x0 given x_t puts weight

    w_i  proportional to  exp(-||x_t - sqrt(a) x_i||^2 / (2 (1 - a)))

on x_i, and the denoiser that minimises the training loss is E[x0 | x_t] = sum_i w_i x_i. Deterministic DDIM
with it follows the probability-flow ODE of that set and ends on one of its images. It needs no training, so it
says what the data itself, rather than a network's approximation of it, does to a sampler's map from noise to
image (hspace.metrics.noise_stability).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hspace.diffusion.ddim import ddim_step, to_x0_eps
from hspace.diffusion.schedule import SamplingSchedule


class EmpiricalDenoiser:
    """E[x0 | x_t] over `images` (N, C, H, W) in [-1, 1], each image equally likely, on the training schedule
    `alphas_cumprod` (N_train,) that a sampler's grid is drawn from (as a DiffusionModel carries its own)."""

    def __init__(self, images: Tensor, alphas_cumprod: Tensor, chunk: int = 128):
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, not of shape {tuple(images.shape)}")
        self.image_shape = tuple(images.shape[1:])
        self.alphas_cumprod = alphas_cumprod
        self.flat = images.flatten(1).float()
        self.squared_norms = (self.flat**2).sum(dim=1)
        self.chunk = chunk

    def weights(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        """The posterior weights w_i of every image given each x_t. (B, N), rows summing to 1"""
        a = float(alpha_bar)
        if not 0.0 <= a < 1.0:
            raise ValueError(f"alpha_bar must lie in [0, 1), not {a}: at 1 there is no noise to denoise")
        # ||x_t - sqrt(a) x_i||^2 without ||x_t||^2, which is the same for every i and cancels in the softmax
        distance = -2 * a**0.5 * x_t.flatten(1).float() @ self.flat.T + a * self.squared_norms
        return torch.softmax(-distance / (2 * (1 - a)), dim=1)

    def x0(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        """E[x0 | x_t] (B, C, H, W), computed `chunk` samples at a time."""
        parts = [self.weights(x, alpha_bar) @ self.flat for x in x_t.split(self.chunk)]
        return torch.cat(parts).view(x_t.shape[0], *self.image_shape).to(x_t.dtype)

    def sample(self, schedule: SamplingSchedule, x_T: Tensor) -> Tensor:
        """Deterministic DDIM from x_T along `schedule` with this denoiser; the last x0_hat. (B, C, H, W)"""
        if not schedule.is_deterministic:
            raise ValueError("EmpiricalDenoiser.sample walks deterministic grids only: pass a schedule with eta 0")
        x = x_T.float()
        for idx in range(schedule.num_steps):
            a = float(schedule.alpha_bar[idx])
            x0, eps = to_x0_eps(self.x0(x, a), x, a, "sample")
            x = ddim_step(x0, eps, schedule.alpha_bar_prev[idx], 0.0, None)
        return x
