"""Figures: line plots that travel as data (a method describes a figure as a LinePlot, saved in its directions
file, and the run draws it with draw_line_plot without knowing which method made it), and the two steps every
figure of the project shares: `pyplot` (matplotlib on the file-only Agg backend) and `save_figure`."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from hspace.files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are written to files and need no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: float | str = "figure", fit: bool = False) -> Path:
    """`fig` as a PNG at `path`, written atomically; the figure is closed. `fit`: the image is cropped or grown to
    what the figure draws (a legend of long labels beside the axes included)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if fit else None)
    pyplot().close(fig)
    return atomic_write_bytes(Path(path), lambda f: f.write(buffer.getvalue()))


@dataclass
class LinePlot:
    """Series over a shared x axis; each series on the left or the right y axis; optional vertical markers."""

    x: list[float]
    x_label: str
    left_label: str
    series: dict[str, list[float]]  # label -> y values, on the left axis
    right_label: str = ""
    right_series: dict[str, list[float]] = field(default_factory=dict)  # label -> y values, on the right axis
    vertical_lines: list[float] = field(default_factory=list)


def draw_line_plot(plot: LinePlot, path: str | Path) -> Path:
    """Write `plot` as a PNG (atomically)."""
    fig, left = pyplot().subplots(figsize=(5.5, 3.5), dpi=120)
    left_colours = iter(("tab:blue", "tab:purple", "tab:brown"))
    for label, values in plot.series.items():
        left.plot(plot.x, values, marker="o", color=next(left_colours), label=label)
    left.set_xlabel(plot.x_label)
    left.set_ylabel(plot.left_label)
    if plot.right_series:
        right = left.twinx()
        right_colours = iter(("tab:orange", "tab:green", "tab:red"))
        for label, values in plot.right_series.items():
            right.plot(plot.x, values, marker="s", color=next(right_colours), label=label)
        right.set_ylabel(plot.right_label)
    for x in plot.vertical_lines:
        left.axvline(x, color="grey", linestyle="--")
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)
