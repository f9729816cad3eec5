"""`edit=xt_shift`: move x_t once along a direction in x_t and continue the reverse process (LOCO Edit's edit;
docs/algorithms.md, "LOCO Edit").

The sample walks its own path (the sampler's grid, eta and stored noise) to the step its directions mark
(the one step with a non-zero scale), there x_t <- x_t + strength * scale * v with v from
`directions.extra["x_directions"]`, and every later step is the plain one. Strength 0 is the plain sample;
all strengths of a sample share its path and noise, and run as one batch.

`noisy_tail` > 0 is the paper's last stretch of sampling: the steps at training timesteps
tau <= noisy_tail * N (N training steps) take eta = 1, which lets the model repair what the shift left
off its data (LOCO Edit's edit scripts use 0.2). Their noise is drawn from a stream named by the sample's
x_T, so every strength of a sample (strength 0, what the edits depart from, included) sees the same noise;
the steps before the tail keep the run's stored noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from hspace.checks import integer, number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample, seed_stream
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.edits.strategy import EditStrategy, check_strengths


@dataclass
class XtShift(EditStrategy):
    strengths: Sequence[float] = field(default_factory=lambda: [-8.0, -4.0, 0.0, 4.0, 8.0])
    batch_size: int = 64
    noisy_tail: float = 0.0  # eta = 1 at training timesteps <= noisy_tail * N after the edit

    name = "xt_shift"
    requires = ("x_directions",)  # from method=loco

    def __post_init__(self):
        check_strengths(self.strengths)
        integer(self.batch_size, "edit.batch_size", 1)
        self.noisy_tail = number(self.noisy_tail, "edit.noisy_tail", 0.0, 1.0)

    def after_the_edit(
        self, model: DiffusionModel, schedule: SamplingSchedule, t_index: int, x_T: torch.Tensor, z: torch.Tensor | None
    ) -> tuple[SamplingSchedule, torch.Tensor | None]:
        """The steps after the edit, with eta = 1 in the noisy tail, and their noise maps (N, T - t_index, ...)."""
        rest = schedule.steps(t_index)
        after = z[:, t_index:] if z is not None else None
        if self.noisy_tail == 0:
            return rest, after
        tail = rest.timesteps <= self.noisy_tail * model.num_train_timesteps
        rest = replace(rest, eta=torch.where(tail, torch.ones_like(rest.eta), rest.eta))
        # fresh noise in the tail: a real image's stored z (edit-friendly inversion) hold the residuals of the
        # run's own eta, which taken at eta 1 would throw the path off its data
        noise = torch.stack([tail_noise(x, rest.num_steps) for x in x_T])
        if after is None:
            return rest, noise
        return rest, torch.where(tail.view(1, -1, 1, 1, 1), noise, after.cpu())

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
        rest, after = self.after_the_edit(model, schedule, t_index, x_T, z)
        after = after.repeat_interleave(s, dim=0) if after is not None else None
        out = []
        for start in range(0, n * s, self.batch_size):
            part = slice(start, start + self.batch_size)
            zs = after[part] if after is not None else None
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
    ) -> torch.Tensor:
        """The strength-0 path: the plain sample, with the noisy tail when there is one."""
        if self.noisy_tail == 0:
            return super().unedited(model, schedule, directions, index, x_T, z, clip_x0)
        return self.paths(model, schedule, directions, index, x_T, z, [0.0], clip_x0)[:, 0].to(model.device)


def tail_noise(x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
    """(num_steps, C, H, W) standard normal noise from a stream named by the bytes of one x_T (C, H, W)."""
    digest = hashlib.sha256(x_T.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
    return torch.randn((num_steps, *x_T.shape), generator=seed_stream(int(digest[:15], 16), "noisy_tail"))
