"""Generalised DDIM sampling with per-step eta, stored noise maps and h-space edits (ALGORITHMS.md 2.1, 3.2).

One step:
    x0_hat  = prediction converted to the clean image (epsilon, v or sample parameterisation)
    x_{t-1} = sqrt(a_{t-1}) x0_hat + sqrt(1 - a_{t-1} - sigma_t^2) eps + sigma_t z_t
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplingSchedule
from hspace.hspace import HSpace

# Offset added to h at step index idx for every batch row, or None for no edit at that step. (B, *h_shape)
HOffset = Callable[[int], "Tensor | None"]


def to_x0_eps(output: Tensor, x_t: Tensor, alpha_bar: float, prediction_type: str) -> tuple[Tensor, Tensor]:
    """The predicted clean image x0_hat and noise eps from a UNet output at level a_t = alpha_bar."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    sqrt_a, sqrt_1ma = float(a.sqrt()), float((1 - a).sqrt())
    if prediction_type == "epsilon":
        return (x_t - sqrt_1ma * output) / sqrt_a, output
    if prediction_type == "v_prediction":
        return sqrt_a * x_t - sqrt_1ma * output, sqrt_a * output + sqrt_1ma * x_t
    if prediction_type == "sample":
        return output, (x_t - sqrt_a * output) / sqrt_1ma
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_prev: float, sigma: float, z: Tensor | None) -> Tensor:
    """x_{t-1} from x0_hat and eps; z is the noise map of this step (ignored when sigma = 0)."""
    a_prev = float(alpha_bar_prev)
    direction = max(1 - a_prev - sigma**2, 0.0) ** 0.5
    x_prev = a_prev**0.5 * x0 + direction * eps
    if sigma > 0:
        if z is None:
            raise ValueError("a stochastic step (sigma > 0) needs a noise map z")
        x_prev = x_prev + sigma * z
    return x_prev


def seed_stream(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named random stream of one sample, independent of every other stream."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def initial_noise(seeds: Sequence[int], shape: Sequence[int], num_steps: int, with_z: bool = True) -> tuple[Tensor, Tensor | None]:
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
    h_offset: HOffset | None = None,
    record_h: bool = False,
    record_x: bool = False,
    clip_x0: bool = False,
    asymmetric: bool = False,
    progress: Callable | None = None,
    h_replace: HOffset | None = None,
) -> Trajectory:
    """Run the reverse process from x_T with the stored noise maps z (B, T, C, H, W).

    `h_offset(idx)` gives the h offset of each step (see HOffset); rows without an edit get zeros.
    With `asymmetric` (Asyrp, ALGORITHMS.md 3.3) each step runs a doubled batch [x_t, x_t] whose second
    half carries the edit: x0_hat comes from the edited eps, the direction term from the unedited one.
    `progress`, if given, wraps the step range (e.g. tqdm). `h_replace(idx)`, if given, is the h that every
    row continues with at step idx instead of its own (None: its own); `captured` h stays the natural one.
    """
    if h_replace is not None and (h_offset is not None or asymmetric):
        raise ValueError("h_replace cannot be combined with h_offset or asymmetric steps")
    sigma = schedule.sigma
    if z is None and not schedule.is_deterministic:
        raise ValueError("this schedule has eta > 0: pass the stored noise maps z (see initial_noise)")
    x = x_T.to(model.device, model.dtype)
    xs = [x.cpu()] if record_x else None
    steps = range(schedule.num_steps)
    with HSpace(model.unet, capture=record_h) as hs:
        for idx in progress(steps) if progress else steps:
            offset = h_offset(idx) if h_offset else None
            if asymmetric:
                batch = x.shape[0]
                hs.add(offset, rows=torch.arange(batch, 2 * batch) if offset is not None else None)
                output = model(torch.cat([x, x]), schedule.timesteps[idx])
                x0 = to_x0_eps(output[batch:], x, schedule.alpha_bar[idx], model.prediction_type)[0]
                eps = to_x0_eps(output[:batch], x, schedule.alpha_bar[idx], model.prediction_type)[1]
            else:
                replacement = h_replace(idx) if h_replace else None
                if replacement is not None:
                    hs.replace(replacement)
                else:
                    hs.add(offset)
                output = model(x, schedule.timesteps[idx])
                x0, eps = to_x0_eps(output, x, schedule.alpha_bar[idx], model.prediction_type)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
            z_t = z[:, idx].to(x.device, x.dtype) if z is not None else None
            x = ddim_step(x0, eps, schedule.alpha_bar_prev[idx], float(sigma[idx]), z_t)
            if record_x:
                xs.append(x.cpu())
    h = torch.stack([c[: x.shape[0]].cpu() for c in hs.captured], dim=1) if record_h else None
    return Trajectory(x, h, torch.stack(xs, dim=1) if record_x else None)
