"""Precision on the paths a GPU takes: the Jacobian solvers' products without TF32, and models or images in half
precision (simulated on the CPU, where bfloat16 runs)."""

import copy

import pytest
import torch

from hspace.classifiers.cnn import AttributeCNN
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions import jacobian, loco
from hspace.directions.jacobian import JacobianDirections
from hspace.directions.loco import LocoDirections
from hspace.precision import ieee_float32


def test_ieee_float32_holds_within_and_puts_the_settings_back_on_error():
    before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    with pytest.raises(RuntimeError, match="inside"):
        with ieee_float32():
            assert torch.backends.cudnn.conv.fp32_precision == torch.backends.cuda.matmul.fp32_precision == "ieee"
            raise RuntimeError("inside")
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


def test_the_jacobian_solvers_take_their_products_without_tf32(model, monkeypatch):
    seen = []

    def recording(products):
        def wrapped(*args, **kwargs):
            seen.append(torch.backends.cudnn.conv.fp32_precision)
            return products(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(jacobian, "jacobian_products", recording(jacobian.jacobian_products))
    monkeypatch.setattr(loco, "posterior_products", recording(loco.posterior_products))
    sampler = SamplerSettings(num_steps=4)
    JacobianDirections(num_directions=1, tau=500, max_iters=2, min_iters=1).find(model, sampler)
    LocoDirections(edit_rank=1, null_rank=0, mask="none", t_edit=500, max_iters=2, min_iters=1).find(model, sampler)
    assert len(seen) == 5 and set(seen) == {"ieee"}  # 4 steps of the Jacobian (scale_mode sigma_t), 1 of LOCO
    assert torch.backends.cudnn.conv.fp32_precision != "ieee"


def test_the_jacobian_solvers_take_a_half_precision_model_through_a_float32_copy(model):
    """bf16 rounds at about 1e-2, above the solvers' tolerance: the products run on a float32 copy of the weights,
    whose directions fit the half-precision model (the same identity)."""
    half = DiffusionModel(copy.deepcopy(model.unet).to(torch.bfloat16), model.scheduler_config, name="tiny-bf16")
    widened = DiffusionModel(copy.deepcopy(half.unet).float(), model.scheduler_config, name="tiny-bf16")
    sampler = SamplerSettings(num_steps=4)
    for method in (
        LocoDirections(edit_rank=1, null_rank=0, mask="none", t_edit=500, max_iters=2, min_iters=1),
        JacobianDirections(num_directions=1, tau=500, max_iters=2, min_iters=1, scale_mode="sigma_tau"),
    ):
        found, expected = method.find(half, sampler), method.find(widened, sampler)
        assert torch.equal(found.vectors, expected.vectors) and torch.equal(found.scales, expected.scales)
        assert found.weight_hash == half.weights_identity
        assert torch.equal(
            found.extra.get("x_directions", found.vectors), expected.extra.get("x_directions", expected.vectors)
        )
    assert half.dtype == torch.bfloat16  # the model itself is left as it was


def test_the_classifier_scores_half_precision_images():
    classifier = AttributeCNN.load("shapes_attributes")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    half = classifier.probabilities(images.to(torch.bfloat16))
    torch.testing.assert_close(half, classifier.probabilities(images), atol=0.05, rtol=0)


def test_h_recorded_under_bf16_autocast_is_float32(model):
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import make_schedule

    schedule = make_schedule(model.alphas_cumprod, 4, "trailing")
    x_T, _ = noise_for(range(2), model, schedule)
    reference = sample(model, schedule, x_T, record_h=True).h
    mixed = DiffusionModel(model.unet, model.scheduler_config, name="tiny", autocast="bf16")
    h = sample(mixed, schedule, x_T, record_h=True).h
    assert reference.dtype == h.dtype == torch.float32 and not torch.equal(h, reference)
    assert (h - reference).norm() / reference.norm() < 0.05
