"""hspace-run: the main job (conf/run.yaml). Find directions, edit samples, write and log the results.

The settings are checked first, before the libraries a run needs are imported (`check_settings`: a bad one
is refused in about a second), then every object is built before any model runs (`compose_job`): a bad setting
ends in one line and leaves nothing behind. A run that fails later leaves only run_info.json, marked failed with
the reason; its outputs are written when every stage has succeeded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from hspace.cli import (
    as_list,
    build,
    console,
    flat_config,
    make_loggers,
    make_main,
    note_grid_start,
    record_config,
    require_complete,
    resolve_device,
    sampler_settings,
    user_errors_exit,
)

OUTPUTS = ("directions.safetensors", "edits.safetensors", "edits_real.safetensors", "metrics.json", "config.yaml")
# Where the loggers of conf/logger keep a run's records in its run_dir: W&B's offline run (which `wandb sync` of
# run_dir/wandb/offline-run-* would upload beside the new one) and the CSV logger's versions.
LOGGER_FOLDERS = ("wandb", "logs")


@dataclass
class ComposedRun:
    """Everything of a run that can be built and checked without running a model."""

    method: object  # DirectionMethod
    edit: object  # EditStrategy
    evaluation: object | None  # EvaluationSettings
    real_images: object | None  # (N, C, H, W) tensor
    factor_images: object | None  # FactorImages


@user_errors_exit
def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    check_settings(cfg)
    console(cfg)
    if cfg.get("skip_done") and completed(run_dir):
        from hspace.checks import note

        if made_with(run_dir, cfg):
            note(f"{run_dir} already holds a completed run (skip_done=true): not running it again")
            return json.loads((run_dir / "metrics.json").read_text())
        note(f"{run_dir} holds a completed run of other settings: running it again (skip_done=true)")
    return execute(cfg, compose_job(cfg), run_dir)


def check_settings(cfg: DictConfig) -> None:
    """The settings that the config alone decides, checked before Lightning or the data are imported."""
    from hspace.cli.validate import (
        check_loggers,
        check_metrics,
        check_model,
        check_run,
        check_sampler,
        overrides_of_this_run,
        warn_unread_overrides,
    )
    from hspace.errors import UserError

    warn_unread_overrides(overrides_of_this_run(), cfg)
    require_complete(cfg)
    check_model(cfg.model)  # first: the weights are named before torch is imported
    check_run(cfg)
    check_sampler(cfg.sampler)
    check_metrics(cfg.metrics)
    check_loggers(cfg.logger)
    if cfg.directions_path is not None and not Path(cfg.directions_path).is_file():
        raise UserError(
            f"no directions file at directions_path={cfg.directions_path}: fix the path or leave it null to run the "
            "method"
        )


def compose_job(cfg: DictConfig) -> ComposedRun:
    """Build the method, edit, evaluation settings and image sets, checking what needs them built (no model
    runs); the settings themselves are checked by `check_settings` first."""
    from hspace.cache import ArtifactCache
    from hspace.directions.container import Directions
    from hspace.directions.method import DirectionMethod
    from hspace.edits.strategy import EditStrategy, check_pairing, check_strength_labels, check_strengths
    from hspace.errors import UserError

    # the method and edit first: their settings are refused before the evaluation's libraries (Lightning) load
    method = build(cfg.method)
    edit = build(cfg.edit)
    if not isinstance(method, DirectionMethod):
        raise UserError(
            f"method={cfg.method.get('_target_')} is not a DirectionMethod: subclass "
            "hspace.directions.method.DirectionMethod"
        )
    if not isinstance(edit, EditStrategy):
        raise UserError(
            f"edit={cfg.edit.get('_target_')} is not an EditStrategy: subclass hspace.edits.strategy.EditStrategy"
        )
    check_extension(method, "method", cfg.method.get("_target_"))
    check_extension(edit, "edit", cfg.edit.get("_target_"))
    check_strengths(getattr(edit, "strengths", None))  # an edit of one's own is checked as the built-in ones are
    check_strength_labels(edit.strengths)
    if cfg.directions_path is not None:
        given = Directions.load(cfg.directions_path)
        check_pairing(edit, given.extra, f"the directions file {cfg.directions_path}", given.finds_h)
    else:
        check_pairing(edit, method.provides, f"method={method.name}", method.finds_h)

    ArtifactCache(cfg.cache_dir).check_writable()

    import torch

    from hspace.cli.metrics import evaluation_settings
    from hspace.cli.validate import check_evaluation_devices, disentanglement_count, note_small_fid_sets
    from hspace.data.batch import image_batch
    from hspace.job import check_real_images
    from hspace.job.disentangle import shapes_factor_images

    known_count = disentanglement_count(cfg.metrics)
    check_known_factors(cfg.data, known_count)
    files = as_list(cfg.get("real_image_files"))  # edited instead of the test split's first images
    missing = [f for f in files if not Path(f).expanduser().is_file()]
    if missing:
        raise UserError(f"no image at {missing[0]} (real_image_files): fix the path or remove it from the list")
    real_count = len(files) or cfg.real_images
    fid = cfg.metrics.get("fid")
    fid_reference = None if fid is None or fid.backend == "none" else (fid.reference_split, fid.reference_count)
    test_split = None
    if real_count or known_count or fid_reference:
        datasets = build(cfg.data).datasets
        test_split = datasets["test"]
        counts = [
            ("real_images", "test", 0 if files else cfg.real_images),
            ("metrics.disentanglement.num_images", "test", known_count),
        ]
        if fid_reference:
            counts.append(("metrics.fid.reference_count", *fid_reference))
        for setting, split, count in counts:
            if count > len(datasets[split]):
                raise UserError(
                    f"{setting}={count} but the {split} split of data has {len(datasets[split])} images: give at "
                    f"most {len(datasets[split])}"
                )
    check_real_images(real_count, cfg.sampler.clip_x0)
    note_small_fid_sets(cfg.metrics, {"num_samples": cfg.num_samples, "real_images": real_count})
    evaluation = evaluation_settings(cfg.metrics, run_device(cfg.trainer))
    note_unscored_targets(cfg.metrics, evaluation)
    if evaluation is not None and evaluation.uses_loop:
        check_evaluation_devices(
            cfg.trainer, {"num_samples": cfg.num_samples, ("real_image_files" if files else "real_images"): real_count}
        )
    if files:  # at the data's resolution, like the test split's images
        from hspace.data.image_files import load_image

        size = test_split[0]["image"].shape[-1]
        real = torch.stack([load_image(Path(f).expanduser(), size) for f in files])
    else:
        real = image_batch(test_split, range(cfg.real_images)) if cfg.real_images else None
    known = shapes_factor_images(test_split, known_count, cfg.metrics.disentanglement.bins) if known_count else None
    return ComposedRun(method, edit, evaluation, real, known)


def check_extension(piece, group: str, target: str) -> None:
    """What the run reads of a method or an edit beyond its type, checked before any work: a config name (the
    class's `name`), and for a method settings the cache can key by (a dataclass, or an own `identity()`)."""
    import dataclasses

    from hspace.directions.method import DirectionMethod
    from hspace.errors import UserError

    cls = type(piece)
    if not isinstance(getattr(cls, "name", None), str):
        raise UserError(f"{group}={target} has no name: give {cls.__name__} a class attribute name = '<config name>'")
    if isinstance(piece, DirectionMethod) and not dataclasses.is_dataclass(piece):
        if cls.identity is DirectionMethod.identity:
            raise UserError(
                f"{group}={target} is not a dataclass, so the cache cannot key its directions by its settings: "
                f"decorate {cls.__name__} with @dataclass, or override identity()"
            )


def check_data_resolution(cfg: DictConfig, composed: ComposedRun, image_shape: tuple[int, ...]) -> None:
    """Refuse, once the model is known, a run that reads the data's images at another size than the model's
    (real images to invert, test images to score as codes, FID's reference, a method's labelled images)."""
    from hspace.errors import UserError

    readers = [
        name
        for name, reads in (
            ("real_image_files" if cfg.get("real_image_files") else "real_images", composed.real_images is not None),
            ("metrics.disentanglement", composed.factor_images is not None),
            ("metrics.fid", composed.evaluation is not None and composed.evaluation.fid_backend is not None),
            ("method.data", cfg.method.get("data") is not None),
        )
        if reads
    ]
    size, resolution = tuple(image_shape[-2:]), cfg.data.get("resolution")
    if readers and resolution is not None and (resolution,) * 2 != size:
        raise UserError(
            f"data.resolution={resolution} but the model draws {size[0]}x{size[1]} images, and "
            f"{', '.join(readers)} read the data: set data.resolution={size[0]}, or turn {' and '.join(readers)} off"
        )


def execute(cfg: DictConfig, composed: ComposedRun, run_dir: Path) -> dict:
    """Load the model and refuse what does not fit it, then run the job's stages and record the run (or mark it
    failed)."""
    from hspace.cache import ArtifactCache
    from hspace.cli.metrics import fid_reference
    from hspace.diffusion.loading import load_configured_model
    from hspace.directions.container import Directions
    from hspace.job import EditJob, run_edit_job
    from hspace.job.outputs import StageTimer
    from hspace.loggers import close_wandb
    from hspace.run_record import run_info, write_json

    # What needs the model to be checked is checked before the run starts: damaged weights, an edit window off
    # the model's grid, a directions file of another model or grid, a region that does not fit its images.
    device = run_device(cfg.trainer)
    model = load_configured_model(OmegaConf.to_container(cfg.model, resolve=True), device=device)
    model.autocast = cfg.precision
    sampler = sampler_settings(cfg.sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    note_grid_start(sampler, model.alphas_cumprod)
    composed.edit.check_schedule(schedule)
    if cfg.directions_path is None:
        composed.method.check_model(model)
    else:
        loaded = Directions.load(cfg.directions_path)
        loaded.check_fits(model, schedule.timesteps)
    evaluation = composed.evaluation
    check_data_resolution(cfg, composed, model.image_shape)
    if evaluation is not None:
        evaluation.locality.fixed_mask(model.image_shape)
    # A run directory used before holds only this run's files from here on: a killed run leaves status running.
    keep = None if cfg.directions_path is None else Path(cfg.directions_path).expanduser()
    clear_outputs(run_dir, keep)
    write_json(run_dir / "run_info.json", run_info() | {"status": "running"})
    failed = False
    try:
        loggers = make_loggers(cfg, "run")  # a logger that cannot start fails the run with its record, like any stage
        for logger in loggers:
            logger.log_hyperparams(flat_config(cfg))
        cache = ArtifactCache(cfg.cache_dir)
        timer = StageTimer()
        if evaluation is not None and evaluation.fid_backend is not None:
            count, split = cfg.metrics.fid.reference_count, cfg.metrics.fid.reference_split
            with timer.stage("fid_reference", f"statistics of {count} {split} images"):
                evaluation.reference = fid_reference(
                    evaluation,
                    cfg.data,
                    cfg.metrics.fid.reference_split,
                    cfg.metrics.fid.reference_count,
                    cache,
                    device,
                )
        job = EditJob(
            model=model,
            method=composed.method,
            edit=composed.edit,
            sampler=sampler,
            seeds=list(range(cfg.first_seed, cfg.first_seed + cfg.num_samples)),
            run_dir=run_dir,
            num_directions=cfg.num_directions,
            cache=cache,
            real_images=composed.real_images,
            directions_path=cfg.directions_path,
            evaluation=evaluation,
            evaluation_trainer=evaluation_trainer(cfg.trainer),
            timer=timer,
            factor_images=composed.factor_images,
            collection_processes=collection_processes(cfg.trainer),
            collection_gpus=listed_gpus(cfg.trainer),
        )
        result = run_edit_job(job, loggers)
        print("\n".join(result.summary()))
        record_config(cfg, run_dir)
        write_json(run_dir / "run_info.json", run_info() | {"status": "completed"})
        return result.metrics
    except BaseException as error:
        failed = True
        mark_failed(run_dir, error, keep)
        raise
    finally:
        close_wandb(failed)


def completed(run_dir: Path) -> bool:
    """Whether run_dir holds a run that finished (metrics.json, and run_info.json with status completed)."""
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("status") == "completed" and (run_dir / "metrics.json").is_file()


def clear_outputs(run_dir: Path, keep: Path | None = None) -> None:
    """Remove what a run writes from `run_dir` (creating it if needed), its loggers' records included, except
    `keep` (the directions file this run reads, which may be an earlier run's output in the same directory), and
    the temporary files a killed writer of those outputs left (hspace.files.atomic_write_bytes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    kept = None if keep is None else keep.resolve()
    for name in (*OUTPUTS, "overrides.yaml"):
        if (run_dir / name).resolve() != kept:
            (run_dir / name).unlink(missing_ok=True)
    for name in (*OUTPUTS, "overrides.yaml", "run_info.json"):
        for stale in run_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    for folder in ("grids", *LOGGER_FOLDERS):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def made_with(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether the run recorded in run_dir/config.yaml had `cfg`'s settings, apart from PRESENTATION_SETTINGS."""
    from hspace.run_record import PRESENTATION_SETTINGS
    from hspace.tables.build import flat_settings

    try:
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    except (OSError, ValueError):
        return False

    def relevant(config: dict) -> dict[str, str]:
        shown = [(name, f"{name}.") for name in PRESENTATION_SETTINGS]
        return {k: v for k, v in flat_settings(config).items() if not any(k == a or k.startswith(b) for a, b in shown)}

    return isinstance(saved, dict) and relevant(saved) == relevant(OmegaConf.to_container(cfg, resolve=True))


def mark_failed(run_dir: Path, error: BaseException, keep: Path | None = None) -> None:
    """Remove a failed run's outputs (but `keep`) and record why it failed in run_info.json (where the disk lets it:
    the error that failed the run is what is reported)."""
    from hspace.cli import user_error_in
    from hspace.run_record import run_info, write_json

    cause = user_error_in(error) if isinstance(error, Exception) else None
    reason = str(cause or error).strip().splitlines()[0] if str(cause or error).strip() else type(error).__name__
    try:
        clear_outputs(run_dir, keep)
        write_json(run_dir / "run_info.json", run_info() | {"status": "failed", "reason": reason})
    except OSError:  # a full or read-only disk: the record says running, which hspace-table skips and skip_done reruns
        pass


def note_unscored_targets(metrics: DictConfig, evaluation) -> None:
    """Targets that nothing in this run scores (metrics.targets without a classifier, metrics.factor_targets
    without factor scores, either with metrics=none) are said to be unused in a note, before any work."""
    from hspace.checks import note

    scorers = {
        "targets": evaluation is not None and evaluation.classifier is not None,
        "factor_targets": evaluation is not None and evaluation.factors,
    }
    for group, scored in scorers.items():
        if metrics.get(group) and not scored:
            scorer = "metrics.classifier" if group == "targets" else "metrics.factors"
            note(f"metrics.{group} are not used: this run has no {scorer} to score them (metrics=shapes has both)")


def check_known_factors(data: DictConfig, count: int) -> None:
    """Scoring directions by DCI and MIG on `count` rendered images needs data whose factors are known (a
    ShapesDataModule, by its class): refused in one line for other data, before the data is read."""
    from hydra.utils import get_class

    from hspace.data.datamodule import ShapesDataModule
    from hspace.errors import UserError

    if count and not issubclass(get_class(data._target_), ShapesDataModule):
        raise UserError(
            f"metrics.disentanglement.num_images={count} needs images with known factors (data=shapes): "
            "set it to 0 for this data"
        )


def listed_gpus(trainer: DictConfig) -> tuple[int, ...]:
    """The GPU indices trainer.devices lists ([2, 3] or "2,3"), or () where it gives a count."""
    from hspace.cli.validate import lightning_devices

    devices = lightning_devices(trainer.get("devices", 1))
    return tuple(int(d) for d in devices) if isinstance(devices, (list, ListConfig)) else ()


def run_device(trainer: DictConfig):
    """Where the run's model and classifier compute: the accelerator's device (resolve_device), and on a GPU the
    first one trainer.devices lists, where it lists them (the evaluation loop and the collection's processes
    use the listed GPUs too)."""
    import torch

    device = resolve_device(trainer.accelerator)
    gpus = listed_gpus(trainer)
    return torch.device("cuda", gpus[0]) if device.type == "cuda" and gpus else device


def collection_processes(trainer: DictConfig) -> int:
    """How many processes share a method's collection over samples: one per device under a `ddp` strategy
    (devices -1: every visible GPU), else one."""
    import torch

    if not str(trainer.get("strategy") or "").startswith("ddp"):
        return 1
    devices = trainer.get("devices", 1)
    if devices == -1 or devices == "auto":
        return max(1, torch.cuda.device_count()) if str(trainer.accelerator) in ("gpu", "cuda", "auto") else 1
    if isinstance(devices, int):
        return max(1, devices)
    return max(1, len(devices))  # a list of device indices


def evaluation_trainer(trainer: DictConfig) -> dict:
    """Trainer arguments of the evaluation loop. Only that loop is distributed in hspace-run, over edits
    already in memory, so a `ddp` strategy runs it as `ddp_spawn` (workers receive the edits) instead of
    re-launching the whole job per rank."""
    settings = OmegaConf.to_container(trainer, resolve=True)  # devices may be a list: a plain one
    options = {"accelerator": settings["accelerator"], "devices": settings["devices"]}
    strategy = settings.get("strategy")
    if strategy:
        options["strategy"] = "ddp_spawn" if strategy == "ddp" else strategy
    return options


main = make_main("run", run)


if __name__ == "__main__":
    main()
