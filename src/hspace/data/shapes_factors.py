"""Reading the Shapes renderer's own factors back from pixels: background, colour, shape, r, cx, cy.

The renderer (hspace.data.shapes) draws an anti-aliased object of one palette colour c on one grey g, so
each pixel p is (1 - a) g + a c with a the object's coverage of that pixel. Measurement inverts that:

1. background: the grey nearest the median border pixel (none, and no object, when that pixel is as far
   from both greys as an object's pixel is); colour: the palette colour nearest the mean of
   the object's interior (the pixel judge, hspace.data.shapes_quality, decides both and validity);
2. coverage a = <p - g, c - g> / |c - g|^2, clipped to [0, 1], kept on the largest object region grown by
   one pixel (stray specks elsewhere do not move the factors; the judge fails such a sample);
3. for each shape class, (r, cx, cy) from the coverage's area and centroid (circle: area pi r^2; square:
   4 r^2; triangle: 2 r^2 with its centroid r / 3 below the centre); the class whose rendering with those
   factors differs least from the coverage is the shape. On rendered images this recovers the shape, colour
   and background without error, and r, cx and cy to within 0.19 pixels on 3,000 training images at 32
   pixels (0.115 for 99% of them); an object the frame cuts (about 1% of them) reads smaller and shifted
   toward the middle, by up to 0.37 pixels at the corner of the factor range.

`fit_error` is the L1 difference between the coverage and the best rendering, over the coverage's area:
near 0 for a rendered image (at most 0.036 over 20,000 of them at 32 pixels, mostly squares whose edges
fall between pixels), larger the less the object looks like any rendered shape (the blobs of an
under-trained model: 0.1-0.5). `fill` is the thresholded object's area over its bounding box's; rendered
images of each class occupy a band of it (FILL_BANDS; small circles reach into the triangles' band, so
fill alone does not decide a class). A shape is clear when it fits its class as well as rendered images
do (fit_error <= CLEAR_FIT_ERROR) and its fill lies in that class's band.

`fill` is decided pixel by pixel at half coverage, so an edge that falls near the middle of a pixel row steps
by a pixel under any noise: rendered squares with Gaussian noise of 2 (of 255) per channel added keep
their fill in band in only 72% of images (scripts/shapes_clarity_calibration.py). `extent_fill` measures the
same ratio at sub-pixel precision, without a threshold: the coverage's area over the product of its largest
column sum and largest row sum, which for a square and a circle are its bounding box's height and width (fill
1 and pi / 4). The upright triangle's widest pixel row lies up to a pixel above its base, so it reads fuller
than 1 / 2 (0.525-0.639 at 32 pixels); rendered images of each class occupy EXTENT_FILL_BANDS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapesFactors, object_mask
from hspace.data.shapes_quality import GREYS, PALETTE, border_grey, judge_sample

# The range of `fill` that rendered images of each class occupy: the extremes over the train split's first
# 20,000 images at 32 pixels (circle 0.636-0.926, square 0.967-1, triangle 0.501-0.667) widened by 0.01;
# 64-pixel images lie inside. The fit error of those images reaches 0.036; the bound leaves room for 8-bit
# rounding of a model's output.
FILL_BANDS = {"circle": (0.62, 0.94), "square": (0.95, 1.0), "triangle": (0.49, 0.68)}
# The range of `extent_fill` over the same 20,000 rendered images (circle 0.765-0.818, square 0.990-1.000,
# triangle 0.525-0.639) and 3,000 at 64 pixels (whose triangles reach down to 0.5125, nearer the exact 1/2),
# widened by 0.01.
EXTENT_FILL_BANDS = {"circle": (0.755, 0.828), "square": (0.98, 1.01), "triangle": (0.5025, 0.649)}
CLEAR_FIT_ERROR = 0.05
COVERAGE_THRESHOLD = 0.5
OBJECT_THRESHOLD = 60  # as the pixel judge: a pixel this far from the grey in some channel is the object's


@dataclass(frozen=True)
class ShapeMeasurement:
    """The factors of one image measured from its pixels (r, cx, cy in pixels; NaN and -1 when no object)."""

    valid: bool  # the pixel judge passed: uniform grey background, one object, a palette colour
    background: int  # index into BACKGROUNDS, -1 if none
    colour: int  # index into COLOURS, -1 if none
    shape: int  # index into SHAPES of the best-fitting rendering, -1 if no object
    r: float
    cx: float
    cy: float
    area: float  # the coverage's sum, in pixels
    fill: float  # area of the thresholded object over its bounding box's
    extent_fill: float  # the coverage's area over its largest column sum times its largest row sum
    fit_error: float  # L1 difference to the best rendering over the coverage's area

    def in_band(self, value: float, bands: dict[str, tuple[float, float]]) -> bool:
        """`value` lies in the band of the measured class in `bands` (False without a shape)."""
        if self.shape < 0:
            return False
        low, high = bands[SHAPES[self.shape]]
        return low <= value <= high

    @property
    def fill_in_band(self) -> bool:
        """The object's fill ratio lies in the band that rendered images of its measured class occupy."""
        return self.in_band(self.fill, FILL_BANDS)

    @property
    def extent_fill_in_band(self) -> bool:
        """The object's sub-pixel fill ratio lies in the band that rendered images of its measured class occupy."""
        return self.in_band(self.extent_fill, EXTENT_FILL_BANDS)

    @property
    def shape_clear(self) -> bool:
        """The object fits its class as well as rendered images do, and its fill lies in that class's band."""
        return self.fill_in_band and self.fit_error <= CLEAR_FIT_ERROR

    @property
    def factors(self) -> ShapesFactors | None:
        """The measurement as renderer factors, or None without a background, colour and shape."""
        if min(self.background, self.colour, self.shape) < 0:
            return None
        return ShapesFactors(
            tuple(BACKGROUNDS)[self.background],
            tuple(COLOURS)[self.colour],
            SHAPES[self.shape],
            self.r,
            self.cx,
            self.cy,
        )


def coverage(pixels: np.ndarray, grey: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The object's coverage of each pixel of an (H, W, 3) image drawn with `colour` on `grey`. (H, W) in [0, 1]"""
    span = colour - grey
    return np.clip((pixels.astype(np.float64) - grey) @ span / (span @ span), 0.0, 1.0)


def moment_factors(shape: str, area: float, mx: float, my: float) -> tuple[float, float, float]:
    """(r, cx, cy) of a rendered `shape` with this area and centroid (pixel units)."""
    if shape == "circle":
        return float(np.sqrt(area / np.pi)), mx, my
    if shape == "square":
        return float(np.sqrt(area) / 2), mx, my
    r = float(np.sqrt(area / 2))
    return r, mx, my - r / 3  # the triangle's centroid lies 2/3 of its height below the apex


def fit_shape(alpha: np.ndarray, shape: str) -> tuple[tuple[float, float, float], float]:
    """The (r, cx, cy) of the `shape` with the area and centroid of the coverage `alpha`, and the L1
    difference of its rendering to `alpha` over the coverage's area."""
    resolution = alpha.shape[0]
    area = alpha.sum()
    ys, xs = np.mgrid[0:resolution, 0:resolution] + 0.5
    r, cx, cy = moment_factors(shape, area, float((alpha * xs).sum() / area), float((alpha * ys).sum() / area))
    error = float(np.abs(object_mask(ShapesFactors("dark", "red", shape, r, cx, cy), resolution) - alpha).sum() / area)
    return (r, cx, cy), error


def fill_ratio(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    return float(mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))


def extent_fill(alpha: np.ndarray) -> float:
    """The coverage's area over the product of its largest column sum (the object's height) and largest row sum
    (its width): the fill ratio of the bounding box at sub-pixel precision for shapes whose tallest column and
    widest pixel row span the box, as squares and circles do (see the module docstring for triangles)."""
    return float(alpha.sum() / (alpha.sum(axis=0).max() * alpha.sum(axis=1).max()))


def background_and_object(pixels: np.ndarray) -> tuple[int, np.ndarray | None]:
    """The index of the background grey nearest the median border pixel of an (H, W, 3) uint8 image, and the
    largest connected region of pixels far from that grey (the object; None when there is none). (-1, None)
    when that pixel itself is as far as an object's from both greys (more than OBJECT_THRESHOLD in some
    channel): a background the renderer never draws, whose whole frame would otherwise read as the object."""
    image = pixels.astype(np.float64)
    background, distance = border_grey(image)
    if distance > OBJECT_THRESHOLD:
        return -1, None
    return background, largest_region(np.abs(image - GREYS[background]).max(axis=-1) > OBJECT_THRESHOLD)


def object_region(pixels: np.ndarray, margin: int = 0) -> np.ndarray | None:
    """The object's region of a Shapes image (H, W, 3) uint8 as an (H, W) bool mask, grown by `margin` pixels;
    None when the image holds no object."""
    _, region = background_and_object(pixels)
    if region is None:
        return None
    if margin:
        from scipy import ndimage

        region = ndimage.binary_dilation(region, iterations=margin)
    return np.asarray(region, dtype=bool)


def measure(pixels: np.ndarray) -> ShapeMeasurement:
    """Measure the factors of one (H, W, 3) uint8 Shapes image (see the module docstring)."""
    valid = judge_sample(pixels).passed
    image = pixels.astype(np.float64)
    background, largest = background_and_object(pixels)
    missing = ShapeMeasurement(valid, background, -1, -1, *(float("nan"),) * 7)
    if largest is None:
        return missing
    grey = GREYS[background]
    interior = ndimage.binary_erosion(largest)
    colour = int(np.abs(PALETTE - image[interior if interior.any() else largest].mean(axis=0)).max(axis=1).argmin())
    alpha = coverage(pixels, grey, PALETTE[colour])
    main = largest_region(alpha > COVERAGE_THRESHOLD)
    if main is None:
        return ShapeMeasurement(valid, background, colour, -1, *(float("nan"),) * 7)
    alpha = np.where(ndimage.binary_dilation(main), alpha, 0.0)
    fits = [fit_shape(alpha, shape) for shape in SHAPES]
    best = int(np.argmin([error for _, error in fits]))
    (r, cx, cy), error = fits[best]
    return ShapeMeasurement(
        valid, background, colour, best, r, cx, cy, float(alpha.sum()), fill_ratio(main), extent_fill(alpha), error
    )


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected region of a boolean mask, or None when it is empty."""
    regions, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones(mask.shape), regions, index=np.arange(1, n + 1))
    return regions == int(np.argmax(sizes)) + 1


def measure_all(pixels: np.ndarray) -> list[ShapeMeasurement]:
    """measure() of each image of (N, H, W, 3) uint8 pixels."""
    return [measure(p) for p in pixels]


def clarity_report(measurements: list[ShapeMeasurement]) -> dict[str, float]:
    """Shares of valid and shape-clear images, of fill ratios inside their class's band (over all images, and
    per class over the images found to be of it: `<shape>_in_band`, NaN when none is), the same for the
    sub-pixel fill ratio (`extent_fill_in_band_fraction`, `<shape>_extent_in_band`, and each class's median
    `<shape>_extent_fill`), the shape classes found, and the median fit error."""
    found = [m for m in measurements if m.shape >= 0]
    in_band = [m.fill_in_band for m in found]
    extent_in_band = [m.extent_fill_in_band for m in found]
    report = {
        "valid_fraction": float(np.mean([m.valid for m in measurements])),
        "shape_clear_fraction": float(np.mean([m.shape_clear for m in measurements])),
        "fill_in_band_fraction": float(np.sum(in_band) / len(measurements)),
        "extent_fill_in_band_fraction": float(np.sum(extent_in_band) / len(measurements)),
        "median_fit_error": float(np.median([m.fit_error for m in found])) if found else float("nan"),
    }
    for index, shape in enumerate(SHAPES):
        report[f"{shape}_share"] = float(np.mean([m.shape == index for m in found])) if found else 0.0
    for suffix, values, statistic in (
        ("in_band", in_band, np.mean),
        ("extent_in_band", extent_in_band, np.mean),
        ("extent_fill", [m.extent_fill for m in found], np.median),
    ):
        for index, shape in enumerate(SHAPES):
            of_class = [value for m, value in zip(found, values) if m.shape == index]
            report[f"{shape}_{suffix}"] = float(statistic(of_class)) if of_class else float("nan")
    return report
