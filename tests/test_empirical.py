"""The exact denoiser of a finite image set, against the posterior written out image by image."""

import math

import numpy as np
import pytest
import torch

from hspace.diffusion.empirical import EmpiricalDenoiser
from hspace.diffusion.schedule import make_schedule, training_alphas_cumprod

CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "linear", "rescale_betas_zero_snr": True}


@pytest.fixture(scope="module")
def images():
    return torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def posterior_mean_by_loop(x_t: np.ndarray, images: np.ndarray, a: float) -> np.ndarray:
    """sum_i w_i x_i with w_i proportional to exp(-||x_t - sqrt(a) x_i||^2 / (2 (1 - a))), in float64."""
    logs = np.array([-((x_t - math.sqrt(a) * x) ** 2).sum() / (2 * (1 - a)) for x in images])
    w = np.exp(logs - logs.max())
    w /= w.sum()
    return sum(wi * x for wi, x in zip(w, images))


@pytest.mark.parametrize("a", [0.0, 0.2, 0.9, 0.999])
def test_posterior_mean_matches_the_loop(images, a):
    x_t = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    denoiser = EmpiricalDenoiser(
        images, training_alphas_cumprod(CONFIG), chunk=2
    )  # chunks of 2 samples: the split must not matter
    got = denoiser.x0(x_t, a).double().numpy()
    for b in range(5):
        want = posterior_mean_by_loop(x_t[b].double().numpy(), images.double().numpy(), a)
        np.testing.assert_allclose(got[b], want, atol=1e-5)
    assert torch.allclose(denoiser.weights(x_t, a).sum(dim=1), torch.ones(5))


def test_pure_noise_gives_the_mean_image(images):
    x0 = EmpiricalDenoiser(images, training_alphas_cumprod(CONFIG)).x0(torch.randn(2, 3, 8, 8), 0.0)
    assert torch.allclose(x0, images.mean(dim=0).expand(2, -1, -1, -1), atol=1e-6)


def test_deterministic_sampling_ends_on_an_image_of_the_set(images):
    schedule = make_schedule(training_alphas_cumprod(CONFIG), 20, "trailing")
    out = EmpiricalDenoiser(images, training_alphas_cumprod(CONFIG)).sample(
        schedule, torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    )
    distance = ((out[:, None] - images[None]) ** 2).flatten(2).sum(dim=2).min(dim=1).values
    assert float(distance.max()) < 1e-6


def test_refuses_what_it_cannot_do(images):
    denoiser = EmpiricalDenoiser(images, training_alphas_cumprod(CONFIG))
    with pytest.raises(ValueError, match="alpha_bar"):
        denoiser.x0(torch.zeros(1, 3, 8, 8), 1.0)
    stochastic = make_schedule(training_alphas_cumprod(CONFIG), 10, "trailing", eta=1.0)
    with pytest.raises(ValueError, match="deterministic"):
        denoiser.sample(stochastic, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="non-empty"):
        EmpiricalDenoiser(torch.zeros(0, 3, 8, 8), training_alphas_cumprod(CONFIG))
