"""One editing run: find directions (or load them), edit generated and real samples at every strength,
write the outputs and log them. Plain arguments only; hspace.cli.run builds them from the config."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import torch
from safetensors.torch import save

from hspace.cache import ArtifactCache
from hspace.diffusion.inversion import ddim_invert, edit_friendly_invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.directions import Directions
from hspace.directions.mixing import plot_mixing_curve
from hspace.edits.shift import ShiftEdit
from hspace.errors import UserError
from hspace.images import atomic_write_bytes, save_edit_grid, to_uint8
from hspace.metrics.evaluation import EvaluationSettings, evaluate_edits, strength_label
from hspace.metrics.fid import cached_reference_statistics
from hspace.run_record import write_json


class DirectionFinder(Protocol):
    name: str

    def find(self, model: DiffusionModel, num_steps: int, spacing: str, final_alpha: str = "one", cache: ArtifactCache | None = None) -> Directions: ...


class Timer:
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


def find_directions(method: DirectionFinder, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None) -> tuple[Directions, bool]:
    """The method's directions for this model and grid, and whether they came from the cache (an identical
    earlier run made them)."""

    def compute():
        return method.find(model, sampler.num_steps, sampler.spacing, sampler.final_alpha, cache)

    if cache is None:
        return compute(), False
    parts = {
        "method": method.name,
        "config": method.cache_identity() if hasattr(method, "cache_identity") else asdict(method),
        "model": model.identity(),
        "grid": {"num_steps": sampler.num_steps, "spacing": sampler.spacing, "final_alpha": sampler.final_alpha},
    }
    seen = len(cache.hits)
    directions = cache.get("directions", parts, compute, save=lambda d, path: d.save(path), load=Directions.load)
    return directions, any(hit.startswith("directions/") for hit in cache.hits[seen:])


def uint8_images(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (..., C, H, W) as uint8 (..., C, H, W), rounded as the PNGs are."""
    pixels = torch.from_numpy(to_uint8(images.flatten(0, -4))).permute(0, 3, 1, 2)
    return pixels.reshape(images.shape).contiguous()


def save_edits(path: Path, images: torch.Tensor, strengths: Sequence[float], ids: Sequence[int], names: Sequence[str], id_kind: str) -> Path:
    """images (D, N, S, C, H, W) in [-1, 1] as uint8, with the strengths and the seeds (or image indices)."""
    pixels = uint8_images(images)
    tensors = {"images": pixels, "strengths": torch.tensor(list(strengths), dtype=torch.float32), id_kind: torch.tensor(list(ids))}
    data = save(tensors, metadata={"directions": ",".join(names), "layout": "direction,sample,strength,channel,height,width"})
    return atomic_write_bytes(path, lambda f: f.write(data))


@dataclass
class ReferenceImages:
    """The data FID compares against: `count` images in batches, and what identifies them for the cache."""

    dataset_id: dict
    count: int
    batches: Callable[[], Iterable[torch.Tensor]]


def strength_table(metrics: dict, names: Sequence[str], strengths: Sequence[float], prefix: str = "edit/") -> tuple[list[str], list[list]]:
    """One row per (direction, strength): target, success, preserve, MSE, SSIM and FID where measured."""
    fid_keys = sorted({k.split("/", 2)[2].split("@")[0] for k in metrics if k.startswith(prefix) and "/fid/" in k and "@" in k})
    columns = ["direction", "strength", "target", "success", "preserve", "mse", "ssim", *fid_keys]
    rows = []
    for name in names:
        for strength in strengths:
            label = strength_label(strength)
            row = [name, strength, metrics.get(f"{prefix}{name}/target")]
            row += [metrics.get(f"{prefix}{name}/{metric}@{label}") for metric in ("success", "preserve", "mse", "ssim", *fid_keys)]
            rows.append(row)
    return columns, rows


def rename(key: str, prefix: str) -> str:
    """An evaluation key under `prefix`: edit/<rest> -> <prefix><rest>; the unedited samples' own keys (their FID)
    stay as they are for generated samples and go under <prefix>unedited/ for others."""
    if prefix == "edit/":
        return key
    return prefix + key.removeprefix("edit/") if key.startswith("edit/") else f"{prefix}unedited/{key}"


def unedited_samples(edit, model, schedule, directions, x_T, z, clip_x0) -> torch.Tensor:
    """What the edits of x_T depart from: the edit's own unedited path where it has one (boundary_step: DDIM
    to t_m, then the sampler's eta), else plain sampling."""
    if hasattr(edit, "unedited"):
        return edit.unedited(model, schedule, directions, 0, x_T, z, clip_x0).cpu()
    return sample(model, schedule, x_T, z, clip_x0=clip_x0).x0.cpu()


def score_edits(evaluation: EvaluationSettings, originals: torch.Tensor, edited: torch.Tensor, names, strengths, trainer_kwargs, prefix: str = "edit/") -> tuple[dict, dict]:
    """Metrics and W&B tables of edits (D, N, S, C, H, W) against their unedited samples (N, C, H, W); keys
    start with `prefix` (edit/ for generated samples, edit_real/ for inverted real images)."""
    evaluated = evaluate_edits(evaluation, uint8_images(originals), uint8_images(edited), names, strengths, trainer_kwargs)
    results = {rename(k, prefix): v for k, v in evaluated.results.items()}
    tables = {}
    if evaluation.classifier is not None:
        tables[prefix + "score_matrix"] = evaluated.score_matrix()
        tables[prefix + "by_strength"] = strength_table(results, names, strengths, prefix)
    return results, tables


def invert_for(edit, model, schedule, images) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x_T and noise maps z from which `edit`'s unedited path gives back `images` (N, C, H, W).

    Deterministic grids: DDIM inversion. Stochastic grids: edit-friendly inversion (its z reproduce the image
    exactly), except for an edit with its own path (boundary_step walks DDIM to t_m): DDIM inversion, so
    that path meets the inverted x_{t_m}, and fresh noise maps for the steps after it (the paper's
    conditional mode)."""
    if schedule.is_deterministic or hasattr(edit, "unedited"):
        x_T = ddim_invert(model, schedule, images, record_h=False).x_T
        z = None if schedule.is_deterministic else noise_for(range(len(images)), model, schedule)[1]
        return x_T, z
    inverted = edit_friendly_invert(model, schedule, images, seeds=range(len(images)), record_h=False)
    return inverted.x_T, inverted.z


def edit_all(edit: ShiftEdit, model, schedule, directions, count, x_T, z, clip_x0) -> torch.Tensor:
    """(D, N, S, C, H, W) edits of the first `count` directions."""
    return torch.stack([edit.apply(model, schedule, directions, j, x_T, z, clip_x0) for j in range(count)])


def run_edit_job(
    model: DiffusionModel,
    method: DirectionFinder,
    edit: ShiftEdit,
    sampler: SamplerSettings,
    seeds: Sequence[int],
    run_dir: str | Path,
    num_directions: int,
    cache: ArtifactCache | None = None,
    real_images: torch.Tensor | None = None,
    directions_path: str | Path | None = None,
    loggers: Sequence = (),
    evaluation: EvaluationSettings | None = None,
    reference: ReferenceImages | None = None,
    trainer_kwargs: dict | None = None,
) -> dict:
    """Run the job and return its metrics. Writes into run_dir: directions.safetensors, edits.safetensors
    (and edits_real.safetensors), grids/<direction>.png (and grids/real_<direction>.png), metrics.json.

    With `evaluation`, the edits of generated samples are scored in a Lightning test loop
    (hspace.metrics.evaluation) with `trainer_kwargs`; FID compares against `reference` images."""
    if real_images is not None and len(real_images) and sampler.clip_x0:
        raise UserError("real images are inverted without clipping, so they cannot be edited with sampler.clip_x0=true: set it to false or real_images=0")
    run_dir = Path(run_dir)
    timer = Timer()
    schedule = sampler.schedule(model.alphas_cumprod)
    with timer.stage("directions"):
        if directions_path is not None:
            directions = Directions.load(directions_path)
            source = str(directions_path)
        else:
            directions, cached = find_directions(method, model, sampler, cache)
            source = "the cache" if cached else "this run"
        directions.check_compatible(model.weight_hash, model.h_shape, schedule.timesteps, source=f"directions from {source}")
        directions_file = directions.save(run_dir / "directions.safetensors")
    count = min(num_directions, len(directions.names))
    names = directions.names[:count]
    metrics: dict = {"method": directions.method, "edit/num_samples": len(seeds), "edit/num_directions": count}
    # Stage times the method recorded belong to the run that computed the directions: not repeated from a file.
    recorded = ("boundary/", "mixing/t_mix") + (("time/",) if source == "this run" else ())
    metrics |= {k: v for k, v in directions.info.items() if k.startswith(recorded) and isinstance(v, (int, float))}
    for j, name in enumerate(names):
        ratio = directions.info.get("explained_variance_ratio")
        if ratio:
            metrics[f"directions/{name}/explained_variance_ratio"] = float(torch.tensor(ratio[j]).mean())

    with timer.stage("edit"):
        x_T, z = noise_for(seeds, model, schedule)
        edited = edit_all(edit, model, schedule, directions, count, x_T, z, sampler.clip_x0)
    outputs = {"edits": save_edits(run_dir / "edits.safetensors", edited, edit.strengths, seeds, names, "seeds")}

    tables = {}
    if evaluation is not None:
        if evaluation.fid_backend is not None:
            if reference is None:
                raise UserError("FID asked for without reference images: configure metrics.fid.reference_* or metrics.fid.backend=none")
            with timer.stage("fid_reference"):
                evaluation.reference = cached_reference_statistics(evaluation.fid_backend, reference.dataset_id, reference.count, reference.batches, cache, model.device)
        with timer.stage("evaluate"):
            originals = unedited_samples(edit, model, schedule, directions, x_T, z, sampler.clip_x0)
            scores, score_tables = score_edits(evaluation, originals, edited, names, edit.strengths, trainer_kwargs)
        metrics |= scores
        tables |= score_tables

    if real_images is not None and len(real_images):
        with timer.stage("invert"):
            real_x_T, real_z = invert_for(edit, model, schedule, real_images)
            reconstruction = unedited_samples(edit, model, schedule, directions, real_x_T, real_z, sampler.clip_x0)
            metrics["inversion/mse"] = float((((reconstruction - real_images) / 2) ** 2).mean())
        with timer.stage("edit_real"):
            edited_real = edit_all(edit, model, schedule, directions, count, real_x_T, real_z, sampler.clip_x0)
        if evaluation is not None:
            with timer.stage("evaluate_real"):
                scores, score_tables = score_edits(evaluation, reconstruction, edited_real, names, edit.strengths, trainer_kwargs, prefix="edit_real/")
            metrics |= scores
            tables |= score_tables
        outputs["edits_real"] = save_edits(run_dir / "edits_real.safetensors", edited_real, edit.strengths, range(len(real_images)), names, "indices")

    with timer.stage("write"):
        grids = {}
        if "mixing/candidates" in directions.info:
            grids["mixing_curve"] = plot_mixing_curve(directions.info, run_dir / "grids" / "mixing_curve.png")
        for j, name in enumerate(names):
            pixels = to_uint8(edited[j].flatten(0, 1)).reshape(len(seeds), len(edit.strengths), *edited.shape[-2:], 3)
            grids[name] = save_edit_grid(pixels, edit.strengths, f"{directions.method} {name} (strength in units of its scale)", run_dir / "grids" / f"{name}.png", row_labels=list(seeds))
            if real_images is not None and len(real_images):
                pixels = to_uint8(edited_real[j].flatten(0, 1)).reshape(len(real_images), len(edit.strengths), *edited.shape[-2:], 3)
                grids[f"real_{name}"] = save_edit_grid(pixels, edit.strengths, f"{directions.method} {name} on inverted real images", run_dir / "grids" / f"real_{name}.png")
    metrics |= timer.metrics
    if cache is not None:
        metrics |= {"cache/hits": len(cache.hits), "cache/misses": len(cache.misses)}
    write_json(run_dir / "metrics.json", metrics)
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(numeric, step=0)
        if hasattr(logger, "log_image"):  # W&B: all grids under one key, captioned with their direction
            logger.log_image(key="grids", images=[str(p) for p in grids.values()], caption=list(grids))
        if hasattr(logger, "log_table"):
            for key, (columns, rows) in tables.items():
                logger.log_table(key=key, columns=columns, data=rows)
        logger.save()
    print(f"run directory: {run_dir}\n  directions: {directions_file}\n  edits: {', '.join(str(p) for p in outputs.values())}\n  grids: {run_dir / 'grids'}\n  metrics: {run_dir / 'metrics.json'}")
    return metrics
