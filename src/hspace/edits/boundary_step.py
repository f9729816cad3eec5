"""Single-step boundary guidance (BoundaryDiffusion; docs/algorithms.md, "BoundaryDiffusion").

Deterministic DDIM takes x_T to the mixing step t_m (a real image starts from its DDIM-inverted x_tm
instead, handed in as `states`). There, both latents move once along their unit normals n (x_t and h
spaces, from `method=boundary`):

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from hspace.bottleneck import capture_h
from hspace.checks import boolean, choice, integer, number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample
from hspace.diffusion.schedule import SamplingSchedule
from hspace.diffusion.step_rules import ReplaceH
from hspace.directions.container import Directions
from hspace.edits.strategy import EditStrategy, check_strengths
from hspace.errors import UserError

MODES = ("placement", "placement_intercept", "relative", "push")


def t_index(directions: Directions, index: int) -> int:
    """The grid index of boundary `index`'s mixing step t_m (the step its h normal lives at)."""
    return int(directions.scales[index].argmax())


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
class BoundaryStep(EditStrategy):
    strengths: Sequence[float] = field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    mode: str = "placement"
    x_scale: float | None = 1.0  # d_x = strength * x_scale; null: x_t is not moved
    h_scale: float | None = 1.0  # d_h = strength * h_scale; null: h is not moved
    batch_size: int = 64
    keep_h: bool = False  # after t_m, h from the unedited path at every step (an extension)

    name = "boundary_step"
    requires = ("x_normal", "offsets")  # from method=boundary
    reads_h = True  # the h boundary's normal at t_m
    inverts_by_ddim = True  # its path is deterministic DDIM up to t_m

    def __post_init__(self):
        check_strengths(self.strengths)
        choice(self.mode, "edit.mode", MODES)
        integer(self.batch_size, "edit.batch_size", 1)
        boolean(self.keep_h, "edit.keep_h")
        for name in ("x_scale", "h_scale"):
            if getattr(self, name) is not None:
                number(getattr(self, name), f"edit.{name}")
        if self.x_scale is None and self.h_scale is None:
            raise UserError("edit.x_scale and edit.h_scale are both null, so nothing would move: give at least one")

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
        """The samples this edit departs from: the same path (deterministic DDIM to t_m, or the inverted x_tm
        of `states`; the sampler's eta after) with nothing moved. (N, C, H, W)"""
        # keep_h would replace h by itself here: the same result with an extra pass.
        return replace(self, strengths=[0.0], mode="relative", keep_h=False).apply(
            model, schedule, directions, index, x_T, z, clip_x0, states=states
        )[:, 0]

    def starts_at(self, directions: Directions, indices: Iterable[int]) -> set[int]:
        """The mixing steps t_m of these boundaries (where the x_t boundary is fitted): a real image's edit starts
        from its inverted x_tm there, as in the paper's conditional mode."""
        return {t_index(directions, i) for i in indices}

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
        """(N, S, C, H, W) edits of samples x_T along boundary `index`; from `states[t_m]` (inverted real images)
        where given, else from x_T taken to t_m by deterministic DDIM."""
        t_m = t_index(directions, index)
        strengths = torch.as_tensor(list(self.strengths), dtype=torch.float64)
        n, s = x_T.shape[0], len(strengths)
        device = model.device
        if states is not None:
            if t_m not in states:
                raise ValueError(f"states hold grid indices {sorted(states)}, not this boundary's t_m index {t_m}")
            x_tm = states[t_m].to(device, model.dtype)
        elif t_m:
            x_tm = sample(model, schedule.steps(0, t_m).deterministic(), x_T, clip_x0=clip_x0).x0
        else:
            x_tm = x_T.to(device, model.dtype)
        h_tm = capture_h(model, x_tm, schedule.timesteps[t_m])
        normal_x = directions.extra["x_normal"][index].flatten().double().to(device)
        normal_h = directions.vectors[index, t_m].flatten().double().to(device)
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
        rest = schedule.steps(t_m)  # t_m (with the moved x_t and h) to the end
        kept = (0, None)  # keep_h: the unedited h of samples first.., recorded for batch_size samples at a time
        out = []
        for start in range(0, n * s, self.batch_size):
            part = slice(start, start + self.batch_size)
            zs = z[sample_of[part]][:, t_m:] if z is not None else None
            after = None  # keep_h: (rows, steps after t_m, *h_shape) from the unedited paths
            if self.keep_h and rest.num_steps > 1:
                first, last = int(sample_of[part][0]), int(sample_of[part][-1])
                if kept[1] is None or first < kept[0] or last >= kept[0] + len(kept[1]):
                    chunk = slice(first, first + max(self.batch_size, last - first + 1))
                    kept = (
                        first,
                        self.unedited_h(
                            model, schedule, t_m, x_tm[chunk], z[chunk] if z is not None else None, clip_x0
                        ),
                    )
                after = kept[1][sample_of[part] - kept[0]]
            moved = h_rows[part]

            def replacement(idx, moved=moved, after=after):
                return moved if idx == 0 else (after[:, idx - 1].to(device) if after is not None else None)

            out.append(sample(model, rest, x_rows[part], zs, step=ReplaceH(replacement), clip_x0=clip_x0).x0.cpu())
        return torch.cat(out).view(n, s, *x_T.shape[1:])

    @torch.no_grad()
    def unedited_h(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        t_index: int,
        x_tm: torch.Tensor,
        z: torch.Tensor | None,
        clip_x0: bool,
    ) -> torch.Tensor:
        """h of every step after t_m on the samples' unedited paths from x_tm: (N, steps after t_m, *h_shape),
        on the CPU."""
        rest = schedule.steps(t_index)
        parts = []
        for start in range(0, x_tm.shape[0], self.batch_size):
            zs = z[start : start + self.batch_size, t_index:] if z is not None else None
            parts.append(
                sample(model, rest, x_tm[start : start + self.batch_size], zs, record_h=True, clip_x0=clip_x0).h[:, 1:]
            )
        return torch.cat(parts)
