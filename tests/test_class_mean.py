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
    empty = ClassSums(["b"])
    empty.add("b", True, h[:3])
    with pytest.raises(UserError, match="no negative examples"):
        empty.difference("b")


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
