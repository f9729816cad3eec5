"""Inverting real images: deterministic DDIM inversion and edit-friendly DDPM inversion (docs/algorithms.md,
"Sampling and inversion"). Both run on exactly the decoding grid of `schedule` and never clip x0."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hspace.bottleneck import HSpace
from hspace.diffusion.ddim import ddim_step, to_x0_eps
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import seed_stream
from hspace.diffusion.schedule import SamplingSchedule


@dataclass
class Inversion:
    x_T: Tensor  # (B, C, H, W) where decoding starts
    z: Tensor | None  # (B, T, C, H, W) noise maps that make decoding reproduce the image (edit-friendly only)
    h: Tensor | None  # (B, T, *h_shape) h_T, ..., h_1 seen during inversion, noisiest first
    # (B, T + 1, C, H, W) x_T, ..., x_1 and the image (edit-friendly: x_T..x_1 are what decoding passes through;
    # DDIM: with record_x)
    x_t: Tensor | None = None
    # DDIM with states_at: grid index -> (B, C, H, W) the inverted state there, on the CPU
    states: dict[int, Tensor] = field(default_factory=dict)


def grid_indices(states_at: Collection[int], schedule: SamplingSchedule) -> set[int]:
    """`states_at` as a set of the grid's state indices (0 is x_T, T the image), else a ValueError."""
    wanted = set(states_at)
    if not wanted <= set(range(schedule.num_steps + 1)):
        raise ValueError(f"states_at {sorted(wanted)} outside the grid's indices 0..{schedule.num_steps}")
    return wanted


def _levels(schedule: SamplingSchedule) -> tuple[list[float], list[int]]:
    """a_t and tau_t for t = 1..T (cleanest first)."""
    return schedule.alpha_bar.flip(0).tolist(), schedule.timesteps.flip(0).tolist()


@torch.no_grad()
def ddim_invert(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    x0: Tensor,
    record_h: bool = True,
    record_x: bool = False,
    states_at: Collection[int] = (),
) -> Inversion:
    """x_0 -> x_T along the deterministic DDIM path of `schedule` (its eta is ignored).

    When tau_1 = 0 the image is taken as x_1 (both official codes do this) and the loop costs T - 1 UNet
    calls; otherwise one more call first lifts the image to level tau_1 with eps(x_0, tau_1).
    For t = 1..T-1: eps = eps_theta(x_t, tau_t) (records h_t), x_{t+1} = sqrt(a_{t+1}) x0_hat + sqrt(1 - a_{t+1}) eps.
    With `record_h`, a last call at (x_T, tau_T) records h_T, the h the first decoding step sees.
    With `record_x`, x_t holds the inverted states x_T, ..., x_1 and the image, noisiest first; `states_at` keeps
    only the states at those grid indices (0 is x_T, T the image), which is all an edit starting mid-path needs.
    """
    alpha_bar, tau = _levels(schedule)
    last = len(tau)  # grid index of the image; level t (cleanest first) is grid index last - 1 - t
    wanted = grid_indices(states_at, schedule)
    states = {last: x0.cpu()} if last in wanted else {}
    x = x0.to(model.device, model.dtype)
    if tau[0] > 0:
        eps = to_x0_eps(model(x, tau[0]), x, alpha_bar[0], model.prediction_type)[1]
        x = ddim_step(x, eps, alpha_bar[0], 0.0, None)
    xs = [x.cpu()] if record_x else None
    if last - 1 in wanted:
        states[last - 1] = x.cpu()
    with HSpace(model.unet, capture=record_h) as hs:
        for t in range(len(tau) - 1):
            x0_hat, eps = to_x0_eps(model(x, tau[t]), x, alpha_bar[t], model.prediction_type)
            x = ddim_step(x0_hat, eps, alpha_bar[t + 1], 0.0, None)
            if record_x:
                xs.append(x.cpu())
            if last - 2 - t in wanted:
                states[last - 2 - t] = x.cpu()
        if record_h:
            model(x, tau[-1])
    h = torch.stack([c.cpu() for c in reversed(hs.captured)], dim=1) if record_h else None
    x_t = torch.stack([*reversed(xs), x0.cpu()], dim=1) if record_x else None
    return Inversion(x, None, h, x_t, states)


@torch.no_grad()
def edit_friendly_invert(
    model: DiffusionModel, schedule: SamplingSchedule, x0: Tensor, seeds: Sequence[int], record_h: bool = True
) -> Inversion:
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al.): x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) n_t with
    independent n_t per step, then z_t = (x_{t-1} - mu_t(x_t)) / sigma_t, so that decoding (x_T, z) with the
    same eta reproduces x_T..x_1 and sees the recorded h. Needs sigma_t > 0 at every step t >= 2.
    The image x_0 itself is reproduced exactly only when sigma_1 > 0 too (final_alpha "alpha_bar0" on a
    grid with tau_1 > 0, e.g. trailing); with a deterministic last step, decoding ends at x0_hat(x_1).
    `seeds` name the noise stream of each image.
    """
    sigma = schedule.sigma
    T = schedule.num_steps
    if (sigma[:-1] == 0).any():
        raise ValueError("edit-friendly inversion needs eta > 0 at every step before the last: set sampler.eta > 0")
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {x0.shape[0]} images")
    x0 = x0.to(model.device, model.dtype)
    noise = torch.stack([torch.randn((T, *x0.shape[1:]), generator=seed_stream(s, "inversion")) for s in seeds], dim=1)
    # The levels' roots in at least float32: in half precision alpha_bar of the least noisy steps rounds to 1.
    a = schedule.alpha_bar.to(torch.promote_types(x0.dtype, torch.float32)).view(T, 1, 1, 1, 1).to(x0.device)
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise.to(a)).to(x0.dtype)  # (T, B, C, H, W), idx 0 = x_T
    x_prev = torch.cat([x_t[1:], x0[None]])
    z = torch.zeros_like(x_t)
    with HSpace(model.unet, capture=record_h) as hs:
        for idx in range(T):
            x0_hat, eps = to_x0_eps(
                model(x_t[idx], schedule.timesteps[idx]), x_t[idx], schedule.alpha_bar[idx], model.prediction_type
            )
            mu = ddim_step(x0_hat, eps, schedule.alpha_bar_prev[idx], float(sigma[idx]), torch.zeros_like(x0_hat))
            if sigma[idx] > 0:
                z[idx] = (x_prev[idx] - mu) / float(sigma[idx])
    h = torch.stack([c.cpu() for c in hs.captured], dim=1) if record_h else None
    chain = torch.cat([x_t, x0[None]]).transpose(0, 1).cpu()
    return Inversion(x_t[0], z.transpose(0, 1).contiguous(), h, chain)


def invert(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    x0: Tensor,
    seeds: Sequence[int],
    states_at: Collection[int] = (),
) -> Inversion:
    """The inversion that decoding with `schedule` reproduces: DDIM on a deterministic grid, edit-friendly
    (with the noise streams of `seeds`) on a stochastic one, with the states at the grid indices `states_at`
    (what decoding passes through there). No h is recorded."""
    if schedule.is_deterministic:
        return ddim_invert(model, schedule, x0, record_h=False, states_at=states_at)
    wanted = grid_indices(states_at, schedule)  # before inverting
    inverted = edit_friendly_invert(model, schedule, x0, seeds=seeds, record_h=False)
    inverted.states = {i: inverted.x_t[:, i] for i in wanted}
    return inverted
