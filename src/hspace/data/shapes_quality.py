"""Judging Shapes samples from their pixels: background, object count and object colour (the factors
themselves are measured in hspace.data.shapes_factors).

A sample passes when
- its background is uniform and equal to one of the two Shapes greys: the median border pixel is within
  `background_tol` of a grey in every channel, and at least `uniform_fraction` of the pixels away from the
  object (outside the object grown by one pixel) are within `background_tol` of that grey;
- it holds exactly one object: one connected region (of at least `min_object_pixels`) of pixels that differ
  from the grey by more than `object_threshold` in some channel;
- the object's mean colour over its interior (the region shrunk by one pixel, or the whole region when
  that is empty) is within `colour_tol` of one of the four Shapes colours in every channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hspace.data.shapes import BACKGROUNDS, COLOURS

GREYS = np.array(list(BACKGROUNDS.values()), dtype=np.float64)
PALETTE = np.array(list(COLOURS.values()), dtype=np.float64)


@dataclass(frozen=True)
class ShapesJudgement:
    border_ok: bool  # the median border pixel is one of the greys
    uniform_ok: bool  # the pixels away from the object are that grey
    one_object: bool
    colour_ok: bool
    background: int  # index into BACKGROUNDS, -1 if none
    colour: int  # index into COLOURS, -1 if none
    n_objects: int

    @property
    def background_ok(self) -> bool:
        return self.border_ok and self.uniform_ok

    @property
    def passed(self) -> bool:
        return self.background_ok and self.one_object and self.colour_ok


def border_grey(image: np.ndarray) -> tuple[int, float]:
    """The index of the Shapes grey nearest the median border pixel of an (H, W, 3) image, and that pixel's
    distance from it (the largest channel difference)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    distance = np.abs(GREYS - np.median(border, axis=0)).max(axis=1)
    background = int(distance.argmin())
    return background, float(distance[background])


@dataclass(frozen=True)
class Layout:
    """Where an (H, W, 3) image's object and background lie, as the judge sees them."""

    background: int  # index into GREYS of the grey nearest the median border pixel
    border_distance: float  # that pixel's largest channel difference from it
    deviation: np.ndarray  # (H, W) each pixel's largest channel difference from that grey
    object_pixels: np.ndarray  # (H, W) bool: the regions of at least min_object_pixels far from the grey
    n_objects: int
    away: np.ndarray  # (H, W) bool: outside the object grown by one pixel


def layout(image: np.ndarray, object_threshold: float = 60, min_object_pixels: int = 4) -> Layout:
    """The judge's view of an (H, W, 3) float image: its background grey, and its objects as the connected regions
    (of at least `min_object_pixels`) of pixels that differ from the grey by more than `object_threshold`."""
    background, border_distance = border_grey(image)
    deviation = np.abs(image - GREYS[background]).max(axis=-1)
    objects, n_found = ndimage.label(deviation > object_threshold)
    sizes = ndimage.sum_labels(np.ones_like(deviation), objects, index=np.arange(1, n_found + 1))
    large = [i + 1 for i, size in enumerate(sizes) if size >= min_object_pixels]
    object_pixels = np.isin(objects, large)
    away = ~ndimage.binary_dilation(object_pixels)
    return Layout(background, border_distance, deviation, object_pixels, len(large), away)


def off_grey(pixels: np.ndarray, background_tol: float = 24, **layout_settings) -> np.ndarray:
    """(H, W) bool: the pixels of an (H, W, 3) uint8 image away from its object that are more than `background_tol`
    off the background grey in some channel, which the uniformity test counts (judge_sample)."""
    seen = layout(pixels.astype(np.float64), **layout_settings)
    return seen.away & (seen.deviation > background_tol)


def judge_sample(
    pixels: np.ndarray,
    background_tol: float = 24,
    uniform_fraction: float = 0.97,
    object_threshold: float = 60,
    min_object_pixels: int = 4,
    colour_tol: float = 40,
) -> ShapesJudgement:
    """Judge one (H, W, 3) uint8 sample; see the module docstring for the criteria."""
    image = pixels.astype(np.float64)
    seen = layout(image, object_threshold, min_object_pixels)
    away = seen.away
    uniform = (seen.deviation[away] <= background_tol).mean() if away.any() else 0.0
    border_ok, uniform_ok = bool(seen.border_distance <= background_tol), bool(uniform >= uniform_fraction)
    background_ok = border_ok and uniform_ok

    colour, colour_ok = -1, False
    if seen.n_objects == 1:
        interior = ndimage.binary_erosion(seen.object_pixels)
        region = interior if interior.any() else seen.object_pixels
        mean = image[region].mean(axis=0)
        colour_distance = np.abs(PALETTE - mean).max(axis=1)
        colour = int(colour_distance.argmin())
        colour_ok = bool(colour_distance[colour] <= colour_tol)
    one_object = seen.n_objects == 1
    background = seen.background if background_ok else -1
    return ShapesJudgement(border_ok, uniform_ok, one_object, colour_ok, background, colour, seen.n_objects)


def quality_report(pixels: np.ndarray, **tolerances) -> dict[str, float]:
    """Fractions of (N, H, W, 3) uint8 samples passing each criterion, and the share of light backgrounds."""
    judgements = [judge_sample(p, **tolerances) for p in pixels]
    return {
        "pass_fraction": float(np.mean([j.passed for j in judgements])),
        "background_fraction": float(np.mean([j.background_ok for j in judgements])),
        "one_object_fraction": float(np.mean([j.one_object for j in judgements])),
        "colour_fraction": float(np.mean([j.colour_ok for j in judgements])),
        "light_background_share": float(np.mean([j.background == 1 for j in judgements])),
    }
