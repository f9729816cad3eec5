"""Comparing editing directions at a matched effect size on their target factor (the Shapes leaderboard).

Different methods measure strength in different units (standard deviations of h for PCA, fractions of a
class-mean difference, SVM distances), so comparing them at one strength says little. Each direction is
compared where it reaches the same effect on its own target factor (`MATCHED_EFFECT`):

- continuous target (r, cx, cy): the mean change in the target's direction equals half the factor's
  standard deviation in the data;
- categorical target (background, colour, shape): half of the samples not at the target value reach it
  (success 0.5).

The strength at that point is interpolated linearly between the grid's strengths (from 0, where the
effect is 0 and so is success: an unedited sample moves nothing), and so are success, leakage and validity; a
strength with no measured pair is passed over. A direction that never reaches it is reported at its largest
measured strength, marked as not reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hspace.metrics.factor_effects import CATEGORICAL, DATA_STD
from hspace.metrics.factor_scores import FactorTarget
from hspace.metrics.keys import PREFIX, edit_key
from hspace.tables.build import Table

MATCHED_EFFECT = 0.5
COMPARED = ("success", "leakage", "valid")


@dataclass(frozen=True)
class MatchedPoint:
    strength: float
    reached: bool
    effect: float  # the target effect at `strength` (MATCHED_EFFECT when reached)
    values: dict[str, float]  # success, leakage, valid at `strength`


def target_effect(metrics: dict, direction: str, strength: float, prefix: str = PREFIX) -> float:
    """The effect of `direction` at `strength` on its target factor: success for a categorical target, the
    mean change in the target's direction over the data's standard deviation for a continuous one."""
    if strength == 0:
        return 0.0
    target_key = edit_key(direction, "factors", "target", prefix=prefix)
    target = FactorTarget.parse(metrics[target_key], target_key)
    if target.factor in CATEGORICAL:
        return measured(metrics[edit_key(direction, "factors", "success", strength=strength, prefix=prefix)])
    sign = target.sign * (1 if strength > 0 else -1)
    change = metrics[edit_key(direction, "factors", "change", target.factor, strength=strength, prefix=prefix)]
    return sign * measured(change) / DATA_STD[target.factor]


def measured(value: float | None) -> float:
    """A metric as a float: NaN where it was not measured (null in metrics.json, NaN in memory)."""
    return math.nan if value is None else float(value)


def matched_point(
    strengths: Sequence[float],
    effects: Sequence[float],
    values: dict[str, Sequence[float]],
    level: float = MATCHED_EFFECT,
) -> MatchedPoint:
    """Where the effect first reaches `level` (> 0) along increasing strengths, which must start at 0 (no
    edit, no effect); the values are interpolated between the two measured strengths around that point. A
    strength whose effect was not measured (NaN: no pair) is passed over, not read as no effect; where the
    effect never reaches `level`, the point is the largest measured strength."""
    order = sorted(range(len(strengths)), key=lambda i: strengths[i])
    if strengths[order[0]] != 0:
        raise ValueError(f"the strengths must include 0, the unedited samples: {list(strengths)}")
    order = [order[0], *(i for i in order[1:] if not math.isnan(effects[i]))]
    s = [strengths[i] for i in order]
    e = [0.0, *(effects[i] for i in order[1:])]
    v = {name: [series[i] for i in order] for name, series in values.items()}
    for i in range(1, len(s)):
        if e[i] >= level:  # e[i - 1] < level: the first crossing
            w = (level - e[i - 1]) / (e[i] - e[i - 1])
            point = {name: interpolate(series[i - 1], series[i], w) for name, series in v.items()}
            return MatchedPoint(s[i - 1] + w * (s[i] - s[i - 1]), True, level, point)
    return MatchedPoint(s[-1], False, e[-1], {name: series[-1] for name, series in v.items()})


def interpolate(a: float, b: float, w: float) -> float:
    """a + w (b - a), where a missing (NaN) end (no measured pair) takes the other's value."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return a + w * (b - a)


def direction_point(metrics: dict, direction: str, strengths: Sequence[float]) -> MatchedPoint:
    """The matched point of one direction of a finished run (its metrics.json), over its non-negative strengths."""
    grid = [s for s in strengths if s >= 0]
    effects = [target_effect(metrics, direction, s) for s in grid]
    values = {
        name: [measured(metrics[edit_key(direction, "factors", name, strength=s)]) for s in grid] for name in COMPARED
    }
    # The run leaves success undefined at strength 0 (there is no edit to judge); at the matched point it is
    # interpolated from 0 like the effect, since an unedited sample moves nothing.
    values["success"] = [0.0 if s == 0 else value for s, value in zip(grid, values["success"], strict=True)]
    return matched_point(grid, effects, values)


BEST_COLUMNS = ("strength", *COMPARED)


def best_per_method(table: Table) -> Table:
    """Each method's direction that reaches the matched effect on every seed with the least leakage (ties: the
    higher success), from a leaderboard whose rows are (method, direction, target) with `reached` (1 or 0 per
    seed), strength, success, leakage and valid cells. A method none of whose directions reaches it on every
    seed has no row."""
    best: dict[str, tuple] = {}
    for row in table.rows:
        reached = table.cell(row, "reached").values
        if not reached or min(reached) < 1:
            continue
        rank = (table.cell(row, "leakage").mean, -table.cell(row, "success").mean)
        current = best.get(row[0])
        if current is None or rank < (table.cell(current, "leakage").mean, -table.cell(current, "success").mean):
            best[row[0]] = row
    rows = list(best.values())
    cells = {(row, column): table.cell(row, column) for row in rows for column in BEST_COLUMNS}
    return Table(list(table.row_keys), rows, list(BEST_COLUMNS), cells)
