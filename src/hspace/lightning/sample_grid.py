"""A callback that draws a fixed set of samples from the EMA weights every N training steps."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from hspace.checks import boolean, choice, integer
from hspace.data.shapes_quality import quality_report
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SPACINGS, make_schedule
from hspace.images import image_grid, save_png, to_uint8

MAX_SAMPLES = 256  # a grid of 32 rows
BATCH = 64  # samples per UNet batch


class SampleGrid(pl.Callback):
    """Every `every_n_steps` steps (and at the end of training), sample seeds 0..n-1 with deterministic DDIM,
    write `samples/step_<k>.png` in the run directory and log it to W&B when that is the logger.

    With `shapes_quality`, also log the pixel quality fractions of the Shapes judge (`samples/<name>`).
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_samples: int = 64,
        num_steps: int = 50,
        spacing: str = "trailing",
        clip_x0: bool = False,
        shapes_quality: bool = False,
    ):
        """Each setting is checked here, when hspace-train builds the callback: a bad one would otherwise stop
        training at the first grid, before the checkpoint of that step is written."""
        setting = "callbacks.sample_grid."
        self.every_n_steps = integer(every_n_steps, setting + "every_n_steps", 0)
        self.num_samples = integer(num_samples, setting + "num_samples", 1, MAX_SAMPLES)
        self.num_steps = integer(num_steps, setting + "num_steps", 1, 1000)
        self.spacing = choice(spacing, setting + "spacing", SPACINGS)
        self.clip_x0 = boolean(clip_x0, setting + "clip_x0")
        self.shapes_quality = boolean(shapes_quality, setting + "shapes_quality")
        self.last_drawn_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # the same for every micro-batch of an accumulated step: draw it once
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self.last_drawn_step:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self.last_drawn_step:
            self.draw(trainer, pl_module)

    def draw(self, trainer: pl.Trainer, pl_module) -> Path | None:
        if not trainer.is_global_zero:
            return None
        step = self.last_drawn_step = trainer.global_step
        with pl_module.ema_weights() as model:
            was_training = model.unet.training
            model.unet.eval()
            schedule = make_schedule(model.alphas_cumprod, self.num_steps, self.spacing)
            x_T, _ = noise_for(range(self.num_samples), model, schedule)
            parts = [sample(model, schedule, x, clip_x0=self.clip_x0).x0 for x in x_T.split(BATCH)]
            pixels = to_uint8(torch.cat(parts))
            model.unet.train(was_training)
        path = save_png(
            image_grid(pixels, ncols=8), Path(trainer.default_root_dir) / "samples" / f"step_{step:07d}.png", scale=2
        )
        metrics = {f"samples/{k}": v for k, v in quality_report(pixels).items()} if self.shapes_quality else {}
        for logger in trainer.loggers:
            if metrics:
                logger.log_metrics(metrics, step=step)
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[str(path)], step=step)
        return path
