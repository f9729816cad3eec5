"""Training a DDPM (diffusers UNet2DModel) on any image datamodule, with EMA weights."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.skips import cut_skips
from hspace.images import atomic_write_directory


def batch_images(batch) -> torch.Tensor:
    """The images of a batch from any image dataset: a tensor, a (image, ...) tuple or a dict with `image`."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0]


class DDPMTraining(pl.LightningModule):
    """Denoising training: x_t = sqrt(a) x_0 + sqrt(1 - a) eps with tau ~ U{0..N-1}, MSE on the target.

    The target is eps ("epsilon") or v = sqrt(a) eps - sqrt(1 - a) x_0 ("v_prediction"), as the
    scheduler config says. AdamW with linear warm-up; EMA of the weights, saved in every checkpoint.
    `cut_skip_levels` > 0 cuts the skip connections of that many coarsest up blocks (hspace.diffusion.skips),
    so everything coarser than the remaining skips passes through the bottleneck h.
    """

    def __init__(
        self,
        unet: dict,
        scheduler: dict,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 500,
        ema_decay: float = 0.999,
        name: str = "ddpm",
        cut_skip_levels: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.unet = UNet2DModel(**unet)
        cut_skips(self.unet, cut_skip_levels)
        self.scheduler_config = dict(DDPMScheduler(**scheduler).config)
        self.diffusion = DiffusionModel(self.unet, self.scheduler_config, name=name)
        self.register_buffer("alphas_cumprod", self.diffusion.alphas_cumprod.float(), persistent=False)
        self.ema = EMAModel(self.unet.parameters(), decay=ema_decay)

    def training_step(self, batch, batch_idx):
        x0 = batch_images(batch)
        tau = torch.randint(0, len(self.alphas_cumprod), (x0.shape[0],), device=x0.device)
        a = self.alphas_cumprod[tau].view(-1, 1, 1, 1)
        eps = torch.randn_like(x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = eps if self.diffusion.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        loss = F.mse_loss(self.unet(x_t, tau).sample, target)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ema.to(self.device)
        self.ema.step(self.unet.parameters())

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(hp.warmup_steps, 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self.ema.load_state_dict(checkpoint["ema"])

    @contextmanager
    def ema_weights(self):
        """Swap the EMA weights into the UNet for the duration of the block."""
        self.ema.store(self.unet.parameters())
        self.ema.copy_to(self.unet.parameters())
        try:
            yield self.diffusion
        finally:
            self.ema.restore(self.unet.parameters())

    def export(self, directory: str | Path) -> Path:
        """Save the EMA weights and the scheduler config in diffusers `save_pretrained` layout
        (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json), atomically."""

        def fill(staging: Path) -> None:
            with self.ema_weights():
                self.unet.save_pretrained(staging, safe_serialization=True)
            DDPMScheduler.from_config(self.scheduler_config).save_pretrained(staging)

        return atomic_write_directory(directory, fill)
