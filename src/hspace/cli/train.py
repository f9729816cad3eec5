"""hspace-train: train an ExportableModule (a LightningModule with `export(directory)`) on a datamodule
(conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from hspace.cli import (
    build,
    console,
    make_loggers,
    make_main,
    record_config,
    require_complete,
    user_errors_exit,
)


@user_errors_exit
def train(cfg: DictConfig) -> Path:
    from hspace.checkpoints import check_resumes, read_checkpoint
    from hspace.checks import note
    from hspace.cli.validate import check_loggers, check_training, check_training_resolution
    from hspace.errors import UserError

    require_complete(cfg)
    check_training(cfg)
    check_loggers(cfg.logger)
    resumed = None
    if cfg.ckpt_path is not None:  # weights only, before anything is built
        resumed = read_checkpoint(cfg.ckpt_path, f"ckpt_path={cfg.ckpt_path}")
    resume_in_checkpoint_run(cfg)
    export_dir, run_dir = Path(cfg.export_dir).expanduser().resolve(), Path(cfg.run_dir).expanduser().resolve()
    if export_dir == run_dir or export_dir in run_dir.parents:
        raise UserError(
            f"export_dir={cfg.export_dir} holds the run directory {cfg.run_dir}, which the export would replace: "
            "choose a folder inside or beside it (the default is <run_dir>/model)"
        )
    if cfg.module.get("init_weights") is not None:
        from hspace.diffusion.weights import check_not_source

        check_not_source(cfg.module.init_weights, export_dir, "module.init_weights", "export_dir")
    console(cfg)

    import pytorch_lightning as pl

    from hspace.data.datamodule import ImageDataModule
    from hspace.files import check_replaceable
    from hspace.lightning.exportable import ExportableModule
    from hspace.lightning.terminated import stopped_by_sigterm
    from hspace.lightning.training_checkpoints import AtomicCheckpointIO, TrainingCheckpoints, run_owed_validation
    from hspace.loggers import close_wandb

    run_dir = Path(cfg.run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    if not isinstance(datamodule, pl.LightningDataModule):
        raise UserError(f"data={cfg.data.get('_target_')} is not a LightningDataModule: name one as data._target_")
    if isinstance(datamodule, ImageDataModule):
        datamodule.check_trainable()
    module = build(cfg.module)
    check_training_resolution(cfg)
    if not isinstance(module, ExportableModule):  # its export runs when training has ended: refuse it now
        raise UserError(
            f"module={cfg.module.get('_target_')} has no export to write what it trains: subclass "
            "hspace.lightning.exportable.ExportableModule"
        )
    if module.exported_files is not None:
        check_replaceable(export_dir, module.exported_files, "export_dir")
    if resumed is not None:
        changed = check_resumes(module, resumed, f"ckpt_path={cfg.ckpt_path}", cfg.trainer.get("max_steps"))
        if changed:
            note(
                f"resuming with module settings other than the checkpoint's ({'; '.join(changed)}): the new ones "
                "apply from here; give the old ones to go on as it was"
            )
        if isinstance(datamodule, ImageDataModule) and not holds_data_place(resumed, datamodule):
            note(
                f"ckpt_path={cfg.ckpt_path} holds no place in the training data's order (a checkpoint of an earlier "
                "version): the resumed training starts the order afresh"
            )
    callbacks = [
        TrainingCheckpoints(run_dir / "checkpoints", cfg.checkpoint_every_n_steps),
        *(build(c) for c in configured_callbacks(cfg.callbacks)),
    ]
    options = trainer_options(cfg.trainer, cfg.verbose)
    if isinstance(datamodule, ImageDataModule):  # its training loader shards itself across ranks (epoch_order)
        options["use_distributed_sampler"] = False
    if options["enable_progress_bar"]:
        from hspace.lightning.step_progress import StepProgressBar

        callbacks.append(StepProgressBar())
    trainer = pl.Trainer(
        **options,
        logger=make_loggers(cfg, "train") or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
    )
    # once every piece is built: a refused setting leaves no run directory
    record_config(cfg, record_dir(run_dir) if cfg.ckpt_path is not None else run_dir)
    failed = True
    try:
        checkpoint = None if cfg.ckpt_path is None else Path(cfg.ckpt_path).expanduser()
        last = run_dir / "checkpoints" / "last.ckpt"

        def stopped() -> str:
            return (
                f"training stopped by SIGTERM at step {trainer.global_step}, not exported: resume from its last "
                f"checkpoint with ckpt_path={last}"
            )

        with stopped_by_sigterm(trainer, stopped):
            trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
            if resumed is not None:  # a validation a SIGTERM cut short at the end of training
                run_owed_validation(trainer, module, datamodule, resumed, checkpoint, last)
        export_dir = module.export(cfg.export_dir)
        failed = False
    finally:
        close_wandb(failed)
    print(f"checkpoints: {run_dir / 'checkpoints'}\nexported weights: {export_dir}")
    return export_dir


def holds_data_place(checkpoint: dict, datamodule) -> bool:
    """Whether a checkpoint saved the training loader's place in its order: the datamodule's state, or (when the
    run stopped mid-epoch with max_steps) the loader's own in Lightning's loop state."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
    return type(datamodule).__qualname__ in checkpoint or bool(loops.get("combined_loader"))


def configured_callbacks(callbacks: DictConfig) -> list[DictConfig]:
    """The callbacks to build: each entry that names one (`_target_`). An entry left with settings alone, as a
    recipe's `callbacks.sample_grid.every_n_steps` under `callbacks=none`, is off, said in a note."""
    from hspace.checks import note

    built = []
    for name, node in callbacks.items():
        if "_target_" in node:
            built.append(node)
        else:
            note(f"callbacks.{name} sets {', '.join(node)} but names no callback (callbacks=none?): it is off")
    return built


def trainer_options(trainer: DictConfig, verbose: bool = False) -> dict:
    """The Trainer arguments, with the loss logged at least ten times in a short run, a progress bar only where
    bars are shown (the `progress` setting, hspace.progress) and Lightning's model summary only when `verbose`."""
    from hspace.progress import bars_enabled

    options = dict(OmegaConf.to_container(trainer, resolve=True))
    options["enable_progress_bar"] = bool(options.get("enable_progress_bar", True)) and bars_enabled()
    options.setdefault("enable_model_summary", bool(verbose))
    max_steps = options.get("max_steps") or -1
    if max_steps > 0:
        options["log_every_n_steps"] = max(1, min(options.get("log_every_n_steps", 50), max_steps // 10))
    return options


def record_dir(run_dir: Path) -> Path:
    """Where a resumed training's config.yaml and overrides.yaml go: the run directory, or, when it continues a
    run that has them, the run's next `resume_<n>` folder, so that the first training's record stays."""
    if not (run_dir / "config.yaml").is_file():
        return run_dir
    n = 1
    while (run_dir / f"resume_{n}").exists():
        n += 1
    return run_dir / f"resume_{n}"


def resume_in_checkpoint_run(cfg: DictConfig) -> None:
    """Resuming from <run>/checkpoints/*.ckpt without run_dir= continues in <run> (said in a note), not in a new
    directory; Hydra's new one stays empty and is removed at the end (`remove_job_dir_if_empty`)."""
    from hspace.checks import note
    from hspace.cli.validate import overrides_of_this_run

    overrides = overrides_of_this_run()
    if cfg.ckpt_path is None or not overrides or any(o.lstrip("+").startswith("run_dir=") for o in overrides):
        return
    checkpoint = Path(cfg.ckpt_path).expanduser().resolve()
    if checkpoint.parent.name != "checkpoints":
        note(f"ckpt_path={cfg.ckpt_path} is not in a run's checkpoints/ folder: this run writes to {cfg.run_dir}")
        return
    with open_dict(cfg):
        cfg.run_dir = str(checkpoint.parent.parent)
    note(f"resuming the run in {cfg.run_dir}")


main = make_main("train", train)


if __name__ == "__main__":
    main()
