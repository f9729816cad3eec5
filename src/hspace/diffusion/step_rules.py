"""How one reverse step asks the UNet for (x0_hat, eps): with the natural h, or with h edited.

The sampler (hspace.diffusion.sampler.sample) owns the loop and the DDIM step; a StepRule decides, at
each step index, what h the UNet continues with, through the sampler's HSpace hook:

- StepRule: the natural call (no edit);
- AddH: h_t <- h_t + offset(idx) (the shift edit of Haas et al.);
- AsymmetricAddH: Asyrp's asymmetric step, x0_hat from the edited call and eps from the unedited one,
  as one doubled batch [x_t, x_t] whose second half carries the offset (the natural call, undoubled, at steps
  without an edit);
- ReplaceH: h_t <- h(idx) where given (BoundaryDiffusion's step at t_m, keep_h after it).

An offset or replacement function returns a tensor with one row per batch row, or None for no edit at
that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hspace.bottleneck import HSpace
from hspace.diffusion.ddim import to_x0_eps
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplingSchedule

# Per step index: a tensor (B, *h_shape) for every batch row, or None at steps without an edit.
PerStepH = Callable[[int], "Tensor | None"]


class StepRule:
    """The natural step: the UNet sees its own h."""

    def predict(
        self, model: DiffusionModel, hs: HSpace, x: Tensor, idx: int, schedule: SamplingSchedule
    ) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps) at x_t = x, step index idx. `hs` hooks the model's UNet for this sampling run."""
        hs.clear()
        return self.call(model, x, idx, schedule)

    @staticmethod
    def call(model: DiffusionModel, x: Tensor, idx: int, schedule: SamplingSchedule) -> tuple[Tensor, Tensor]:
        return to_x0_eps(model(x, schedule.timesteps[idx]), x, schedule.alpha_bar[idx], model.prediction_type)


@dataclass
class AddH(StepRule):
    """h_t <- h_t + offset(idx) for every batch row."""

    offset: PerStepH

    def predict(self, model, hs, x, idx, schedule):
        hs.add(self.offset(idx))
        return self.call(model, x, idx, schedule)


@dataclass
class AsymmetricAddH(StepRule):
    """Asyrp's step: x0_hat from the edited eps, the direction term from the unedited one."""

    offset: PerStepH

    def predict(self, model, hs, x, idx, schedule):
        batch = x.shape[0]
        offset = self.offset(idx)
        if offset is None:  # no edit at this step (outside the window): both halves would be the natural call
            return super().predict(model, hs, x, idx, schedule)
        hs.add(offset, rows=torch.arange(batch, 2 * batch))
        output = model(torch.cat([x, x]), schedule.timesteps[idx])
        x0 = to_x0_eps(output[batch:], x, schedule.alpha_bar[idx], model.prediction_type)[0]
        eps = to_x0_eps(output[:batch], x, schedule.alpha_bar[idx], model.prediction_type)[1]
        return x0, eps


@dataclass
class ReplaceH(StepRule):
    """h_t <- replacement(idx) where it is given; the natural h elsewhere."""

    replacement: PerStepH

    def predict(self, model, hs, x, idx, schedule):
        h = self.replacement(idx)
        if h is None:
            hs.clear()
        else:
            hs.replace(h)
        return self.call(model, x, idx, schedule)
