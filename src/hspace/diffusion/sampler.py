"""Generalised DDIM sampling with per-step eta, stored noise maps and per-step h edits
(docs/algorithms.md, "Sampling and inversion"; the step itself is hspace.diffusion.ddim, the edit of each
step a StepRule of hspace.diffusion.step_rules)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hspace.bottleneck import HSpace
from hspace.diffusion.ddim import ddim_step
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplingSchedule
from hspace.diffusion.step_rules import StepRule

NATURAL = StepRule()


def seed_stream(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named random stream of one sample, independent of every other stream."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def initial_noise(
    seeds: Sequence[int], shape: Sequence[int], num_steps: int, with_z: bool = True
) -> tuple[Tensor, Tensor | None]:
    """x_T (B, *shape) and the noise maps z_{T:1} (B, T, *shape), one pair of streams per seed.

    x_T and z come from independent streams, so a sample does not depend on the batch it is drawn in.
    """
    x_T = torch.stack([torch.randn(tuple(shape), generator=seed_stream(s, "x_T")) for s in seeds])
    if not with_z:
        return x_T, None
    z = torch.stack([torch.randn((num_steps, *shape), generator=seed_stream(s, "z")) for s in seeds])
    return x_T, z


def noise_for(seeds: Sequence[int], model: DiffusionModel, schedule: SamplingSchedule) -> tuple[Tensor, Tensor | None]:
    """x_T and, when the schedule is stochastic, z for `seeds` at the model's image shape."""
    return initial_noise(seeds, model.image_shape, schedule.num_steps, with_z=not schedule.is_deterministic)


@dataclass
class Trajectory:
    x0: Tensor  # (B, C, H, W) the sample
    h: Tensor | None = None  # (B, T, *h_shape) natural h_t of every step, noisiest first
    x_t: Tensor | None = None  # (B, T + 1, C, H, W) x_T, ..., x_1, x_0


@torch.no_grad()
def sample(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    x_T: Tensor,
    z: Tensor | None = None,
    step: StepRule = NATURAL,
    record_h: bool = False,
    record_x: bool = False,
    clip_x0: bool = False,
) -> Trajectory:
    """Run the reverse process from x_T with the stored noise maps z (B, T, C, H, W).

    `step` decides what h the UNet continues with at each step (hspace.diffusion.step_rules); recorded
    h is always the natural one (for an asymmetric step, that of the unedited half).
    """
    sigma = schedule.sigma
    if z is None and not schedule.is_deterministic:
        raise ValueError("this schedule has eta > 0: pass the stored noise maps z (see initial_noise)")
    x = x_T.to(model.device, model.dtype)
    xs = [x.cpu()] if record_x else None
    with HSpace(model.unet, capture=record_h) as hs:
        for idx in range(schedule.num_steps):
            x0, eps = step.predict(model, hs, x, idx, schedule)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
            z_t = z[:, idx].to(x.device, x.dtype) if z is not None else None
            x = ddim_step(x0, eps, schedule.alpha_bar_prev[idx], float(sigma[idx]), z_t)
            if record_x:
                xs.append(x.cpu())
    h = torch.stack([c[: x.shape[0]].cpu() for c in hs.captured], dim=1) if record_h else None
    return Trajectory(x, h, torch.stack(xs, dim=1) if record_x else None)


def sample_seeds(
    model: DiffusionModel, schedule: SamplingSchedule, seeds: Sequence[int], batch_size: int = 64, clip_x0: bool = False
) -> Tensor:
    """One sample per seed, drawn `batch_size` seeds at a time with a progress bar: x0 (N, C, H, W) on the CPU."""
    from hspace.progress import bar

    seeds = list(seeds)
    samples = []
    for start in bar(range(0, len(seeds), batch_size), "sample", unit="batch"):
        x_T, z = noise_for(seeds[start : start + batch_size], model, schedule)
        samples.append(sample(model, schedule, x_T, z, clip_x0=clip_x0).x0.cpu())
    return torch.cat(samples)
