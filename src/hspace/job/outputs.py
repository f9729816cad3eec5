"""Stage 4 of a run: its files (edits, grids, the method's plots, metrics.json) and what goes to the loggers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from pytorch_lightning.loggers import Logger, WandbLogger
from safetensors.torch import save

from hspace.directions.container import Directions
from hspace.images import atomic_write_bytes, save_edit_grid, to_uint8
from hspace.job.edit import EditedSet
from hspace.job.score import Scores, uint8_images
from hspace.plots import draw_line_plot
from hspace.run_record import write_json


class StageTimer:
    """Wall time of named stages, as the metrics `time/<stage>_s`."""

    def __init__(self):
        self.metrics: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.metrics[f"time/{name}_s"] = round(time.perf_counter() - start, 3)


def save_edits(path: Path, edits: EditedSet, strengths: Sequence[float], names: Sequence[str]) -> Path:
    """The edits as uint8 (D, N, S, C, H, W), with the strengths and the seeds (or image indices)."""
    tensors = {
        "images": uint8_images(edits.edited),
        "strengths": torch.tensor(list(strengths), dtype=torch.float32),
        edits.id_kind: torch.tensor(list(edits.ids)),
    }
    data = save(
        tensors, metadata={"directions": ",".join(names), "layout": "direction,sample,strength,channel,height,width"}
    )
    return atomic_write_bytes(path, lambda f: f.write(data))


def write_grids(
    run_dir: Path,
    directions: Directions,
    names: Sequence[str],
    strengths: Sequence[float],
    generated: EditedSet,
    real: EditedSet | None,
) -> dict[str, Path]:
    """grids/<direction>.png (and grids/real_<direction>.png) and the method's plots (grids/<plot>.png)."""
    grids = {name: draw_line_plot(plot, run_dir / "grids" / f"{name}.png") for name, plot in directions.plots.items()}
    size = generated.edited.shape[-2:]
    for j, name in enumerate(names):
        pixels = to_uint8(generated.edited[j].flatten(0, 1)).reshape(len(generated.ids), len(strengths), *size, 3)
        grids[name] = save_edit_grid(
            pixels,
            strengths,
            f"{directions.method} {name} (strength in units of its scale)",
            run_dir / "grids" / f"{name}.png",
            row_labels=generated.ids,
        )
        if real is not None:
            pixels = to_uint8(real.edited[j].flatten(0, 1)).reshape(len(real.ids), len(strengths), *size, 3)
            grids[f"real_{name}"] = save_edit_grid(
                pixels,
                strengths,
                f"{directions.method} {name} on inverted real images",
                run_dir / "grids" / f"real_{name}.png",
            )
    return grids


def log_run(loggers: Sequence[Logger], metrics: dict, grids: dict[str, Path], scores: Scores) -> None:
    """Every number to every logger; grids and tables to W&B."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(numeric, step=0)
        if isinstance(logger, WandbLogger):  # all grids under one key, captioned with their direction
            logger.log_image(key="grids", images=[str(p) for p in grids.values()], caption=list(grids))
            for key, (columns, rows) in scores.tables.items():
                logger.log_table(key=key, columns=columns, data=rows)
        logger.save()


def factor_summary(metrics: dict, names: Sequence[str]) -> list[str]:
    """One line per direction on what it edits, measured from pixels (when the run scored Shapes factors)."""
    scored = [name for name in names if f"edit/{name}/factors/target" in metrics]
    if not scored:
        return []
    lines = ["Shapes factors at the headline strength (target: success, worst leakage, valid edits):"]
    for name in scored:
        key = f"edit/{name}/factors"
        leaks = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{key}/leakage/") and "@" not in k}
        worst = max(leaks, key=lambda f: leaks[f])
        lines.append(
            f"  {name}: {metrics[f'{key}/target']}: success {metrics[f'{key}/success']:.2f}, "
            f"leakage {metrics[f'{key}/leakage']:.2f} ({worst}), valid {metrics[f'{key}/valid']:.2f}"
        )
    return lines


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    path = run_dir / "metrics.json"
    write_json(path, metrics)
    return path
