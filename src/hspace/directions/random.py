"""The random-direction control (Haas et al. Figs. 3-4; ALGORITHMS.md 4(a) item 7).

r_t ~ N(0, I) per step with a fixed seed, rescaled to the norm of the PCA axis at that step and used with
the PCA scales, so ||dh_t|| equals that of the matching principal component at every step and strength.
It takes every PCA setting (they define the scales it matches) plus its own seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from hspace.cache import ArtifactCache
from hspace.diffusion.model import DiffusionModel
from hspace.directions.directions import Directions
from hspace.directions.pca import PCA


@dataclass
class RandomDirections(PCA):
    seed: int = 0

    name = "random"

    def find(self, model: DiffusionModel, num_steps: int, spacing: str, final_alpha: str = "one", cache: ArtifactCache | None = None) -> Directions:
        reference = super().find(model, num_steps, spacing, final_alpha, cache)
        r = torch.randn(reference.directions.shape, generator=torch.Generator().manual_seed(self.seed))
        # Unit r_t times the norm of the PCA axis at that step (1 per step; less than 1 per step for joint PCA).
        shape = (*r.shape[:2], *([1] * len(reference.h_shape)))
        r = r / r.flatten(2).norm(dim=-1).view(shape) * reference.directions.flatten(2).norm(dim=-1).view(shape)
        return replace(reference, directions=r, names=[f"random{j}" for j in range(len(reference.names))], method=self.name, info={})
