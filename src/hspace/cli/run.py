"""hspace-run: the main job (conf/run.yaml). Find directions, edit samples, write and log the results."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hspace.cli import CONFIG_DIR, require_complete, resolve_device, sampler_settings, user_errors_exit


@user_errors_exit
def run(cfg: DictConfig) -> dict:
    from hspace.errors import UserError

    require_complete(cfg)

    if cfg.directions_path is not None and not Path(cfg.directions_path).is_file():
        raise UserError(
            f"no directions file at directions_path={cfg.directions_path}: fix the path or leave it null to run the "
            "method"
        )

    import torch

    from hspace.cache import ArtifactCache
    from hspace.cli.metrics import evaluation_settings, fid_reference
    from hspace.diffusion.loading import load_configured_model
    from hspace.directions.container import Directions
    from hspace.directions.method import DirectionMethod
    from hspace.edits.strategy import EditStrategy, check_pairing
    from hspace.job import EditJob, run_edit_job
    from hspace.job.disentangle import shapes_factor_images
    from hspace.job.outputs import StageTimer
    from hspace.loggers import close_wandb
    from hspace.run_record import run_info, write_json

    method = hydra.utils.instantiate(cfg.method, _convert_="all")
    edit = hydra.utils.instantiate(cfg.edit, _convert_="all")
    if not isinstance(method, DirectionMethod):
        raise UserError(
            f"method={cfg.method.get('_target_')} is not a DirectionMethod: subclass "
            "hspace.directions.method.DirectionMethod"
        )
    if not isinstance(edit, EditStrategy):
        raise UserError(
            f"edit={cfg.edit.get('_target_')} is not an EditStrategy: subclass hspace.edits.strategy.EditStrategy"
        )
    if cfg.directions_path is not None:
        check_pairing(edit, Directions.load(cfg.directions_path).extra, f"the directions file {cfg.directions_path}")
    else:
        check_pairing(edit, method.provides, f"method={method.name}")

    known_count = disentanglement_count(cfg)

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "run_info.json", run_info())
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        device = resolve_device(cfg.trainer.accelerator)
        model = load_configured_model(OmegaConf.to_container(cfg.model, resolve=True), device=device)
        model.autocast = cfg.precision
        cache = ArtifactCache(cfg.cache_dir)
        timer = StageTimer()
        evaluation = evaluation_settings(cfg.metrics, device)
        if evaluation is not None and evaluation.fid_backend is not None:
            with timer.stage("fid_reference"):
                evaluation.reference = fid_reference(
                    evaluation,
                    cfg.data,
                    cfg.metrics.fid.reference_split,
                    cfg.metrics.fid.reference_count,
                    cache,
                    device,
                )
        test_split = hydra.utils.instantiate(cfg.data).datasets["test"] if cfg.real_images or known_count else None
        real = torch.stack([test_split[i]["image"] for i in range(cfg.real_images)]) if cfg.real_images else None
        known = shapes_factor_images(test_split, known_count, cfg.metrics.disentanglement.bins) if known_count else None
        job = EditJob(
            model=model,
            method=method,
            edit=edit,
            sampler=sampler_settings(cfg.sampler),
            seeds=list(range(cfg.first_seed, cfg.first_seed + cfg.num_samples)),
            run_dir=run_dir,
            num_directions=cfg.num_directions,
            cache=cache,
            real_images=real,
            directions_path=cfg.directions_path,
            evaluation=evaluation,
            evaluation_trainer=evaluation_trainer(cfg.trainer),
            timer=timer,
            factor_images=known,
        )
        return run_edit_job(job, loggers)
    finally:
        close_wandb()


def disentanglement_count(cfg: DictConfig) -> int:
    """How many rendered images with known factors score the directions by DCI and MIG (0: none); refused
    in one line where the data have no known factors."""
    from hspace.errors import UserError

    count = int(cfg.metrics.get("disentanglement", {}).get("num_images", 0) or 0)
    if count and not str(cfg.data.get("_target_", "")).endswith("ShapesDataModule"):
        raise UserError(
            f"metrics.disentanglement.num_images={count} needs images with known factors (data=shapes): "
            "set it to 0 for this data"
        )
    return count


def evaluation_trainer(trainer: DictConfig) -> dict:
    """Trainer arguments of the evaluation loop. Only that loop is distributed in hspace-run, over edits
    already in memory, so a `ddp` strategy runs it as `ddp_spawn` (workers receive the edits) instead of
    re-launching the whole job per rank."""
    options = {"accelerator": trainer.accelerator, "devices": trainer.devices}
    strategy = trainer.get("strategy")
    if strategy:
        options["strategy"] = "ddp_spawn" if strategy == "ddp" else strategy
    return options


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="run")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
