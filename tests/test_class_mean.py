"""Class-mean directions and their disentanglement (Haas et al. eqs. 11 and 12)."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.directions.class_mean import ClassSums
from hspace.directions.container import Directions
from hspace.directions.projection import project_out
from hspace.errors import UserError


def test_planted_direction_is_recovered():
    """The class sums give exactly mean(h+) - mean(h-) per step: a miscount would keep the direction but change
    the norm, which becomes the edit scale."""
    g = torch.Generator().manual_seed(0)
    planted = torch.randn(5, 8, generator=g)  # (T, D)
    labels = torch.rand(400, generator=g) > 0.3
    h = torch.randn(400, 5, 8, generator=g) * 0.5 + labels[:, None, None] * planted
    sums = ClassSums(["a"])
    for rows in torch.arange(400).split(64):
        sums.add("a", True, h[rows][labels[rows]])
        sums.add("a", False, h[rows][~labels[rows]])
    found = sums.difference("a")
    cos = torch.nn.functional.cosine_similarity(found.flatten(), planted.double().flatten(), dim=0)
    assert cos > 0.98
    direct = h[labels].double().mean(0) - h[~labels].double().mean(0)
    torch.testing.assert_close(found, direct, rtol=1e-12, atol=1e-12)
    empty = ClassSums(["b"])
    empty.add("b", True, h[:3])
    with pytest.raises(UserError, match="no negative examples"):
        empty.difference("b")


def test_classifier_directions_are_top_minus_bottom_k_means_as_unit_vectors_and_scales(monkeypatch):
    """With generation stubbed by a table of h and scores, find() gives per step a unit vector and a scale whose
    product is mean(h of the top_k scores) - mean(h of the bottom_k): the sign and the norm an edit uses."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    from hspace.diffusion.model import DiffusionModel
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.class_mean import ClassMeanDirections
    from tests.conftest import GOOGLE_SCHEDULER, tiny_unet

    model = DiffusionModel(tiny_unet(), dict(DDPMScheduler(**GOOGLE_SCHEDULER).config))
    g = torch.Generator().manual_seed(3)
    first, n, k, steps = 100, 20, 5, 3
    table = torch.randn(n, steps, *model.h_shape, generator=g)  # h of seed first + i
    scores = torch.rand(n, 2, generator=g)  # columns: other, a

    class Scores:
        attributes = ["other", "a"]

        def probabilities(self, images):
            return scores[images.long() - first]

        def identity(self):
            return "stub"

    def h_of(model, schedule, seeds, batch_size, cache=None, clip_x0=False):
        for start in range(0, len(seeds), batch_size):
            yield table[torch.tensor(seeds[start : start + batch_size]) - first]

    where = "hspace.directions.class_mean"
    monkeypatch.setattr(f"{where}.noise_for", lambda seeds, model, schedule: (torch.tensor(list(seeds)), None))
    monkeypatch.setattr(f"{where}.sample", lambda model, schedule, x_T, z, clip_x0=False: SimpleNamespace(x0=x_T))
    monkeypatch.setattr(f"{where}.collect_h", h_of)
    method = ClassMeanDirections(
        attributes=["a"], classifier=Scores(), num_index=n, top_k=k, first_seed=first, batch_size=8
    )
    d = method.find(model, SamplerSettings(num_steps=steps))
    order = scores[:, 1].argsort(descending=True)
    direct = table[order[:k]].double().mean(0) - table[order[-k:]].double().mean(0)  # (T, *h_shape)
    torch.testing.assert_close(d.scales[0].double(), direct.flatten(1).norm(dim=1), rtol=1e-6, atol=0)
    torch.testing.assert_close(d.vectors[0].flatten(1).norm(dim=1), torch.ones(steps), rtol=1e-6, atol=0)
    torch.testing.assert_close(d.scaled(0).double(), direct, rtol=1e-5, atol=1e-6)
    assert d.info["counts"] == {"a/pos": k, "a/neg": k}


def test_projection_is_orthogonal_and_equals_eq12():
    g = torch.Generator().manual_seed(1)
    v0 = torch.randn(50, generator=g, dtype=torch.float64)
    V = torch.randn(50, 3, generator=g, dtype=torch.float64)  # not orthogonal to each other
    v = project_out(v0, V.T)
    assert (V.T @ v).abs().max() < 1e-10
    eq12 = (torch.eye(50, dtype=torch.float64) - V @ torch.linalg.inv(V.T @ V) @ V.T) @ v0
    torch.testing.assert_close(v, eq12)
    single = project_out(v0, V[:, :1].T)
    torch.testing.assert_close(single, v0 - (v0 @ V[:, 0]) / (V[:, 0] @ V[:, 0]) * V[:, 0])
    # Sequential single projections (the reference code's get_direction) differ for non-orthogonal conditions.
    sequential = v0.clone()
    for c in V.T:
        sequential = sequential - (sequential @ c) / (c @ c) * c
    assert not torch.allclose(sequential, eq12)
    # A repeated condition adds nothing (rank check).
    torch.testing.assert_close(project_out(v0, torch.cat([V.T, V.T[:1]])), eq12)
    # Rank is judged relative to the largest singular value: conditions of tiny norm still span their space.
    torch.testing.assert_close(project_out(v0, 1e-12 * V.T), eq12)


def test_projection_on_dependent_conditions_in_any_order_equals_least_squares():
    """Conditions that are combinations of others (a repeat, a multiple, a zero vector, one-hot class means)
    wherever they stand: the residual of the least-squares fit of v0 on them. A v0 in their span leaves 0."""
    g = torch.Generator().manual_seed(2)
    v0 = torch.randn(40, generator=g, dtype=torch.float64)
    a, b = torch.randn(2, 40, generator=g, dtype=torch.float64)
    for conditions in ([a, a, b], [a, 2 * a, b], [torch.zeros(40, dtype=torch.float64), a, b], [a + b, a, b]):
        V = torch.stack(conditions, dim=1)
        fit = torch.linalg.lstsq(V, v0[:, None], driver="gelsd").solution[:, 0]
        torch.testing.assert_close(project_out(v0, V.T), v0 - V @ fit, rtol=1e-9, atol=1e-9)
    inside = project_out(0.3 * a - 2.0 * b, torch.stack([a, b, a + b]))
    assert inside.norm() < 1e-12 * (0.3 * a - 2.0 * b).norm()


def test_class_mean_run_disentangles_and_edits(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "method=class_mean",
        "method.attributes=[light_background,large]",
        "method.num_index=24",
        "method.top_k=6",
        "method.batch_size=12",
        "method.condition_on=others",
        "method.keep_original=true",
        "sampler.num_steps=4",
        "num_samples=2",
        "real_images=0",
        "num_directions=4",
        "edit.strengths=[0.0,1.0]",
        "logger=none",
        "metrics.fid.backend=none",
        "metrics.disentanglement.num_images=0",
        f"run_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    d = Directions.load(tmp_path / "run" / "directions.safetensors")
    assert d.names == ["light_background", "light_background_disentangled", "large", "large_disentangled"]
    full = torch.stack([d.scaled(j).flatten().double() for j in range(4)])  # whole h_{T:1} per direction
    assert abs(float(full[1] @ full[2])) / (full[1].norm() * full[2].norm()) < 1e-6  # bg ⊥ large
    assert abs(float(full[3] @ full[0])) / (full[3].norm() * full[0].norm()) < 1e-6  # large ⊥ bg
    assert d.info["large/conditioned_on"] == ["light_background"] and 0 < d.info["large/norm_ratio"] <= 1
    assert d.info["counts"]["large/pos"] == 6 and d.info["counts"]["large/neg"] == 6
    assert "edit/large_disentangled/preserve@1" in metrics


def test_unknown_attribute_is_one_line(tmp_path, capsys):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="run",
            overrides=[
                "method=class_mean",
                "method.attributes=[smiling]",
                "logger=none",
                "metrics=none",
                f"run_dir={tmp_path / 'run'}",
                f"cache_dir={tmp_path / 'cache'}",
            ],
        )
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    assert exit_.value.code == 2 and "the classifier does not know smiling" in capsys.readouterr().err


def test_an_attribute_whose_class_mean_lies_in_the_span_of_its_conditions_is_one_line(model, monkeypatch):
    """One-hot labels (each sample is a circle, a square or a triangle): each class-mean difference is a
    combination of the other two, so conditioning each on the others leaves nothing to edit along."""
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.class_mean import ClassMeanDirections, ClassSums
    from hspace.errors import UserError

    shapes = ["circle", "square", "triangle"]
    sampler = SamplerSettings(num_steps=2)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(9, 2, *model.h_shape, generator=g, dtype=torch.float64)
    sums = ClassSums(shapes)
    for i in range(9):
        for k, shape in enumerate(shapes):
            sums.add(shape, i % 3 == k, h[i : i + 1])
    monkeypatch.setattr(ClassMeanDirections, "dataset_sums", lambda self, *args: sums)
    method = ClassMeanDirections(attributes=shapes, label_source="dataset", condition_on="others")
    with pytest.raises(UserError, match="of 'circle' lies in the span of those of square, triangle"):
        method.find(model, sampler)
    ClassMeanDirections(attributes=shapes[:2], label_source="dataset", condition_on="others").find(model, sampler)
