import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from hspace.diffusion.sampler import initial_noise, sample
from hspace.diffusion.schedule import eta_vector, make_schedule, timestep_grid
from hspace.diffusion.step_rules import AddH
from tests.conftest import GOOGLE_SCHEDULER, ZERO_SNR_V


def test_grids():
    assert timestep_grid(10, spacing="leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timestep_grid(10, spacing="trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timestep_grid(4, spacing="linspace").tolist() == [999, 666, 333, 0]
    # the obvious version, truncated (diffusers rounds: one step apart at about half the levels)
    assert timestep_grid(50, spacing="linspace").tolist() == [int(s) for s in np.linspace(0, 999, 50)][::-1]
    with pytest.raises(ValueError, match="spacing"):
        timestep_grid(10, spacing="uniform")


def test_eta_vector():
    assert eta_vector(0.5, 3).tolist() == [0.5, 0.5, 0.5]
    assert eta_vector([1, 0, 1], 3).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="3 steps"):
        eta_vector([1, 0], 3)
    for outside in (1.5, [1, -0.1, 0]):  # above 1 a step's noise would exceed what its level allows
        with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
            eta_vector(outside, 3)


def test_final_alpha(model):
    one = make_schedule(model.alphas_cumprod, 10, "trailing", final_alpha="one", eta=1.0)
    bar0 = make_schedule(model.alphas_cumprod, 10, "trailing", final_alpha="alpha_bar0", eta=1.0)
    assert one.alpha_bar_prev[-1] == 1 and one.sigma[-1] == 0
    assert bar0.alpha_bar_prev[-1] == model.alphas_cumprod[0] and bar0.sigma[-1] > 0


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("which", ["epsilon-leading", "v-zero-snr-trailing"])
def test_ddim_matches_diffusers(which, eta, model, v_model):
    """The whole reverse loop against DDIMScheduler.step with the same grid and the same noise maps."""
    model, config, spacing = {
        "epsilon-leading": (model, GOOGLE_SCHEDULER, "leading"),
        "v-zero-snr-trailing": (v_model, ZERO_SNR_V, "trailing"),
    }[which]
    T = 8
    reference = DDIMScheduler.from_config(
        {**config, "clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": spacing}
    )
    reference.set_timesteps(T)
    schedule = make_schedule(model.alphas_cumprod, T, spacing, eta=eta)
    assert reference.timesteps.tolist() == schedule.timesteps.tolist()

    x_T, z = initial_noise([0, 1], model.image_shape, T)
    ours = sample(model, schedule, x_T, z, record_x=True).x_t
    x = x_T
    for idx, t in enumerate(reference.timesteps):
        x = reference.step(model(x, t), t, x, eta=eta, variance_noise=z[:, idx]).prev_sample
        torch.testing.assert_close(ours[:, idx + 1], x, rtol=1e-4, atol=1e-4)


def test_noise_does_not_depend_on_the_batch():
    x_a, z_a = initial_noise([3], (3, 8, 8), 5)
    x_b, z_b = initial_noise([1, 3], (3, 8, 8), 5)
    assert torch.equal(x_a[0], x_b[1]) and torch.equal(z_a[0], z_b[1])
    assert not torch.allclose(x_b[0], x_b[1])
    assert not torch.allclose(x_a[0], z_a[0, 0])  # x_T and z come from different streams


def test_trajectory_records(model):
    T = 5
    schedule = make_schedule(model.alphas_cumprod, T, eta=1.0)
    x_T, z = initial_noise([0, 1, 2], model.image_shape, T)
    traj = sample(model, schedule, x_T, z, record_h=True, record_x=True)
    assert traj.h.shape == (3, T, *model.h_shape)
    assert traj.x_t.shape == (3, T + 1, *model.image_shape)
    assert torch.equal(traj.x_t[:, 0], x_T) and torch.equal(traj.x_t[:, -1], traj.x0)
    # Samples are independent of the batch they are drawn in.
    alone = sample(model, schedule, x_T[1:2], z[1:2]).x0
    torch.testing.assert_close(alone[0], traj.x0[1], rtol=1e-4, atol=1e-4)


def test_stochastic_schedule_needs_noise(model):
    schedule = make_schedule(model.alphas_cumprod, 4, eta=1.0)
    with pytest.raises(ValueError, match="noise maps"):
        sample(model, schedule, torch.zeros(1, *model.image_shape))


def test_zero_offset_sampling_is_identical_and_offset_changes(model):
    T = 4
    schedule = make_schedule(model.alphas_cumprod, T, eta=1.0)
    x_T, z = initial_noise([0, 1], model.image_shape, T)
    natural = sample(model, schedule, x_T, z).x0
    zero = sample(model, schedule, x_T, z, step=AddH(lambda idx: torch.zeros(2, *model.h_shape))).x0
    assert torch.equal(natural, zero)
    edited = sample(model, schedule, x_T, z, step=AddH(lambda idx: torch.ones(2, *model.h_shape) * (idx == 0))).x0
    assert not torch.allclose(edited, natural)


def test_epsilon_with_zero_terminal_snr_is_refused(unet):
    from diffusers import DDPMScheduler

    from hspace.diffusion.model import DiffusionModel
    from hspace.errors import UserError

    with pytest.raises(UserError, match="v_prediction"):
        DiffusionModel(unet, dict(DDPMScheduler(rescale_betas_zero_snr=True).config))


def test_every_grid_has_exactly_T_valid_steps():
    for spacing in ("leading", "trailing", "linspace"):
        for T in range(1, 1001):
            grid = timestep_grid(T, spacing=spacing)
            assert len(grid) == T and grid.min() >= 0 and grid.max() <= 999, (spacing, T)
            assert (grid[:-1] > grid[1:]).all(), (spacing, T)


def test_bf16_autocast_sampling_stays_close_to_fp32(model):
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import make_schedule

    schedule = make_schedule(model.alphas_cumprod, 5, "leading")
    x_T, _ = noise_for([0, 1], model, schedule)
    reference = sample(model, schedule, x_T).x0
    model.autocast = "bf16"
    try:
        mixed = sample(model, schedule, x_T).x0
    finally:
        model.autocast = "fp32"
    assert mixed.dtype == torch.float32 and not torch.equal(mixed, reference)
    assert (mixed - reference).abs().max() < 0.05 * reference.abs().max()  # bf16 rounding, relative to the scale


def test_sampler_settings_refuse_bad_values_in_one_line():
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.errors import UserError

    for settings, words in [
        ({"num_steps": 0}, "sampler.num_steps=0 is below 1"),
        ({"num_steps": 2.5}, "sampler.num_steps=2.5 is not a whole number"),
        ({"spacing": "Trailing"}, "sampler.spacing='Trailing' is not one of leading, trailing, linspace"),
        ({"eta": 2}, "sampler.eta=2 is above 1.0"),
        ({"eta": None}, "sampler.eta=None is not a finite number"),
        ({"num_steps": 2, "eta": [0.0, 0.5, 1.0]}, "sampler.eta has 3 entries but sampler.num_steps=2"),
        ({"num_steps": 2, "eta": [0.0, -1.0]}, r"sampler.eta\[1\]=-1.0 is below 0.0"),
        ({"final_alpha": "zero"}, "sampler.final_alpha='zero'"),
        ({"clip_x0": "yes"}, "sampler.clip_x0='yes' is not true or false"),
    ]:
        with pytest.raises(UserError, match=words):
            SamplerSettings(**settings)
    listed = SamplerSettings(num_steps=2, eta=[0.0, 1.0])
    assert listed.eta == (0.0, 1.0) and hash(listed) == hash(SamplerSettings(num_steps=2, eta=(0.0, 1.0)))
    import json

    import numpy as np

    numpy_values = SamplerSettings(num_steps=np.int64(4), eta=np.float32(0.5))  # stored as plain numbers
    assert type(numpy_values.num_steps) is int and type(numpy_values.eta) is float and json.dumps(numpy_values.walk())
    assert SamplerSettings(num_steps=2, eta=np.array([0.0, 1.0])).eta == (0.0, 1.0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_a_grid_whose_step_does_not_divide_the_training_steps_steps_to_the_next_grid_level(spacing, v_model):
    """On 7 steps of 1000 every step goes to the level of the next grid step, as the DDIM paper's sub-sequence
    does (diffusers' DDIMScheduler steps to t - 1000 // 7 instead, off the grid), against the step written
    out here from docs/algorithms.md ("The step"), with the same noise maps."""
    model, steps, eta = v_model, 7, 0.5
    schedule = make_schedule(model.alphas_cumprod, steps, spacing, eta=eta)
    taus = schedule.timesteps.tolist()
    assert len(set(taus)) == steps and sorted(taus, reverse=True) == taus
    x_T, z = initial_noise([0, 1], model.image_shape, steps)
    ours = sample(model, schedule, x_T, z, record_x=True).x_t
    x = x_T.double()
    for idx, tau in enumerate(taus):
        a = float(model.alphas_cumprod[tau])
        a_prev = float(model.alphas_cumprod[taus[idx + 1]]) if idx + 1 < steps else 1.0
        with torch.no_grad():
            v = model.unet(x.float(), torch.full((2,), tau)).sample.double()
        x0_hat, eps = a**0.5 * x - (1 - a) ** 0.5 * v, (1 - a) ** 0.5 * x + a**0.5 * v
        sigma = eta * ((1 - a_prev) / (1 - a)) ** 0.5 * (1 - a / a_prev) ** 0.5
        x = a_prev**0.5 * x0_hat + (1 - a_prev - sigma**2) ** 0.5 * eps + sigma * z[:, idx].double()
        torch.testing.assert_close(ours[:, idx + 1], x.float(), rtol=1e-4, atol=1e-4)


def test_a_leading_grid_that_would_start_far_down_the_schedule_is_refused():
    """1000 // 600 = 1: the leading grid of 600 steps would be 599..0 and start from noise at tau 599. More than
    N/2 steps are taken only where they divide N (1000 steps: 999..0); fewer keep diffusers' leading grid."""
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.errors import UserError

    alphas = torch.linspace(0.999, 0.001, 1000, dtype=torch.float64)
    with pytest.raises(UserError, match="starts at timestep 599"):
        SamplerSettings(num_steps=600).schedule(alphas)
    assert SamplerSettings(num_steps=1000).schedule(alphas).timesteps[0] == 999
    assert SamplerSettings(num_steps=300).schedule(alphas).timesteps[0] == 897  # as diffusers' leading grid
    assert SamplerSettings(num_steps=600, spacing="trailing").schedule(alphas).timesteps[0] == 999


def test_a_grid_that_starts_far_down_the_schedule_is_noted():
    """On the google DDPMs' linear schedule, diffusers' leading grid of 3 steps starts at 666, where the state x_T
    stands for still holds 10% of the image; 4 steps start at 750 (6%), 50 at 980, trailing at 999."""
    from hspace.diffusion.schedule import SamplerSettings, training_alphas_cumprod

    alphas = training_alphas_cumprod(GOOGLE_SCHEDULER)
    message = SamplerSettings(num_steps=3).start_note(alphas)
    assert "starts at timestep 666" in message and "10% of the image" in message and "(at 999: 0.6%)" in message
    for steps, spacing in ((4, "leading"), (50, "leading"), (3, "trailing")):
        assert SamplerSettings(num_steps=steps, spacing=spacing).start_note(alphas) is None
    cosine = training_alphas_cumprod(dict(GOOGLE_SCHEDULER, beta_schedule="squaredcos_cap_v2"))
    assert "starts at timestep 900" in SamplerSettings(num_steps=10).start_note(cosine)  # 15% of the image
    assert SamplerSettings(num_steps=20).start_note(cosine) is None  # 950: 8%


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_and_eps_of_any_output_make_up_x_t(prediction_type):
    """Whatever the UNet outputs, the x0_hat and eps read from it satisfy x_t = sqrt(a) x0_hat + sqrt(1 - a) eps,
    and the output they stand for is the one given (eps itself, v = sqrt(a) eps - sqrt(1 - a) x0, or x0)."""
    from hspace.diffusion.ddim import to_x0_eps

    g = torch.Generator().manual_seed(0)
    x_t, output = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g)
    output = output.double()
    for a in (0.9, 0.3, 0.02):
        x0, eps = to_x0_eps(output, x_t, a, prediction_type)
        torch.testing.assert_close(a**0.5 * x0 + (1 - a) ** 0.5 * eps, x_t)
        given = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[prediction_type]
        torch.testing.assert_close(given, output)
