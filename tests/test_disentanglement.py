"""DCI and MIG (hspace.metrics.disentanglement) on codes whose answer is known, and the codes of a run's directions."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from hspace.data.shapes import ShapesDataset
from hspace.directions.container import Directions
from hspace.job.disentangle import FACTOR_NAMES, direction_codes, principal_codes, shapes_factor_images
from hspace.metrics.disentanglement import dci, discretise, disentanglement_scores, mig, normalised_entropy


def known_factors(n=400, classes=(2, 4, 3, 10), seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, c, n) for c in classes], axis=1)


def test_a_permuted_identity_scores_one():
    factors = known_factors()
    rng = np.random.default_rng(1)
    codes = (factors + rng.normal(0, 0.05, factors.shape))[:, [2, 0, 3, 1]]  # one code per factor, shuffled
    scores = disentanglement_scores(codes, factors)
    assert scores["dci_d"] > 0.95 and scores["dci_c"] > 0.95 and scores["dci_i"] > 0.95, scores
    assert scores["mig"] > 0.85, scores


def test_random_codes_score_near_zero():
    factors = known_factors()
    codes = np.random.default_rng(2).normal(size=(len(factors), 4))
    scores = disentanglement_scores(codes, factors)
    assert scores["dci_d"] < 0.1 and scores["dci_c"] < 0.1 and scores["mig"] < 0.1, scores
    assert scores["dci_i"] < 0.5  # near chance (1/2, 1/4, 1/3, 1/10)


def test_one_code_for_two_factors_is_complete_but_not_disentangled():
    """Code 0 carries factors 0 and 1 together, code 1 carries factor 2: disentanglement drops, MIG of
    factors 0 and 1 is still high (no second code knows them), completeness stays high."""
    factors = known_factors(classes=(2, 3, 4))
    rng = np.random.default_rng(3)
    codes = np.stack([factors[:, 0] * 10 + factors[:, 1], factors[:, 2]], axis=1) + rng.normal(
        0, 0.05, (len(factors), 2)
    )
    scores = disentanglement_scores(codes, factors)
    assert scores["dci_c"] > 0.9 and scores["dci_i"] > 0.95
    assert 0.2 < scores["dci_d"] < 0.8, scores


def test_entropy_and_bins():
    assert normalised_entropy(np.array([1.0, 0.0, 0.0]), 3) == 0
    assert normalised_entropy(np.full(4, 0.25), 4) == pytest.approx(1.0)
    labels = discretise(np.array([[0.0], [0.49], [0.51], [1.0]]), 2)
    assert labels[:, 0].tolist() == [0, 0, 1, 1]
    assert np.isnan(mig(np.zeros((10, 1)), known_factors(10)))  # fewer than two codes: no gap to measure


def test_direction_codes_are_projections_of_h_on_the_scaled_directions():
    g = torch.Generator().manual_seed(0)
    vectors, scales = torch.randn(3, 4, 2, 2, 2, generator=g), torch.rand(3, 4, generator=g)
    directions = Directions(vectors, scales, torch.arange(4), ["a", "b", "c"], "test", "m", "w", {})
    h = torch.randn(5, 4, 2, 2, 2, generator=g)
    codes = direction_codes(h, directions, 2)
    slow = [
        [sum(float(scales[j, t] * (h[n, t] * vectors[j, t]).sum()) for t in range(4)) for j in range(2)]
        for n in range(5)
    ]
    np.testing.assert_allclose(codes, slow, rtol=1e-5, atol=1e-6)  # the slow sum runs in float32


def test_principal_codes_match_sklearn():
    x = torch.randn(30, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    ours = principal_codes(x, 3)
    theirs = SklearnPCA(3).fit_transform(x.flatten(1).double().numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-6, atol=1e-8)


def test_shapes_factor_images_hold_the_rendered_factors():
    dataset = ShapesDataset(20, "test")
    known = shapes_factor_images(dataset, 12, bins=4)
    assert known.images.shape == (12, 3, 32, 32) and known.factors.shape == (12, len(FACTOR_NAMES))
    first = dataset.factors(0)
    assert known.factors[0, 2] == ("circle", "square", "triangle").index(first.shape)
    assert known.factors[:, 3:].min() >= 0 and known.factors[:, 3:].max() <= 3


def test_dci_scores_of_a_hand_built_importance_matrix():
    from hspace.metrics.disentanglement import dci_scores

    # code 0 spreads over the three factors, code 1 holds factor 2 only; factor 2 is shared by both codes
    importance = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.5]])
    scores = dci_scores(importance, np.array([0.9, 0.8, 0.7]))
    # D: code 0's row has entropy 1 (base F = 3), code 1's 0; weights 0.75 and 0.25
    assert scores["dci_d"] == pytest.approx(0.25)
    # C: factors 0 and 1 sit in one code (1 each), factor 2 evenly in two (entropy 1 in base K = 2)
    assert scores["dci_c"] == pytest.approx(2 / 3)
    assert scores["dci_i"] == pytest.approx(0.8)
    # nothing to measure is NaN (null in metrics.json), not a score: one code is complete by definition, and
    # codes the trees never used are neither disentangled nor complete
    one = dci_scores(importance[:1], np.array([0.9, 0.8, 0.7]))
    assert one["dci_d"] == pytest.approx(0.0) and np.isnan(one["dci_c"])
    unused = dci_scores(np.zeros((2, 3)), np.array([0.5, 0.5, 0.5]))
    assert np.isnan(unused["dci_d"]) and np.isnan(unused["dci_c"]) and unused["dci_i"] == 0.5


def test_mig_of_a_hand_computed_example():
    """One binary factor, a code equal to it and a code that agrees with it on 7 of 8 samples: the gap between
    their mutual informations over the factor's entropy, worked out by hand (natural logarithms)."""
    factor = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    exact, partial = factor.astype(float), np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    # joint of (factor, partial): (0,0) 3/8, (0,1) 1/8, (1,1) 4/8; marginals 1/2, 1/2 and 3/8, 5/8
    information = 3 / 8 * np.log(2) + 1 / 8 * np.log(0.4) + 1 / 2 * np.log(1.6)
    expected = (np.log(2) - information) / np.log(2)
    assert mig(np.stack([exact, partial], axis=1), factor[:, None]) == pytest.approx(expected, rel=1e-12)
    assert mig(np.stack([partial, exact], axis=1), factor[:, None]) == pytest.approx(expected, rel=1e-12)
    constant = np.zeros(8)  # a third code that says nothing: the gap is still to the second best, not the worst
    assert mig(np.stack([exact, constant, partial], axis=1), factor[:, None]) == pytest.approx(expected, rel=1e-12)


def test_a_factor_that_never_varies_is_left_out_and_none_varying_is_null():
    """A constant factor has nothing to predict: DCI and MIG over the other factors are what they are without it
    (before, the trees refused a one-class factor and the whole stage failed; MIG of no varying factor was 0)."""
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 4, size=(200, 2))
    codes = np.column_stack([factors[:, 1], factors[:, 0], rng.normal(size=200)]).astype(float)
    with_constant = np.column_stack([factors, np.zeros(200, dtype=int)])
    alone = disentanglement_scores(codes, factors)
    assert disentanglement_scores(codes, with_constant) == pytest.approx(alone, nan_ok=True)
    assert alone["dci_i"] > 0.9 and alone["mig"] > 0.5
    train = np.zeros(200, dtype=bool)  # dci's training split (seed 0, three quarters)
    train[np.random.default_rng(0).permutation(200)[:150]] = True
    held_out_only = np.where(train, 0, 1)  # varies, but not among the training images: nothing to learn from
    assert dci(codes, np.column_stack([factors, held_out_only])) == pytest.approx(dci(codes, factors))
    constant = np.zeros((200, 2), dtype=int)
    assert all(np.isnan(v) for v in disentanglement_scores(codes, constant).values())
    assert np.isnan(mig(codes, constant))


def test_the_disentangle_inversion_is_cached_by_model_grid_and_pixels(model, tmp_path, monkeypatch):
    """A second run on the same model, grid and images scores its directions without inverting again, with the
    same numbers; other images or another grid invert afresh."""
    import hspace.job.disentangle as stage
    from hspace.cache import ArtifactCache
    from hspace.diffusion.schedule import SamplerSettings

    schedule = SamplerSettings(num_steps=4).schedule(model.alphas_cumprod)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 16, 16, generator=g) * 2 - 1
    plain = [tuple(pair) for pair in stage.inverted_batches(model, schedule, images, 8)]
    cache = ArtifactCache(tmp_path / "cache")
    stored = list(stage.inverted_batches(model, schedule, images, 8, cache))
    assert len(cache.misses) == 2 and all(torch.equal(a, b) for p, s in zip(plain, stored) for a, b in zip(p, s))

    inversions = []
    real_invert = stage.ddim_invert
    monkeypatch.setattr(stage, "ddim_invert", lambda *a, **k: inversions.append(1) or real_invert(*a, **k))
    loaded = list(stage.inverted_batches(model, schedule, images, 8, cache))
    assert inversions == [] and len(cache.hits) == 2
    assert all(torch.equal(a, b) for p, s in zip(plain, loaded) for a, b in zip(p, s))
    assert [h.shape[:2] for h, _ in loaded] == [(8, 4), (4, 4)]

    list(stage.inverted_batches(model, schedule, images.flip(0), 8, cache))  # other batches of the same images
    list(stage.inverted_batches(model, SamplerSettings(num_steps=5).schedule(model.alphas_cumprod), images, 8, cache))
    assert len(inversions) == 4 and len(cache.misses) == 6

    # the stage scores the same numbers from the cached inversion as from its own
    directions = Directions(
        torch.randn(2, 4, *model.h_shape, generator=g),
        torch.rand(2, 4, generator=g),
        schedule.timesteps,
        ["a", "b"],
        "test",
        "m",
        "w",
        {},
    )
    factors = np.stack([np.arange(len(images)) % k for k in (2, 2, 3, 4, 4, 4)], axis=1)
    known = stage.FactorImages(images, factors)
    scores = stage.disentangle_stage(model, schedule, directions, 2, known, batch_size=8, cache=cache)
    assert len(inversions) == 4
    monkeypatch.setattr(stage, "ddim_invert", real_invert)
    assert scores == stage.disentangle_stage(model, schedule, directions, 2, known, batch_size=8)
