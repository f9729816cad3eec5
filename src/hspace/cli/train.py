"""hspace-train: train a LightningModule with an `export(directory)` on a datamodule (conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hspace.cli import CONFIG_DIR, record_config, remove_if_empty, require_complete, user_errors_exit


def instantiate_loggers(cfg: DictConfig) -> list:
    return [hydra.utils.instantiate(c) for c in cfg.values()] if cfg else []


@user_errors_exit
def train(cfg: DictConfig) -> Path:
    from hspace.errors import UserError

    try:
        require_complete(cfg)
        if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
            raise UserError(
                f"no checkpoint at ckpt_path={cfg.ckpt_path}: point it at a .ckpt file, e.g. "
                "<run_dir>/checkpoints/last.ckpt"
            )
    except Exception:
        remove_if_empty(cfg.run_dir)
        raise
    record_config(cfg, cfg.run_dir)

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from hspace.loggers import close_wandb

    run_dir = Path(cfg.run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    callbacks = [
        # No "=" in checkpoint names: they are passed back as ckpt_path=... overrides.
        ModelCheckpoint(
            run_dir / "checkpoints",
            "step_{step:07d}",
            every_n_train_steps=cfg.checkpoint_every_n_steps,
            save_last=True,
            auto_insert_metric_name=False,
        ),
        *(hydra.utils.instantiate(c) for c in cfg.callbacks.values()),
    ]
    trainer = pl.Trainer(
        **cfg.trainer, logger=instantiate_loggers(cfg.logger) or False, callbacks=callbacks, default_root_dir=run_dir
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        export_dir = module.export(cfg.export_dir)
    finally:
        close_wandb()
    print(f"checkpoints: {run_dir / 'checkpoints'}\nexported weights: {export_dir}")
    return export_dir


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
