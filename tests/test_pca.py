import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from hspace.diffusion.sampler import initial_noise, sample
from hspace.diffusion.schedule import SamplerSettings, make_schedule
from hspace.directions.h_collection import collect_h
from hspace.directions.pca import PCA, StreamingPCA, align_signs, anchor_overlaps, exact_per_step_pca


@pytest.fixture(scope="module")
def activations():
    """Natural h of 96 stochastic samples of a tiny UNet over 3 steps. (96, 3, 16, 8, 8)"""
    from diffusers import DDPMScheduler

    from hspace.diffusion.model import DiffusionModel
    from tests.conftest import GOOGLE_SCHEDULER, tiny_unet

    model = DiffusionModel(tiny_unet(), dict(DDPMScheduler(**GOOGLE_SCHEDULER).config))
    schedule = make_schedule(model.alphas_cumprod, 3, eta=1.0)
    x_T, z = initial_noise(range(96), model.image_shape, 3)
    return sample(model, schedule, x_T, z, record_h=True).h


def assert_matches_sklearn(result, h, k, atol, variance_rtol=None):
    """The first k components of `result` against sklearn's exact PCA, step by step."""
    variance_rtol = atol if variance_rtol is None else variance_rtol
    for t in range(h.shape[1]):
        reference = SklearnPCA(k, svd_solver="full").fit(h[:, t].reshape(len(h), -1).double().numpy())
        cos = np.abs(np.einsum("kd,kd->k", result.axes[:k, t], reference.components_))
        np.testing.assert_allclose(cos, 1, atol=atol)
        np.testing.assert_allclose(result.std[:k, t] ** 2, reference.explained_variance_, rtol=variance_rtol)
        np.testing.assert_allclose(
            result.explained_variance_ratio[:k, t], reference.explained_variance_ratio_, rtol=variance_rtol
        )


def test_exact_pca_equals_sklearn(activations):
    assert_matches_sklearn(exact_per_step_pca([activations[:50], activations[50:]], 5), activations, 5, atol=1e-8)


@pytest.fixture(scope="module")
def shapes_activations():
    """Natural h of 256 stochastic samples of the shipped Shapes model over 4 steps."""
    from hspace.diffusion.loading import load_model

    model = load_model("shapes32")
    schedule = make_schedule(model.alphas_cumprod, 4, "trailing", eta=1.0)
    x_T, z = initial_noise(range(256), model.image_shape, 4)
    return sample(model, schedule, x_T, z, record_h=True).h


def test_streaming_pca_equals_sklearn_on_real_activations(shapes_activations):
    stream = StreamingPCA(k=5, batch_size=64, oversample=40)
    for start in range(0, 256, 48):  # batches that do not line up with the fit batches
        stream.update(shapes_activations[start : start + 48])
    result = stream.result(4)
    assert result.num_samples == 256 and result.axes.shape == (5, 4, 48 * 4 * 4)
    assert_matches_sklearn(result, shapes_activations, 5, atol=2e-3, variance_rtol=1e-2)


@pytest.mark.parametrize(
    "n, oversample, update, seed",
    [
        (80, 0, 16, 0),  # updates that do not line up with the fit batches of 10
        # 14 samples, batches of 10 and 8 tracked axes: the last 4 rows could not be fitted alone (fewer than the
        # tracked axes), so the 14 are fitted together
        (14, 4, 7, 1),
    ],
    ids=["misaligned updates", "a last batch too small to stand alone"],
)
def test_streaming_pca_is_exact_when_the_data_has_rank_k(n, oversample, update, seed):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 4, generator=g)
    h = (latent @ torch.randn(4, 60, generator=g) + torch.randn(60, generator=g)).reshape(n, 2, 30)
    stream = StreamingPCA(k=4, batch_size=10, oversample=oversample)
    for start in range(0, n, update):
        stream.update(h[start : start + update])
    assert_matches_sklearn(stream.result(2), h, 4, atol=1e-6)


def test_streaming_pca_keeps_an_h_smaller_than_its_tracked_axes_whole():
    """A 48x1x1 h has fewer dimensions than the 25 + 40 axes the default tracks: every axis is kept, and the
    top ones are sklearn's."""
    g = torch.Generator().manual_seed(2)
    h = (torch.randn(200, 2, 12, generator=g) @ torch.randn(12, 12, generator=g)).reshape(200, 2, 12, 1, 1)
    for joint in (False, True):
        stream = StreamingPCA(k=5, batch_size=70, joint=joint, oversample=40)
        for start in range(0, 200, 64):
            stream.update(h[start : start + 64])
        result = stream.result(2)
        assert all(model.n_components == (24 if joint else 12) for model in stream.models)
        if not joint:
            assert_matches_sklearn(result, h, 5, atol=1e-6)
        else:
            reference = SklearnPCA(5, svd_solver="full").fit(h.reshape(200, -1).double().numpy())
            cos = np.abs(np.einsum("kd,kd->k", result.axes.reshape(5, -1), reference.components_))
            np.testing.assert_allclose(cos, 1, atol=1e-6)


def test_more_components_than_h_has_dimensions_are_refused_before_any_sampling(monkeypatch):
    from diffusers import DDPMScheduler

    from hspace.diffusion.model import DiffusionModel
    from hspace.errors import UserError
    from tests.conftest import GOOGLE_SCHEDULER, tiny_unet

    model = DiffusionModel(tiny_unet(), dict(DDPMScheduler(**GOOGLE_SCHEDULER).config))
    dimensions = int(np.prod(model.h_shape))
    monkeypatch.setattr("hspace.directions.pca.collect_h", lambda *a, **k: pytest.fail("sampled before refusing"))
    method = PCA(num_samples=dimensions + 2, num_components=dimensions + 1, batch_size=dimensions + 1, oversample=0)
    with pytest.raises(UserError, match=f"method.num_components={dimensions + 1} exceeds the {dimensions} dimensions"):
        method.find(model, SamplerSettings(num_steps=3))


def test_joint_pca_equals_sklearn_on_the_flattened_h(activations):
    result = exact_per_step_pca([activations], 4, joint=True)
    reference = SklearnPCA(4, svd_solver="full").fit(activations.reshape(96, -1).double().numpy())
    cos = np.abs(np.einsum("kd,kd->k", result.axes.reshape(4, -1), reference.components_))
    np.testing.assert_allclose(cos, 1, atol=1e-8)
    np.testing.assert_allclose(result.std[:, 0] ** 2, reference.explained_variance_, rtol=1e-8)


def test_sign_alignment():
    g = np.random.default_rng(0)
    base = g.normal(size=(2, 1, 20))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    flips = np.array([[1, -1, 1, -1], [-1, -1, 1, 1]])[..., None]
    axes = base * flips  # the same axis at every step, with arbitrary signs
    aligned, overlaps = align_signs(axes)
    for j in range(2):
        assert np.allclose(aligned[j], aligned[j, 0])
        assert aligned[j, 0, np.abs(aligned[j, 0]).argmax()] > 0
    np.testing.assert_allclose(overlaps, 1)
    chained, _ = align_signs(axes, "chain")
    np.testing.assert_allclose(chained, aligned)


def test_sign_alignment_chain_and_noisiest_differ_on_a_rotating_axis():
    """u_t = cos(60° t) e1 + sin(60° t) e2: "chain" keeps u_2 (overlap +0.5 with u_1) while "noisiest" flips it
    (overlap -0.5 with u_0), whatever signs the steps came with."""
    import itertools

    angles = np.deg2rad(60.0 * np.arange(3))
    u = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], axis=-1)  # (T, D) = (3, 3), u_0 = e1
    signs = np.array(list(itertools.product((1, -1), repeat=3)), dtype=float)  # every sign pattern, (8, T)
    axes = signs[..., None] * u  # (k, T, D)
    chained, chain_overlaps = align_signs(axes, "chain")
    anchored, anchored_overlaps = align_signs(axes, "noisiest")
    np.testing.assert_allclose(chained, np.broadcast_to(u, axes.shape), atol=1e-12)
    np.testing.assert_allclose(anchored, np.broadcast_to(u * np.array([1, 1, -1])[:, None], axes.shape), atol=1e-12)
    np.testing.assert_allclose(chain_overlaps, 0.5, atol=1e-12)
    np.testing.assert_allclose(anchored_overlaps, 0.5, atol=1e-12)
    np.testing.assert_allclose(axes, signs[..., None] * u)  # the input is left as it was


def test_the_overlaps_that_decided_the_signs_show_a_step_orthogonal_to_the_noisiest():
    """u_0 = e1, u_1 = (e1 + e2) / sqrt 2, u_2 = e2: "noisiest" decides u_2's sign from an overlap of 0 (rounding
    decides it), "chain" from one of 0.71 with u_1."""
    u = np.array([[1.0, 0.0], [0.5**0.5, 0.5**0.5], [0.0, 1.0]])[None]
    np.testing.assert_allclose(anchor_overlaps(align_signs(u)[0]), [[0.5**0.5, 0.0]], atol=1e-12)
    np.testing.assert_allclose(anchor_overlaps(align_signs(u, "chain")[0], "chain"), [[0.5**0.5] * 2], atol=1e-12)


def unit(*rows):
    rows = np.array(rows, dtype=float)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_a_sign_decided_by_rounding_differs_between_two_fits_and_chain_carries_it_on():
    """Two fits that differ only by rounding (1e-9) at a step nearly orthogonal to its anchor: "noisiest" gives
    that step the other sign, and "chain", where the step is a swap orthogonal to its neighbour, gives it and
    every step it decides after it the other sign. Counted per component, by opposite_signs."""
    from hspace.directions.pca import opposite_signs

    def fit(d):  # steps: e1, e1, a swap to e3 (overlap d with both), then (e1 + e3) / sqrt 2
        return unit([1, 0, 0], [1, 0, 0], [d, 0, 1], [1, 0, 1])[None]

    first, second = fit(1e-9), fit(-1e-9)
    assert opposite_signs(first, second, "noisiest").tolist() == [1]  # step 2 only: step 3 overlaps e1 by 0.71
    assert opposite_signs(first, second, "chain").tolist() == [2]  # step 2, and step 3 decided from it
    assert opposite_signs(first, first, "chain").tolist() == [0]


def test_noisiest_turns_an_axis_round_between_neighbours_where_chain_does_not():
    """The axis rotating by 60 degrees a step: "noisiest" flips step 2 (overlap -0.5 with step 0), so it points
    against step 1; "chain" keeps every neighbour pointing the same way."""
    from hspace.directions.pca import reversals

    angles = np.deg2rad(60.0 * np.arange(3))
    u = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], axis=-1)[None]
    assert reversals(align_signs(u, "noisiest")[0]).tolist() == [1]
    assert reversals(align_signs(u, "chain")[0]).tolist() == [0]
    # the reversal is an overlap of -0.5: counted among neighbours overlapping by more than 0.4, not by more than 0.5
    assert reversals(align_signs(u, "noisiest")[0], 0.4).tolist() == [1]
    assert reversals(align_signs(u, "noisiest")[0], 0.5).tolist() == [0]


def test_chain_restart_follows_its_neighbour_and_starts_afresh_where_the_axis_is_another():
    """Steps e1, (e1 + e2) / sqrt 2, then a swap to e3, then (0.1 e2 + e3) / |.|, each given every sign: the
    second step follows the first (overlap 0.71), the swap (overlap 0) takes its own canonical sign, +e3, and the
    last follows the swap (overlap 0.995), where "chain" would follow the swap's sign as it came."""
    import itertools

    from hspace.directions.pca import restarted_steps

    u = unit([1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0.1, 1])  # (T, D)
    signs = np.array(list(itertools.product((1, -1), repeat=4)), dtype=float)
    axes = signs[..., None] * u
    aligned, overlaps = align_signs(axes, "chain_restart")
    np.testing.assert_allclose(aligned, np.broadcast_to(u, axes.shape), atol=1e-12)
    np.testing.assert_allclose(overlaps, np.broadcast_to([0.5**0.5, 0.0, 0.995037], overlaps.shape), atol=1e-6)
    assert restarted_steps(aligned).tolist() == [[False, True, False]] * len(signs)
    assert not restarted_steps(aligned, restart_overlap=0.0).any()  # no overlap is below 0: "chain"
    chained = align_signs(axes, "chain")[0]
    np.testing.assert_allclose(align_signs(axes, "chain_restart", restart_overlap=0.0)[0], chained)
    assert (chained[:, 2:, 2] < 0).any()  # chain carries a sign the swap came with
    # with the restart at 0.8, the second step (overlap 0.71) starts afresh as well: (e1 + e2) / sqrt 2 is tied, so
    # its canonical sign is that of its first entry, +
    strict = align_signs(axes, "chain_restart", restart_overlap=0.8)[0]
    np.testing.assert_allclose(strict, np.broadcast_to(u, axes.shape))


def test_chain_restart_reports_the_margin_of_a_restarted_sign_and_does_not_carry_rounding_on():
    """The swap of the rounding example below: "chain" gives it and the step after it the other sign in two fits
    that differ by rounding, "chain_restart" gives neither, and reports the swap's canonical margin (e3 against
    an entry of 1e-9: 1) where "chain" reports its overlap of 1e-9."""
    from hspace.directions.pca import opposite_signs

    def fit(d):
        return unit([1, 0, 0], [1, 0, 0], [d, 0, 1], [1, 0, 1])[None]

    first, second = fit(1e-9), fit(-1e-9)
    assert opposite_signs(first, second, "chain").tolist() == [2]
    assert opposite_signs(first, second, "chain_restart").tolist() == [0]
    aligned = align_signs(first, "chain_restart")[0]
    np.testing.assert_allclose(anchor_overlaps(aligned, "chain_restart"), [[1.0, 1.0, 0.5**0.5]], atol=1e-8)
    np.testing.assert_allclose(anchor_overlaps(align_signs(first, "chain")[0], "chain"), [[1.0, 1e-9, 0.5**0.5]])


def test_chain_restart_keeps_the_noisiest_steps_sign_and_turns_no_axis_round_that_stays_the_same():
    """An axis rotating by 60 degrees a step overlaps each neighbour by 0.5: "chain_restart" chains it as "chain"
    does, with no reversal, starting from the canonical sign of the noisiest step."""
    from hspace.directions.pca import reversals

    angles = np.deg2rad(60.0 * np.arange(4))
    u = np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=-1)[None]
    aligned = align_signs(-u, "chain_restart")[0]
    np.testing.assert_allclose(aligned, u, atol=1e-12)
    assert reversals(aligned).tolist() == [0]


def test_pca_directions_record_the_restarts_of_chain_restart():
    from hspace.diffusion.loading import load_model

    model = load_model("shapes32")
    settings = dict(num_samples=24, num_components=3, batch_size=24, oversample=0, exact_max_n=24)
    sampler = SamplerSettings(num_steps=4, spacing="trailing")
    restarted = PCA(**settings, sign_reference="chain_restart", sign_restart_overlap=0.999).find(model, sampler)
    assert restarted.info["sign_restarts"] == [3, 3, 3]  # no two steps share an axis to 0.999
    never = PCA(**settings, sign_reference="chain_restart", sign_restart_overlap=0.0).find(model, sampler)
    assert never.info["sign_restarts"] == [0, 0, 0]
    noisiest = PCA(**settings, sign_reference="noisiest", sign_restart_overlap=0.999).find(model, sampler)
    assert noisiest.info["sign_restarts"] == [0, 0, 0]  # noisiest restarts nothing, whatever the setting
    vectors = restarted.vectors.flatten(2).numpy()
    assert (vectors[np.arange(3)[:, None], np.arange(4), np.abs(vectors).argmax(-1)] > 0).all()  # each canonical


def test_joint_streaming_pca_equals_sklearn_on_real_activations(shapes_activations):
    h = shapes_activations[:, :2]
    stream = StreamingPCA(k=3, batch_size=64, joint=True, oversample=40)
    for start in range(0, 256, 64):
        stream.update(h[start : start + 64])
    result = stream.result(2)
    reference = SklearnPCA(3, svd_solver="full").fit(h.reshape(256, -1).double().numpy())
    cos = np.abs(np.einsum("kd,kd->k", result.axes.reshape(3, -1), reference.components_))
    np.testing.assert_allclose(cos, 1, atol=2e-3)
    np.testing.assert_allclose(result.std[:, 0] ** 2, reference.explained_variance_, rtol=1e-2)


def test_joint_directions_keep_one_sign_over_all_steps_and_random_matches_their_norms():
    """Joint PCA: the step slices of a component are not flipped one by one, and the random control
    matches ||dh_t|| of the joint component at every step."""
    from hspace.diffusion.loading import load_model
    from hspace.directions.random import RandomDirections

    model = load_model("shapes32")
    settings = dict(num_samples=48, num_components=3, batch_size=48, oversample=0, mode="joint", exact_max_n=48)
    joint = PCA(**settings).find(model, SamplerSettings(num_steps=3, spacing="trailing"))
    schedule = make_schedule(model.alphas_cumprod, 3, "trailing", eta=1.0)
    h = torch.cat(list(collect_h(model, schedule, range(1_000_000, 1_000_048), 48)))
    reference = SklearnPCA(3, svd_solver="full").fit(h.reshape(48, -1).double().numpy())
    cos = np.einsum("kd,kd->k", joint.vectors.reshape(3, -1).double().numpy(), reference.components_)
    np.testing.assert_allclose(np.abs(cos), 1, atol=1e-5)  # still the principal components, up to one global sign
    rnd = RandomDirections(**settings).find(model, SamplerSettings(num_steps=3, spacing="trailing"))
    norm = lambda d: d.vectors.flatten(2).norm(dim=-1) * d.scales  # noqa: E731
    torch.testing.assert_close(norm(rnd), norm(joint), rtol=1e-5, atol=1e-7)
    other = RandomDirections(**settings, seed=1).find(model, SamplerSettings(num_steps=3, spacing="trailing"))
    assert not torch.allclose(other.vectors, rnd.vectors)  # method.seed draws other directions of the same norms


@pytest.mark.parametrize("exact_max_n", [0, 8])
def test_as_many_components_as_samples_are_refused_on_both_paths(exact_max_n):
    """n samples span at most n - 1 axes around their mean: a k-th axis from k samples would be rounding noise
    saved as a direction (exact path) or a reshape error (streaming with no oversampling)."""
    from hspace.errors import UserError

    with pytest.raises(UserError, match="method.num_components=8 needs at least 9 collection samples"):
        PCA(num_samples=8, num_components=8, batch_size=8, oversample=0, exact_max_n=exact_max_n)
    PCA(num_samples=9, num_components=8, batch_size=8, oversample=0, exact_max_n=exact_max_n)  # enough


def test_a_step_where_h_does_not_vary_explains_no_variance_on_both_paths():
    """h equal across samples at one step: its explained-variance ratios are 0 on the exact and the streaming
    path (before, both gave 0/0 = NaN); the other step is unaffected."""
    rng = np.random.default_rng(0)
    h = torch.from_numpy(rng.normal(size=(12, 2, 5)))  # (N, T, D)
    h[:, 1] = 0.5
    exact = exact_per_step_pca([h], 3)
    assert np.array_equal(exact.explained_variance_ratio[:, 1], np.zeros(3))
    assert np.all(exact.explained_variance_ratio[:, 0] > 0) and np.all(exact.std[:, 1] == 0)
    stream = StreamingPCA(k=3, batch_size=12, oversample=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sklearn's own 0 / 0
        stream.update(h)
        streamed = stream.result(2)
    assert np.array_equal(streamed.explained_variance_ratio[:, 1], np.zeros(3))


def test_chain_restart_aligns_a_one_step_grid():
    """One step has no neighbours: its axis is canonical and nothing is restarted (a one-step run must not fail)."""
    axes = -unit([0.2, 1.0, 0.1])[None]  # (k, T, D) = (1, 1, 3)
    aligned = align_signs(axes, "chain_restart")[0]
    np.testing.assert_allclose(aligned, -axes)
    assert anchor_overlaps(aligned, "chain_restart").shape == (1, 0)
