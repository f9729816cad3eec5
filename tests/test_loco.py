"""LOCO Edit: the masked posterior-mean Jacobian's singular vectors against a dense SVD, the null-space
projection's locality, the x_t edit against a hand-written path, and one run end to end."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from torch.func import jacrev

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.diffusion.sampler import initial_noise, sample
from hspace.diffusion.schedule import make_schedule
from hspace.directions.container import Directions
from hspace.directions.jacobian import region_mask
from hspace.directions.loco import posterior_mean_map, posterior_products, project_out
from hspace.directions.subspace import block_subspace_iteration
from hspace.edits.xt_shift import XtShift
from hspace.errors import UserError

TAU = 500


@pytest.fixture
def point(model):
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    return x, region_mask(model.image_shape, box=[2, 2, 9, 9])


def test_matrix_free_singular_vectors_match_the_dense_svd(model, point):
    x_t, mask = point
    dense = jacrev(lambda x: posterior_mean_map(model, TAU, mask)(x[None])[0])(x_t).reshape(-1, x_t.numel())
    _, singular, vh = torch.linalg.svd(dense)
    products = posterior_products(model, x_t, TAU, mask)
    found = block_subspace_iteration(products.jvp, products.vjp, x_t.numel(), 3, 4, 1e-6, 3, 2000)
    assert (singular[:4][:-1] / singular[1:4]).min() > 1.01  # distinct singular values: unique vectors
    cosines = (found.right @ vh[:3].T).diagonal().abs()
    assert cosines.min() > 0.99, cosines
    torch.testing.assert_close(found.values, singular[:3], rtol=1e-3, atol=1e-6)


def test_the_null_space_projection_bounds_the_change_outside_the_region(model, point):
    """After projecting out the top r right singular vectors of J_out = (1 - M) J, the first-order change outside
    the region is at most sigma_{r+1}(J_out) per unit step (the dense SVD's), below the unprojected direction's."""
    x_t, mask = point
    r = 20
    inside = posterior_products(model, x_t, TAU, mask)
    outside = posterior_products(model, x_t, TAU, 1 - mask)
    edit = block_subspace_iteration(inside.jvp, inside.vjp, x_t.numel(), 2, 2, 1e-5, 3, 1000).right
    rest = block_subspace_iteration(outside.jvp, outside.vjp, x_t.numel(), r, 4, 1e-5, 3, 2000).right
    projected = project_out(edit, rest)
    dense_out = jacrev(lambda x: posterior_mean_map(model, TAU, 1 - mask)(x[None])[0])(x_t).reshape(-1, x_t.numel())
    bound = torch.linalg.svdvals(dense_out)[r]
    change_outside = outside.jvp(projected).norm(dim=1)
    assert (change_outside <= bound * 1.01).all(), (change_outside, bound)
    assert (change_outside < outside.jvp(edit).norm(dim=1)).all()
    torch.testing.assert_close(projected.norm(dim=1), torch.ones(2))
    assert (projected @ rest.T).abs().max() < 1e-4  # nothing left along the projected-out directions


def test_the_x_t_edit_is_one_step_on_the_samples_own_path(model):
    schedule = make_schedule(model.alphas_cumprod, 6, eta=1.0)
    x_T, z = initial_noise([3, 4], model.image_shape, 6)
    v = torch.randn(1, *model.image_shape, generator=torch.Generator().manual_seed(1))
    scales = torch.zeros(1, 6)
    scales[0, 2] = 0.5  # the direction's length at its step: strength 2.5 moves x_t by 1.25 v
    directions = Directions(torch.zeros(1, 6, 16, 8, 8), scales, schedule.timesteps, ["d"], "loco", "m", "w", {})
    directions.extra["x_directions"] = v
    edited = XtShift(strengths=[0.0, 2.5]).apply(model, schedule, directions, 0, x_T, z)
    plain = sample(model, schedule, x_T, z).x0
    torch.testing.assert_close(edited[:, 0], plain, rtol=1e-4, atol=1e-4)
    x_2 = sample(model, schedule.steps(0, 2), x_T, z[:, :2]).x0 + 2.5 * 0.5 * v  # by hand: walk, step, walk on
    by_hand = sample(model, schedule.steps(2), x_2, z[:, 2:]).x0
    torch.testing.assert_close(edited[:, 1], by_hand, rtol=1e-4, atol=1e-4)


def test_the_noisy_tail_takes_eta_one_late_with_one_noise_per_sample(model):
    """edit.noisy_tail: after the edit, the steps at tau < tail * N take eta = 1 on a deterministic grid, with
    noise named by the sample's x_T: shared by its strengths (and by what the edits depart from), not by
    two samples; the steps above the tail stay deterministic."""
    from dataclasses import replace

    from hspace.edits.noisy_tail import tail_noise

    schedule = make_schedule(model.alphas_cumprod, 6)  # leading: 830, 664, 498, 332, 166, 0
    x_T, _ = initial_noise([3, 4], model.image_shape, 6, with_z=False)
    v = torch.randn(1, *model.image_shape, generator=torch.Generator().manual_seed(1))
    scales = torch.zeros(1, 6)
    scales[0, 1] = 1.0
    directions = Directions(torch.zeros(1, 6, 16, 8, 8), scales, schedule.timesteps, ["d"], "loco", "m", "w", {})
    directions.extra["x_directions"] = v
    edit = XtShift(strengths=[0.0, 2.5, 0.0], noisy_tail=0.4)
    edited = edit.apply(model, schedule, directions, 0, x_T, None)
    torch.testing.assert_close(edited[:, 0], edited[:, 2])  # one noise per sample, whatever the row
    torch.testing.assert_close(edit.unedited(model, schedule, directions, 0, x_T, None).cpu(), edited[:, 0])
    rest = schedule.steps(1)
    eta = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # tau 664, 498 | 332, 166, 0 <= 400
    noise = torch.stack([tail_noise(x, 6)[1:] for x in x_T])  # the stream covers the grid
    x_1 = sample(model, schedule.steps(0, 1), x_T).x0 + 2.5 * v  # by hand: walk, step, walk on with the tail
    by_hand = sample(model, replace(rest, eta=eta), x_1, noise).x0
    torch.testing.assert_close(edited[:, 1], by_hand, rtol=1e-4, atol=1e-4)
    plain = XtShift(strengths=[0.0]).apply(model, schedule, directions, 0, x_T, None)[:, 0]
    assert (edited[:, 0] - plain).abs().mean() > 1e-3  # the tail re-noised the sample
    assert not torch.allclose(noise[0], noise[1])
    with pytest.raises(UserError, match="edit.noisy_tail"):
        XtShift(noisy_tail=1.5)


def test_on_a_stochastic_grid_the_noisy_tail_draws_its_own_noise_and_keeps_the_stored_noise_before_it(model):
    """Stored noise maps (a real image's come from edit-friendly inversion, residuals of the run's own eta) are
    kept before the tail and replaced by the sample's tail noise in it; batches smaller than the rows."""
    from dataclasses import replace

    from hspace.edits.noisy_tail import tail_noise

    schedule = make_schedule(model.alphas_cumprod, 6, eta=0.3)  # leading: 830, 664, 498, 332, 166, 0
    x_T, z = initial_noise([5, 6], model.image_shape, 6)
    v = torch.randn(1, *model.image_shape, generator=torch.Generator().manual_seed(1))
    scales = torch.zeros(1, 6)
    scales[0, 1] = 1.0
    directions = Directions(torch.zeros(1, 6, 16, 8, 8), scales, schedule.timesteps, ["d"], "loco", "m", "w", {})
    directions.extra["x_directions"] = v
    edited = XtShift(strengths=[0.0, -1.5, 2.5], noisy_tail=0.4, batch_size=2).apply(
        model, schedule, directions, 0, x_T, z
    )
    rest = schedule.steps(1)
    eta = torch.tensor([0.3, 0.3, 1.0, 1.0, 1.0], dtype=torch.float64)
    noise = torch.cat([z[:, 1:3], torch.stack([tail_noise(x, 6) for x in x_T])[:, 3:]], dim=1)
    x_1 = sample(model, schedule.steps(0, 1), x_T, z[:, :1]).x0
    for column, strength in enumerate([0.0, -1.5, 2.5]):
        by_hand = sample(model, replace(rest, eta=eta), x_1 + strength * v, noise).x0
        torch.testing.assert_close(edited[:, column], by_hand, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_a_real_images_jacobian_is_taken_where_its_edit_starts(model, tmp_path, eta):
    """With method.image_file, x_t at t_edit is the image inverted as the run inverts it and decoded down to
    the step, the point edit=xt_shift shifts; on a deterministic grid that is not the DDIM-inverted x_t."""
    from hspace.data.image_files import load_image
    from hspace.diffusion.inversion import ddim_invert
    from hspace.directions.loco import LocoDirections
    from hspace.images import save_png
    from hspace.job.edit import invert_for

    pixels = torch.randint(0, 256, (16, 16, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    path = save_png(pixels.numpy(), tmp_path / "image.png")
    schedule = make_schedule(model.alphas_cumprod, 6, eta=eta)
    x_t, image = LocoDirections(image_file=str(path)).starting_point(model, schedule, 3)
    start = invert_for(XtShift(), model, schedule, load_image(path, 16)[None])
    x_T, z = start.x_T, start.z
    walked = sample(model, schedule.steps(0, 3), x_T, z[:, :3] if z is not None else None).x0[0]
    torch.testing.assert_close(x_t, walked)
    torch.testing.assert_close(image, load_image(path, 16))
    if eta == 0:
        inverted = ddim_invert(model, schedule, image[None], record_h=False, record_x=True).x_t[0, 3]
        assert (x_t - inverted).abs().max() > 1e-4


def test_loco_runs_end_to_end_on_the_shipped_model(tmp_path):
    overrides = ["method=loco", "edit=xt_shift", "method.edit_rank=2", "method.null_rank=3", "method.tol=1e-2"]
    overrides += ["method.max_iters=30", "sampler.num_steps=10", "num_samples=2", "real_images=0", "logger=none"]
    overrides += ["metrics.fid.backend=none", "metrics.disentanglement.num_images=0", "edit.strengths=[0.0,6.0]"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path}"])
    metrics = run(cfg)
    directions = Directions.load(tmp_path / "run" / "directions.safetensors")
    assert directions.extra["x_directions"].shape == (2, 3, 32, 32) and directions.names == ["loco0", "loco1"]
    assert int(directions.scales[0].argmax()) == directions.info["t_index"] and directions.info["t_edit"] > 0
    assert load_file(tmp_path / "run" / "edits.safetensors")["images"].shape == (2, 2, 2, 3, 32, 32)
    assert metrics["edit/loco0/mse@0"] < 1e-6 and metrics["edit/loco0/mse@6"] > 0
    leak = json.loads((tmp_path / "run" / "metrics.json").read_text())["directions/loco0/leak_ratio"]
    assert leak == pytest.approx(directions.info["leak_ratio_after"][0]) and leak >= 0


def test_a_larger_mask_image_is_reduced_as_the_reference_code_reduces_it(tmp_path):
    """LOCO Edit's code resizes a CelebAMask-HQ mask (512 pixels) to the model's 256 with PIL's bicubic filter and
    keeps every pixel above 0: the region grows by the ring its edge reaches, beyond the pixels it mostly covers."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64]
    ellipse = ((((xx - 30.3) / 9) ** 2 + ((yy - 20.7) / 5) ** 2) <= 1).astype(np.uint8) * 255
    Image.fromarray(np.stack([ellipse] * 3, -1)).save(tmp_path / "eye.png")  # an RGB mask, as CelebAMask-HQ's
    mask = region_mask((3, 32, 32), file=str(tmp_path / "eye.png"))
    reference = np.array(Image.fromarray(np.stack([ellipse] * 3, -1)).resize((32, 32))).astype(bool)[..., 0]
    assert mask.shape == (3, 32, 32) and (mask[0].numpy().astype(bool) == reference).all()
    mostly = ellipse.reshape(32, 2, 32, 2).mean(axis=(1, 3)) >= 127.5  # the pixels it covers at least half of
    assert mask[0].sum() > mostly.sum() and (mask[0].numpy()[mostly] == 1).all()
    Image.fromarray(ellipse).save(tmp_path / "same.png")  # at the model's size: every pixel above black
    torch.testing.assert_close(
        region_mask((3, 64, 64), file=str(tmp_path / "same.png"))[0], torch.tensor(ellipse > 0).float()
    )


def test_a_directions_sign_is_its_own_not_the_solvers(model, monkeypatch):
    """A singular vector's sign is arbitrary: each direction is flipped so that its largest entry is positive, so
    the solver's choice (which follows its seed, method.chunk and the device's rounding) does not decide it.
    Before, method.chunk flipped a direction of the shipped model, so that a strength edited the other way."""
    import hspace.directions.loco as loco
    from hspace.diffusion.schedule import SamplerSettings

    settings = dict(mask="box", mask_box=[2, 2, 9, 9], edit_rank=2, null_rank=2, t_edit=400, max_iters=5)
    sampler = SamplerSettings(num_steps=5)
    found = loco.LocoDirections(**settings).find(model, sampler).extra["x_directions"].flatten(1)
    assert (found[torch.arange(2), found.abs().argmax(dim=1)] > 0).all()
    solve = loco.block_subspace_iteration

    def the_other_sign(*args, **kwargs):
        triplets = solve(*args, **kwargs)
        triplets.right = -triplets.right
        return triplets

    monkeypatch.setattr(loco, "block_subspace_iteration", the_other_sign)
    flipped = loco.LocoDirections(**settings).find(model, sampler).extra["x_directions"].flatten(1)
    assert torch.equal(flipped, found)


def test_find_edits_at_the_grid_step_of_t_edit_and_its_projection_lowers_the_leak(model):
    """The directions are applied at the grid step nearest t_edit (and recorded with its timestep), and projecting
    out the complement's top vectors lowers each direction's change outside the region against inside."""
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.loco import LocoDirections

    sampler = SamplerSettings(num_steps=5)
    method = LocoDirections(mask="box", mask_box=[2, 2, 9, 9], edit_rank=2, null_rank=3, t_edit=430, max_iters=30)
    found = method.find(model, sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    index = schedule.index_of(430)  # the grid is 800, 600, 400, 200, 0
    assert found.info["t_index"] == index == 2 and found.info["t_edit"] == 400
    assert found.scales[:, index].tolist() == [1.0, 1.0] and found.scales.sum() == 2
    before, after = found.info["leak_ratio_before"], found.info["leak_ratio_after"]
    assert all(a < b for a, b in zip(after, before)), (before, after)
