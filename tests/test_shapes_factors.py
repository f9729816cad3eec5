"""Reading the renderer's factors back from pixels (hspace.data.shapes_factors)."""

import numpy as np
import pytest

from hspace.data.batch import image_batch
from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapesDataset, ShapesFactors, object_mask, render
from hspace.data.shapes_factors import (
    CLEAR_FIT_ERROR,
    EXTENT_FILL_BANDS,
    FILL_BANDS,
    OBJECT_THRESHOLD,
    background_and_object,
    clarity_report,
    extent_fill,
    measure,
    measure_all,
    object_region,
)
from hspace.images import to_uint8


def rendered(n: int, split: str = "val", resolution: int = 32):
    ds = ShapesDataset(n, split, resolution=resolution)
    return [ds.factors(i) for i in range(n)], to_uint8(image_batch(ds, range(n)))


@pytest.mark.parametrize("resolution, n", [(32, 500), (64, 40)])
def test_rendered_images_give_back_their_factors(resolution, n):
    factors, pixels = rendered(n, resolution=resolution)
    for f, m in zip(factors, measure_all(pixels)):
        assert (SHAPES[m.shape], tuple(COLOURS)[m.colour], tuple(BACKGROUNDS)[m.background]) == (
            f.shape,
            f.colour,
            f.background,
        )
        assert max(abs(m.r - f.r), abs(m.cx - f.cx), abs(m.cy - f.cy)) < 0.25, (f, m)
        assert m.valid and m.shape_clear and m.fit_error <= CLEAR_FIT_ERROR
        low, high = FILL_BANDS[f.shape]
        assert low <= m.fill <= high and m.fill_in_band
        low, high = EXTENT_FILL_BANDS[f.shape]
        assert low <= m.extent_fill <= high and m.extent_fill_in_band
        assert m.factors.shape == f.shape and m.factors.colour == f.colour


def blend(a: ShapesFactors, b: ShapesFactors, resolution: int = 32) -> np.ndarray:
    """The mean of two renderings: what a model torn between two shapes draws."""
    return np.rint((render(a, resolution).astype(float) + render(b, resolution)) / 2).astype(np.uint8)


def test_a_blob_between_two_shapes_is_not_clear_but_its_factors_are_read():
    circle = ShapesFactors("dark", "red", "circle", 8.0, 16.0, 16.0)
    square = ShapesFactors("dark", "red", "square", 8.0, 16.0, 16.0)
    m = measure(blend(circle, square))
    assert not m.shape_clear and m.fit_error > 1.5 * CLEAR_FIT_ERROR
    assert SHAPES[m.shape] in ("circle", "square") and abs(m.cx - 16) < 0.5 and abs(m.cy - 16) < 0.5
    assert m.colour == 0 and m.background == 0


def test_a_square_with_cut_corners_is_still_a_square_but_outside_its_fill_band():
    """A 2x2 block off each corner of a 16-pixel square: the fit still reads a square of about that size, while
    its fill ratio (240/256) falls below the band of rendered squares (from 0.95)."""
    pixels = render(ShapesFactors("dark", "blue", "square", 8.0, 16.0, 16.0), 32)
    for y in (8, 9, 22, 23):
        for x in (8, 9, 22, 23):
            pixels[y, x] = BACKGROUNDS["dark"]
    m = measure(pixels)
    assert SHAPES[m.shape] == "square" and m.valid and m.r == pytest.approx(7.75, abs=0.05)
    assert m.fill == pytest.approx(240 / 256) and not m.fill_in_band and not m.shape_clear
    assert m.extent_fill == pytest.approx(240 / 256, abs=0.002) and not m.extent_fill_in_band
    assert not measure(np.full((32, 32, 3), 40, dtype=np.uint8)).fill_in_band  # no object, no band


@pytest.mark.parametrize(
    "shape, r, cx, cy",
    [
        ("square", 9.3, 15.6, 16.2),
        ("square", 4.1, 9.5, 20.25),
        ("circle", 10.2, 15.3, 16.7),
        ("circle", 5.6, 20.1, 11.4),
    ],
)
def test_extent_fill_is_the_bounding_box_fill_counted_on_a_fine_grid(shape, r, cx, cy):
    """The sub-pixel fill of a 32-pixel coverage (16x16 sub-pixels each) against the plain count: the object's
    area over its bounding box's on the 512-pixel grid of those sub-pixels. Exact for squares; within 0.005 for
    circles, whose widest pixel column averages chords a little shorter than the diameter."""
    factors = ShapesFactors("dark", "red", shape, r, cx, cy)
    grid = object_mask(ShapesFactors("dark", "red", shape, 16 * r, 16 * cx, 16 * cy), 512, supersampling=1) > 0.5
    ys, xs = np.nonzero(grid)
    plain = grid.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    tolerance = 1e-9 if shape == "square" else 0.005
    assert extent_fill(object_mask(factors, 32, supersampling=16)) == pytest.approx(plain, abs=tolerance)


def test_extent_fill_of_a_triangle_reads_fuller_than_its_box():
    """The widest pixel row of an upright triangle lies up to a pixel above its base, so its sub-pixel fill
    reads above the fine-grid count (about 1/2): its widest row is at least 2r - 1.5 pixels wide, its tallest
    column at least 2r - 1 pixels tall."""
    for r, cx, cy in [(9.0, 16.0, 15.0), (7.3, 14.2, 17.6)]:
        grid = object_mask(ShapesFactors("dark", "red", "triangle", 16 * r, 16 * cx, 16 * cy), 512, supersampling=1)
        plain = (grid > 0.5).sum() / (16 * 2 * r) ** 2
        coverage = object_mask(ShapesFactors("dark", "red", "triangle", r, cx, cy), 32, supersampling=16)
        assert plain == pytest.approx(0.5, abs=0.01)
        assert plain < extent_fill(coverage) < plain * (2 * r) ** 2 / ((2 * r - 1.5) * (2 * r - 1))


def test_noise_moves_the_thresholded_fill_of_squares_out_of_band_but_not_the_sub_pixel_fill():
    """Gaussian noise of 6 (of 255) per channel: edges that fall near the middle of a pixel row step by a pixel
    under the half-coverage threshold, so about a quarter of rendered squares leave the fill band, while their
    sub-pixel fill stays in its band."""
    ds = ShapesDataset(400, "val")
    squares = [f for f in (ds.factors(i) for i in range(400)) if f.shape == "square"][:100]
    clean = np.stack([render(f, 32) for f in squares]).astype(float)
    noisy = np.clip(np.rint(clean + np.random.default_rng(0).normal(0, 6, clean.shape)), 0, 255).astype(np.uint8)
    measured = measure_all(noisy)
    assert all(SHAPES[m.shape] == "square" for m in measured)
    assert np.mean([m.extent_fill_in_band for m in measured]) >= 0.98
    assert np.mean([m.fill_in_band for m in measured]) <= 0.85


def test_size_and_position_follow_the_object():
    small, large = (measure(render(ShapesFactors("light", "blue", "square", r, 12.5, 18.0), 32)) for r in (5.0, 9.0))
    assert small.r == pytest.approx(5.0, abs=0.15) and large.r == pytest.approx(9.0, abs=0.15)
    assert small.cx == pytest.approx(12.5, abs=0.15) and large.cy == pytest.approx(18.0, abs=0.15)


def test_no_object_and_two_objects():
    grey = np.full((32, 32, 3), 40, dtype=np.uint8)
    empty = measure(grey)
    assert empty.shape == -1 and np.isnan(empty.r) and not empty.shape_clear and empty.factors is None
    # a grey between the two backgrounds is no Shapes background: its whole frame is not read as an object
    between = measure(np.full((32, 32, 3), 125, dtype=np.uint8))
    assert (between.background, between.shape, between.valid) == (-1, -1, False)
    assert background_and_object(np.full((32, 32, 3), 125, dtype=np.uint8)) == (-1, None)
    # nearer a grey than an object's pixels are, it is that grey, and the object is measured (the judge fails it)
    near = render(ShapesFactors("dark", "green", "circle", 7.0, 12.0, 12.0), 32).astype(np.int16)
    near[near == 40] += OBJECT_THRESHOLD
    off = measure(near.astype(np.uint8))
    assert off.background == 0 and SHAPES[off.shape] == "circle" and off.r == pytest.approx(7.0, abs=0.5)
    assert not off.valid
    two = render(ShapesFactors("dark", "green", "circle", 7.0, 12.0, 12.0), 32)
    two[26:29, 26:29] = COLOURS["green"]  # a speck: the largest object is measured, the image is not valid
    m = measure(two)
    assert not m.valid and SHAPES[m.shape] == "circle" and m.r == pytest.approx(7.0, abs=0.25)


def test_clarity_report_counts():
    _, pixels = rendered(12)
    blob = blend(
        ShapesFactors("dark", "red", "circle", 8.0, 16.0, 16.0),
        ShapesFactors("dark", "red", "triangle", 8.0, 16.0, 16.0),
    )
    report = clarity_report(measure_all(np.concatenate([pixels, blob[None], np.full((1, 32, 32, 3), 125, np.uint8)])))
    assert report["shape_clear_fraction"] == pytest.approx(12 / 14)
    assert report["valid_fraction"] == pytest.approx(13 / 14)  # the blob passes the judge: one object of one colour
    assert sum(report[f"{s}_share"] for s in SHAPES) == pytest.approx(1.0)
    # per class: the 12 rendered images lie in their bands, the blob is read as a triangle inside the triangles'
    # band, and the uniform image of a grey that is no Shapes grey holds no object
    assert report["circle_in_band"] == 1.0
    assert report["triangle_in_band"] == report["square_in_band"] == 1.0
    # the sub-pixel fill is stricter: the blob's fill lies outside the triangles' band
    triangles = sum(SHAPES[m.shape] == "triangle" for m in measure_all(pixels))
    assert report["square_extent_in_band"] == 1.0
    assert report["triangle_extent_in_band"] == pytest.approx(triangles / (triangles + 1))
    assert report["circle_extent_in_band"] == 1.0
    assert report["extent_fill_in_band_fraction"] == pytest.approx(12 / 14)
    assert report["square_extent_fill"] == pytest.approx(1.0, abs=0.01)


def test_the_shipped_classifier_agrees_with_the_pixels_of_rendered_images():
    from hspace.classifiers.cnn import AttributeCNN
    from hspace.metrics.model_quality import classifier_agreement

    _, pixels = rendered(64, split="test")
    agreement = classifier_agreement(pixels, AttributeCNN.load("shapes_attributes"))
    assert len(agreement) == 11 and min(agreement.values()) >= 0.95, agreement
    assert agreement["light_background"] == agreement["red"] == 1.0


def test_clarity_calibration_script_separates_the_two_fills_under_noise():
    """scripts/shapes_clarity_calibration.py on 150 renders: without noise every class is fully in both bands;
    with noise of 6 levels the squares' thresholded fill leaves its band for some while the sub-pixel one keeps."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "shapes_clarity_calibration.py"
    out = subprocess.run(
        [sys.executable, str(script), "--num-images", "150", "--sigmas", "0", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["sigma", "0"], ["sigma", "6"]]
    shares = [
        {shape: re.search(rf"{shape} \(n=\d+\): fill (\d+)% extent (\d+)%", line).groups() for shape in SHAPES}
        for line in lines
    ]
    assert all(v == ("100", "100") for v in shares[0].values()), lines[0]
    fill, extent = (int(v) for v in shares[1]["square"])
    assert fill <= 90 and extent == 100, lines[1]


def test_clarity_calibration_script_refuses_negative_noise_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "shapes_clarity_calibration.py"
    out = subprocess.run([sys.executable, str(script), "--sigmas", "2", "-3"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == ["error: --sigmas must not be negative, not -3.0"]


@pytest.mark.slow  # about 15 s: the script on the shipped model
def test_clarity_calibration_script_restores_renders_with_a_model():
    """--restore-from: the shipped model takes 30 renders noised to the last grid step back to images; it keeps
    every shape it is handed. Without --weights the option is refused in one line, before any work."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "shapes_clarity_calibration.py"
    refused = subprocess.run([sys.executable, str(script), "--restore-from", "99"], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == ["error: --restore-from needs a model: pass --weights"]
    out = subprocess.run(
        [sys.executable, str(script), "--weights", "shapes32", "--num-images", "30", "--sigmas", "0"]
        + ["--num-samples", "1", "--restore-from", "10"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = out.stdout.splitlines()[-1]
    assert line.split()[:2] == ["from", "t=19"], line
    assert [int(k) for k in re.findall(r"kept (\d+)%", line)] == [100, 100, 100], line


def test_an_object_region_grown_by_a_margin_of_one_takes_the_pixels_next_to_it():
    """A rendered square's region, a w x h block, grown by one pixel: the block with one more row and column on
    each side, less its four corners (the pixels touching it by a side)."""
    pixels = render(ShapesFactors("dark", "red", "square", 6.0, 16.0, 16.0), 32)
    region, grown = object_region(pixels), object_region(pixels, 1)
    rows, cols = np.nonzero(region)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert region.sum() == h * w  # a full block
    assert (grown >= region).all() and grown.sum() == (h + 2) * (w + 2) - 4


def test_a_close_fit_outside_its_fill_band_is_not_clear_and_the_report_gives_each_class_median_extent_fill():
    from dataclasses import replace as changed

    from hspace.data.shapes_factors import ShapeMeasurement

    square = SHAPES.index("square")
    fits = ShapeMeasurement(True, 0, 0, square, 8.0, 16.0, 16.0, 256.0, 0.97, 0.99, 0.0)
    assert fits.shape_clear and not changed(fits, fill=0.9).shape_clear  # a perfect fit, but a square's fill?
    assert not changed(fits, fit_error=2 * CLEAR_FIT_ERROR).shape_clear
    report = clarity_report([changed(fits, extent_fill=e) for e in (0.90, 0.91, 1.0)])
    assert report["square_extent_fill"] == pytest.approx(0.91)  # the median, not the mean (0.937)
