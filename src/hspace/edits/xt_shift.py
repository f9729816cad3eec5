"""`edit=xt_shift`: move x_t once along a direction in x_t and continue the reverse process (LOCO Edit's edit;
docs/algorithms.md, "LOCO Edit").

The sample walks its own path (the sampler's grid, eta and stored noise) to the step its directions mark
(the one step with a non-zero scale), there x_t <- x_t + strength * scale * v with v from
`directions.extra["x_directions"]`, and every later step is the plain one. Strength 0 is the plain sample
(with the noisy tail when there is one); all strengths of a sample share its path and noise, and run as one
batch.

`noisy_tail` > 0 is the paper's last stretch of sampling after the shift (hspace.edits.noisy_tail: eta = 1 at
training timesteps tau < noisy_tail * N; LOCO Edit's edit scripts use 0.2); every strength of a sample,
strength 0 included, sees the same tail noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from hspace.checks import integer, number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.edits.noisy_tail import with_noisy_tail
from hspace.edits.strategy import EditStrategy, check_strengths


@dataclass
class XtShift(EditStrategy):
    strengths: Sequence[float] = field(default_factory=lambda: [-8.0, -4.0, 0.0, 4.0, 8.0])
    batch_size: int = 64
    noisy_tail: float = 0.0  # eta = 1 at training timesteps < noisy_tail * N after the edit

    name = "xt_shift"
    requires = ("x_directions",)  # from method=loco
    reads_h = False  # it moves x_t

    def __post_init__(self):
        check_strengths(self.strengths)
        integer(self.batch_size, "edit.batch_size", 1)
        self.noisy_tail = number(self.noisy_tail, "edit.noisy_tail", 0.0, 1.0)

    def paths(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        directions: Directions,
        index: int,
        x_T: torch.Tensor,
        z: torch.Tensor | None,
        strengths: Sequence[float],
        clip_x0: bool,
    ) -> torch.Tensor:
        """(N, S, C, H, W) samples x_T shifted along x_t direction `index` by each of `strengths`."""
        t_index = int(directions.scales[index].argmax())
        step = float(directions.scales[index, t_index]) * directions.extra["x_directions"][index].to(model.device)
        strengths = torch.as_tensor(list(strengths), dtype=torch.float32, device=model.device)
        n, s = x_T.shape[0], len(strengths)
        before = z[:, :t_index] if z is not None else None
        x_t = sample(model, schedule.steps(0, t_index), x_T, before, clip_x0=clip_x0).x0 if t_index else x_T
        x_t = x_t.to(model.device, model.dtype)
        rows = x_t.repeat_interleave(s, dim=0) + strengths.repeat(n).view(-1, 1, 1, 1) * step
        rest, after = with_noisy_tail(schedule, self.noisy_tail, model.num_train_timesteps, x_T, z, start=t_index)
        sample_of = torch.arange(n * s) // s  # noise maps are picked per batch, not copied S times
        out = []
        for start in range(0, n * s, self.batch_size):
            part = slice(start, start + self.batch_size)
            zs = after[sample_of[part]] if after is not None else None
            out.append(sample(model, rest, rows[part], zs, clip_x0=clip_x0).x0.cpu())
        return torch.cat(out).view(n, s, *x_T.shape[1:])

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
        """(N, S, C, H, W) edits of samples x_T along x_t direction `index`."""
        return self.paths(model, schedule, directions, index, x_T, z, self.strengths, clip_x0)

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
        """The strength-0 path: the plain sample, with the noisy tail when there is one."""
        if self.noisy_tail == 0:
            return super().unedited(model, schedule, directions, index, x_T, z, clip_x0)
        return self.paths(model, schedule, directions, index, x_T, z, [0.0], clip_x0)[:, 0].to(model.device)
