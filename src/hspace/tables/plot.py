"""A metric against edit strength, one line per group of runs (e.g. per method), from the per-strength
metrics `edit/<direction>/<metric>@<strength>`; the band is the std over runs.

A null value (nothing was measured, e.g. no valid sample) does not enter a mean; a point that rests on fewer
(run, direction) values than its group has pairs reporting the metric (a null, or a run without that
strength) says so: it is drawn hollow and labelled "n/m" (a table cell counts runs: "(n of m)")."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import NamedTuple

from hspace.errors import UserError
from hspace.metrics.keys import per_strength
from hspace.tables.build import setting_text
from hspace.tables.collect import RunRecord


class CurvePoint(NamedTuple):
    mean: float  # over runs, of each run's mean over its directions
    std: float  # over runs (0 for one run)
    count: int  # the (run, direction) values the point rests on
    of: int  # the (run, direction) pairs of its group that report the metric at some strength

    @property
    def partial(self) -> bool:
        return self.count < self.of


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def strength_curves(
    runs: Sequence[RunRecord], metric: str, group_by: Sequence[str], directions: Sequence[str] | None = None
) -> dict[str, dict[float, CurvePoint]]:
    """label -> strength -> the metric averaged over the chosen directions, then over the label's runs."""
    per_run: dict[str, list[dict[float, float]]] = defaultdict(list)
    counts: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    pairs: dict[str, int] = defaultdict(int)
    if directions:
        known = {direction for run in runs for direction in per_strength(run.metrics, metric)}
        unknown = [direction for direction in directions if direction not in known]
        if known and unknown:
            raise UserError(
                f"plot.directions names {unknown[0]!r}, which no run has per-strength values of {metric!r} for: "
                f"choose among {', '.join(sorted(known))}"
            )
    for run in runs:
        values: dict[float, list[float]] = defaultdict(list)
        reported = 0
        for direction, series in per_strength(run.metrics, metric).items():
            if directions and direction not in directions:
                continue
            reported += 1
            for strength, value in series.items():
                if is_number(value):
                    values[strength].append(float(value))
        if not reported:
            continue
        label = " ".join(setting_text(run.value(k)) for k in group_by) or "runs"
        pairs[label] += reported
        for strength, found in values.items():
            counts[label][strength] += len(found)
        if values:
            per_run[label].append({s: mean(v) for s, v in values.items()})
    if not per_run:
        raise UserError(f"no run has per-strength values of {metric!r} (metrics edit/<direction>/{metric}@<strength>)")
    curves = {}
    for label, runs_values in per_run.items():
        curves[label] = {}
        for s in sorted({s for values in runs_values for s in values}):
            points = [values[s] for values in runs_values if s in values]
            spread = stdev(points) if len(points) > 1 else 0.0
            curves[label][s] = CurvePoint(mean(points), spread, counts[label][s], pairs[label])
    return curves


def plot_curves(curves: dict[str, dict[float, CurvePoint]], metric: str, path: str | Path, title: str = "") -> Path:
    from hspace.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(5, 3.5), dpi=120)
    partial_any = False
    for label, points in curves.items():
        xs = sorted(points)
        ys = [points[x].mean for x in xs]
        sd = [points[x].std for x in xs]
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.2)
        for x, y in zip(xs, ys):
            point = points[x]
            if point.partial:
                partial_any = True
                ax.plot([x], [y], marker="o", markerfacecolor="white", color=line.get_color(), zorder=3)
                ax.annotate(f"{point.count}/{point.of}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if partial_any:
        title = (title + "\n" if title else "") + "hollow: n of m values (the others null or not at that strength)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("edit strength")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if max(len(label) for label in ax.get_legend_handles_labels()[1]) > 30:  # long row labels: beside the axes
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()
    return save_figure(fig, path, fit=True)  # tight_layout cannot fit a legend of long labels and says so
