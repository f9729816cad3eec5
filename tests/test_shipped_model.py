"""The shipped Shapes DDPM: sample quality judged from pixels, and inversion on real Shapes images."""

import pytest
import torch

from hspace.data.shapes import ShapesDataset
from hspace.data.shapes_quality import quality_report
from hspace.diffusion.inversion import ddim_invert, edit_friendly_invert
from hspace.diffusion.loading import load_model
from hspace.diffusion.sampler import initial_noise, sample
from hspace.diffusion.schedule import make_schedule
from hspace.images import to_uint8

# DDIM inversion with 50 trailing steps reconstructs Shapes test images to this mean squared error,
# measured like the metric inversion/mse: on images scaled to [0, 1].
DDIM_INVERSION_MSE_BOUND = 1e-3


@pytest.fixture(scope="module")
def shapes32():
    return load_model("shapes32")


@pytest.fixture(scope="module")
def real_images():
    ds = ShapesDataset(16, "test")
    return torch.stack([ds[i]["image"] for i in range(16)])


def test_quality_of_64_deterministic_samples(shapes32):
    """At least 85% pass the pixel judge (tolerances in hspace.data.shapes_quality), both greys appear."""
    schedule = make_schedule(shapes32.alphas_cumprod, 50, "trailing")
    x_T, _ = initial_noise(range(64), shapes32.image_shape, 50, with_z=False)
    report = quality_report(to_uint8(sample(shapes32, schedule, x_T).x0))
    assert report["pass_fraction"] >= 0.85, report
    assert 0.2 <= report["light_background_share"] <= 0.8, report


def test_ddim_inversion_reconstructs_shapes_images(shapes32, real_images):
    schedule = make_schedule(shapes32.alphas_cumprod, 50, "trailing")
    inverted = ddim_invert(shapes32, schedule, real_images)
    reconstruction = sample(shapes32, schedule, inverted.x_T).x0
    mse = float((((reconstruction - real_images) / 2) ** 2).mean())
    assert mse < DDIM_INVERSION_MSE_BOUND, mse


def test_edit_friendly_inversion_reconstructs_shapes_images(shapes32, real_images):
    schedule = make_schedule(shapes32.alphas_cumprod, 50, "trailing", eta=1.0, final_alpha="alpha_bar0")
    inverted = edit_friendly_invert(shapes32, schedule, real_images, seeds=range(16))
    reconstruction = sample(shapes32, schedule, inverted.x_T, inverted.z).x0
    assert (reconstruction - real_images).abs().max() < 1e-4


def test_decoder_reads_h(shapes32):
    """The shipped model's coarse skips are cut, so swapping h between samples changes the prediction
    (by 6-30% at the timesteps below; the earlier model without cut skips: at most 0.3%)."""
    from hspace.diffusion.skips import skip_weight_norm
    from hspace.metrics.h_dependence import h_swap_change

    assert skip_weight_norm(shapes32.unet, 3) == 0
    changes = h_swap_change(shapes32, num_samples=8, timesteps=(799, 599, 399))
    assert min(changes.values()) > 0.03 and max(changes.values()) > 0.15, changes
