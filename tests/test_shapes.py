import numpy as np
import pytest
import torch

from hspace.data.batch import image_batch
from hspace.data.datamodule import ShapesDataModule
from hspace.data.shapes import ATTRIBUTES, BACKGROUNDS, COLOURS, ShapesDataset, draw_factors, object_mask
from hspace.data.shapes_quality import judge_sample, quality_report
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


def test_a_label_the_data_lacks_is_one_line_naming_the_labels():
    data = ShapesDataModule(n_train=8, n_val=0, n_test=0, batch_size=4)
    assert data.label_column("red") == ATTRIBUTES.index("red")
    with pytest.raises(UserError, match="the data has no label 'smiling': its attributes are light_background, red"):
        data.label_column("smiling")
