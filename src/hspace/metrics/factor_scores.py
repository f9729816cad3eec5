"""Edits scored by the Shapes renderer's own factors, measured from pixels (docs/algorithms.md, "Shapes factors
from pixels"): what each direction changes, what it leaks into, and whether its edits stay valid images.

Per direction d and strength s (metric names under `edit/<d>/factors/`):

- `change/<factor>@<s>`: flip rate of background, colour and shape; mean signed change of r, cx and cy in
  units of the image size (hspace.metrics.factor_effects);
- `target`: the factor the direction edits. Categorical: `<factor>=<value>` (the class its positive
  strengths produce); continuous: `<factor>` or `-<factor>` (which way positive strengths move it). From
  `targets` when given, else the factor with the largest normalised effect at the headline strength (at the
  largest strength with a measured pair when the headline has none; null, with success and leakage, when no
  strength has one);
- `success@<s>`: categorical, the share of samples not at the value (s > 0; at it for s < 0) that the
  edit moves to it (away from it); continuous, the share whose factor moves the intended way by at least
  SUCCESS_STD data standard deviations;
- `leakage/<factor>@<s>`: the normalised effect on every other factor (a flip rate, or mean |change| over the
  data's standard deviation), and `leakage@<s>` their maximum, the worst leak;
- `valid@<s>`: the share of edited images that pass the pixel judge;
- `count@<s>`: the samples whose unedited and edited images both pass the pixel judge, over which change,
  success and leakage are taken: an image the renderer never makes (two objects, a blend of two colours, a
  background between the greys) is left out like a lost object instead of being measured as if it were one,
  and an edit that makes one shows in `count` and `valid`, not in success. With pairs="object", the samples
  whose two images hold an object, valid or not;
- `background_kept@<s>`: the share of background pixels (away from the object before and after) that stay
  within BACKGROUND_TOLERANCE grey levels: how local the edit is;

the same names without `@<s>` at the headline strength, and `factors/valid` for the unedited samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES
from hspace.data.shapes_factors import ShapeMeasurement, measure_all
from hspace.errors import UserError
from hspace.metrics.factor_effects import (
    CATEGORICAL,
    CONTINUOUS,
    DATA_STD,
    FACTORS,
    FactorEffects,
    factor_effects,
    judged,
)
from hspace.metrics.keys import PREFIX, edit_key, with_headline

SUCCESS_STD = 0.5  # a continuous factor counts as moved when it changes by half a data standard deviation
PAIRS = ("object", "valid")  # which pairs count: both images hold an object, or both pass the pixel judge
VALUES = {"background": tuple(BACKGROUNDS), "colour": tuple(COLOURS), "shape": SHAPES}


@dataclass(frozen=True)
class FactorTarget:
    """What a direction edits: a categorical factor towards `value`, or a continuous one with `sign`."""

    factor: str
    value: int = -1  # categorical: the class index that positive strengths produce
    sign: int = 1  # continuous: +1 if positive strengths increase the factor

    def __str__(self) -> str:
        if self.factor in CATEGORICAL:
            return f"{self.factor}={VALUES[self.factor][self.value]}"
        return ("-" if self.sign < 0 else "") + self.factor

    @classmethod
    def parse(cls, text: str, setting: str) -> FactorTarget:
        """`background=light`, `colour=red`, `shape=circle`, `r`, `-cx`, ..."""
        name, _, value = text.partition("=")
        if name in VALUES and value in VALUES[name]:
            return cls(name, value=VALUES[name].index(value))
        if name.lstrip("+-") in CONTINUOUS and not value:
            return cls(name.lstrip("+-"), sign=-1 if name.startswith("-") else 1)
        choices = [f"{f}=<{'|'.join(VALUES[f])}>" for f in CATEGORICAL] + [f"[-]{f}" for f in CONTINUOUS]
        raise UserError(f"{setting}={text!r} is not a Shapes factor target: use one of {', '.join(choices)}")


def pixels_of(images: torch.Tensor) -> np.ndarray:
    """uint8 (..., C, H, W) -> (N, H, W, C) numpy for the measurement."""
    return images.flatten(0, -4).permute(0, 2, 3, 1).contiguous().numpy()


# A continuous factor that moves by less than this share of its data standard deviation (a sixty-fourth of a pixel of
# radius on the 32-pixel Shapes, a twenty-seventh of one of position) has not moved: measured from anti-aliased
# pixels, such changes are rounding, and an edit of nearly no effect would otherwise be given a target.
MIN_MOVE = 0.01


def moved_by(factor: str, normalised: float) -> bool:
    """Whether a normalised effect says the factor changed: any flip of a class, a continuous move of MIN_MOVE."""
    if math.isnan(normalised):
        return False
    return normalised > 0 if factor in CATEGORICAL else normalised >= MIN_MOVE


def guess_target(
    effects: FactorEffects, reference: list[ShapeMeasurement], edited: list[ShapeMeasurement], strength: float
) -> FactorTarget | None:
    """The factor an edit at `strength` moves most (by normalised effect), with its value or sign; None when it
    moves none (no class flips and no continuous factor moves by MIN_MOVE of its data standard deviation, or
    nothing was measured): such an edit has no target."""
    moved = {f: effects.normalised[f] if moved_by(f, effects.normalised[f]) else 0.0 for f in FACTORS}
    factor = max(FACTORS, key=lambda f: moved[f])
    if not moved[factor] > 0:
        return None
    direction = 1 if strength >= 0 else -1
    if factor in CATEGORICAL:
        # The class the edit produces (s > 0) or leaves (s < 0) most often among the pairs it changed.
        classes = [(getattr(r, factor), getattr(e, factor)) for r, e in measured_pairs(reference, edited)]
        changed = [(before, after) for before, after in classes if before != after]
        ends = [after if direction > 0 else before for before, after in changed]
        value = int(np.bincount(np.array(ends, dtype=int), minlength=len(VALUES[factor])).argmax()) if ends else 0
        return FactorTarget(factor, value=value)
    return FactorTarget(factor, sign=(1 if effects.change[factor] >= 0 else -1) * direction)


def guess_index(effects: Sequence[FactorEffects], strengths: Sequence[float], headline: int) -> int | None:
    """The strength a direction's target is guessed at: the headline one, else the largest nonzero one with a
    measured pair (no pair there: every edit lost the object or failed the judge), else None (nothing was measured)."""
    if effects[headline].count > 0 and strengths[headline] != 0:
        return headline
    measured = [k for k, s in enumerate(strengths) if s != 0 and effects[k].count > 0]
    return max(measured, key=lambda k: abs(strengths[k])) if measured else None


def measured_pairs(reference: list[ShapeMeasurement], edited: list[ShapeMeasurement]):
    """(unedited, edited) measurements of the samples that hold an object in both images."""
    return [(r, e) for r, e in zip(reference, edited, strict=True) if r.shape >= 0 and e.shape >= 0]


def success(
    reference: list[ShapeMeasurement],
    edited: list[ShapeMeasurement],
    target: FactorTarget,
    strength: float,
    resolution: int,
) -> float:
    """The share of samples the edit at `strength` moves as `target` says (see the module docstring)."""
    if strength == 0:
        return float("nan")
    direction = 1 if strength > 0 else -1
    pairs = measured_pairs(reference, edited)
    if target.factor in CATEGORICAL:
        at = [(getattr(r, target.factor) == target.value, getattr(e, target.factor) == target.value) for r, e in pairs]
        moved = (
            [after for before, after in at if not before]
            if direction > 0
            else [not after for before, after in at if before]
        )
        return float(np.mean(moved)) if moved else float("nan")
    if not pairs:
        return float("nan")
    needed = SUCCESS_STD * DATA_STD[target.factor] * resolution
    moves = [(getattr(e, target.factor) - getattr(r, target.factor)) * target.sign * direction for r, e in pairs]
    return float(np.mean([move >= needed for move in moves]))


BACKGROUND_TOLERANCE = 10  # grey levels a background pixel may move and still count as kept


def background_kept(original: np.ndarray, edited: np.ndarray) -> float:
    """The share of background pixels (outside the object of either image, grown by one pixel) whose largest
    channel change is at most BACKGROUND_TOLERANCE levels: how local an edit is. (H, W, 3) uint8 each."""
    from scipy import ndimage

    from hspace.data.shapes_factors import background_and_object

    objects = np.zeros(original.shape[:2], dtype=bool)
    for pixels in (original, edited):
        region = background_and_object(pixels)[1]
        if region is not None:
            objects |= region
    background = ~ndimage.binary_dilation(objects)
    if not background.any():
        return float("nan")
    change = np.abs(original.astype(np.int16) - edited.astype(np.int16)).max(axis=-1)
    return float((change[background] <= BACKGROUND_TOLERANCE).mean())


def factor_scores(
    originals: torch.Tensor,
    edits: torch.Tensor,
    names: Sequence[str],
    strengths: Sequence[float],
    targets: dict[str, str | None],
    headline: int,
    prefix: str = PREFIX,
    pairs: str = "valid",
) -> tuple[dict, tuple[list[str], list[list]]]:
    """Factor metrics of uint8 edits (D, N, S, C, H, W) against their unedited images (N, C, H, W), and the
    edit-by-factor table (one row per direction and strength: target, success, leakage, validity, changes).
    `pairs`: which samples the effects are taken over (PAIRS; see the module docstring's `count`)."""
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, not {pairs!r}")
    resolution = originals.shape[-1]
    original_pixels, edited_pixels = pixels_of(originals), pixels_of(edits)
    reference = measure_all(original_pixels)
    n, s = edits.shape[1:3]
    edited = measure_all(edited_pixels)  # (D * N * S) in that order
    if pairs == "valid":
        reference, edited = judged(reference), judged(edited)
    metrics: dict = {"factors/valid": float(np.mean([m.valid for m in reference]))}
    columns = ["direction", "strength", "target", "success", "leakage", "valid", *FACTORS]
    rows = []
    for j, name in enumerate(names):
        per_strength = [[edited[(j * n + i) * s + k] for i in range(n)] for k in range(s)]
        effects = [factor_effects(reference, measured, resolution) for measured in per_strength]
        if name in targets:  # None: the direction has no target (the generated samples found none)
            given = targets[name]
            target = None if given is None else FactorTarget.parse(given, f"metrics.factor_targets.{name}")
        else:
            guessed = guess_index(effects, strengths, headline)
            target = (
                None
                if guessed is None
                else guess_target(effects[guessed], reference, per_strength[guessed], strengths[guessed])
            )
        scored: dict = {edit_key(name, "factors", "target", prefix=prefix): None if target is None else str(target)}
        for k, strength in enumerate(strengths):
            key = partial(edit_key, name, "factors", strength=strength, prefix=prefix)
            leaks = {f: effects[k].normalised[f] for f in FACTORS if target is None or f != target.factor}
            worst = max(leaks.values()) if leaks and target is not None else float("nan")
            scored[key("success")] = (
                float("nan") if target is None else success(reference, per_strength[k], target, strength, resolution)
            )
            scored[key("leakage")] = float(worst)
            scored[key("valid")] = effects[k].valid_fraction
            scored[key("count")] = effects[k].count
            kept = [background_kept(original_pixels[i], edited_pixels[(j * n + i) * s + k]) for i in range(n)]
            scored[key("background_kept")] = float(np.nanmean(kept)) if not np.isnan(kept).all() else None
            for factor in FACTORS:
                scored[key("change", factor)] = effects[k].change[factor]
            for factor, value in leaks.items():
                scored[key("leakage", factor)] = value
            row = [name, float(strength), str(target), scored[key("success")], float(worst)]  # "None": no target
            rows.append([*row, effects[k].valid_fraction, *(round(effects[k].change[f], 4) for f in FACTORS)])
        metrics |= with_headline(scored, strengths[headline])
    return metrics, (columns, rows)
