"""BoundaryDiffusion pieces: SVM normals, the single-step edit, and a tiny end-to-end run."""

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.data.batch import image_batch
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import make_schedule
from hspace.diffusion.step_rules import AddH, ReplaceH
from hspace.directions.boundary import check_labels, fit_boundary, stratified_split
from hspace.directions.boundary_bank import LatentBank, load_bank, save_bank
from hspace.directions.container import Directions
from hspace.edits.boundary_step import BoundaryStep, move
from hspace.errors import UserError


def test_svm_normal_recovers_a_planted_direction():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal(50)
    planted /= np.linalg.norm(planted)
    x = rng.standard_normal((1000, 50))
    margin = x @ planted
    keep = np.abs(margin) > 0.5  # separable with a margin
    x, labels = x[keep] + 1.5 * planted, np.where(margin[keep] > 0, 1, -1)
    train, test = stratified_split(labels, 0.3)
    assert not set(train) & set(test)
    fit = fit_boundary(x, labels, train, test)
    assert float(fit.normal @ planted) > 0.95 and fit.val_acc > 0.9
    assert abs(np.linalg.norm(fit.normal) - 1) < 1e-9
    # The offset makes the signed distance of the data's centre about zero: points sit on either side.
    distances = x @ fit.normal + fit.offset
    assert (np.sign(distances[test]) == labels[test]).mean() == fit.val_acc


def test_examples_with_one_set_of_features_are_one_line_not_a_division_by_zero():
    labels = np.array([1, 1, 1, -1, -1, -1])
    train, test = stratified_split(labels, 0.3)
    with pytest.raises(UserError, match="the SVM found no boundary: the training examples of both classes have"):
        fit_boundary(np.ones((6, 4)), labels, train, test)


def test_placement_puts_the_projection_at_d_and_d_equal_to_the_distance_is_the_identity():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 30, generator=g, dtype=torch.float64)
    n = torch.randn(30, generator=g, dtype=torch.float64)
    n /= n.norm()
    d = torch.tensor([-2.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(move(v, n, 0.0, d, "placement") @ n, d)
    torch.testing.assert_close(move(v, n, 0.7, d, "placement_intercept") @ n + 0.7, d)
    torch.testing.assert_close(move(v, n, 0.0, d, "relative"), v + d[:, None] * n)
    torch.testing.assert_close(move(v, n, 0.0, v @ n, "placement"), v)
    torch.testing.assert_close(move(v, n, 0.7, v @ n + 0.7, "placement_intercept"), v)
    # push: to distance d where the sample is short of it, untouched where it is already there or beyond (and at d = 0)
    distance = v @ n + 0.7
    target = torch.cat([2 * distance[:2], 0.5 * distance[2:]])  # the first two are short of d, the last two beyond it
    pushed = move(v, n, 0.7, target, "push")
    torch.testing.assert_close(pushed[:2] @ n + 0.7, target[:2])
    torch.testing.assert_close(pushed[2:], v[2:])
    torch.testing.assert_close(move(v, n, 0.7, -distance, "push") @ n + 0.7, -distance)  # across the boundary
    torch.testing.assert_close(move(v, n, 0.7, torch.zeros(4, dtype=torch.float64), "push"), v)


def test_a_bank_labels_each_attribute_it_scores_and_survives_its_file(tmp_path):
    scores = np.array([[0.9, 0.1], [0.5, 0.7], [0.2, 0.49]], dtype=np.float32)
    bank = LatentBank({3: np.arange(6.0).reshape(3, 2)}, {3: np.ones((3, 4))}, scores, ["light", "red"])
    assert bank.labels("light").tolist() == [1, 1, -1] and bank.labels("red").tolist() == [-1, 1, -1]
    with pytest.raises(UserError, match="scores no attribute 'blue'"):
        bank.labels("blue")
    save_bank(bank, tmp_path / "bank.safetensors")
    again = load_bank(tmp_path / "bank.safetensors")
    assert again.attributes == ["light", "red"] and np.array_equal(again.scores, scores)
    assert np.array_equal(again.x[3], bank.x[3]) and np.array_equal(again.h[3], bank.h[3])


def test_single_class_bank_is_refused():
    with pytest.raises(UserError, match="has 0 positive and 12 negative") as error:
        check_labels(np.full(12, -1), 5, "the bank of 'red'")
    assert "\n" not in str(error.value)


def tiny_boundary(model, schedule, t_index: int) -> Directions:
    """One boundary at grid index t_index: a uniform x_t normal and the first h coordinate."""
    num_steps = schedule.num_steps
    directions = Directions(
        torch.zeros(1, num_steps, *model.h_shape),
        torch.zeros(1, num_steps),
        schedule.timesteps,
        ["a"],
        "boundary",
        "tiny",
        "",
        {},
        extra={"x_normal": torch.ones(1, 3, 16, 16) / (3 * 256) ** 0.5, "offsets": torch.zeros(1, 2)},
    )
    directions.vectors[0, t_index].view(-1)[0] = 1.0
    directions.scales[0, t_index] = 1.0
    return directions


@pytest.mark.parametrize("keep_h", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_strength_zero_reproduces_the_unedited_sample(v_model, eta, keep_h):
    num_steps, t_index = 6, 2
    schedule = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", eta)
    directions = tiny_boundary(v_model, schedule, t_index)
    x_T, z = noise_for([0, 1], v_model, schedule)
    edited = BoundaryStep(strengths=[0.0, 5.0], mode="relative", keep_h=keep_h).apply(
        v_model, schedule, directions, 0, x_T, z
    )
    # Unedited reference: deterministic up to t_m, the sampler's eta from t_m on.
    reference_schedule = make_schedule(
        v_model.alphas_cumprod, num_steps, "trailing", [0.0] * t_index + [eta] * (num_steps - t_index)
    )
    reference = sample(v_model, reference_schedule, x_T, z).x0
    torch.testing.assert_close(edited[:, 0], reference, rtol=1e-5, atol=1e-5)
    unedited = BoundaryStep(strengths=[3.0], keep_h=keep_h).unedited(v_model, schedule, directions, 0, x_T, z)
    torch.testing.assert_close(unedited, reference, rtol=1e-5, atol=1e-5)
    assert (edited[:, 1] - reference).abs().max() > 1e-3


def test_keep_h_continues_with_the_unedited_paths_h_after_the_mixing_step(v_model):
    """The slow version: the unedited path recorded, then the moved x_t stepped by hand with that h."""
    from hspace.bottleneck import HSpace
    from hspace.diffusion.ddim import ddim_step, to_x0_eps

    num_steps, t_index, d = 6, 2, 4.0
    schedule = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", 1.0)
    directions = tiny_boundary(v_model, schedule, t_index)
    x_T, z = noise_for([0, 1, 2], v_model, schedule)
    kept = BoundaryStep(strengths=[d], mode="relative", h_scale=None, keep_h=True, batch_size=2).apply(
        v_model, schedule, directions, 0, x_T, z
    )[:, 0]
    free = BoundaryStep(strengths=[d], mode="relative", h_scale=None).apply(v_model, schedule, directions, 0, x_T, z)[
        :, 0
    ]

    etas = [0.0] * t_index + [1.0] * (num_steps - t_index)
    path = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", etas)
    unedited_h = sample(v_model, path, x_T, z, record_h=True).h  # (N, steps, *h_shape)
    x = sample(v_model, path.steps(0, t_index), x_T).x0 + d * directions.extra["x_normal"]
    with torch.no_grad(), HSpace(v_model.unet) as hs:
        for idx in range(t_index, num_steps):
            hs.replace(unedited_h[:, idx])
            x0, eps = to_x0_eps(v_model(x, path.timesteps[idx]), x, path.alpha_bar[idx], v_model.prediction_type)
            x = ddim_step(x0, eps, path.alpha_bar_prev[idx], float(path.sigma[idx]), z[:, idx])
    torch.testing.assert_close(kept, x, rtol=1e-4, atol=1e-4)
    assert (kept - free).abs().max() > 1e-3  # the decoder did read the held h
    # Several strengths in batches that split a sample's rows: each column as when run alone.
    swept = BoundaryStep(strengths=[-d, d, 0.0], mode="relative", h_scale=None, keep_h=True, batch_size=2).apply(
        v_model, schedule, directions, 0, x_T, z
    )
    torch.testing.assert_close(swept[:, 1], kept, rtol=1e-4, atol=1e-4)


def test_replacing_h_with_the_paths_own_h_is_the_identity(v_model):
    schedule = make_schedule(v_model.alphas_cumprod, 5, "trailing", 1.0)
    x_T, z = noise_for([0, 1], v_model, schedule)
    natural = sample(v_model, schedule, x_T, z, record_h=True)
    own = sample(v_model, schedule, x_T, z, step=ReplaceH(lambda idx: natural.h[:, idx]))
    swapped = sample(v_model, schedule, x_T, z, step=ReplaceH(lambda idx: natural.h[:, idx].flip(0)))
    torch.testing.assert_close(own.x0, natural.x0, rtol=1e-5, atol=1e-5)
    assert (swapped.x0 - natural.x0).abs().max() > 1e-3


def test_boundary_run_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "method=boundary",
        "edit=boundary_step",
        "method.num_bank=40",
        "method.t_mix=500",
        "sampler.num_steps=6",
        "num_samples=2",
        "real_images=0",
        "edit.strengths=[-1.0,1.0]",
        "logger=none",
        "metrics.fid.backend=none",
        "metrics.disentanglement.num_images=0",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'run'}"]))
        assert 0 <= metrics["boundary/x/val_acc"] <= 1 and 0 <= metrics["boundary/h/val_acc"] <= 1
        assert "edit/light_background/success@1" in metrics
        d = Directions.load(tmp_path / "run" / "directions.safetensors")
        assert d.extra["x_normal"].shape == (1, 3, 32, 32) and d.info["t_mix"] in d.timesteps.tolist()
        with pytest.raises(SystemExit) as exit_:
            run(
                compose(
                    config_name="run", overrides=[*overrides, "method.min_per_class=1000", f"run_dir={tmp_path / 'r2'}"]
                )
            )
    assert exit_.value.code == 2 and "a boundary needs at least 1000 of each" in capsys.readouterr().err


def test_conditional_mode_scores_the_real_image_edits_and_cached_directions_carry_no_stage_times(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "experiment=boundary_shapes_conditional",
        "method.num_bank=40",
        "method.t_mix=500",
        "sampler.num_steps=6",
        "num_samples=2",
        "real_images=3",
        "edit.mode=relative",
        "edit.strengths=[-1.0,0.0,1.0]",
        "logger=none",
        "metrics.fid.backend=none",
        "metrics.disentanglement.num_images=0",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        first = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'a'}"]))
        again = run(compose(config_name="run", overrides=[*overrides, f"run_dir={tmp_path / 'b'}"]))
    for key in ("success@1", "preserve@1", "preserve@0", "mse@0", "target"):
        assert f"edit_real/light_background/{key}" in first, key
    # relative 0: the unedited path, up to rounding (the edits run as one batch over strengths, the unedited path
    # alone, and a CPU's kernels may round the two batch sizes differently)
    assert first["edit_real/light_background/preserve@0"] == 1.0 and first["edit_real/light_background/mse@0"] < 1e-6
    assert first["time/evaluate_real_s"] >= 0 and first["time/bank_s"] > 0 and first["time/svm_fit_s"] >= 0
    assert again["cache/hits"] >= 1 and "time/bank_s" not in again and "time/svm_fit_s" not in again
    assert again["boundary/x/val_acc"] == first["boundary/x/val_acc"]
    for key in ("success@1", "mse@1"):  # equal, NaN included (success is NaN when no image was on the wrong side)
        np.testing.assert_equal(again[f"edit_real/light_background/{key}"], first[f"edit_real/light_background/{key}"])
    assert first["edit_real/light_background/target"] == first["edit/light_background/target"]


def test_conditional_mode_with_eta_one_departs_from_the_real_image(tmp_path, monkeypatch):
    """The paper's conditional mode: DDIM inversion to t_m, eta = 1 after it. The unedited real-image path must
    give back the image (up to the fresh noise after t_m), and inversion/mse must measure that same path."""
    import hydra
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "experiment=boundary_shapes_conditional",
        "method.num_bank=40",
        "method.t_mix=500",
        "sampler.num_steps=20",
        "sampler.eta=1.0",
        "num_samples=1",
        "real_images=8",
        "edit.mode=relative",
        "edit.strengths=[0.0,1.0]",
        "logger=none",
        "metrics=none",
        f"cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
        metrics = run(cfg)
    data = hydra.utils.instantiate(OmegaConf.to_container(cfg.data, resolve=True))
    data.setup("test")
    real = image_batch(data.datasets["test"], range(8))
    unedited = load_file(tmp_path / "run" / "edits_real.safetensors")["images"][0, :, 0].float() / 127.5 - 1
    mse = float((((unedited - real) / 2) ** 2).mean())
    assert mse < 0.03 and metrics["inversion/mse"] == pytest.approx(mse, abs=2e-4)  # uint8 rounding


def test_mixing_step_search_on_the_shipped_model(tmp_path, monkeypatch):
    from hspace.directions.mixing import admitted, choose_t_mix, most_accurate

    assert choose_t_mix([100, 200, 300], [0.001, 0.005, 0.02], 0.01, 500) == (
        200,
        "largest candidate with Delta <= 0.01 at it and every smaller candidate",
    )
    assert choose_t_mix([100, 200], [0.5, 0.0], 0.01, 500)[0] == 500
    # select=accuracy chooses among the admitted steps only: none admitted, the fallback stands
    accuracy = {"x": [0.9, 0.6, 0.99], "h": [0.9, 0.6, 0.99]}
    assert most_accurate([100, 200, 300], admitted([100, 200, 300], [0.001, 0.005, 0.02], 0.01), accuracy) == 100
    assert most_accurate([100, 200, 300], admitted([100, 200, 300], [0.5, 0.0, 0.0], 0.01), accuracy) is None
    assert admitted([100, 200, 300], [0.01, 0.01, 0.02], 0.01) == [100, 200]  # Delta = epsilon is admitted
    tied = {"x": [0.8, 0.8, 0.1], "h": [0.8, 0.8, 0.1]}
    assert most_accurate([100, 200, 300], [100, 200], tied) == 200  # ties: the larger step
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "method=boundary",
        "edit=boundary_step",
        "method.num_bank=40",
        "method.t_mix=auto",
        "method.data=${data}",
        "method.mixing.candidates=[300,500,700]",
        "method.mixing.stride=100",
        "method.mixing.num_sampled=16",
        "method.mixing.num_real=16",
        "method.mixing.epsilon=0.7",
        "method.mixing.select=accuracy",
        "sampler.num_steps=6",
        "num_samples=2",
        "real_images=0",
        "edit.strengths=[1.0]",
        "logger=none",
        "metrics=none",
        f"cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    d = Directions.load(tmp_path / "run" / "directions.safetensors")
    assert d.info["mixing/t_mix"] in (300, 500, 700) and metrics["mixing/t_mix"] == d.info["mixing/t_mix"]
    assert len(d.info["mixing/delta"]) == 3 and len(d.info["mixing/accuracy"]["h"]) == 3
    assert all(r > 0 for r in d.info["mixing/radius_sampled"] + d.info["mixing/radius_inverted"])
    # The recorded curve is self-consistent: Delta from the radii, the admitted steps from Delta (epsilon 0.7), and
    # t_m (select=accuracy) the admitted step with the highest summed validation accuracy (ties: the larger step),
    # else the fallback 500, as the written-out rule says.
    r_s, r_i = d.info["mixing/radius_sampled"], d.info["mixing/radius_inverted"]
    np.testing.assert_allclose(d.info["mixing/delta"], [abs(s - i) / s for s, i in zip(r_s, r_i)], rtol=1e-6)
    delta = dict(zip((300, 500, 700), d.info["mixing/delta"]))
    passing = [t for t in delta if all(delta[c] <= 0.7 for c in delta if c <= t)]
    accuracy = d.info["mixing/accuracy"]
    score = {t: accuracy["x"][j] + accuracy["h"][j] for j, t in enumerate((300, 500, 700))}
    assert d.info["mixing/t_mix"] == (max(passing, key=lambda t: (score[t], t)) if passing else 500)
    assert d.info["mixing/reason"].endswith("highest mean validation accuracy among them") == bool(passing)
    assert (tmp_path / "run" / "grids" / "mixing_curve.png").stat().st_size > 1000


def test_inverted_bank_of_labelled_real_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "method=boundary",
        "edit=boundary_step",
        "method.bank=inverted",
        "method.data=${data}",
        "method.num_bank=40",
        "method.attribute=large",
        "sampler.num_steps=6",
        "num_samples=1",
        "real_images=2",
        "edit.strengths=[1.0]",
        "logger=none",
        "metrics=none",
        f"cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    d = Directions.load(tmp_path / "run" / "directions.safetensors")
    counts = d.info["boundary/x/counts"]
    assert counts["positive"] + counts["negative"] == 40 and min(counts["positive"], counts["negative"]) > 5
    assert 0 <= metrics["boundary/x/val_acc"] <= 1 and metrics["time/invert_s"] >= 0


def test_bank_is_cached_and_a_one_sided_bank_is_refused_before_inverting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = [
        "method=boundary",
        "edit=boundary_step",
        "method.num_bank=24",
        "sampler.num_steps=4",
        "num_samples=1",
        "real_images=0",
        "edit.strengths=[1.0]",
        "logger=none",
        "metrics=none",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose(config_name="run", overrides=[*base, "method.C=1.0", f"run_dir={tmp_path / 'a'}"]))
        # new SVM, same bank
        second = run(compose(config_name="run", overrides=[*base, "method.C=0.5", f"run_dir={tmp_path / 'b'}"]))
        assert second["cache/hits"] == 1 and second["cache/misses"] == 1
        # another attribute, the same bank: only its boundaries are new
        large = [*base, "method.attribute=large", f"run_dir={tmp_path / 'd'}"]
        other = run(compose(config_name="run", overrides=large))
        assert other["cache/hits"] == 1 and other["cache/misses"] == 1
        assert Directions.load(tmp_path / "d" / "directions.safetensors").names == ["large"]
        import hspace.directions.boundary as boundary

        monkeypatch.setattr(
            boundary, "inverted_bank", lambda *a, **k: pytest.fail("inverted before checking the labels")
        )
        with pytest.raises(SystemExit):
            run(
                compose(
                    config_name="run",
                    overrides=[
                        *base,
                        "method.bank=inverted",
                        "method.data=${data}",
                        "method.attribute=red",
                        "method.min_per_class=20",
                        f"run_dir={tmp_path / 'c'}",
                    ],
                )
            )
    assert "a boundary needs at least 20 of each" in capsys.readouterr().err


@pytest.mark.slow
def test_shapes_background_target_at_the_chosen_strength(tmp_path, monkeypatch):
    """The experiment's setting and chosen strength (experiments/boundarydiffusion2023: d = -8) on 64 samples:
    darkening the background flips at least 90% of light backgrounds and keeps at least 90% of the other
    decisions."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "experiment=boundary_shapes_unconditional",
        "method.t_mix=500",
        "num_samples=64",
        "edit.strengths=[-8.0]",
        "metrics.fid.backend=none",
        "metrics.disentanglement.num_images=0",
        "+metrics.targets.light_background=light_background",
        "logger=none",
        f"cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    assert metrics["boundary/x/val_acc"] >= 0.95
    assert metrics["edit/light_background/success@-8"] >= 0.9 and metrics["edit/light_background/preserve@-8"] >= 0.9


def test_h_only_edit_adds_the_placement_step_along_the_h_normal_at_the_mixing_step_only(v_model):
    """x_scale=None, placement_intercept: x_t is left alone and the UNet call at t_m sees
    h + (d_h - (<n_h, h> + b_h)) n_h, every other call its natural h. Written out with AddH on the whole grid
    (deterministic to t_m, eta 1 after it, the sample's own noise), h_tm read off that same path. A random unit
    h normal, a decoy normal at another step, distinct x and h offsets and h_scale != 1 catch a wrong step,
    index, offset or scale; two samples by two strengths in batches of three catch row mix-ups."""
    num_steps, t_index, h_scale = 6, 2, 2.5
    strengths = torch.tensor([-4.0, 6.0])
    schedule = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", 1.0)
    directions = tiny_boundary(v_model, schedule, t_index)
    g = torch.Generator().manual_seed(1)
    for idx, scale in ((t_index, 1.0), (t_index + 1, 0.5)):  # the decoy has the smaller scale
        n_h = torch.randn(directions.vectors[0, idx].shape, generator=g)
        directions.vectors[0, idx] = n_h / n_h.norm()
        directions.scales[0, idx] = scale
    directions.extra["offsets"] = torch.tensor([[0.3, -0.7]])  # (x, h)
    n_h, b_h = directions.vectors[0, t_index], -0.7
    x_T, z = noise_for([0, 1], v_model, schedule)
    edited = BoundaryStep(
        strengths=strengths.tolist(), mode="placement_intercept", x_scale=None, h_scale=h_scale, batch_size=3
    ).apply(v_model, schedule, directions, 0, x_T, z)

    path = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", [0.0] * t_index + [1.0] * (num_steps - t_index))
    unedited = sample(v_model, path, x_T, z, record_h=True)
    h_tm = unedited.h[:, t_index]  # (N, *h_shape): the natural h of the call at t_m
    distance = (h_tm * n_h).flatten(1).sum(1) + b_h  # (N,)
    for s, d in enumerate(strengths):
        shift = (d * h_scale - distance).view(-1, *[1] * n_h.dim()) * n_h  # (N, *h_shape)
        by_hand = sample(v_model, path, x_T, z, step=AddH(lambda idx, shift=shift: shift if idx == t_index else None))
        torch.testing.assert_close(edited[:, s], by_hand.x0, rtol=1e-5, atol=1e-5)
        assert (edited[:, s] - unedited.x0).abs().max() > 1e-2  # the h move is visible in the sample


class MeanBrightness:
    """A stand-in classifier: P(bright) and P(red) from an image's mean and its red channel's mean."""

    attributes = ["bright", "red"]

    def probabilities(self, images):
        return torch.sigmoid(torch.stack([images.mean((1, 2, 3)), images[:, 0].mean((1, 2))], dim=1))

    def identity(self):
        return "mean-brightness"


def test_generated_bank_holds_the_state_before_step_i_and_the_h_of_the_call_at_it(v_model):
    """Row k of the bank at grid index i: x_t after the first i deterministic steps from seed k's x_T (index 0
    is x_T itself; the state after step i would be one step too far), h captured by one call at that x_t and
    tau_i, and the classifier's scores of the finished sample. Three seeds in batches of two catch rows that
    leave their seed's order."""
    from hspace.bottleneck import capture_h
    from hspace.directions.boundary_bank import generated_bank

    schedule = make_schedule(v_model.alphas_cumprod, 5, "trailing")
    seeds, t_indices = [3, 4, 5], [0, 2, 4]
    bank = generated_bank(v_model, schedule, t_indices, seeds, MeanBrightness(), batch_size=2)
    x_T, _ = noise_for(seeds, v_model, schedule)
    assert sorted(bank.x) == sorted(bank.h) == t_indices and bank.attributes == ["bright", "red"]
    for i in t_indices:
        x_i = sample(v_model, schedule.steps(0, i), x_T).x0
        h_i = capture_h(v_model, x_i, schedule.timesteps[i])
        assert bank.x[i].dtype == bank.h[i].dtype == np.float64
        np.testing.assert_allclose(bank.x[i], x_i.flatten(1).double().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bank.h[i], h_i.flatten(1).double().numpy(), rtol=1e-5, atol=1e-5)
    x0 = sample(v_model, schedule, x_T).x0
    np.testing.assert_allclose(bank.scores, MeanBrightness().probabilities(x0).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t_indices", [[0, 2, 4], [2, 3]])
def test_inverted_bank_holds_ddim_inversions_state_at_index_i_and_the_h_seen_there(v_model, t_indices):
    """Row k of the inverted bank at grid index i: DDIM inversion's x_t at index i (noisiest first, as the
    sampler's), and the h of the call at (x_t, tau_i), which inversion itself records when it steps on from
    x_t (pitfall B6: not the h of the call that produced x_t). Only the first `count` items, with their labels,
    in batches of two. The trailing grid has tau_1 > 0, so inversion first lifts the image (an extra call).
    Inverting only as far as the noisiest index gives the full inversion's states there."""
    from hspace.diffusion.inversion import ddim_invert
    from hspace.directions.boundary_bank import inverted_bank

    schedule = make_schedule(v_model.alphas_cumprod, 5, "trailing")
    g = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    dataset = [{"image": im, "attributes": lab} for im, lab in zip(images, labels)]
    bank = inverted_bank(v_model, schedule, t_indices, dataset, ["large", "red"], count=3, batch_size=2)
    inversion = ddim_invert(v_model, schedule, images[:3], record_h=True, record_x=True)
    assert bank.attributes == ["large", "red"] and np.array_equal(bank.scores, labels[:3].numpy())
    for i in t_indices:
        np.testing.assert_allclose(bank.x[i], inversion.x_t[:, i].flatten(1).double().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bank.h[i], inversion.h[:, i].flatten(1).double().numpy(), rtol=1e-5, atol=1e-5)


def test_mixing_radii_follow_their_definition_and_pick_the_largest_candidate_of_an_unbroken_run(v_model):
    """search_t_mix on a tiny model: r(t) = mean_k ||x_t^k|| / sqrt(D) of x_t reached by deterministic DDIM from
    the seeds' x_T (sampled) and by DDIM inversion of the images (inverted), each written out as a run that ends
    at t; Delta = |r_s - r_i| / r_s. The images are scaled so that Delta(700) > epsilon >= Delta(300), Delta(500):
    t_m must be 500 (the fallback would mean a broken radius, 700 a rule that ignores Delta)."""
    from hspace.diffusion.inversion import ddim_invert
    from hspace.diffusion.schedule import schedule_from_timesteps
    from hspace.directions.mixing import search_t_mix

    candidates, stride, seeds = [300, 500, 700], 100, list(range(7, 12))
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(4, 3, 16, 16, generator=g) * 2 - 1) * 1.6
    fine = schedule_from_timesteps(v_model.alphas_cumprod, [*range(999, 0, -stride), *candidates])
    x_T, _ = noise_for(seeds, v_model, fine)
    radius_s, radius_i = [], []
    for t in candidates:
        idx = fine.timesteps.tolist().index(t)
        sampled = sample(v_model, fine.steps(0, idx), x_T).x0  # stops at t
        inverted = ddim_invert(v_model, fine.steps(idx), real, record_h=False).x_T  # its top level is t
        radius_s.append(float(sampled.flatten(1).norm(dim=1).mean()) / (3 * 16 * 16) ** 0.5)
        radius_i.append(float(inverted.flatten(1).norm(dim=1).mean()) / (3 * 16 * 16) ** 0.5)
    delta = [abs(s - i) / s for s, i in zip(radius_s, radius_i)]
    assert delta[2] > max(delta[:2]) + 1e-4  # the setting this test needs
    epsilon = (delta[2] + max(delta[:2])) / 2

    curve = search_t_mix(v_model, real, candidates, stride, len(seeds), epsilon, fallback=123, first_seed=7)
    assert curve.candidates == candidates
    np.testing.assert_allclose(curve.radius_sampled, radius_s, rtol=1e-5)
    np.testing.assert_allclose(curve.radius_inverted, radius_i, rtol=1e-5)
    np.testing.assert_allclose(curve.delta, delta, rtol=1e-4)
    assert curve.t_mix == 500 and "Delta <=" in curve.reason

    # With clip_x0 the sampled paths are those a clipping run walks; inversion never clips.
    clipped = search_t_mix(
        v_model, real, candidates, stride, len(seeds), epsilon, fallback=123, first_seed=7, clip_x0=True
    )
    radius_clipped = []
    for t in candidates:
        idx = fine.timesteps.tolist().index(t)
        sampled = sample(v_model, fine.steps(0, idx), x_T, clip_x0=True).x0
        radius_clipped.append(float(sampled.flatten(1).norm(dim=1).mean()) / (3 * 16 * 16) ** 0.5)
    np.testing.assert_allclose(clipped.radius_sampled, radius_clipped, rtol=1e-5)
    assert max(abs(a - b) for a, b in zip(radius_clipped, radius_s)) > 1e-3  # clipping changes these paths
    np.testing.assert_allclose(clipped.radius_inverted, radius_i, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_a_real_images_edit_starts_from_its_inverted_state_at_the_mixing_step(v_model, eta):
    """The paper's conditional mode moves the DDIM-inverted x_tm itself. Inverting to x_T and walking DDIM back
    down to t_m does not quite come back to it, so the edits and the reconstruction must take the inverted state:
    checked against the slow version, the moved inverted x_tm decoded from t_m with the sampler's eta (h at t_m
    is the unmoved state's, as h_scale=null leaves it)."""
    from hspace.bottleneck import capture_h
    from hspace.diffusion.inversion import ddim_invert
    from hspace.job.edit import edit_real, invert_for, invert_real

    num_steps, t_index, d = 6, 2, 3.0
    schedule = make_schedule(v_model.alphas_cumprod, num_steps, "trailing", eta)
    directions = tiny_boundary(v_model, schedule, t_index)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    edit = BoundaryStep(strengths=[0.0, d], mode="relative", h_scale=None)
    start, reconstruction = invert_real(edit, v_model, schedule, directions, 1, images, False)
    x_tm = ddim_invert(v_model, schedule, images, record_h=False, record_x=True).x_t[:, t_index]
    assert set(start.states) == {t_index}
    torch.testing.assert_close(start.states[t_index], x_tm, rtol=0, atol=0)
    assert (start.z is None) == (eta == 0.0)

    edited = edit.apply(v_model, schedule, directions, 0, start.x_T, start.z, states=start.states)
    rest = schedule.steps(t_index)
    z_rest = start.z[:, t_index:] if start.z is not None else None
    h_tm = capture_h(v_model, x_tm, schedule.timesteps[t_index])
    for column, strength in enumerate(edit.strengths):
        moved = x_tm + strength * directions.extra["x_normal"]
        expected = sample(v_model, rest, moved, z_rest, step=ReplaceH(lambda idx: h_tm if idx == 0 else None)).x0
        torch.testing.assert_close(edited[:, column], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reconstruction, edited[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(edit_real(edit, v_model, schedule, directions, 1, start, False).edited[0], edited)
    assert invert_for(edit, v_model, schedule, images).states is None  # no start named: the edits start at x_T
    walked = edit.apply(v_model, schedule, directions, 0, start.x_T, start.z)  # x_T walked down to t_m
    assert (walked[:, 0] - edited[:, 0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="t_m index 2"):
        edit.apply(v_model, schedule, directions, 0, start.x_T, start.z, states={3: x_tm})

    # The Python API's edit_images takes the same path.
    from hspace import api
    from hspace.diffusion.schedule import SamplerSettings

    directions.weight_hash = v_model.weights_identity
    edited_by_api = api.edit_images(
        v_model,
        directions,
        images,
        edit=edit,
        sampler=SamplerSettings(num_steps=num_steps, spacing="trailing", eta=eta),
    )
    torch.testing.assert_close(edited_by_api.images, edited, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(edited_by_api.unedited, reconstruction, rtol=1e-5, atol=1e-5)


def test_a_rank_without_bank_rows_adds_none(v_model):
    """With fewer bank samples than processes a rank draws no rows: the bank gathers zero rows of the right
    widths from it instead of failing to concatenate nothing."""
    from hspace.directions.boundary_bank import gathered_bank
    from hspace.distributed import Shard

    bank = gathered_bank({3: []}, {3: []}, [], ["a", "b"], Shard(), v_model)
    assert bank.x[3].shape == (0, 3 * 16 * 16) and bank.h[3].shape == (0, math.prod(v_model.h_shape))
    assert bank.scores.shape == (0, 2)


def test_the_split_keeps_a_training_example_of_each_class_and_the_search_never_sees_the_held_out_split(monkeypatch):
    """A class of 5 among 100 with test_fraction 0.95 keeps one example to train on; a class of one trains on it.
    t_mix=auto with select=accuracy scores its candidates within the training split, so the accuracy the run
    reports on the held-out split was not used to choose t_mix."""
    from types import SimpleNamespace

    import hspace.directions.boundary as boundary
    from hspace.directions.boundary import BoundaryDirections, stratified_split

    labels = np.array([1] * 5 + [-1] * 95)
    train, test = stratified_split(labels, 0.95)
    assert (labels[train] == 1).sum() == 1 and (labels[test] == 1).sum() == 4
    train, test = stratified_split(np.array([1] + [-1] * 9), 0.5)
    assert (np.array([1] + [-1] * 9)[train] == 1).sum() == 1
    seen = []
    monkeypatch.setattr(boundary, "fit_boundary", lambda features, labels, train, test, *_: seen.append((train, test)))
    settings = SimpleNamespace(test_fraction=0.5, C=1.0, class_weight="balanced")
    labels = np.array([1, -1] * 20)
    features = np.zeros((40, 3))
    BoundaryDirections.fit_spaces(settings, features, features, labels)
    BoundaryDirections.fit_spaces(settings, features, features, labels, validation=True)
    (train, held_out), _, (inner, validation), _ = seen
    assert set(inner) | set(validation) <= set(train) and not set(validation) & set(inner)
    assert len(validation) == 10 and not set(held_out) & (set(inner) | set(validation))
