"""Locality of edits (hspace.metrics.locality): change inside a region against outside, for every method."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from hspace.data.shapes import ShapesFactors, render
from hspace.errors import UserError
from hspace.metrics.evaluation import EditEvaluation, EvaluationSettings
from hspace.metrics.locality import KEPT_LEVELS, LocalityRegion, LocalityScores, locality_metrics


def dense_locality(originals: np.ndarray, edits: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The obvious computation: originals (B, C, H, W), edits (B, D, S, C, H, W) uint8, masks (B, H, W) bool."""
    d, s = edits.shape[1:3]
    out = {key: np.zeros((d, s)) for key in ("mse_in", "mse_out", "outside_share", "kept_out")}
    for j in range(d):
        for k in range(s):
            inside, outside, kept, n_in, n_out = 0.0, 0.0, 0.0, 0, 0
            for b in range(len(originals)):
                diff = edits[b, j, k].astype(float) - originals[b].astype(float)
                change = ((diff / 255) ** 2).mean(axis=0)
                inside += change[masks[b]].sum()
                outside += change[~masks[b]].sum()
                kept += (np.abs(diff) <= KEPT_LEVELS).all(axis=0)[~masks[b]].sum()
                n_in, n_out = n_in + masks[b].sum(), n_out + (~masks[b]).sum()
            out["mse_in"][j, k], out["mse_out"][j, k] = inside / n_in, outside / n_out
            out["outside_share"][j, k] = outside / (inside + outside) if inside + outside else np.nan
            out["kept_out"][j, k] = kept / n_out
    return out


def test_locality_scores_equal_the_dense_computation_over_batches():
    g = np.random.default_rng(0)
    originals = g.integers(0, 256, size=(6, 3, 8, 8), dtype=np.uint8)
    noise = g.integers(-30, 31, size=(6, 2, 3, 3, 8, 8))
    edits = np.clip(originals[:, None, None].astype(int) + noise, 0, 255).astype(np.uint8)
    masks = g.random((6, 8, 8)) < 0.3
    scores = LocalityScores(2, 3)
    for rows in (slice(0, 4), slice(4, 6)):  # streamed in two batches
        scores.update(
            torch.from_numpy(originals[rows]),
            torch.from_numpy(edits[rows]),
            torch.from_numpy(masks[rows]),
            torch.ones(len(originals[rows]), dtype=torch.bool),
        )
    expected = dense_locality(originals, edits, masks)
    computed = scores.compute()
    assert (computed.pop("pixels") == 6 * 8 * 8).all()  # every pixel of every sample with a region, in or out
    for key, value in computed.items():
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-10)


def test_an_edit_inside_the_region_is_local_and_a_global_one_is_not():
    originals = torch.full((2, 3, 16, 16), 100, dtype=torch.uint8)
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    inside_only = originals.clone()
    inside_only[:, :, 4:8, 4:8] = 200
    everywhere = originals + 50
    edits = torch.stack([inside_only, everywhere, originals], dim=1)[:, :, None]  # (B, D=3, S=1, C, H, W)
    scores = LocalityScores(3, 1)
    scores.update(originals, edits, masks, torch.ones(2, dtype=torch.bool))
    metrics = locality_metrics(scores, ["inside", "everywhere", "nothing"], [1.0])
    assert math.isnan(metrics["edit/nothing/locality/outside_share@1"])  # no change: no share, not a local edit
    assert metrics["edit/nothing/locality/kept_out@1"] == 1.0
    assert metrics["edit/inside/locality/mse_out@1"] == 0 and metrics["edit/inside/locality/outside_share@1"] == 0
    assert metrics["edit/inside/locality/kept_out@1"] == 1.0
    assert metrics["edit/inside/locality/mse_in@1"] == pytest.approx((100 / 255) ** 2)
    assert metrics["edit/everywhere/locality/outside_share@1"] == pytest.approx(1 - 16 / 256)
    assert metrics["edit/everywhere/locality/kept_out@1"] == 0.0


def test_the_object_region_of_a_shapes_image_is_its_object():
    factors = ShapesFactors("dark", "red", "square", 5.0, 16.0, 16.0)
    pixels = render(factors, 32)
    blank = np.full_like(pixels, pixels[0, 0])  # no object: the sample is left out
    masks, found = LocalityRegion("object", margin=0).masks(np.stack([pixels, blank]), None)
    assert found.tolist() == [True, False]
    object_pixels = (np.abs(pixels.astype(int) - pixels[0, 0].astype(int)).sum(-1) > 60).sum()
    assert abs(int(masks[0].sum()) - int(object_pixels)) <= 0.1 * object_pixels
    grown, _ = LocalityRegion("object", margin=1).masks(pixels[None], None)
    assert grown[0].sum() > masks[0].sum()


def test_a_shapes_edit_of_the_object_keeps_the_background_in_the_evaluation_loop():
    base = [ShapesFactors("light", c, "circle", 6.0, 14.0 + i, 16.0) for i, c in enumerate(("red", "blue"))]
    originals = torch.from_numpy(np.stack([render(f, 32) for f in base])).permute(0, 3, 1, 2).contiguous()
    recoloured = [replace(f, colour="green") for f in base]
    edits = torch.from_numpy(np.stack([render(f, 32) for f in recoloured])).permute(0, 3, 1, 2)[:, None, None]
    evaluation = EditEvaluation(EvaluationSettings(locality=LocalityRegion("object")), ["green"], [1.0])
    evaluation.test_step((originals, edits.contiguous()), 0)
    metrics = evaluation.summary()
    assert metrics["edit/green/locality/kept_out"] > 0.99
    assert metrics["edit/green/locality/outside_share"] < 0.05 < metrics["edit/green/locality/mse_in"]


def test_no_pixel_inside_or_outside_the_regions_gives_null_not_zero():
    """Regions that cover every pixel leave nothing outside to keep, and empty ones nothing inside to change:
    those measures are NaN (null in metrics.json), not the 0 of an edit that moved none of them."""
    originals = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    edits = originals[:, None, None].repeat(1, 1, 2, 1, 1, 1)
    edits[:, :, 1] += 20  # strength 1 moves every pixel, strength 0 none
    found = torch.ones(2, dtype=torch.bool)
    everywhere, nowhere = LocalityScores(1, 2), LocalityScores(1, 2)
    everywhere.update(originals, edits, torch.ones(2, 8, 8, dtype=torch.bool), found)
    nowhere.update(originals, edits, torch.zeros(2, 8, 8, dtype=torch.bool), found)
    inside, outside = everywhere.compute(), nowhere.compute()
    assert torch.isnan(inside["mse_out"]).all() and torch.isnan(inside["kept_out"]).all()
    assert inside["mse_in"][0, 0] == 0 and inside["mse_in"][0, 1] > 0
    assert torch.isnan(outside["mse_in"]).all()
    assert outside["kept_out"][0, 0] == 1 and outside["kept_out"][0, 1] == 0


def test_bad_regions_are_one_line(tmp_path):
    with pytest.raises(UserError, match="metrics.locality.box"):
        LocalityRegion("box")
    with pytest.raises(UserError, match=r"metrics.locality.box=\[5, 0, 2, 4\]"):
        LocalityRegion("box", box=(5, 0, 2, 4))
    with pytest.raises(UserError, match="no mask image at metrics.locality.file"):
        LocalityRegion("file", file=str(tmp_path / "missing.png"))
    with pytest.raises(UserError, match="metrics.locality.region must be one of"):
        LocalityRegion("ellipse")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match="metrics.locality.file=.* is 8x8 pixels but the model's images are 32x32"):
        LocalityRegion("file", file=str(tmp_path / "small.png")).fixed_mask((3, 32, 32))
    with pytest.raises(UserError, match=r"metrics.locality.box=\[0, 0, 40, 4\] is not a box .* inside the 32x32"):
        LocalityRegion("box", box=(0, 0, 40, 4)).fixed_mask((3, 32, 32))
    with pytest.raises(UserError, match=r"metrics.locality.box=\[0, 0, 32, 32\] covers the whole image"):
        LocalityRegion("box", box=(0, 0, 32, 32)).fixed_mask((3, 32, 32))
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(UserError, match="metrics.locality.file=.*black.png is black everywhere"):
        LocalityRegion("file", file=str(tmp_path / "black.png")).fixed_mask((3, 32, 32))
