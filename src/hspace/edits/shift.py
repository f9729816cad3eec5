"""Shift editing (Haas et al.; docs/algorithms.md, "Editing h"): h_t <- h_t + strength * v_t at every step
in a window, optionally with Asyrp's asymmetric step.

All strengths of one sample run as one batch that shares x_T and every noise map z_t, so the offset is
the only difference between the columns of a grid; strength 0 reproduces the unedited sample.

`noisy_tail` > 0 samples the last stretch with eta = 1 (hspace.edits.noisy_tail), strength 0 and what the
edits depart from included: with `asymmetric` and a `window` that ends above it, Asyrp's editing, plain and
quality-boosting intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from hspace.checks import boolean, integer, number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample
from hspace.diffusion.schedule import SamplingSchedule
from hspace.diffusion.step_rules import AddH, AsymmetricAddH
from hspace.directions.container import Directions
from hspace.edits.noisy_tail import with_noisy_tail
from hspace.edits.strategy import EditStrategy, check_strengths
from hspace.errors import UserError


@dataclass
class StepOffsets:
    """h offsets strength_r * v_t for a batch of strengths, per step index (a step rule's offset).

    Steps outside `window` (a bool mask over step indices, or None for all steps) get no edit.
    """

    v: torch.Tensor  # (T, *h_shape) the scaled direction of every step
    strengths: torch.Tensor  # (B,) one strength per batch row
    window: torch.Tensor | None = None  # (T,) bool

    def __call__(self, idx: int) -> torch.Tensor | None:
        if self.window is not None and not bool(self.window[idx]):
            return None
        return self.strengths.to(self.v.dtype).view(-1, *([1] * (self.v.ndim - 1))) * self.v[idx]


@dataclass
class ShiftEdit(EditStrategy):
    strengths: Sequence[float] = field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0])
    window: Sequence[int] | None = None  # [t_start, t_stop]: edit only where t_start >= tau_t >= t_stop
    asymmetric: bool = False  # Asyrp's step: x0_hat from the edited eps, the direction from the unedited one
    batch_size: int = 64  # rows (samples x strengths) per UNet batch
    noisy_tail: float = 0.0  # eta = 1 at training timesteps < noisy_tail * N (Asyrp's t_boost / N)

    name = "shift"
    reads_h = True

    def __post_init__(self):
        check_strengths(self.strengths)
        integer(self.batch_size, "edit.batch_size", 1)
        boolean(self.asymmetric, "edit.asymmetric")
        self.noisy_tail = number(self.noisy_tail, "edit.noisy_tail", 0.0, 1.0)
        if self.window is not None:
            if not isinstance(self.window, (list, tuple)) or len(self.window) != 2:
                raise UserError(f"edit.window={self.window!r} must be [t_start, t_stop] (training timesteps) or null")
            for i, value in enumerate(self.window):
                integer(value, f"edit.window[{i}]", 0)
            if self.window[0] < self.window[1]:
                raise UserError(
                    f"edit.window={list(self.window)} edits where t_start >= tau >= t_stop: give t_start first"
                )

    def check_schedule(self, schedule: SamplingSchedule) -> None:
        """A window that holds no step of the grid would leave every edit equal to the unedited sample."""
        mask = self.step_mask(schedule.timesteps)
        if mask is not None and not bool(mask.any()):
            steps = schedule.timesteps.tolist()
            raise UserError(
                f"edit.window={list(self.window)} holds no step of the {len(steps)}-step grid, whose timesteps run "
                f"from {steps[0]} to {steps[-1]}: widen it, or set edit.window=null to edit at every step"
            )

    def step_mask(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        if self.window is None:
            return None
        t_start, t_stop = self.window
        return (timesteps <= t_start) & (timesteps >= t_stop)

    @torch.no_grad()
    def apply(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        directions: Directions,
        index: int,
        x_T: torch.Tensor,
        z: torch.Tensor | None,
        clip_x0: bool = False,
        states: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        strengths = torch.as_tensor(list(self.strengths), dtype=torch.float32)
        n, s = x_T.shape[0], len(strengths)
        path, z = with_noisy_tail(schedule, self.noisy_tail, model.num_train_timesteps, x_T, z)
        rows_x = x_T.repeat_interleave(s, dim=0)  # row r = sample r // S at strength r % S
        sample_of = torch.arange(n * s) // s  # noise maps are picked per batch, not copied S times
        rows_strength = strengths.repeat(n)
        v = directions.scaled(index).to(model.device)
        mask = self.step_mask(schedule.timesteps)
        rule = AsymmetricAddH if self.asymmetric else AddH
        out = []
        for start in range(0, n * s, self.batch_size):
            part = slice(start, start + self.batch_size)
            offsets = StepOffsets(v, rows_strength[part].to(model.device), mask)
            zs = z[sample_of[part]] if z is not None else None
            out.append(sample(model, path, rows_x[part], zs, step=rule(offsets), clip_x0=clip_x0).x0.cpu())
        return torch.cat(out).view(n, s, *x_T.shape[1:])

    @torch.no_grad()
    def unedited(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        directions: Directions,
        index: int,
        x_T: torch.Tensor,
        z: torch.Tensor | None,
        clip_x0: bool = False,
        states: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The plain sample, on the path with the noisy tail when there is one."""
        path, z = with_noisy_tail(schedule, self.noisy_tail, model.num_train_timesteps, x_T, z)
        return sample(model, path, x_T, z, clip_x0=clip_x0).x0
