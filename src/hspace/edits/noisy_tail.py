"""The noisy tail of an edit's path: the last stretch of sampling with eta = 1, where the model repairs what the
edit left off its data (LOCO Edit's edit scripts; Asyrp's quality boosting). docs/algorithms.md, "Noisy tail".

The steps at training timesteps tau < fraction * N (N training steps; strictly below, as in both references)
take eta = 1. Their noise is drawn from a stream named by the sample's x_T, so every strength of a sample,
strength 0 included, sees the same noise; the steps before the tail keep the run's stored noise (a real image's
are residuals of the run's own eta from edit-friendly inversion, which taken at eta 1 would throw its path off
the data).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from hspace.diffusion.sampler import seed_stream
from hspace.diffusion.schedule import SamplingSchedule


def tail_noise(x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
    """(num_steps, C, H, W) standard normal noise from a stream named by the bytes of one x_T (C, H, W)."""
    digest = hashlib.sha256(x_T.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
    return torch.randn((num_steps, *x_T.shape), generator=seed_stream(int(digest[:15], 16), "noisy_tail"))


def with_noisy_tail(
    schedule: SamplingSchedule,
    fraction: float,
    num_train_timesteps: int,
    x_T: torch.Tensor,
    z: torch.Tensor | None,
    start: int = 0,
) -> tuple[SamplingSchedule, torch.Tensor | None]:
    """Steps start.. of `schedule` with eta = 1 in the tail, and their noise maps (N, T - start, C, H, W): the
    stored z (or none, on a deterministic grid without a tail) before the tail, the samples' tail noise in it."""
    steps = schedule.steps(start)
    stored = z[:, start:] if z is not None else None
    if fraction == 0:
        return steps, stored
    tail = steps.timesteps < fraction * num_train_timesteps  # strictly below, as Asyrp and LOCO Edit
    steps = replace(steps, eta=torch.where(tail, torch.ones_like(steps.eta), steps.eta))
    noise = torch.stack([tail_noise(x, schedule.num_steps)[start:] for x in x_T])
    if stored is None:
        return steps, noise
    return steps, torch.where(tail.view(1, -1, 1, 1, 1), noise, stored.cpu())
