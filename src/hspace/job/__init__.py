"""One editing run as stages that pass result objects (docs/design.md, "A run"):

    find  (hspace.job.find)     the directions: a file, the cache or the method   -> FoundDirections
    edit  (hspace.job.edit)     generated samples (and inverted real images) edited -> EditedSet
    score (hspace.job.score)    the edits against what they depart from            -> Scores
    write (hspace.job.outputs)  edits, grids, the method's plots, metrics.json, the loggers

Plain arguments only: hspace.cli.run builds an EditJob from the config (and the FID reference with it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pytorch_lightning.loggers import Logger

from hspace.cache import ArtifactCache
from hspace.checks import note
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.method import DirectionMethod
from hspace.edits.strategy import EditStrategy
from hspace.errors import UserError
from hspace.job.disentangle import FactorImages, disentangle_stage
from hspace.job.edit import edit_generated, edit_real, invert_real, unedited
from hspace.job.find import find_stage
from hspace.job.outputs import StageTimer, factor_summary, log_run, write_grids, write_metrics
from hspace.job.score import Scores, score_stage, with_generated_targets
from hspace.metrics.evaluation import EvaluationSettings
from hspace.metrics.keys import REAL_PREFIX, direction_values


@dataclass
class EditJob:
    """Everything one run needs, already built."""

    model: DiffusionModel
    method: DirectionMethod
    edit: EditStrategy
    sampler: SamplerSettings
    seeds: Sequence[int]
    run_dir: Path
    num_directions: int
    cache: ArtifactCache | None = None
    real_images: torch.Tensor | None = None  # (N, C, H, W) in [-1, 1] to invert and edit
    directions_path: Path | None = None  # directions to use instead of running the method
    evaluation: EvaluationSettings | None = None  # with its FID reference statistics, when FID is asked for
    evaluation_trainer: dict | None = None  # Trainer arguments of the evaluation loop
    timer: StageTimer = field(default_factory=StageTimer)  # stages timed before the job (the FID reference) count too
    factor_images: FactorImages | None = None  # images with known factors: DCI and MIG of the directions
    collection_processes: int = 1  # >1: a collecting method splits its samples across this many processes
    collection_gpus: tuple[int, ...] = ()  # the GPUs those processes use, where trainer.devices lists them

    def __post_init__(self):
        check_real_images(0 if self.real_images is None else len(self.real_images), self.sampler.clip_x0)
        self.run_dir = Path(self.run_dir)


@dataclass
class JobResult:
    """What a finished run measured and where it wrote it."""

    metrics: dict
    files: dict[str, Path]  # directions, edits (and edits_real), grids, metrics
    names: list[str]  # the edited directions

    def summary(self) -> list[str]:
        """Where everything went, then one line per direction on the factor it edits (when Shapes factors
        were scored): what hspace-run prints."""
        edits = ", ".join(str(self.files[key]) for key in ("edits", "edits_real") if key in self.files)
        where = [
            f"run directory: {self.files['run_dir']}",
            f"  directions: {self.files['directions']}",
            f"  edits: {edits}",
            f"  grids: {self.files['grids']}",
            f"  metrics: {self.files['metrics']}",
        ]
        return where + factor_summary(self.metrics, self.names)


def check_real_images(count: int, clip_x0: bool) -> None:
    """Real images are inverted, which clipping x0 would break."""
    if count and clip_x0:
        raise UserError(
            "real images are inverted without clipping, so they cannot be edited with sampler.clip_x0=true: set "
            "it to false or real_images=0"
        )


def note_unused_targets(evaluation: EvaluationSettings, names: Sequence[str]) -> None:
    """A target set for a direction this run does not edit (a misspelt name, or a direction of an experiment's
    set that this run leaves out) is not used, and that direction, if edited, gets a guessed target: said in a
    note before any edit is drawn."""
    for group, targets in (("targets", evaluation.targets), ("factor_targets", evaluation.factor_targets)):
        unused = [name for name in targets if name not in names]
        if unused:
            note(
                f"metrics.{group} names {', '.join(unused)}, which this run does not edit ({', '.join(names)}): "
                "those targets are not used"
            )


@contextmanager
def writing(run_dir: Path) -> Iterator[None]:
    """Writing a run's outputs: a full or read-only disk is one line, as it is for the cache."""
    try:
        yield
    except OSError as error:
        raise UserError(
            f"cannot write the run's outputs in {run_dir} ({error.strerror or type(error).__name__}): free space, or "
            "choose another run_dir"
        ) from None


def run_edit_job(job: EditJob, loggers: Sequence[Logger] = ()) -> JobResult:
    """Run the stages and return the metrics with the files written (printing nothing). Writes into run_dir:
    directions.safetensors, edits.safetensors (and edits_real.safetensors), grids/<direction>.png (and
    grids/real_<direction>.png, the method's plots), metrics.json, all after every stage has succeeded (a
    failing run writes none of them)."""
    timer, model, edit, clip_x0 = job.timer, job.model, job.edit, job.sampler.clip_x0
    schedule = job.sampler.schedule(model.alphas_cumprod)
    with timer.stage("directions") as stage:
        found = find_stage(
            job.method,
            model,
            job.sampler,
            job.num_directions,
            job.cache,
            job.directions_path,
            job.collection_processes,
            job.collection_gpus,
        )
        origin = "found in this run" if found.computed_here else f"from {found.source}"
        stage.detail = f"{found.directions.method}, {len(found.directions.names)} directions {origin}"
    directions, names, count = found.directions, found.names, len(found.names)
    if job.evaluation is not None:
        note_unused_targets(job.evaluation, names)
    steps, strengths = schedule.num_steps, len(edit.strengths)
    metrics: dict = {
        "method": directions.method,
        "edit/num_samples": len(job.seeds),
        "edit/num_directions": count,
    } | found.metrics

    with timer.stage("edit", f"{len(job.seeds)} samples x {strengths} strengths x {count} directions x {steps} steps"):
        generated = edit_generated(edit, model, schedule, directions, count, job.seeds, clip_x0)

    scores = Scores()
    if job.evaluation is not None:
        with timer.stage("evaluate", f"{len(job.seeds)} samples and their {count * strengths} edits each"):
            originals = unedited(edit, model, schedule, directions, generated, clip_x0)
            scores |= score_stage(
                job.evaluation, originals, generated.edited, names, edit.strengths, job.evaluation_trainer
            )

    if job.factor_images is not None and not bool(directions.vectors[:count].any()):
        note(f"method={directions.method}'s directions edit no h (their vectors are zero): not scoring them as codes")
    elif job.factor_images is not None:
        with timer.stage("disentangle", f"{len(job.factor_images.images)} inverted images, {count} codes"):
            metrics |= disentangle_stage(model, schedule, directions, count, job.factor_images, cache=job.cache)

    real = None
    if job.real_images is not None and len(job.real_images):
        with timer.stage("invert", f"{len(job.real_images)} real images x {steps} steps"):
            inverted, reconstruction = invert_real(edit, model, schedule, directions, count, job.real_images, clip_x0)
            metrics["inversion/mse"] = float((((reconstruction - job.real_images) / 2) ** 2).mean())
        with timer.stage("edit_real", f"{len(job.real_images)} images x {strengths} strengths x {count} directions"):
            real = edit_real(edit, model, schedule, directions, count, inverted, clip_x0)
        if job.evaluation is not None:
            with timer.stage("evaluate_real", f"{len(job.real_images)} images"):
                scores |= score_stage(
                    with_generated_targets(job.evaluation, scores.metrics, names),
                    reconstruction,
                    real.edited,
                    names,
                    edit.strengths,
                    job.evaluation_trainer,
                    prefix=REAL_PREFIX,
                )

    with timer.stage("write", f"directions, edits and {count} grids in {job.run_dir}"), writing(job.run_dir):
        directions_file = directions.save(job.run_dir / "directions.safetensors")
        outputs = {"edits": generated.save(job.run_dir / "edits.safetensors", edit.strengths, names)}
        if real is not None:
            outputs["edits_real"] = real.save(job.run_dir / "edits_real.safetensors", edit.strengths, names)
        targets = direction_values(scores.metrics, "factors/target", names)
        grids = write_grids(job.run_dir, directions, names, edit.strengths, generated, real, targets)
    metrics |= scores.metrics | timer.metrics
    if job.cache is not None:
        metrics |= {"cache/hits": len(job.cache.hits), "cache/misses": len(job.cache.misses)}
    with writing(job.run_dir):
        metrics_file = write_metrics(job.run_dir, metrics)
    log_run(loggers, metrics, grids, scores, names, edit.strengths)
    files = {"run_dir": job.run_dir, "directions": directions_file, **outputs, "grids": job.run_dir / "grids"}
    return JobResult(metrics, files | {"metrics": metrics_file}, list(names))
