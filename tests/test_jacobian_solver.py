"""Matrix-free Jacobian directions against the dense Jacobian SVD of a tiny UNet."""

import pytest
import torch

from hspace.directions.jacobian_map import dense_jacobian, jacobian_products
from hspace.directions.subspace import (
    ZERO_SINGULAR_VALUE,
    block_subspace_iteration,
    check_nonzero,
    sequential_power_iteration,
)
from hspace.errors import UserError


def x_t_for(model, tau, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 16, 16, generator=g) * 2 - 1
    a = model.alphas_cumprod[tau].float()
    return a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(3, 16, 16, generator=g)


def check_against_dense(triplets, dense, k):
    _, s, vh = torch.linalg.svd(dense.double(), full_matrices=False)
    torch.testing.assert_close(triplets.values.double(), s[:k], rtol=1e-3, atol=0)
    cos = (triplets.right.double() * vh[:k]).sum(dim=1).abs()
    assert (cos > 0.99).all(), cos


@pytest.mark.parametrize("masked", [False, True])
def test_block_iteration_matches_dense_svd(model, masked):
    tau = 500
    x_t = x_t_for(model, tau)
    mask = None
    if masked:
        mask = torch.zeros(3, 16, 16)
        mask[:, 2:9, 4:12] = 1
    products = jacobian_products(model, x_t, tau, mask)
    dense = dense_jacobian(model, x_t, tau, mask)
    assert dense.shape == (products.m, products.n)
    # The products are J and J^T of the dense matrix.
    v = torch.randn(2, products.n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(products.jvp(v), v @ dense.T, rtol=1e-4, atol=1e-5)
    u = torch.randn(2, products.m, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(products.vjp(u), u @ dense, rtol=1e-4, atol=1e-5)
    k = 3
    block = block_subspace_iteration(products.jvp, products.vjp, products.n, k, oversample=4, tol=1e-5, max_iters=300)
    assert block.converged and block.jvp_count > 0
    check_against_dense(block, dense, k)
    if masked:  # the mask removes every output outside the box
        outside = (1 - mask).flatten().bool()
        assert block.left[:, outside].abs().max() < 1e-12


def test_sequential_and_block_methods_agree(model):
    tau = 300
    x_t = x_t_for(model, tau, seed=3)
    products = jacobian_products(model, x_t, tau)
    block = block_subspace_iteration(products.jvp, products.vjp, products.n, 3, oversample=4, tol=1e-6, max_iters=300)
    sequential = sequential_power_iteration(products.jvp, products.vjp, products.m, 3, tol=1e-6, max_iters=2000)
    torch.testing.assert_close(sequential.values, block.values, rtol=1e-3, atol=0)
    assert ((sequential.right * block.right).sum(dim=1).abs() > 0.99).all()
    assert sequential.vjp_count > 0 and sequential.jvp_count > 0


def test_block_iteration_on_a_known_matrix():
    g = torch.Generator().manual_seed(0)
    left, _ = torch.linalg.qr(torch.randn(40, 10, generator=g, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(30, 10, generator=g, dtype=torch.float64))
    s = torch.tensor([10.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)
    A = left @ torch.diag(s) @ right.T
    result = block_subspace_iteration(
        lambda V: V @ A.T, lambda U: U @ A, 30, 3, tol=1e-8, max_iters=500, dtype=torch.float64
    )
    torch.testing.assert_close(result.values, s[:3])
    assert result.converged and result.iterations < 500 and len(result.log) == result.iterations
    assert max(result.log[-1]["residual"]) < 1e-8  # converged: every one of the k residuals, not the best
    capped = block_subspace_iteration(
        lambda V: V @ A.T, lambda U: U @ A, 30, 3, tol=1e-14, max_iters=2, dtype=torch.float64
    )
    assert not capped.converged and capped.iterations == 2


def test_jacobian_method_end_to_end(tmp_path, monkeypatch):
    """method=jacobian in hspace-run on the shipped model with tiny settings; masked and cached by mask content."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from hspace.cli import CONFIG_DIR
    from hspace.cli.run import run
    from hspace.directions.container import Directions

    monkeypatch.setenv("WANDB_MODE", "offline")
    mask = tmp_path / "mask.png"
    Image.fromarray((torch.zeros(32, 32).index_fill_(0, torch.arange(8, 24), 255)).byte().numpy()).save(mask)
    overrides = [
        "method=jacobian",
        "method.num_directions=2",
        "method.scale_mode=sigma_tau",
        "method.max_iters=4",
        f"method.mask_file={mask}",
        "sampler.num_steps=4",
        "num_samples=2",
        "real_images=0",
        "edit.strengths=[-1.0,1.0]",
        "logger=none",
        "metrics=none",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        first = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'a'}"]))
        directions = Directions.load(tmp_path / "a" / "directions.safetensors")
        assert directions.method == "jacobian" and directions.names == ["jac0_t499", "jac1_t499"]
        assert directions.scales[:, 0].tolist() == directions.scales[:, -1].tolist()  # sigma_tau: constant over steps
        assert directions.scales[:, 0].tolist() == directions.info["singular_values_at_tau"]  # tau's, no other step's
        assert (directions.scales[0] >= directions.scales[1]).all() and directions.info["jvp_count"] > 0
        torch.testing.assert_close(directions.vectors[:, 0].flatten(1).norm(dim=1), torch.ones(2))
        again = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'b'}"]))
        assert again["cache/hits"] == 1 and first["cache/misses"] == 1
        Image.fromarray(torch.full((32, 32), 255).byte().numpy()).save(mask)  # same path, new mask: recomputed
        third = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'c'}"]))
        assert third["cache/misses"] == 1


@pytest.mark.parametrize("fixture", ["model", "v_model"])
def test_jacobian_products_match_central_differences_of_the_unet(fixture, request):
    """J v against (eps(h + d v) - eps(h - d v)) / 2d, with h moved by a plain forward hook on the middle block
    and eps read off the raw UNet output by hand, in float64; and u^T J against the same J v."""
    import copy

    from hspace.diffusion.model import DiffusionModel

    base = request.getfixturevalue(fixture)
    unet = copy.deepcopy(base.unet).double().eval()
    model = DiffusionModel(unet, base.scheduler_config, name="tiny-64")
    g = torch.Generator().manual_seed(5)
    tau, a = 400, float(base.alphas_cumprod[400])
    x_t = torch.randn(3, 16, 16, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 16, 16, generator=g) > 0.5).double()
    v = torch.randn(model.h_shape, generator=g, dtype=torch.float64)
    u = torch.randn(mask.numel(), generator=g, dtype=torch.float64)

    def eps_moved(shift):
        handle = unet.mid_block.register_forward_hook(lambda module, args, out: out + shift)
        try:
            with torch.no_grad():
                out = unet(x_t[None], torch.tensor([tau])).sample[0]
        finally:
            handle.remove()
        eps = (1 - a) ** 0.5 * x_t + a**0.5 * out if model.prediction_type == "v_prediction" else out
        return (eps * mask).flatten()

    delta = 1e-4
    central = (eps_moved(delta * v) - eps_moved(-delta * v)) / (2 * delta)
    products = jacobian_products(model, x_t, tau, mask)
    jv = products.jvp(v.flatten()[None])[0]
    torch.testing.assert_close(jv, central, rtol=1e-5, atol=1e-7)  # central differences: O(d^2)
    torch.testing.assert_close(products.vjp(u[None])[0] @ v.flatten(), u @ central, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # about 17 s: a solve and a dense Jacobian at every step
def test_per_step_scales_are_the_dense_singular_values_of_every_step(model):
    """scale_mode=sigma_t: at every step of the walked trajectory the scales are the top singular values of the
    dense Jacobian there, and the directions are its top right singular vectors at tau."""
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.jacobian import JacobianDirections

    sampler = SamplerSettings(num_steps=2)
    method = JacobianDirections(num_directions=2, tau=500, scale_mode="sigma_t", oversample=4, max_iters=300)
    found = method.find(model, sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    x_T, z = noise_for([method.sample_seed], model, schedule)
    trajectory = sample(model, schedule, x_T, z, record_x=True).x_t[0]
    at = schedule.index_of(500)
    for idx, tau in enumerate(schedule.timesteps.tolist()):
        _, s, vh = torch.linalg.svd(dense_jacobian(model, trajectory[idx], tau).double(), full_matrices=False)
        torch.testing.assert_close(found.scales[:, idx].double(), s[:2], rtol=1e-3, atol=0)
        if idx == at:
            cos = (found.vectors[:, idx].flatten(1).double() * vh[:2]).sum(dim=1).abs()
            assert (cos > 0.99).all(), cos


def test_a_map_of_lower_rank_than_asked_gives_no_nan_and_is_refused_in_one_line():
    """A masked Jacobian can have fewer directions than asked for: the solvers give finite vectors with singular
    values of zero (the sequential one gave NaN, divided by a zero norm), which check_nonzero refuses."""
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(40, 1, generator=g, dtype=torch.float64), torch.randn(30, 1, generator=g, dtype=torch.float64)
    rank_one = 3.0 * (u / u.norm()) @ (v / v.norm()).T
    for A in (rank_one, torch.zeros(40, 30, dtype=torch.float64)):
        sequential = sequential_power_iteration(lambda V: V @ A.T, lambda U: U @ A, 40, 3, dtype=torch.float64)
        block = block_subspace_iteration(lambda V: V @ A.T, lambda U: U @ A, 30, 3, dtype=torch.float64)
        for found in (sequential, block):
            assert torch.isfinite(found.right).all() and torch.isfinite(found.values).all()
            assert (found.values[1:] <= ZERO_SINGULAR_VALUE * 3.0).all()
    torch.testing.assert_close(block.values, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(UserError, match="the map is zero, so it has no direction to find: widen it"):
        check_nonzero(block.values, "k", "the map", "widen it")
    values = torch.tensor([3.0, 1e-9, 0.0])
    with pytest.raises(UserError, match="k=3, but the map has only 1 singular values above zero: ask for at most 1"):
        check_nonzero(values, "k", "the map", "widen it")
    check_nonzero(torch.tensor([3.0, 1e-3]), "k", "the map", "widen it")  # small, not zero
    with pytest.raises(UserError, match="k=3, but the map has only 2 singular values above zero"):
        check_nonzero(torch.tensor([3.0, 2.0, 0.0]), "k", "the map", "widen it")  # one zero, the last


def test_a_step_where_eps_does_not_read_h_scales_its_edit_to_zero():
    """The shipped model predicts v on a zero-terminal-SNR schedule: at tau = 999 its eps is x_T whatever h is, so
    that step's Jacobian is zero. With scale_mode=sigma_t that is the step's scale (no edit there), not a refusal:
    only the step whose vectors are applied must have them."""
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.jacobian import JacobianDirections

    model = load_model("shapes32")
    sampler = SamplerSettings(num_steps=3, spacing="trailing")
    method = JacobianDirections(num_directions=1, tau=500, scale_mode="sigma_t", max_iters=5, tol=1e-1)
    directions = method.find(model, sampler)
    assert directions.info["tau"] != 999 and directions.scales[0, 0] == 0 and (directions.scales[0, 1:] > 0).all()


def test_a_zero_jacobian_at_the_applied_step_is_refused_before_the_other_steps_are_solved(monkeypatch):
    """With scale_mode=sigma_t every step is solved, the applied one first, so that a zero Jacobian there (here
    made zero at tau = 499, the third of four steps) is refused after one solve, not after the steps before it."""
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions import jacobian
    from hspace.directions.jacobian_map import JacobianProducts

    solved = []

    def zero_at_499(model, x_t, t, mask, chunk):
        solved.append(t)
        found = jacobian_products(model, x_t, t, mask, chunk)
        if t != 499:
            return found
        return JacobianProducts(found.h, found.eps, lambda v: 0 * found.jvp(v), lambda u: 0 * found.vjp(u))

    monkeypatch.setattr(jacobian, "jacobian_products", zero_at_499)
    method = jacobian.JacobianDirections(num_directions=1, tau=500, scale_mode="sigma_t", max_iters=5, tol=1e-1)
    with pytest.raises(UserError, match="the Jacobian of eps by h at tau=499 is zero"):
        method.find(load_model("shapes32"), SamplerSettings(num_steps=4, spacing="trailing"))
    assert solved == [499]
