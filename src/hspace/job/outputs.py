"""Stage 4 of a run: its files (edits, grids, the method's plots, metrics.json) and what goes to the loggers."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytorch_lightning.loggers import Logger, WandbLogger

from hspace.directions.container import Directions
from hspace.images import save_edit_grid, to_uint8
from hspace.job.edit import EditedSet
from hspace.job.score import Scores
from hspace.metrics.factor_effects import FACTORS
from hspace.metrics.keys import direction_values, edit_key
from hspace.plots import draw_line_plot
from hspace.progress import stage_line
from hspace.run_record import write_json


class StageTimer:
    """Wall time of named stages, as the metrics `time/<stage>_s`, and one line on stderr as each ends well
    (hspace.progress.stage_line: its name, what it covered, its time)."""

    def __init__(self):
        self.metrics: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, detail: str = ""):
        """Time the block; it may set `.detail` on what it receives once it knows what it covered."""
        record = StageRecord(detail)
        start = time.perf_counter()
        try:
            yield record
        finally:
            self.metrics[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
        stage_line(name, record.detail, self.metrics[f"time/{name}_s"])


@dataclass
class StageRecord:
    detail: str


def write_grids(
    run_dir: Path,
    directions: Directions,
    names: Sequence[str],
    strengths: Sequence[float],
    generated: EditedSet,
    real: EditedSet | None,
    targets: dict[str, str] | None = None,
) -> dict[str, dict[str, Path]]:
    """grids/<direction>.png (and grids/real_<direction>.png) and the method's plots (grids/<plot>.png), by the
    W&B key they go under (`grids`, `grids_real`, `plots`: each key's images share one size). `targets` names
    what each direction edits, for the titles."""
    targets = targets or {}
    groups: dict[str, dict[str, Path]] = {"grids": {}, "grids_real": {}, "plots": {}}
    for name, plot in directions.plots.items():
        groups["plots"][name] = draw_line_plot(plot, run_dir / "grids" / f"{name}.png")
    size = generated.edited.shape[-2:]
    for j, name in enumerate(names):
        edits = f"{directions.method} {name}" + (f" (edits {targets[name]})" if name in targets else "")
        pixels = to_uint8(generated.edited[j].flatten(0, 1)).reshape(len(generated.ids), len(strengths), *size, 3)
        groups["grids"][name] = save_edit_grid(
            pixels,
            strengths,
            f"{edits}; columns: strength in units of its scale; rows: seeds",
            run_dir / "grids" / f"{name}.png",
            row_labels=generated.ids,
        )
        if real is not None:
            pixels = to_uint8(real.edited[j].flatten(0, 1)).reshape(len(real.ids), len(strengths), *size, 3)
            groups["grids_real"][f"real_{name}"] = save_edit_grid(
                pixels,
                strengths,
                f"{edits} on inverted real images",
                run_dir / "grids" / f"real_{name}.png",
                row_labels=real.ids,
            )
    return {key: grids for key, grids in groups.items() if grids}


CURVES = ("success", "preserve", "factors/success", "factors/leakage")  # drawn against strength in W&B


def strength_series(metrics: dict, names: Sequence[str], strengths: Sequence[float], metric: str) -> dict[str, list]:
    """direction -> the metric at each strength (None where not measured), for the directions that have it."""
    series = {}
    for name in names:
        values = [metrics.get(edit_key(name, metric, strength=s)) for s in strengths]
        if any(isinstance(v, (int, float)) for v in values):
            series[name] = [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]
    return series


def log_run(
    loggers: Sequence[Logger],
    metrics: dict,
    grids: dict[str, dict[str, Path]],
    scores: Scores,
    names: Sequence[str] = (),
    strengths: Sequence[float] = (),
) -> None:
    """Every number to every logger (in W&B also the run's summary); to W&B also the text metrics (the method, the
    targets, the directions file's hash) in the run's summary, which `hspace-table wandb=...` groups and checks
    runs by, grids (one key per kind, captioned with their direction), tables and line plots of success,
    preservation and leakage against strength."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    text = {k: v for k, v in metrics.items() if isinstance(v, str)}
    for logger in loggers:
        logger.log_metrics(numeric, step=0)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(text)
            for key, images in grids.items():
                logger.log_image(key=key, images=[str(p) for p in images.values()], caption=list(images))
            for key, (columns, rows) in scores.tables.items():
                logger.log_table(key=key, columns=columns, data=rows)
            for metric in CURVES:
                series = strength_series(metrics, names, strengths, metric)
                if series:
                    import wandb

                    plot = wandb.plot.line_series(
                        xs=list(strengths),
                        ys=list(series.values()),
                        keys=list(series),
                        title=f"{metric} against strength",
                        xname="strength",
                    )
                    logger.experiment.log({f"curves/{metric}": plot})
        logger.save()


def factor_summary(metrics: dict, names: Sequence[str]) -> list[str]:
    """One line per direction on what it edits, measured from pixels (when the run scored Shapes factors); one
    naming the directions whose edits move no factor (no target); and one naming those with no measured pair,
    with the share of unedited samples the pixel judge passes: a model whose samples it fails gets no factor
    scores over judged-valid pairs."""
    if "factors/valid" not in metrics:
        return []
    scored = list(direction_values(metrics, "factors/target", names))
    lines = ["Shapes factors at the headline strength (target: success, worst leakage, valid edits):"]
    for name in scored:
        value = {m: metrics[edit_key(name, "factors", m)] for m in ("target", "success", "leakage", "valid")}
        leaks = {f: metrics[key] for f in FACTORS if (key := edit_key(name, "factors", "leakage", f)) in metrics}
        measured = {f: leak for f, leak in leaks.items() if not math.isnan(leak)}
        worst = f" ({max(measured, key=lambda f: measured[f])})" if measured else ""  # none: no pair at the headline
        lines.append(
            f"  {name}: {value['target']}: success {value['success']:.2f}, "
            f"leakage {value['leakage']:.2f}{worst}, valid {value['valid']:.2f}"
        )
    unscored = [name for name in names if name not in scored]
    still = [name for name in unscored if (metrics.get(edit_key(name, "factors", "count")) or 0) > 0]
    if still:
        lines.append(f"  {', '.join(still)}: no target: its edits move no factor at the headline strength")
    unmeasured = [name for name in unscored if name not in still]
    if unmeasured:
        lines.append(
            f"  {', '.join(unmeasured)}: no pair measured; the pixel judge passes {metrics['factors/valid']:.0%} of "
            "the unedited samples (metrics.factor_pairs=valid measures the pairs it passes, =object every pair "
            "that holds an object)"
        )
    return lines


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    path = run_dir / "metrics.json"
    write_json(path, metrics)
    return path
