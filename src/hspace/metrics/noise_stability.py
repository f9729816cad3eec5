"""How much a Shapes sample's factors change when its initial noise moves a little, against a reference map.

A model maps noise x_T to an image; deterministic DDIM makes that a function. Replacing x_T by

    x_T' = sqrt(1 - a^2) x_T + a n,    n ~ N(0, I) independent of x_T

keeps x_T' distributed as x_T, correlated with it by rho = sqrt(1 - a^2). The factors of the two samples,
measured from pixels (hspace.data.shapes_factors), differ by the normalised effects of
hspace.metrics.factor_effects: flip rates of background, colour and shape; mean |change| of r, cx, cy over
their data standard deviation.

The reference is the map in which each factor is read off its own coordinate u of the noise: a categorical
factor with k equally likely values by the k-quantiles of u, a continuous one uniform over its range as
Phi(u). Its effects depend on rho alone. For a factor with two equally likely values no map does better
(Borell's noise stability theorem: halfspaces are the most stable sets of Gaussian measure 1/2), and there its
flip rate is arccos(rho) / pi. A model's ratio to the reference says how much rougher its map is than one
that keeps each factor to its own direction of the noise; edits of h that move a trajectory cross the same
boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES
from hspace.data.shapes_factors import measure_all
from hspace.diffusion.empirical import EmpiricalDenoiser
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import initial_noise, sample, seed_stream
from hspace.diffusion.schedule import make_schedule
from hspace.images import to_uint8
from hspace.metrics.factor_effects import CONTINUOUS, FactorEffects, factor_effects
from hspace.progress import bar

NUM_VALUES = {"background": len(BACKGROUNDS), "colour": len(COLOURS), "shape": len(SHAPES)}
REFERENCE_DRAWS = 1_000_000


def perturbed_noise(x_T: Tensor, seeds: Sequence[int], amount: float) -> Tensor:
    """sqrt(1 - amount^2) x_T + amount n, with n drawn from its own stream of each seed, so that a sample's
    perturbation does not depend on the batch it is drawn in. (B, ...) like x_T"""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must lie in [0, 1], not {amount}")
    if len(seeds) != x_T.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {x_T.shape[0]} noise images: pass one seed per image")
    n = torch.stack([torch.randn(tuple(x_T.shape[1:]), generator=seed_stream(s, "perturbation")) for s in seeds])
    return math.sqrt(1.0 - amount**2) * x_T + amount * n.to(x_T)


def reference_effects(amount: float, draws: int = REFERENCE_DRAWS, seed: int = 0) -> dict[str, float]:
    """The normalised effects of the perturbation `amount` on the reference map (module docstring), by Monte
    Carlo over `draws` pairs (u, rho u + amount v); the same for every continuous factor."""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must lie in [0, 1], not {amount}")
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(draws)
    moved = math.sqrt(1.0 - amount**2) * u + amount * rng.standard_normal(draws)
    p, q = norm.cdf(u), norm.cdf(moved)
    effects = {name: float(np.mean(np.floor(p * k) != np.floor(q * k))) for name, k in NUM_VALUES.items()}
    continuous = float(np.mean(np.abs(p - q)) * math.sqrt(12.0))  # |change| over the std of a uniform factor
    effects.update({name: continuous for name in CONTINUOUS})
    return effects


@dataclass(frozen=True)
class NoiseStability:
    """The effects of one perturbation amount on a model's samples and on the reference map."""

    amount: float
    measured: FactorEffects
    reference: dict[str, float]

    def ratio(self, factor: str) -> float:
        """The model's effect over the reference's: 1 is as stable as the reference map, larger is rougher."""
        return self.measured.normalised[factor] / self.reference[factor]


def noise_stability(
    source: DiffusionModel | EmpiricalDenoiser,
    amounts: Sequence[float],
    num_samples: int = 64,
    first_seed: int = 0,
    num_steps: int = 50,
    batch_size: int = 128,
) -> list[NoiseStability]:
    """Seeds first_seed..first_seed+num_samples-1 drawn by deterministic DDIM of `num_steps` trailing steps from
    their noise and from their noise perturbed by each amount, compared factor by factor. `source` is a network
    or the exact denoiser of a finite image set (hspace.diffusion.empirical): the data's own probability-flow
    map, with no network in between."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, not {num_samples}")
    for amount in amounts:
        if not 0.0 < amount <= 1.0:
            raise ValueError(f"each amount must lie in (0, 1], not {amount}")
    schedule = make_schedule(source.alphas_cumprod, num_steps, "trailing")

    def draw(x_T: Tensor) -> Tensor:
        if isinstance(source, EmpiricalDenoiser):
            return source.sample(schedule, x_T)
        return sample(source, schedule, x_T).x0

    seeds = list(range(first_seed, first_seed + num_samples))
    batches = [seeds[i : i + batch_size] for i in range(0, num_samples, batch_size)]
    reference, perturbed = [], {amount: [] for amount in amounts}
    for batch in bar(batches, "samples", unit="batch"):
        x_T, _ = initial_noise(batch, source.image_shape, 1, with_z=False)
        reference += measure_all(to_uint8(draw(x_T)))
        for amount in amounts:
            perturbed[amount] += measure_all(to_uint8(draw(perturbed_noise(x_T, batch, amount))))
    resolution = source.image_shape[-1]
    return [
        NoiseStability(amount, factor_effects(reference, perturbed[amount], resolution), reference_effects(amount))
        for amount in amounts
    ]
