import pytest
import torch

from hspace.diffusion.sampler import initial_noise, sample
from hspace.diffusion.schedule import make_schedule
from hspace.diffusion.step_rules import AddH
from hspace.directions.container import Directions
from hspace.edits.shift import ShiftEdit
from hspace.errors import UserError


def make_directions(model, schedule, k=2):
    g = torch.Generator().manual_seed(0)
    return Directions(
        vectors=torch.randn(k, schedule.num_steps, *model.h_shape, generator=g),
        scales=0.5 + torch.rand(k, schedule.num_steps, generator=g),  # per-step scales that the edit must apply
        timesteps=schedule.timesteps,
        names=[f"d{j}" for j in range(k)],
        method="test",
        model_id=model.name,
        weight_hash=model.weight_hash,
        sampler={},
    )


def test_zero_strength_reproduces_the_unedited_samples_exactly(model):
    schedule = make_schedule(model.alphas_cumprod, 5, eta=1.0)
    x_T, z = initial_noise(range(3), model.image_shape, 5)
    edit = ShiftEdit(strengths=[-2.0, 0.0, 3.0], batch_size=4)
    edited = edit.apply(model, schedule, make_directions(model, schedule), 1, x_T, z)
    assert edited.shape == (3, 3, *model.image_shape)
    natural = sample(model, schedule, x_T, z).x0
    torch.testing.assert_close(edited[:, 1], natural, rtol=0, atol=1e-4)  # other batch layout: float order differs
    only_zero = ShiftEdit(strengths=[0.0], batch_size=3).apply(
        model, schedule, make_directions(model, schedule), 1, x_T, z
    )
    assert torch.equal(only_zero[:, 0], natural)  # same batch layout: bit-identical
    assert not torch.allclose(edited[:, 0], natural, atol=1e-3) and not torch.allclose(edited[:, 2], natural, atol=1e-3)


def test_each_strength_equals_its_own_unbatched_run(model):
    schedule = make_schedule(model.alphas_cumprod, 4, eta=1.0)
    x_T, z = initial_noise([7], model.image_shape, 4)
    d = make_directions(model, schedule)
    edited = ShiftEdit(strengths=[1.5, -1.0]).apply(model, schedule, d, 0, x_T, z)
    v = d.vectors[0] * d.scales[0].view(-1, 1, 1, 1)  # dh_t = gamma * s_t * u_t
    alone = sample(model, schedule, x_T, z, step=AddH(lambda idx: -1.0 * v[idx][None])).x0
    # batch of 2 vs 1: float order differs with the thread count
    torch.testing.assert_close(edited[0, 1], alone[0], rtol=1e-4, atol=1e-4)


def test_window_limits_the_edit_to_its_steps(model):
    schedule = make_schedule(model.alphas_cumprod, 5)
    x_T, _ = initial_noise([0], model.image_shape, 5)
    d = make_directions(model, schedule)
    outside = ShiftEdit(strengths=[5.0], window=[50, 0]).step_mask(schedule.timesteps)
    assert outside.tolist() == [False, False, False, False, True]  # grid 800..0: only tau = 0
    bounds = ShiftEdit(strengths=[5.0], window=[600, 200]).step_mask(schedule.timesteps)
    assert bounds.tolist() == [False, True, True, True, False]  # both ends inside the window
    between_steps = ShiftEdit(strengths=[5.0], window=[3, 1])
    nowhere = between_steps.apply(model, schedule, d, 0, x_T, None)
    torch.testing.assert_close(nowhere[:, 0], sample(model, schedule, x_T).x0, rtol=0, atol=1e-6)
    # ... so the run and the API refuse such a window before any work, naming the grid it misses
    with pytest.raises(UserError, match=r"edit.window=\[3, 1\] holds no step of the 5-step grid.* from 800 to 0"):
        between_steps.check_schedule(schedule)
    ShiftEdit(strengths=[5.0], window=[50, 0]).check_schedule(schedule)
    ShiftEdit(strengths=[5.0]).check_schedule(schedule)


def test_asyrps_three_intervals_edit_then_plain_then_a_noisy_tail(model):
    """asymmetric + window=[T, t_edit] + noisy_tail: edited asymmetric steps down to t_edit, plain deterministic
    steps, then eta = 1 at tau < noisy_tail * N with the sample's tail noise; strength 0 is the unedited path
    with the same tail, which the edits depart from."""
    from dataclasses import replace

    from hspace.diffusion.step_rules import AsymmetricAddH
    from hspace.edits.noisy_tail import tail_noise

    schedule = make_schedule(model.alphas_cumprod, 5)  # leading: 800, 600, 400, 200, 0
    x_T, _ = initial_noise([0, 1], model.image_shape, 5, with_z=False)
    d = make_directions(model, schedule)
    edit = ShiftEdit(strengths=[0.0, 3.0], asymmetric=True, window=[999, 600], noisy_tail=0.3, batch_size=3)
    edited = edit.apply(model, schedule, d, 0, x_T, None)
    path = replace(schedule, eta=torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    noise = torch.stack([tail_noise(x, 5) for x in x_T])
    v = d.vectors[0] * d.scales[0].view(-1, 1, 1, 1)
    offsets = [3.0 * v[idx][None] if idx < 2 else None for idx in range(5)]  # tau 800 and 600 only
    by_hand = sample(model, path, x_T, noise, step=AsymmetricAddH(lambda idx: offsets[idx])).x0
    torch.testing.assert_close(edited[:, 1], by_hand, rtol=1e-4, atol=1e-4)
    unedited = edit.unedited(model, schedule, d, 0, x_T, None).cpu()
    torch.testing.assert_close(edited[:, 0], unedited, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unedited, sample(model, path, x_T, noise).x0.cpu(), rtol=1e-5, atol=1e-5)
    assert (unedited - sample(model, schedule, x_T).x0.cpu()).abs().mean() > 1e-3  # the tail re-noised it


def test_the_noisy_tail_starts_strictly_below_its_timestep(model):
    """Asyrp adds noise at t < t_boost and LOCO Edit's tail of 0.2 covers 20 of its 100 steps: a grid step exactly
    at noisy_tail * N is not in the tail."""
    from hspace.edits.noisy_tail import with_noisy_tail

    schedule = make_schedule(model.alphas_cumprod, 5)  # leading: 800, 600, 400, 200, 0
    x_T, _ = initial_noise([0], model.image_shape, 5, with_z=False)
    path, noise = with_noisy_tail(schedule, 0.4, 1000, x_T, None)
    assert path.eta.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and noise.shape[1] == 5
    assert with_noisy_tail(schedule, 0.401, 1000, x_T, None)[0].eta.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_asymmetric_step_differs_and_keeps_zero_strength(model):
    schedule = make_schedule(model.alphas_cumprod, 4)
    x_T, _ = initial_noise([0, 1], model.image_shape, 4)
    d = make_directions(model, schedule)
    symmetric = ShiftEdit(strengths=[0.0, 3.0]).apply(model, schedule, d, 0, x_T, None)
    asymmetric = ShiftEdit(strengths=[0.0, 3.0], asymmetric=True).apply(model, schedule, d, 0, x_T, None)
    torch.testing.assert_close(asymmetric[:, 0], symmetric[:, 0], rtol=0, atol=1e-5)
    assert not torch.allclose(asymmetric[:, 1], symmetric[:, 1], atol=1e-3)


def test_edit_grids_show_the_first_rows_with_the_title_above_them(tmp_path):
    import numpy as np
    from PIL import Image

    from hspace.images import save_edit_grid

    pixels = np.random.default_rng(0).integers(0, 255, (40, 3, 8, 8, 3), dtype=np.uint8)
    tall = Image.open(save_edit_grid(pixels, [-1, 0, 1], "title", tmp_path / "tall.png", row_labels=list(range(40))))
    short = Image.open(
        save_edit_grid(pixels[:16], [-1, 0, 1], "title", tmp_path / "short.png", row_labels=list(range(16)))
    )
    assert tall.size == short.size
    ink = (np.asarray(tall.convert("L")) < 128).any(axis=1)
    assert ink[: int(0.1 * 110)].any()  # the title is drawn within the top 0.1 inch (dpi 100)


def test_a_long_title_on_a_narrow_grid_is_not_cut_off(tmp_path):
    import numpy as np
    from PIL import Image

    from hspace.images import save_edit_grid

    pixels = np.zeros((2, 3, 8, 8, 3), dtype=np.uint8)
    title = "class_mean light_background (edits background=light); columns: strength in units of its scale; rows: seeds"
    grid = np.asarray(Image.open(save_edit_grid(pixels, [-1, 0, 1], title, tmp_path / "g.png")).convert("L"))
    band = grid[:30] < 128  # the title's band, above the strength labels (dpi 100)
    assert band.any() and not band[:, :3].any() and not band[:, -3:].any()  # drawn, and inside the image


def test_asymmetric_step_takes_x0_from_the_edited_call_and_eps_from_the_unedited_one(model):
    from hspace.bottleneck import HSpace
    from hspace.diffusion.ddim import to_x0_eps
    from hspace.diffusion.step_rules import AsymmetricAddH

    schedule = make_schedule(model.alphas_cumprod, 5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    offset = torch.randn(2, *model.h_shape, generator=torch.Generator().manual_seed(4))
    idx, t, a = 2, schedule.timesteps[2], schedule.alpha_bar[2]

    def by_hand(shift):  # the UNet with `shift` added to the middle block's output by a plain hook
        handle = model.unet.mid_block.register_forward_hook(lambda module, args, out: out + shift)
        try:
            return to_x0_eps(model.unet(x, t.expand(2)).sample, x, a, model.prediction_type)
        finally:
            handle.remove()

    with torch.no_grad():
        edited, natural = by_hand(offset), by_hand(0.0)
        with HSpace(model.unet) as hs:
            x0, eps = AsymmetricAddH(lambda i: offset if i == idx else None).predict(model, hs, x, idx, schedule)
    torch.testing.assert_close(x0, edited[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps, natural[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(edited[0], natural[0], atol=1e-3)  # the offset does move the prediction


def test_asymmetric_step_outside_its_window_is_one_natural_call(model):
    """Where the offset is None (outside the edit's window) the asymmetric step's two halves would both be the
    natural call: it makes that call once, on the undoubled batch, and returns the natural (x0_hat, eps)."""
    from hspace.bottleneck import HSpace
    from hspace.diffusion.step_rules import AsymmetricAddH, StepRule

    schedule = make_schedule(model.alphas_cumprod, 5)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    batches = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        with torch.no_grad(), HSpace(model.unet) as hs:
            x0, eps = AsymmetricAddH(lambda i: None).predict(model, hs, x, 1, schedule)
            natural = StepRule().predict(model, hs, x, 1, schedule)
    finally:
        handle.remove()
    assert batches == [3, 3]
    assert torch.equal(x0, natural[0]) and torch.equal(eps, natural[1])
