"""A metric against edit strength, one line per group of runs (e.g. per method), from the per-strength
metrics `edit/<direction>/<metric>@<strength>`; the band is the std over runs."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev

from hspace.errors import UserError
from hspace.metrics.keys import per_strength
from hspace.tables.collect import RunRecord


def strength_curves(
    runs: Sequence[RunRecord], metric: str, group_by: Sequence[str], directions: Sequence[str] | None = None
) -> dict[str, dict[float, tuple[float, float]]]:
    """label -> strength -> (mean, std over runs) of the metric averaged over the chosen directions."""
    per_run: dict[str, list[dict[float, float]]] = defaultdict(list)
    for run in runs:
        values: dict[float, list[float]] = defaultdict(list)
        for direction, series in per_strength(run.metrics, metric).items():
            if directions and direction not in directions:
                continue
            for strength, value in series.items():
                if isinstance(value, (int, float)) and not math.isnan(value):
                    values[strength].append(float(value))
        if values:
            label = " ".join(str(run.value(k)) for k in group_by) or "runs"
            per_run[label].append({s: mean(v) for s, v in values.items()})
    if not per_run:
        raise UserError(f"no run has per-strength values of {metric!r} (metrics edit/<direction>/{metric}@<strength>)")
    curves = {}
    for label, runs_values in per_run.items():
        strengths = sorted({s for values in runs_values for s in values})
        curves[label] = {}
        for s in strengths:
            points = [values[s] for values in runs_values if s in values]
            curves[label][s] = (mean(points), stdev(points) if len(points) > 1 else 0.0)
    return curves


def plot_curves(
    curves: dict[str, dict[float, tuple[float, float]]], metric: str, path: str | Path, title: str = ""
) -> Path:
    from hspace.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(5, 3.5), dpi=120)
    for label, points in curves.items():
        xs = sorted(points)
        ys = [points[x][0] for x in xs]
        sd = [points[x][1] for x in xs]
        ax.plot(xs, ys, marker="o", label=label)
        ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("edit strength")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
