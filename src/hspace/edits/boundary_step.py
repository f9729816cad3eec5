"""Single-step boundary guidance (BoundaryDiffusion; ALGORITHMS.md 5.5-5.6).

Deterministic DDIM takes x_T to the mixing step t_m. There, both latents move once along their unit
normals n (x_t and h spaces, from `method=boundary`):

    placement:            v' = v + (d - <n, v>) n        so <n, v'> = d              (the reference behaviour)
    placement_intercept:  v' = v + (d - dist(v)) n       so dist(v') = d, dist(v) = <n, v> + b/||w||
    relative:             v' = v + d n
    push:                 like placement_intercept, but only towards d: a sample already at or beyond
                          distance d (on d's side) is left as it is (an extension)

x'_tm is the new state; h'_tm replaces the mid-block output in the UNet call at t_m only; every later
step uses its natural h, with the sampler's eta and the sample's stored noise (shared by all strengths).

`keep_h` (an extension, off by default): every step after t_m takes h from the sample's unedited path, so
what h carries stays and only what reaches the decoder through the skip connections follows the moved x_t.
Column s of the grid uses d_x = strength_s * x_scale and d_h = strength_s * h_scale; a null scale leaves
that space alone. All strengths of a sample run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import ddim_step, sample, to_x0_eps
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.directions import Directions
from hspace.hspace import HSpace

MODES = ("placement", "placement_intercept", "relative", "push")


def move(v: torch.Tensor, normal: torch.Tensor, offset: float, d: torch.Tensor, mode: str) -> torch.Tensor:
    """Rows v (B, D) moved along the unit normal (D,) to distance d (B,) by `mode`."""
    if mode == "relative":
        return v + d[:, None] * normal
    current = v @ normal + (offset if mode in ("placement_intercept", "push") else 0.0)
    step = d - current
    if mode == "push":  # never back: a step against d's direction (or any step at d = 0) is dropped
        step = torch.where(step * d > 0, step, torch.zeros_like(step))
    return v + step[:, None] * normal


@dataclass
class BoundaryStep:
    strengths: Sequence[float] = field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    mode: str = "placement"
    x_scale: float | None = 1.0        # d_x = strength * x_scale; null: x_t is not moved
    h_scale: float | None = 1.0        # d_h = strength * h_scale; null: h is not moved
    batch_size: int = 64
    keep_h: bool = False               # after t_m, h from the unedited path at every step (an extension)

    name = "boundary_step"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"edit.mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    def unedited(self, model: DiffusionModel, schedule: SamplingSchedule, directions: Directions, index: int, x_T: torch.Tensor, z: torch.Tensor | None, clip_x0: bool = False) -> torch.Tensor:
        """The samples this edit departs from: the same path (deterministic to t_m, the sampler's eta after)
        with nothing moved. (N, C, H, W)"""
        # keep_h would replace h by itself here: the same result with an extra pass.
        return replace(self, strengths=[0.0], mode="relative", keep_h=False).apply(model, schedule, directions, index, x_T, z, clip_x0)[:, 0]

    @torch.no_grad()
    def apply(self, model: DiffusionModel, schedule: SamplingSchedule, directions: Directions, index: int, x_T: torch.Tensor, z: torch.Tensor | None, clip_x0: bool = False) -> torch.Tensor:
        """(N, S, C, H, W) edits of samples x_T along boundary `index`."""
        t_index = int(directions.scales[index].argmax())
        strengths = torch.as_tensor(list(self.strengths), dtype=torch.float64)
        n, s = x_T.shape[0], len(strengths)
        device = model.device
        approach = SamplingSchedule(*(t[:t_index] for t in (schedule.timesteps, schedule.alpha_bar, schedule.alpha_bar_prev)), torch.zeros(t_index, dtype=torch.float64))
        x_tm = sample(model, approach, x_T, clip_x0=clip_x0).x0 if t_index else x_T.to(device, model.dtype)
        tau = schedule.timesteps[t_index]
        with HSpace(model.unet, capture=True) as hs:
            model(x_tm, tau)
        h_tm = hs.captured[0]
        normal_x = directions.extra["x_normal"][index].flatten().double().to(device)
        normal_h = directions.directions[index, t_index].flatten().double().to(device)
        offset_x, offset_h = directions.extra["offsets"][index].tolist()
        rows = torch.arange(n * s)
        sample_of, strength_of = rows // s, strengths.repeat(n).to(device)
        x_rows = x_tm.flatten(1).double()[sample_of]
        h_rows = h_tm.flatten(1).double()[sample_of]
        if self.x_scale is not None:
            x_rows = move(x_rows, normal_x, offset_x, strength_of * self.x_scale, self.mode)
        if self.h_scale is not None:
            h_rows = move(h_rows, normal_h, offset_h, strength_of * self.h_scale, self.mode)
        x_rows = x_rows.to(model.dtype).view(n * s, *x_T.shape[1:])
        h_rows = h_rows.to(model.dtype).view(n * s, *h_tm.shape[1:])
        rest = schedule.steps(t_index + 1)
        kept = (0, None)  # keep_h: the unedited h of samples first.., recorded for batch_size samples at a time
        out = []
        for start in range(0, n * s, self.batch_size):
            part = slice(start, start + self.batch_size)
            with HSpace(model.unet) as edit:
                edit.replace(h_rows[part])
                output = model(x_rows[part], tau)
            x0, eps = to_x0_eps(output, x_rows[part], schedule.alpha_bar[t_index], model.prediction_type)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
            zs = z[sample_of[part]].to(device, model.dtype) if z is not None else None
            z_tm = zs[:, t_index] if zs is not None else None
            x_next = ddim_step(x0, eps, schedule.alpha_bar_prev[t_index], float(schedule.sigma[t_index]), z_tm)
            tail = zs[:, t_index + 1 :] if zs is not None else None
            h_replace = None
            if self.keep_h and rest.num_steps:
                first, last = int(sample_of[part][0]), int(sample_of[part][-1])
                if kept[1] is None or first < kept[0] or last >= kept[0] + len(kept[1]):
                    chunk = slice(first, first + max(self.batch_size, last - first + 1))
                    kept = (first, self.unedited_h(model, schedule, t_index, x_tm[chunk], z[chunk] if z is not None else None, clip_x0))
                rows_h = kept[1][sample_of[part] - kept[0]]
                h_replace = lambda idx, rows_h=rows_h: rows_h[:, idx].to(device)  # noqa: E731
            out.append((sample(model, rest, x_next, tail, clip_x0=clip_x0, h_replace=h_replace).x0 if rest.num_steps else x_next).cpu())
        return torch.cat(out).view(n, s, *x_T.shape[1:])

    @torch.no_grad()
    def unedited_h(self, model: DiffusionModel, schedule: SamplingSchedule, t_index: int, x_tm: torch.Tensor, z: torch.Tensor | None, clip_x0: bool) -> torch.Tensor:
        """h of every step after t_m on the samples' unedited paths from x_tm: (N, steps after t_m, *h_shape), on the CPU."""
        rest = schedule.steps(t_index + 1)
        parts = []
        for start in range(0, x_tm.shape[0], self.batch_size):
            x = x_tm[start : start + self.batch_size]
            x0, eps = to_x0_eps(model(x, schedule.timesteps[t_index]), x, schedule.alpha_bar[t_index], model.prediction_type)
            if clip_x0:
                x0 = x0.clamp(-1, 1)
            zs = z[start : start + self.batch_size].to(model.device, model.dtype) if z is not None else None
            x_next = ddim_step(x0, eps, schedule.alpha_bar_prev[t_index], float(schedule.sigma[t_index]), zs[:, t_index] if zs is not None else None)
            parts.append(sample(model, rest, x_next, zs[:, t_index + 1 :] if zs is not None else None, record_h=True, clip_x0=clip_x0).h)
        return torch.cat(parts)
