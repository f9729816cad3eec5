"""What hspace's ADM UNet is checked against guided-diffusion's own UNetModel with: two tiny configurations
(one with the AFHQ-dog checkpoint's flags, one with the other branch of every flag), weights drawn from a seed
by parameter name, and the inputs. `scripts/adm_reference_outputs.py` runs guided-diffusion on them and writes
its outputs to FIXTURE; tests/test_adm.py runs hspace on the same weights and inputs and compares."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "adm_guided_diffusion.safetensors"

# hspace.diffusion.adm.ADMConfig fields (attention_resolutions are image sizes, as model.adm takes them)
CONFIGS = {
    "afhq_flags": dict(  # scale-shift norm, resampling res blocks, heads of fixed width, learned variance
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(8,),
        channel_mult=(1, 2),
        num_heads=4,
        num_head_channels=16,
        use_scale_shift_norm=True,
        resblock_updown=True,
        learn_sigma=True,
    ),
    "other_flags": dict(  # plain norm, conv resampling, a fixed number of heads, fixed variance
        image_size=16,
        model_channels=32,
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        channel_mult=(1, 2),
        num_heads=2,
        num_head_channels=-1,
        use_scale_shift_norm=False,
        resblock_updown=False,
        learn_sigma=False,
    ),
}
TIMESTEPS = (0, 500, 999)
BATCH = 2


def seeded_state(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights for every parameter name, each drawn from its own seed (the name's hash), so that two
    implementations with the same names get the same values whatever order they list them in. Matrices and
    kernels have std 1/sqrt(fan_in), so activations keep their scale; norms scatter around 1, biases around 0
    (the output layers, zero at the start of training, get values too)."""
    state = {}
    for name, shape in shapes.items():
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        values = torch.randn(tuple(shape), generator=generator)
        if len(shape) > 1:
            values = values / (torch.Size(shape[1:]).numel() ** 0.5)
        elif "norm" in name and name.endswith("weight"):
            values = 1 + 0.1 * values
        else:
            values = 0.1 * values
        state[name] = values
    return state


def inputs(config: Mapping) -> torch.Tensor:
    """x_t (BATCH, 3, size, size) for every timestep of TIMESTEPS."""
    size = config["image_size"]
    return torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(7))
