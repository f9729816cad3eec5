"""The generalised DDIM step (docs/algorithms.md, "Sampling and inversion"):

    x0_hat  = the UNet output converted to the clean image (epsilon, v or sample parameterisation)
    x_{t-1} = sqrt(a_{t-1}) x0_hat + sqrt(1 - a_{t-1} - sigma_t^2) eps + sigma_t z_t

Sampling (hspace.diffusion.sampler) and inversion (hspace.diffusion.inversion) both step with these.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_x0_eps(output: Tensor, x_t: Tensor, alpha_bar: float, prediction_type: str) -> tuple[Tensor, Tensor]:
    """The predicted clean image x0_hat and noise eps from a UNet output at level a_t = alpha_bar."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    sqrt_a, sqrt_1ma = float(a.sqrt()), float((1 - a).sqrt())
    if prediction_type == "epsilon":
        return (x_t - sqrt_1ma * output) / sqrt_a, output
    if prediction_type == "v_prediction":
        return sqrt_a * x_t - sqrt_1ma * output, sqrt_a * output + sqrt_1ma * x_t
    if prediction_type == "sample":
        return output, (x_t - sqrt_a * output) / sqrt_1ma
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_prev: float, sigma: float, z: Tensor | None) -> Tensor:
    """x_{t-1} from x0_hat and eps; z is the noise map of this step (ignored when sigma = 0)."""
    a_prev = float(alpha_bar_prev)
    direction = max(1 - a_prev - sigma**2, 0.0) ** 0.5
    x_prev = a_prev**0.5 * x0 + direction * eps
    if sigma > 0:
        if z is None:
            raise ValueError("a stochastic step (sigma > 0) needs a noise map z")
        x_prev = x_prev + sigma * z
    return x_prev
