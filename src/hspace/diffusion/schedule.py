"""Training noise schedules and the sampling grid (docs/algorithms.md, "Notation" and "Sampling and inversion").

Step index t runs from T (noisiest) to 1; arrays use idx = T - t, so idx 0 is the noisiest step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from hspace.checks import boolean, choice, integer, number
from hspace.errors import UserError

Spacing = Literal["leading", "trailing", "linspace"]
FinalAlpha = Literal["one", "alpha_bar0"]
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace")
FINAL_ALPHAS: tuple[str, ...] = ("one", "alpha_bar0")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# The share of the image's signal (sqrt(alpha_bar)) at a grid's first step above which the user is told that the
# grid starts far down the schedule (the leading grid with few steps: 3 of 1000 steps start at 666, about 10%).
LEADING_SIGNAL = 0.1


def training_alphas_cumprod(scheduler_config: dict) -> Tensor:
    """alpha_bar[s] for s = 0..N-1 of a diffusers scheduler config (betas, zero-SNR rescaling). (N,) float64"""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config).alphas_cumprod.double()


def timestep_grid(num_steps: int, num_train_timesteps: int = 1000, spacing: Spacing = "leading") -> Tensor:
    """Training timesteps tau_T > ... > tau_1 of a T-step sampling grid. (T,) long

    leading:  (T-1)*s, ..., s, 0 with s = N // T (diffusers "leading", the Haas grid; it starts s + N % T - 1
              below N - 1, e.g. at 980 for 50 of 1000 steps)
    trailing: N-1, N-1-N/T, ..., N/T-1 (starts at the last training step, for zero terminal SNR)
    linspace: int(linspace(0, N-1, T)) reversed, truncated toward zero (diffusers' "linspace" rounds instead:
              the two differ by one at about half the steps of a 50-step grid)
    """
    if num_steps < 1 or num_steps > num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, not {num_steps}")
    if spacing == "leading":
        grid = np.arange(num_steps) * (num_train_timesteps // num_steps)
    elif spacing == "trailing":
        grid = np.round(num_train_timesteps - np.arange(num_steps) * num_train_timesteps / num_steps)[::-1] - 1
    elif spacing == "linspace":
        grid = np.linspace(0, num_train_timesteps - 1, num_steps).astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}: use leading, trailing or linspace")
    grid = grid[::-1].astype(np.int64).copy()
    assert len(grid) == num_steps and grid.min() >= 0, grid
    return torch.from_numpy(grid)


def eta_vector(eta: float | Sequence[float], num_steps: int) -> Tensor:
    """eta_t as a (T,) float64 vector, noisiest step first; a scalar applies to every step."""
    vector = torch.as_tensor(eta, dtype=torch.float64).flatten()
    if vector.numel() == 1:
        vector = vector.expand(num_steps).clone()
    if vector.numel() != num_steps:
        raise ValueError(f"eta has {vector.numel()} entries but the grid has {num_steps} steps")
    if not ((vector >= 0) & (vector <= 1)).all():
        raise ValueError(f"eta must lie in [0, 1] at every step (1: DDPM's noise), not {vector.tolist()}")
    return vector


@dataclass(frozen=True)
class SamplingSchedule:
    """The T-step grid a sampler walks, noisiest step first (index idx = T - t)."""

    timesteps: Tensor  # (T,) tau_t
    alpha_bar: Tensor  # (T,) a_t, float64
    alpha_bar_prev: Tensor  # (T,) a_{t-1}, float64; the last entry is the final alpha a_0
    eta: Tensor  # (T,) eta_t, float64

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def sigma(self) -> Tensor:
        """sigma_t = eta_t sqrt((1 - a_{t-1}) / (1 - a_t)) sqrt(1 - a_t / a_{t-1}). (T,) float64"""
        a, a_prev = self.alpha_bar, self.alpha_bar_prev
        return self.eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)

    @property
    def is_deterministic(self) -> bool:
        return bool((self.sigma == 0).all())

    def steps(self, start: int, stop: int | None = None) -> SamplingSchedule:
        """The sub-schedule of steps start..stop-1 (e.g. from a mixing step to the end)."""
        part = slice(start, stop)
        return SamplingSchedule(self.timesteps[part], self.alpha_bar[part], self.alpha_bar_prev[part], self.eta[part])

    def deterministic(self) -> SamplingSchedule:
        """The same grid with eta 0 at every step."""
        return SamplingSchedule(self.timesteps, self.alpha_bar, self.alpha_bar_prev, torch.zeros_like(self.eta))

    def index_of(self, timestep: int) -> int:
        """The index of the grid step nearest a training timestep."""
        return int((self.timesteps - timestep).abs().argmin())


def make_schedule(
    alphas_cumprod: Tensor,
    num_steps: int,
    spacing: Spacing = "leading",
    eta: float | Sequence[float] = 0.0,
    final_alpha: FinalAlpha = "one",
) -> SamplingSchedule:
    """The sampling schedule of `num_steps` steps over a training schedule `alphas_cumprod` (N,)."""
    if final_alpha not in ("one", "alpha_bar0"):
        raise ValueError(f"final_alpha must be 'one' or 'alpha_bar0', not {final_alpha!r}")
    alphas_cumprod = alphas_cumprod.double()
    timesteps = timestep_grid(num_steps, len(alphas_cumprod), spacing)
    alpha_bar = alphas_cumprod[timesteps]
    a_0 = torch.ones(1, dtype=torch.float64) if final_alpha == "one" else alphas_cumprod[:1]
    alpha_bar_prev = torch.cat([alpha_bar[1:], a_0])
    return SamplingSchedule(timesteps, alpha_bar, alpha_bar_prev, eta_vector(eta, num_steps))


def schedule_from_timesteps(
    alphas_cumprod: Tensor,
    timesteps: Sequence[int],
    eta: float | Sequence[float] = 0.0,
    final_alpha: FinalAlpha = "one",
) -> SamplingSchedule:
    """A schedule over explicit training timesteps (any order given; walked noisiest first)."""
    steps = torch.tensor(sorted(set(int(t) for t in timesteps), reverse=True))
    if steps[0] >= len(alphas_cumprod) or steps[-1] < 0:
        raise ValueError(f"timesteps must lie in 0..{len(alphas_cumprod) - 1}")
    alphas_cumprod = alphas_cumprod.double()
    alpha_bar = alphas_cumprod[steps]
    a_0 = torch.ones(1, dtype=torch.float64) if final_alpha == "one" else alphas_cumprod[:1]
    return SamplingSchedule(steps, alpha_bar, torch.cat([alpha_bar[1:], a_0]), eta_vector(eta, len(steps)))


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler config group: how many steps, how stochastic, which grid, which final alpha, clipping."""

    num_steps: int = 50
    eta: float | tuple[float, ...] = 0.0
    spacing: Spacing = "leading"
    final_alpha: FinalAlpha = "one"
    clip_x0: bool = False

    def __post_init__(self):
        """Each setting in one line naming it (`sampler.<name>`), also when built from Python; an eta list
        becomes a tuple (the settings are hashable)."""
        steps = integer(self.num_steps, "sampler.num_steps", 1, 1000)
        object.__setattr__(self, "num_steps", steps)  # a plain int (numpy integers are accepted)
        eta = self.eta.tolist() if isinstance(self.eta, (np.ndarray, Tensor)) else self.eta
        if isinstance(eta, (list, tuple)):
            if len(eta) != steps:
                raise UserError(
                    f"sampler.eta has {len(eta)} entries but sampler.num_steps={steps}: give one eta per step "
                    "or a single number"
                )
            eta = tuple(number(value, f"sampler.eta[{i}]", 0.0, 1.0) for i, value in enumerate(eta))
        else:  # above 1 the step's noise would exceed what its level allows
            eta = number(eta, "sampler.eta", 0.0, 1.0)
        object.__setattr__(self, "eta", eta)
        choice(self.spacing, "sampler.spacing", SPACINGS)
        choice(self.final_alpha, "sampler.final_alpha", FINAL_ALPHAS)
        boolean(self.clip_x0, "sampler.clip_x0")

    def walk(self) -> dict:
        """The settings that decide the trajectory (the grid, its noise and, when on, clipping), as recorded with
        directions and keyed in the cache (clipping is named only when on, so keys made without it stay)."""
        walk = {"num_steps": self.num_steps, "spacing": self.spacing, "final_alpha": self.final_alpha, "eta": self.eta}
        return walk | {"clip_x0": True} if self.clip_x0 else walk

    def schedule(self, alphas_cumprod: Tensor) -> SamplingSchedule:
        """The grid on a model's training schedule; a leading grid whose step would collapse is refused."""
        n, steps = len(alphas_cumprod), self.num_steps
        if self.spacing == "leading" and steps > n // 2 and n % steps:
            raise UserError(
                f"sampler.num_steps={steps} on the leading grid walks steps of {n} // {steps} = {n // steps} and "
                f"starts at timestep {(n // steps) * (steps - 1)}, far below the last training step {n - 1}: use at "
                f"most {n // 2} steps or a divisor of {n}, or sampler.spacing=trailing"
            )
        return make_schedule(alphas_cumprod, self.num_steps, self.spacing, self.eta, self.final_alpha)

    def start_note(self, alphas_cumprod: Tensor) -> str | None:
        """A line for the user when the grid starts so far down the training schedule that x_T, pure noise, stands
        for a state that still holds at least LEADING_SIGNAL of the image (sqrt(alpha_bar) at its first step):
        diffusers' leading grid does with few steps (3 of 1000 start at 666). None otherwise."""
        first = int(timestep_grid(self.num_steps, len(alphas_cumprod), self.spacing)[0])
        signal = float(alphas_cumprod[first].double().sqrt())
        if signal < LEADING_SIGNAL:
            return None
        last = len(alphas_cumprod) - 1
        return (
            f"sampler.spacing={self.spacing} with sampler.num_steps={self.num_steps} starts at timestep {first}, where "
            f"x_T stands for a state holding {signal:.0%} of the image (at {last}: "
            f"{float(alphas_cumprod[last].double().sqrt()):.1%}), so samples start from too much noise; "
            "sampler.spacing=trailing starts at the last training step"
        )
