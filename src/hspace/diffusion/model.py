"""A denoising UNet together with the training noise schedule and parameterisation it was trained with."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hspace.bottleneck import h_shape
from hspace.diffusion.schedule import PREDICTION_TYPES, training_alphas_cumprod
from hspace.errors import UserError
from hspace.identity import config_hash, weights_identity

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DiffusionModel:
    """eps_theta (or v_theta) as a callable: `model(x_t, tau) -> output`, with its schedule.

    `unet` is a diffusers UNet2DModel; `alphas_cumprod` (N,) float64 is the training schedule;
    `scheduler_config` is the diffusers scheduler config it came from (saved beside the weights).
    """

    unet: torch.nn.Module
    scheduler_config: dict
    name: str = "unnamed"
    weight_hash: str = ""
    # The hash of the weights in memory (hspace.identity.state_hash) as they were read from the file whose hash is
    # weight_hash (hspace.diffusion.loading sets both): once they hash otherwise (fine-tuned or edited in place),
    # the model is identified by the weights in memory. Empty: weight_hash is trusted as given.
    loaded_state: str = ""
    autocast: str = "fp32"  # fp32 | bf16 | fp16: the UNet calls of sampling run under autocast; the Jacobian never does
    alphas_cumprod: Tensor = field(init=False)

    def __post_init__(self):
        if self.autocast not in ("fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"autocast must be fp32, bf16 or fp16, not {self.autocast!r}")
        self.alphas_cumprod = training_alphas_cumprod(self.scheduler_config)
        if self.prediction_type not in PREDICTION_TYPES:
            raise UserError(
                f"unknown prediction_type {self.prediction_type!r}: use one of {', '.join(PREDICTION_TYPES)}"
            )
        if self.prediction_type == "epsilon" and float(self.alphas_cumprod[-1]) == 0.0:
            raise UserError(
                "epsilon prediction with zero terminal SNR leaves x0 undefined at the last timestep: "
                "set prediction_type: v_prediction in the scheduler config"
            )

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    @property
    def noise_schedule(self) -> dict[str, str]:
        """What the output means: the training schedule (a hash of alpha_bar) and the prediction type."""
        schedule = hashlib.sha256(self.alphas_cumprod.numpy().tobytes()).hexdigest()[:16]
        return {"schedule": schedule, "prediction_type": self.prediction_type}

    @property
    def weights_identity(self) -> str:
        """The hash of the weights file it was loaded from while the weights in memory are still those, else of the
        weights in memory (a model built from a checkpoint or by hand, or one whose loaded weights were changed), so
        that two models never share cache entries or directions by having none or by having been changed."""
        return weights_identity(self.unet, self.weight_hash, self.loaded_state)

    def identity(self) -> dict:
        """Everything about the model that determines what it computes: for cache keys. The architecture's
        config counts as well as the weights: some settings (attention heads, norm epsilon) change the output
        without changing a weight's shape."""
        return {
            "weight_hash": self.weights_identity,
            "architecture": config_hash(self.unet.config),
            **self.noise_schedule,
            "dtype": str(self.dtype),
            "autocast": self.autocast,
        }

    @functools.cached_property
    def h_shape(self) -> tuple[int, ...]:
        """The shape of h_t for one sample, found by a probe forward."""
        return h_shape(self.unet)

    def __call__(self, x_t: Tensor, timestep: Tensor | int, autocast: bool = True) -> Tensor:
        """The UNet output at (x_t, timestep), in x_t's dtype (computed under autocast when configured,
        unless `autocast` is False: the Jacobian's calls stay in the weights' dtype)."""
        t = torch.as_tensor(timestep, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        if self.autocast == "fp32" or not autocast:
            return self.unet(x_t, t).sample
        with torch.autocast(x_t.device.type, dtype=AUTOCAST_DTYPES[self.autocast]):
            return self.unet(x_t, t).sample.to(x_t.dtype)
