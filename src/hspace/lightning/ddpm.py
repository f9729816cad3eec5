"""Training a DDPM (diffusers UNet2DModel) on any image datamodule, with EMA weights."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from hspace.checkpoints import read_checkpoint, state_mismatch
from hspace.checks import boolean, choice, integer, number
from hspace.diffusion.derived import save_pretrained_model
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.skips import cut_skips
from hspace.diffusion.weights import PRETRAINED_FILES
from hspace.distributed import Shard
from hspace.errors import UserError
from hspace.learning_rate import LR_SCHEDULES, decay_range, learning_rate_factor
from hspace.lightning.exportable import ExportableModule


def batch_images(batch) -> torch.Tensor:
    """The images of a batch from any image dataset: a tensor, a (image, ...) tuple or a dict with `image`."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0]


LOSS_WEIGHTINGS = ("none", "min_snr")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid")
BETA_RANGE_SCHEDULES = ("linear", "scaled_linear", "sigmoid")  # those that run from beta_start to beta_end
TRAINED_PREDICTIONS = ("epsilon", "v_prediction")  # the targets training_step computes


def v_loss_weights(alphas_cumprod: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR weights for a v-prediction loss: min(1, gamma / (SNR + 1)).

    The v error equals the x0 error times sqrt(SNR + 1), so the plain v loss weights the x0 error by
    SNR + 1; capping that weight at gamma (Hang et al. 2023) stops the nearly clean timesteps from
    dominating the gradient, and unlike min(SNR, gamma) / (SNR + 1) it keeps full weight at SNR 0, the
    first step of a zero-terminal-SNR schedule."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return torch.clamp(gamma / (snr + 1), max=1.0)


def eps_loss_weights(alphas_cumprod: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR weights for an epsilon loss: min(SNR, gamma) / SNR (the eps error is the x0 error times sqrt(SNR))."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return torch.clamp(gamma / snr, max=1.0)


def load_matching_weights(unet: UNet2DModel, source: str) -> None:
    """Copy the weights of the pretrained model `source` (hspace.diffusion.weights.resolve_weights; safetensors
    only) into `unet`, refusing in one line a model whose architecture differs."""
    from safetensors.torch import load_file

    from hspace.diffusion.weights import WEIGHTS_FILE, resolve_weights

    path = resolve_weights(source, setting="module.init_weights") / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"module.init_weights={source}: {path} does not exist; point it at a save_pretrained directory")
    state = load_file(path)
    detail = state_mismatch(state, unet.state_dict())
    if detail is not None:
        raise UserError(
            f"module.init_weights={source} has another architecture than model.unet ({detail}): train it with the "
            "same model.unet settings"
        )
    unet.load_state_dict(state)


def unet_from_settings(settings: dict) -> UNet2DModel:
    """A new UNet2DModel from the model.unet settings; settings diffusers refuses are one line naming model.unet."""
    try:
        return UNet2DModel(**settings)
    except (ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"model.unet does not make a UNet2DModel ({reason}): fix the setting it names, e.g. one "
            "block_out_channels entry per down block"
        ) from None


def scheduler_config(settings: dict) -> dict:
    """The training noise schedule (model.scheduler, diffusers DDPMScheduler arguments) as the scheduler's full
    config, each setting the schedule depends on checked in one line: diffusers takes a string for a boolean
    as true, and betas outside (0, 1), or falling, as a schedule whose training turns to NaN or runs backwards."""
    from hspace.diffusion.schedule import SPACINGS

    checks = {
        "num_train_timesteps": lambda v, s: integer(v, s, 2),
        "beta_schedule": lambda v, s: choice(v, s, BETA_SCHEDULES),
        "prediction_type": lambda v, s: choice(v, s, TRAINED_PREDICTIONS),
        "timestep_spacing": lambda v, s: choice(v, s, SPACINGS),
        "rescale_betas_zero_snr": boolean,
        "clip_sample": boolean,
        "thresholding": boolean,
    }
    for key, check in checks.items():
        if key in settings:
            check(settings[key], f"model.scheduler.{key}")
    try:
        config = dict(DDPMScheduler(**settings).config)
    except (TypeError, ValueError, NotImplementedError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"model.scheduler does not make a DDPMScheduler ({reason}): fix the setting it names") from None
    if config.get("trained_betas") is None and config["beta_schedule"] in BETA_RANGE_SCHEDULES:
        start = number(config["beta_start"], "model.scheduler.beta_start", above=0.0, below=1.0)
        end = number(config["beta_end"], "model.scheduler.beta_end", above=0.0, below=1.0)
        if start > end:
            raise UserError(f"model.scheduler.beta_start={start} is above beta_end={end}: swap them")
    return config


class DDPMTraining(ExportableModule):
    """Denoising training: x_t = sqrt(a) x_0 + sqrt(1 - a) eps with tau ~ U{0..N-1}, MSE on the target.

    The target is eps ("epsilon") or v = sqrt(a) eps - sqrt(1 - a) x_0 ("v_prediction"), as the scheduler config says;
    `loss_weighting="min_snr"` weights each timestep's error by Min-SNR-gamma (v_loss_weights, eps_loss_weights).
    AdamW with linear warm-up, then a constant or cosine learning rate (`lr_schedule`; the cosine runs from
    `decay_start`, default the end of the warm-up, to `min_lr_ratio * lr` at `decay_steps`, default the trainer's
    max_steps); EMA of the weights, saved in every checkpoint. The EMA is diffusers' EMAModel, whose decay after
    n optimiser steps is min(ema_decay, n / (n + 9)): 0 at the first step, so the EMA starts from the weights after
    it, and 0.994 after 1,500 steps, 0.997 after 3,000 and 0.9985 after 6,000 whatever `ema_decay` above that
    (0.9995 is reached after 18,000). Timesteps are drawn uniformly, from all of them or
    (`max_timestep`) from 0..max_timestep only, to train the nearly clean end of the trajectory alone.
    `init_weights` starts from the weights of a pretrained model of the same architecture (a shipped name or a
    save_pretrained directory). `cut_skip_levels` > 0 cuts the skip connections of that
    many coarsest up blocks (hspace.diffusion.skips), so everything coarser than the remaining skips passes through
    the bottleneck h.
    """

    # Lightning casts the schedule's buffers with the weights: in bf16, alpha_bar of the least noisy timesteps
    # rounds to 1 and they are trained without noise.
    not_in_half_precision = (
        "casts its noise schedule to half precision, which rounds the least noisy timesteps to no noise"
    )

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
        lr_schedule: str = "constant",
        decay_start: int | None = None,
        decay_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        max_timestep: int | None = None,
        init_weights: str | None = None,
    ):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise UserError(f"module.lr_schedule={lr_schedule!r} is unknown: use one of {', '.join(LR_SCHEDULES)}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise UserError(
                f"module.loss_weighting={loss_weighting!r} is unknown: use one of {', '.join(LOSS_WEIGHTINGS)}"
            )
        number(lr, "module.lr", above=0.0)
        number(weight_decay, "module.weight_decay", 0.0)
        integer(warmup_steps, "module.warmup_steps", 0)
        number(ema_decay, "module.ema_decay", 0.0, 1.0)
        integer(cut_skip_levels, "module.cut_skip_levels", 0, len(unet.get("up_block_types", ())) or None)
        for key, value in (("decay_start", decay_start), ("decay_steps", decay_steps)):
            if value is not None:
                integer(value, f"module.{key}", 0)
        number(min_lr_ratio, "module.min_lr_ratio", 0.0, 1.0)
        number(min_snr_gamma, "module.min_snr_gamma", above=0.0)
        self.scheduler_config = scheduler_config(scheduler)
        if max_timestep is not None:
            integer(max_timestep, "module.max_timestep", 0, self.scheduler_config["num_train_timesteps"] - 1)
        self.save_hyperparameters()
        self.unet = unet_from_settings(unet)
        if init_weights is not None:
            load_matching_weights(self.unet, init_weights)
        cut_skips(self.unet, cut_skip_levels)
        self.diffusion = DiffusionModel(self.unet, self.scheduler_config, name=name)
        self.register_buffer("alphas_cumprod", self.diffusion.alphas_cumprod.float(), persistent=False)
        weights = {"v_prediction": v_loss_weights, "epsilon": eps_loss_weights}.get(self.diffusion.prediction_type)
        if loss_weighting == "min_snr" and weights is None:
            raise UserError(
                f"module.loss_weighting=min_snr needs epsilon or v_prediction, not {self.diffusion.prediction_type}"
            )
        timestep_weights = (
            weights(self.diffusion.alphas_cumprod, min_snr_gamma)
            if loss_weighting == "min_snr"
            else torch.ones_like(self.diffusion.alphas_cumprod)
        )
        self.register_buffer("timestep_weights", timestep_weights.float(), persistent=False)
        self.ema = EMAModel(self.unet.parameters(), decay=ema_decay)

    def training_step(self, batch, batch_idx):
        x0 = batch_images(batch)
        # Under a process group every rank's streams are alike (seeded alike, restored from rank 0's checkpoint):
        # each draws the timesteps and noise of all ranks' images and takes its own rows, so that ranks differ.
        shard, count = Shard.current(), x0.shape[0]
        rows = slice(shard.rank * count, (shard.rank + 1) * count)
        tau = self.draw_timesteps(count * shard.world_size, x0.device)[rows]
        noise = torch.randn((count * shard.world_size, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)[rows]
        x_t, target = self.noised(x0, noise, tau)
        error = F.mse_loss(self.unet(x_t, tau).sample, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (self.timestep_weights[tau] * error).mean()
        self.log("train/loss", loss, prog_bar=True)
        if self.hparams.loss_weighting != "none":
            self.log("train/unweighted_loss", error.mean())
        return loss

    def noised(self, x0: torch.Tensor, eps: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t = sqrt(a) x_0 + sqrt(1 - a) eps at training timesteps `tau`, and what the UNet is trained to
        predict there: eps, or v = sqrt(a) eps - sqrt(1 - a) x_0."""
        a = self.alphas_cumprod[tau].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return x_t, eps if self.diffusion.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    def draw_timesteps(self, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """`count` training timesteps, uniform over 0..max_timestep (every timestep when it is None)."""
        high = len(self.alphas_cumprod) if self.hparams.max_timestep is None else self.hparams.max_timestep + 1
        return torch.randint(0, high, (count,), device=device)

    def optimizer_step(self, *args, **kwargs):
        # The EMA steps with the optimiser, before any callback's on_train_batch_end, so that a checkpoint
        # written at step k holds the EMA of step k.
        super().optimizer_step(*args, **kwargs)
        self.ema.to(self.device)
        self.ema.step(self.unet.parameters())

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "cosine":
            decay_start, decay_steps = decay_range(
                hp.warmup_steps, hp.decay_start, hp.decay_steps, self.trainer.max_steps
            )
        else:
            decay_start, decay_steps = 0, 0
        factor = functools.partial(
            learning_rate_factor,
            warmup_steps=hp.warmup_steps,
            schedule=hp.lr_schedule,
            decay_start=decay_start,
            decay_steps=decay_steps,
            min_lr_ratio=hp.min_lr_ratio,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)
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

    exported_files = PRETRAINED_FILES

    def export(self, directory: str | Path) -> Path:
        """Save the EMA weights and the scheduler config in diffusers `save_pretrained` layout
        (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json), atomically."""
        with self.ema_weights():
            return save_pretrained_model(self.unet, self.scheduler_config, directory)


def model_from_checkpoint(path: str | Path, ema: bool = True, setting: str = "--checkpoint") -> DiffusionModel:
    """The EMA weights (or with ema=False the trained weights) of a training checkpoint as a frozen
    DiffusionModel. The checkpoint is read with torch.load(weights_only=True): tensors and plain containers only,
    nothing else is unpickled. One line (`setting` naming it) for a file that is not a DDPM training checkpoint."""
    checkpoint = read_checkpoint(path, f"{setting} {path}")
    needed = ("hyper_parameters", "state_dict", *(("ema",) if ema else ()))
    missing = [key for key in needed if key not in checkpoint]
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    if missing or "unet" not in hyper_parameters or "scheduler" not in hyper_parameters:
        raise UserError(
            f"{setting} {path} is not a DDPM training checkpoint (it lacks {', '.join(missing) or 'a UNet config'}): "
            "use one that hspace-train wrote for a diffusion model (e.g. <run_dir>/checkpoints/last.ckpt)"
        )
    module = DDPMTraining(**{**hyper_parameters, "init_weights": None})
    try:
        module.load_state_dict(checkpoint["state_dict"])
        if ema:
            module.ema.load_state_dict(checkpoint["ema"])
            module.ema.copy_to(module.unet.parameters())
    except (RuntimeError, KeyError, ValueError) as error:
        raise UserError(
            f"{setting} {path} does not fit the model its settings describe ({type(error).__name__}): the checkpoint "
            "is damaged"
        ) from None
    module.unet.eval().requires_grad_(False)
    return module.diffusion
