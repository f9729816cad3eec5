"""What an edit does to each Shapes factor, measured from pixels (hspace.data.shapes_factors).

For pairs (unedited, edited) of the same samples:
- background, colour, shape: the flip rate, the share of pairs whose measured class changed;
- r, cx, cy: the mean signed change in units of the image size.

To compare factors with each other, each effect is normalised: a flip rate stays as it is (0..1), a
continuous factor's mean absolute change is divided by its standard deviation in the data (r, cx and cy
are uniform over ranges of 0.17 and 0.40 image sizes: std = range / sqrt(12)), so 1 means an edit moves
the factor by one data standard deviation on average. The dominant factor has the largest normalised
effect; an edit changes it predominantly when that effect is at least PREDOMINANCE times the next one.

Predominance asks an edit to leave the other factors alone. A weaker question is whether it moves its
dominant factor one way: a continuous factor moves one way when its mean signed change is at least
DIRECTEDNESS times its mean absolute change (near 0 for a factor that only jitters), whatever the other
factors do. `moves_one_way` asks that of a direction at two strengths of opposite sign: the same continuous
dominant factor at both, moved one way at each, in opposite directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hspace.data.shapes import CENTRE_RANGE, SIZE_RANGE
from hspace.data.shapes_factors import ShapeMeasurement

CATEGORICAL = ("background", "colour", "shape")
CONTINUOUS = ("r", "cx", "cy")
FACTORS = CATEGORICAL + CONTINUOUS
DATA_STD = {  # in image sizes
    "r": (SIZE_RANGE[1] - SIZE_RANGE[0]) / math.sqrt(12),
    "cx": (CENTRE_RANGE[1] - CENTRE_RANGE[0]) / math.sqrt(12),
    "cy": (CENTRE_RANGE[1] - CENTRE_RANGE[0]) / math.sqrt(12),
}
PREDOMINANCE = 2.0
DIRECTEDNESS = 0.7


@dataclass(frozen=True)
class FactorEffects:
    """The effect of one edit on every factor, over `count` pairs where both images hold an object."""

    change: dict[str, float]  # flip rate (categorical) or mean signed change in image sizes (continuous)
    normalised: dict[str, float]  # flip rate, or mean |change| / data std
    count: int
    valid_fraction: float  # share of edited images that pass the pixel judge

    @property
    def dominant(self) -> str:
        return max(FACTORS, key=lambda f: self.normalised[f])

    @property
    def predominant(self) -> bool:
        """The dominant factor's effect is at least PREDOMINANCE times every other factor's."""
        first, second = sorted(self.normalised.values(), reverse=True)[:2]
        return first > 0 and first >= PREDOMINANCE * second

    @property
    def directed(self) -> bool:
        """The dominant factor is continuous and moves one way: |mean signed change| >= DIRECTEDNESS times its
        mean absolute change."""
        name = self.dominant
        if name not in CONTINUOUS or not self.normalised[name] > 0:
            return False
        return abs(self.change[name]) >= DIRECTEDNESS * self.normalised[name] * DATA_STD[name]


def moves_one_way(negative: FactorEffects, positive: FactorEffects) -> str | None:
    """The continuous factor a direction moves one way at a negative and a positive strength (the same dominant
    factor at both, directed at each, with opposite signs), or None."""
    name = negative.dominant
    if positive.dominant != name or not (negative.directed and positive.directed):
        return None
    return name if negative.change[name] * positive.change[name] < 0 else None


def judged(measurements: list[ShapeMeasurement]) -> list[ShapeMeasurement]:
    """The measurements with each image the pixel judge fails read as holding no object, so that factor_effects
    leaves its pair out like a lost object instead of measuring an image the renderer never makes as if it were
    one; its validity stays, so valid_fraction still counts it."""
    return [m if m.valid else replace(m, shape=-1) for m in measurements]


def factor_effects(reference: list[ShapeMeasurement], edited: list[ShapeMeasurement], resolution: int) -> FactorEffects:
    """Effects of an edit from the measurements of the unedited and the edited images, pair by pair."""
    if len(reference) != len(edited):
        raise ValueError(f"{len(reference)} unedited and {len(edited)} edited measurements: pass the same samples")
    pairs = [(r, e) for r, e in zip(reference, edited) if r.shape >= 0 and e.shape >= 0]
    valid = float(np.mean([e.valid for e in edited])) if edited else float("nan")
    if not pairs:
        nan = {f: float("nan") for f in FACTORS}
        return FactorEffects(nan, dict(nan), 0, valid)
    change, normalised = {}, {}
    for name in CATEGORICAL:
        change[name] = normalised[name] = float(np.mean([getattr(r, name) != getattr(e, name) for r, e in pairs]))
    for name in CONTINUOUS:
        delta = np.array([getattr(e, name) - getattr(r, name) for r, e in pairs]) / resolution
        change[name] = float(delta.mean())
        normalised[name] = float(np.abs(delta).mean() / DATA_STD[name])
    return FactorEffects(change, normalised, len(pairs), valid)
