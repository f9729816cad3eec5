import numpy as np
import pytest
import torch
from scipy import ndimage

from hspace.data.batch import image_batch
from hspace.data.datamodule import ShapesDataModule
from hspace.data.shapes import ATTRIBUTES, BACKGROUNDS, COLOURS, ShapesDataset, draw_factors, object_mask
from hspace.data.shapes_quality import judge_sample, off_grey, quality_report
from hspace.errors import UserError
from hspace.images import to_uint8


def test_same_seed_split_index_gives_the_same_sample():
    a, b = ShapesDataset(10, "train", seed=3)[7], ShapesDataset(50, "train", seed=3)[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["attributes"], b["attributes"])
    assert not torch.equal(a["image"], ShapesDataset(10, "val", seed=3)[7]["image"])
    assert not torch.equal(a["image"], ShapesDataset(10, "train", seed=4)[7]["image"])


@pytest.mark.parametrize("resolution", [32, 64])
def test_attributes_agree_with_the_factors_and_the_pixels(resolution):
    ds = ShapesDataset(200, seed=0, resolution=resolution)
    for i in range(200):
        item = ds[i]
        f = ds.factors(i)
        attrs = dict(zip(ATTRIBUTES, item["attributes"].tolist()))
        r, cx, cy = item["factors"].tolist()
        assert (
            attrs["large"] == (r > 0.235 * resolution)
            and attrs["left"] == (cx < resolution / 2)
            and attrs["top"] == (cy < resolution / 2)
        )
        assert 0.15 * resolution <= r <= 0.32 * resolution and 0.3 * resolution <= cx <= 0.7 * resolution
        assert sum(attrs[c] for c in COLOURS) == 1 and sum(attrs[s] for s in ("circle", "square", "triangle")) == 1
        assert attrs[f.colour] == 1 and attrs[f.shape] == 1 and attrs["light_background"] == (f.background == "light")
        pixels = to_uint8(item["image"][None])[0]
        assert tuple(pixels[0, 0]) == BACKGROUNDS[f.background]  # corners are never covered
        centre = pixels[int(cy), int(cx)]  # the centre lies inside every shape
        assert tuple(centre) == COLOURS[f.colour]


def test_an_object_centred_exactly_is_neither_left_nor_top():
    """left and top are cx, cy < half the image: the centre line belongs to right and bottom."""
    from hspace.data.shapes import ShapesFactors

    def labels(cx, cy):
        values = ShapesFactors("dark", "red", "circle", 6.0, cx, cy).attributes(32)
        return bool(values[ATTRIBUTES.index("left")]), bool(values[ATTRIBUTES.index("top")])

    assert labels(16.0, 16.0) == (False, False) and labels(15.99, 15.99) == (True, True)


def test_shapes_have_the_right_area():
    """Coverage integrates to the analytic area: pi r^2, 4 r^2, 2 r^2."""
    for shape, area in [("circle", np.pi), ("square", 4.0), ("triangle", 2.0)]:
        f = draw_factors(0, "train", 0, 64)
        f = type(f)("dark", "red", shape, 12.0, 32.0, 32.0)
        assert object_mask(f, 64).sum() == pytest.approx(area * 12.0**2, rel=0.01)


def test_splits_are_disjoint_and_sized():
    dm = ShapesDataModule(n_train=40, n_val=8, n_test=8, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["attributes"].shape == (8, 11)
    assert len(dm.val_dataloader().dataset) == 8 and len(list(dm.test_dataloader())) == 1


def test_bad_split_and_resolution_are_clear():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset(4, "holdout")
    with pytest.raises(UserError, match="data.resolution=48 .*32 or 64"):
        ShapesDataset(4, resolution=48)


def test_the_judge_passes_real_shapes_and_fails_broken_ones():
    images = image_batch(ShapesDataset(64), range(64))
    pixels = to_uint8(images)
    assert quality_report(pixels)["pass_fraction"] == 1.0
    grey = np.full_like(pixels[0], 125)  # mid-grey background: the collapse the judge must catch
    assert not judge_sample(grey).background_ok
    two = pixels[0].copy()
    two[1:4, 1:4] = COLOURS["red"]  # a second object
    assert not judge_sample(two).one_object
    off = pixels[0].copy()
    mask = np.abs(off.astype(int) - off[0, 0].astype(int)).max(-1) > 60
    off[mask] = (130, 40, 200)  # an object of no Shapes colour
    assert not judge_sample(off).colour_ok


def test_the_judge_names_the_background_test_that_fails_and_the_pixels_it_counts():
    """A mid-grey frame fails the border test; grain away from the object fails only the uniformity test, and
    off_grey marks exactly the grains the test counts (not those next to the object)."""
    pixels = to_uint8(image_batch(ShapesDataset(4), range(4)))[0]
    grey = np.full_like(pixels, 125)
    judged = judge_sample(grey)
    assert not judged.border_ok and not judged.background_ok and judged.background == -1
    assert judge_sample(pixels).uniform_ok and judge_sample(pixels).border_ok
    object_near = ndimage.binary_dilation(
        np.abs(pixels.astype(int) - pixels[0, 0].astype(int)).max(-1) > 60, iterations=2
    )
    rng = np.random.default_rng(0)
    far = np.argwhere(~object_near)
    grains = far[rng.choice(len(far), size=int(0.05 * len(far)) + 1, replace=False)]  # 5% of the background
    grainy = pixels.copy()
    grainy[grains[:, 0], grains[:, 1]] = np.clip(grainy[grains[:, 0], grains[:, 1]].astype(int) + 40, 0, 255)
    judged = judge_sample(grainy)
    assert judged.border_ok and not judged.uniform_ok and not judged.passed and judged.one_object and judged.colour_ok
    marked = np.zeros(pixels.shape[:2], dtype=bool)
    marked[grains[:, 0], grains[:, 1]] = True
    assert np.array_equal(off_grey(grainy), marked)
    assert not off_grey(pixels).any()


def test_a_label_the_data_lacks_is_one_line_naming_the_labels():
    data = ShapesDataModule(n_train=8, n_val=0, n_test=0, batch_size=4)
    assert data.label_column("red") == ATTRIBUTES.index("red")
    with pytest.raises(UserError, match="the data has no label 'smiling': its attributes are light_background, red"):
        data.label_column("smiling")


def test_judge_failures_script_counts_each_test_and_draws_the_uniformity_failures(tmp_path):
    """scripts/shapes_judge_failures.py over two runs: of 2 x 4 x 2 edited images, one has grain on 5% of its
    background (it fails the uniformity test alone, with single off-grey pixels) and one is a mid-grey frame (it
    fails the border test, and its whole frame reads as one object of no palette colour)."""
    import subprocess
    import sys
    from pathlib import Path

    from hspace.edits_file import save_edits
    from hspace.images import from_pixels

    pixels = to_uint8(image_batch(ShapesDataset(4), range(4)))  # (N, H, W, C)
    images = np.stack([pixels, pixels], axis=1)[None].copy()  # (1, N, 2, H, W, C): strengths 0 and 1
    rng = np.random.default_rng(1)
    away = ~ndimage.binary_dilation(
        np.abs(pixels[0].astype(int) - pixels[0, 0, 0].astype(int)).max(-1) > 60, iterations=2
    )
    spots = np.argwhere(away)
    spots = spots[rng.choice(len(spots), size=int(0.05 * len(spots)) + 1, replace=False)]
    images[0, 0, 1][spots[:, 0], spots[:, 1]] = np.clip(
        images[0, 0, 1][spots[:, 0], spots[:, 1]].astype(int) + 40, 0, 255
    )
    broken = images.copy()
    broken[0, 2, 1] = 125
    for run, edited in (("a", images), ("b", broken)):
        (tmp_path / run).mkdir()
        save_edits(tmp_path / run / "edits.safetensors", from_pixels(edited), [0.0, 1.0], range(4), "seeds", ["pc0"])
    script = Path(__file__).parents[1] / "scripts" / "shapes_judge_failures.py"
    grid = tmp_path / "grid.png"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--grid", str(grid)], capture_output=True, text=True, check=True
    ).stdout
    assert "16 edited images in 2 files; 3 fail the judge" in out, out  # the grainy image is in both runs
    counts = {line.split(":")[0].strip(): line.split(":")[1].split()[0] for line in out.splitlines()[1:6]}
    assert counts == {"border": "1", "uniformity": "3", "one object": "0", "colour": "1", "uniformity alone": "2"}, out
    assert "median 43 (10-90%: 43-43)" in out and "at most 2 pixels in 0%" in out and grid.stat().st_size > 0
