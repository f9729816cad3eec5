"""The random-direction control (Haas et al. Figs. 3-4; docs/algorithms.md, "PCA").

r_t ~ N(0, I) per step with a fixed seed, rescaled to the norm of the PCA axis at that step and used with
the PCA scales, so ||dh_t|| equals that of the matching principal component at every step and strength.
It takes every PCA setting (they define the scales it matches) plus its own seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from hspace.cache import ArtifactCache
from hspace.checks import integer
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.pca import PCA


@dataclass
class RandomDirections(PCA):
    seed: int = 0

    name = "random"

    def __post_init__(self):
        super().__post_init__()
        integer(self.seed, "method.seed", 0)  # before the PCA it rescales to is collected

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        reference = super().find(model, sampler, cache)
        r = torch.randn(reference.vectors.shape, generator=torch.Generator().manual_seed(self.seed))
        # Unit r_t times the norm of the PCA axis at that step (1 per step; less than 1 per step for joint PCA).
        shape = (*r.shape[:2], *([1] * len(reference.h_shape)))
        r = r / r.flatten(2).norm(dim=-1).view(shape) * reference.vectors.flatten(2).norm(dim=-1).view(shape)
        return replace(
            reference, vectors=r, names=[f"random{j}" for j in range(len(reference.names))], info={}, metrics={}
        )
