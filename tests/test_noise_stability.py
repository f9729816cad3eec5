"""Noise stability: the perturbation of x_T, the reference map's effects against their closed forms and dense
integrals, and the script end to end on the shipped model."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from hspace.data.batch import image_batch
from hspace.data.shapes import ShapesDataset
from hspace.diffusion.empirical import EmpiricalDenoiser
from hspace.diffusion.sampler import initial_noise
from hspace.diffusion.schedule import training_alphas_cumprod
from hspace.metrics.noise_stability import noise_stability, perturbed_noise, reference_effects

AMOUNTS = (0.05, 0.3)


def same_class_probability(rho: float, k: int) -> float:
    """P(u and u' fall in the same k-quantile of N(0, 1)), u, u' standard normal with correlation rho, from the
    bivariate normal distribution function over the k squares on the diagonal."""
    cuts = norm.ppf(np.linspace(0, 1, k + 1)).clip(-12, 12)
    joint = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    total = 0.0
    for low, high in zip(cuts[:-1], cuts[1:]):
        total += joint.cdf([high, high]) - joint.cdf([low, high]) - joint.cdf([high, low]) + joint.cdf([low, low])
    return total


@pytest.mark.parametrize("amount", AMOUNTS)
def test_reference_binary_flip_rate_is_sheppards(amount):
    rho = math.sqrt(1 - amount**2)
    assert reference_effects(amount)["background"] == pytest.approx(math.acos(rho) / math.pi, abs=2e-3)


@pytest.mark.parametrize("amount", AMOUNTS)
def test_reference_categorical_flip_rates_match_the_bivariate_normal(amount):
    rho = math.sqrt(1 - amount**2)
    effects = reference_effects(amount)
    assert effects["shape"] == pytest.approx(1 - same_class_probability(rho, 3), abs=2e-3)
    assert effects["colour"] == pytest.approx(1 - same_class_probability(rho, 4), abs=2e-3)


@pytest.mark.parametrize("amount", AMOUNTS)
def test_reference_continuous_effect_matches_a_dense_integral(amount):
    """E|Phi(u) - Phi(rho u + a v)| * sqrt(12) by the trapezoid rule on a dense grid of (u, v)."""
    rho = math.sqrt(1 - amount**2)
    grid = np.linspace(-7, 7, 1401)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    weight = norm.pdf(u) * norm.pdf(v)
    integrand = np.abs(norm.cdf(u) - norm.cdf(rho * u + amount * v)) * weight
    dense = np.trapezoid(np.trapezoid(integrand, grid, axis=1), grid) * math.sqrt(12)
    effects = reference_effects(amount)
    assert effects["r"] == effects["cx"] == effects["cy"]
    assert effects["r"] == pytest.approx(dense, abs=2e-3)


def test_perturbed_noise_keeps_the_distribution_and_does_not_depend_on_the_batch():
    seeds = [3, 4, 5]
    x_T, _ = initial_noise(seeds, (3, 32, 32), 1, with_z=False)
    assert torch.equal(perturbed_noise(x_T, seeds, 0.0), x_T)
    moved = perturbed_noise(x_T, seeds, 0.3)
    assert torch.equal(perturbed_noise(x_T[1:2], seeds[1:2], 0.3)[0], moved[1])
    # the fresh part is each seed's own stream: amount 1 gives the same noise whatever x_T was
    assert torch.equal(perturbed_noise(x_T, seeds, 1.0), perturbed_noise(torch.zeros_like(x_T), seeds, 1.0))
    big, _ = initial_noise([7], (3, 256, 256), 1, with_z=False)
    moved = perturbed_noise(big, [7], 0.3)
    assert float(moved.std()) == pytest.approx(1.0, abs=0.01)
    assert float(torch.corrcoef(torch.stack([big.flatten(), moved.flatten()]))[0, 1]) == pytest.approx(
        math.sqrt(1 - 0.09), abs=0.01
    )


@pytest.mark.parametrize("amounts", [[0.0], [1.5], [-0.1]])
def test_noise_stability_refuses_bad_amounts_before_sampling(amounts):
    with pytest.raises(ValueError, match="amount"):
        noise_stability(None, amounts)  # no model is touched before the check


def test_the_script_measures_the_shipped_model_and_writes_its_record(tmp_path):
    out = tmp_path / "stability.json"
    done = subprocess.run(
        [sys.executable, "scripts/shapes_noise_stability.py", "--num-samples", "4", "--steps", "10"]
        + ["--amounts", "0.5", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "reference" in done.stdout and "ratio" in done.stdout
    record = json.loads(out.read_text())
    row = record["amounts"]["0.5"]
    assert row["reference"] == pytest.approx(reference_effects(0.5))
    assert 0 < row["pairs"] <= 4
    assert set(row["model"]) == {"background", "colour", "shape", "r", "cx", "cy"}
    # half of the noise replaced redraws the samples: some factor moves
    assert max(row["model"].values()) > 0


@pytest.mark.parametrize("args", [["--amounts", "0"], ["--amounts", "1.2"], ["--num-samples", "0"]])
def test_the_script_refuses_bad_arguments_in_one_line(tmp_path, args):
    out = tmp_path / "stability.json"
    done = subprocess.run(
        [sys.executable, "scripts/shapes_noise_stability.py", *args, "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()


def test_the_exact_denoiser_of_a_rendered_set_draws_its_images(monkeypatch):
    dataset = ShapesDataset(300, "train")
    config = {"num_train_timesteps": 1000, "beta_schedule": "linear", "rescale_betas_zero_snr": True}
    denoiser = EmpiricalDenoiser(image_batch(dataset, range(300)), training_alphas_cumprod(config))
    grids = []
    draw = EmpiricalDenoiser.sample

    def recorded(self, schedule, x_T):
        grids.append(schedule.timesteps.tolist())
        return draw(self, schedule, x_T)

    monkeypatch.setattr(EmpiricalDenoiser, "sample", recorded)
    (row,) = noise_stability(denoiser, [1.0], num_samples=4, num_steps=10)
    # every sample is one of the rendered images: one object, a valid Shapes image
    assert row.measured.count == 4 and row.measured.valid_fraction == 1.0
    assert row.reference == reference_effects(1.0)
    assert grids[0][0] == 999 and grids[0][-1] > 0  # trailing: from pure noise at zero terminal SNR


def test_a_map_that_reads_each_factor_off_its_own_noise_coordinate_measures_as_the_reference(monkeypatch):
    """A stand-in for sampling that renders each seed's image with every factor read off its own coordinate of
    x_T, as the reference map does: the pipeline (perturbation, rendering to pixels, measurement, effects)
    must give the reference's effects, up to sampling error and the pixel measurement of r, cx and cy."""
    from types import SimpleNamespace

    import hspace.metrics.noise_stability as module
    from hspace.data.shapes import BACKGROUNDS, CENTRE_RANGE, COLOURS, SHAPES, SIZE_RANGE, ShapesFactors, render

    def by_coordinates(source, schedule, x_T):
        images = []
        for u in norm.cdf(x_T[:, 0, 0, :6].double().numpy()):  # six coordinates of each noise image, as Phi(u)
            factors = ShapesFactors(
                tuple(BACKGROUNDS)[int(u[0] * 2)],
                tuple(COLOURS)[int(u[1] * len(COLOURS))],
                SHAPES[int(u[2] * len(SHAPES))],
                (SIZE_RANGE[0] + u[3] * (SIZE_RANGE[1] - SIZE_RANGE[0])) * 32,
                (CENTRE_RANGE[0] + u[4] * (CENTRE_RANGE[1] - CENTRE_RANGE[0])) * 32,
                (CENTRE_RANGE[0] + u[5] * (CENTRE_RANGE[1] - CENTRE_RANGE[0])) * 32,
            )
            images.append(torch.from_numpy(render(factors, 32)).permute(2, 0, 1).float() / 127.5 - 1)
        return SimpleNamespace(x0=torch.stack(images))

    monkeypatch.setattr(module, "sample", by_coordinates)
    source = SimpleNamespace(
        alphas_cumprod=training_alphas_cumprod({"num_train_timesteps": 1000}), image_shape=(3, 32, 32)
    )
    (row,) = noise_stability(source, [0.3], num_samples=512, num_steps=2)
    assert row.measured.count == 512 and row.measured.valid_fraction == 1.0
    for factor in ("background", "colour", "shape"):  # flip rates near 0.1-0.2: a binomial error of about 0.015
        assert row.measured.normalised[factor] == pytest.approx(row.reference[factor], abs=0.05), factor
    for factor in ("r", "cx", "cy"):
        assert row.ratio(factor) == pytest.approx(1.0, abs=0.1), factor
