import pytest
import torch

from hspace.diffusion.inversion import ddim_invert, edit_friendly_invert, invert
from hspace.diffusion.sampler import sample
from hspace.diffusion.schedule import make_schedule
from tests.conftest import GOOGLE_SCHEDULER, ZERO_SNR_V


def images(n=2, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("fixture", ["model", "v_model"])
@pytest.mark.parametrize("spacing, final_alpha", [("leading", "one"), ("trailing", "one"), ("trailing", "alpha_bar0")])
def test_edit_friendly_inversion_reconstructs_and_records_the_regenerated_h(fixture, spacing, final_alpha, request):
    model = request.getfixturevalue(fixture)
    schedule = make_schedule(model.alphas_cumprod, 10, spacing, eta=1.0, final_alpha=final_alpha)
    x0 = images()
    inv = edit_friendly_invert(model, schedule, x0, seeds=[0, 1])
    assert inv.z.shape == (2, 10, 3, 16, 16) and inv.h.shape == (2, 10, *model.h_shape)
    regenerated = sample(model, schedule, inv.x_T, inv.z, record_h=True, record_x=True)
    # x_T .. x_1 and h, to float32 round-off that a random UNet amplifies (the trained Shapes model meets 1e-4)
    assert (regenerated.x_t[:, :-1] - inv.x_t[:, :-1]).abs().max() < 1e-3
    torch.testing.assert_close(regenerated.h, inv.h, rtol=1e-3, atol=1e-3)
    if schedule.sigma[-1] > 0:  # the last step is stochastic too: the image itself comes back
        assert (regenerated.x0 - x0).abs().max() < 1e-3


def test_edit_friendly_inversion_needs_noise(model):
    with pytest.raises(ValueError, match="eta > 0"):
        edit_friendly_invert(model, make_schedule(model.alphas_cumprod, 5, eta=0.0), images(), seeds=[0, 1])
    # noise at every step but one before the last (here the second last) is not enough either
    with pytest.raises(ValueError, match="eta > 0"):
        schedule = make_schedule(model.alphas_cumprod, 5, eta=[1.0, 1.0, 1.0, 0.0, 1.0])
        edit_friendly_invert(model, schedule, images(), seeds=[0, 1])


@pytest.mark.parametrize("fixture, spacing", [("model", "leading"), ("v_model", "trailing")])
def test_ddim_inversion_ends_at_tau_T_and_records_h_T(fixture, spacing, request):
    """The h recorded for step T is the one the first decoding step sees from the inverted x_T."""
    model = request.getfixturevalue(fixture)
    schedule = make_schedule(model.alphas_cumprod, 6, spacing)
    inv = ddim_invert(model, schedule, images())
    assert inv.h.shape == (2, 6, *model.h_shape) and inv.z is None
    decoded = sample(model, schedule, inv.x_T, record_h=True)
    torch.testing.assert_close(decoded.h[:, 0], inv.h[:, 0], rtol=1e-5, atol=1e-5)


def test_ddim_inversion_round_trip_is_exact_for_a_constant_eps(model):
    """With a model whose eps does not depend on x_t, inversion and decoding are exact inverses."""

    class ConstantEps(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

    x0 = images()
    eps = torch.randn_like(x0)
    const = type(model)(model.unet, model.scheduler_config)
    const.__call__ = None  # replaced below through a subclass to keep the dataclass intact

    class Const(type(model)):
        def __call__(self, x_t, timestep):
            self.unet(x_t, torch.as_tensor(timestep).expand(x_t.shape[0]))  # keeps the h hook busy
            return eps

    const = Const(model.unet, model.scheduler_config)
    schedule = make_schedule(const.alphas_cumprod, 20, "trailing")
    inv = ddim_invert(const, schedule, x0)
    torch.testing.assert_close(sample(const, schedule, inv.x_T).x0, x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fixture", ["model", "v_model"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_inversion_matches_a_hand_written_loop_at_every_level(fixture, spacing, request):
    """Every inverted state and every recorded h against the textbook loop written out here: the UNet called at
    the level whose alpha the step uses, h read by a plain forward hook on the middle block."""
    from hspace.diffusion.schedule import timestep_grid

    model = request.getfixturevalue(fixture)
    steps, x0 = 6, images()
    taus = timestep_grid(steps, spacing=spacing).flip(0).tolist()  # tau_1 < ... < tau_T
    alphas = [float(model.alphas_cumprod[t]) for t in taus]
    seen = []
    handle = model.unet.mid_block.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))

    def x0_and_eps(x, t, a):
        out = model.unet(x, torch.full((len(x),), t)).sample
        if model.prediction_type == "v_prediction":
            return a**0.5 * x - (1 - a) ** 0.5 * out, (1 - a) ** 0.5 * x + a**0.5 * out
        return (x - (1 - a) ** 0.5 * out) / a**0.5, out

    try:
        with torch.no_grad():
            x = x0
            if taus[0] > 0:  # lift the image to the first level
                x = alphas[0] ** 0.5 * x0 + (1 - alphas[0]) ** 0.5 * x0_and_eps(x0, taus[0], alphas[0])[1]
            seen.clear()
            states = [x]
            for t in range(steps - 1):
                x0_hat, eps = x0_and_eps(x, taus[t], alphas[t])
                x = alphas[t + 1] ** 0.5 * x0_hat + (1 - alphas[t + 1]) ** 0.5 * eps
                states.append(x)
            model.unet(x, torch.full((len(x),), taus[-1]))  # the h the first decoding step sees
            expected_h = torch.stack(seen[::-1], dim=1)
        inv = ddim_invert(model, make_schedule(model.alphas_cumprod, steps, spacing), x0, record_x=True)
    finally:
        handle.remove()
    torch.testing.assert_close(inv.x_T, states[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inv.x_t[:, :-1], torch.stack(states[::-1], dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inv.h, expected_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixture, spacing", [("model", "leading"), ("v_model", "trailing")])
def test_edit_friendly_inversion_is_the_paper_loop_with_diffusers_steps(fixture, spacing, request):
    """Each x_t against sqrt(a_t) x_0 + sqrt(1 - a_t) n_t with the image's own noise stream, and each z_t against
    (x_{t-1} - mu_t) / sigma_t, where diffusers' DDIMScheduler gives mu_t (its step with zero noise) and sigma_t,
    on a grid whose step divides the training steps (where diffusers' previous level is the next grid step)."""
    from diffusers import DDIMScheduler

    from hspace.diffusion.sampler import seed_stream

    model = request.getfixturevalue(fixture)
    config = {"model": GOOGLE_SCHEDULER, "v_model": ZERO_SNR_V}[fixture]
    steps, eta, x0, seeds = 8, 0.9, images(), [3, 5]  # at eta 1 diffusers rounds a zero-SNR step to NaN
    reference = DDIMScheduler.from_config(
        {**config, "clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": spacing}
    )
    reference.set_timesteps(steps)
    schedule = make_schedule(model.alphas_cumprod, steps, spacing, eta=eta)
    assert reference.timesteps.tolist() == schedule.timesteps.tolist()
    inv = edit_friendly_invert(model, schedule, x0, seeds=seeds, record_h=False)
    noise = torch.stack([torch.randn((steps, *x0.shape[1:]), generator=seed_stream(s, "inversion")) for s in seeds])
    levels = [float(reference.alphas_cumprod[t]) for t in reference.timesteps]
    chain = [a**0.5 * x0 + (1 - a) ** 0.5 * noise[:, i] for i, a in enumerate(levels)] + [x0]
    for i, t in enumerate(reference.timesteps.tolist()):
        torch.testing.assert_close(inv.x_t[:, i], chain[i], rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            output = model.unet(chain[i], torch.full((len(x0),), t)).sample
        step = reference.step(output, t, chain[i], eta=eta, variance_noise=torch.zeros_like(x0))
        sigma = eta * float(reference._get_variance(t, t - 1000 // steps)) ** 0.5
        if sigma > 0:
            torch.testing.assert_close(inv.z[:, i], (chain[i + 1] - step.prev_sample) / sigma, rtol=1e-3, atol=1e-3)
        else:  # the deterministic last step of final alpha one records no noise
            assert not inv.z[:, i].any()


@pytest.mark.parametrize("fixture, spacing", [("model", "leading"), ("v_model", "trailing")])
def test_ddim_inversion_keeps_the_states_asked_for_by_grid_index(fixture, spacing, request):
    """states_at keeps exactly the states that record_x records at those grid indices (0 is x_T, T the image),
    the image and the first level included, and refuses an index off the grid."""
    model = request.getfixturevalue(fixture)
    schedule = make_schedule(model.alphas_cumprod, 5, spacing)
    full = ddim_invert(model, schedule, images(), record_h=False, record_x=True)
    kept = ddim_invert(model, schedule, images(), record_h=False, states_at=[0, 2, 4, 5])
    assert sorted(kept.states) == [0, 2, 4, 5] and kept.x_t is None and full.states == {}
    for i, state in kept.states.items():
        torch.testing.assert_close(state, full.x_t[:, i], rtol=0, atol=0)
    torch.testing.assert_close(kept.states[0], kept.x_T, rtol=0, atol=0)
    with pytest.raises(ValueError, match="outside the grid"):
        ddim_invert(model, schedule, images(), record_h=False, states_at=[6])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_invert_keeps_the_states_that_decoding_passes_through(v_model, eta):
    """DDIM on a deterministic grid, edit-friendly on a stochastic one: either way the state kept at grid index 2
    is where decoding (x_T, z) is after two steps (exactly so for edit-friendly inversion; for DDIM, up to how far
    inversion and decoding are apart, checked in the tests above)."""
    schedule = make_schedule(v_model.alphas_cumprod, 5, "trailing", eta=eta)
    inverted = invert(v_model, schedule, images(), seeds=[0, 1], states_at=[2])
    assert sorted(inverted.states) == [2]
    if eta == 0.0:
        expected = ddim_invert(v_model, schedule, images(), record_h=False, record_x=True).x_t[:, 2]
    else:
        expected = sample(v_model, schedule.steps(0, 2), inverted.x_T, inverted.z[:, :2]).x0
    torch.testing.assert_close(inverted.states[2], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="outside the grid"):
        invert(v_model, schedule, images(), seeds=[0, 1], states_at=[6])
