"""How much does a UNet's output depend on its bottleneck h? Swap h between samples and measure.

For each timestep, runs the UNet on x_t of different samples, once as is and once with each sample's h
replaced by the h of another sample (a cyclic shift of the batch), and reports the relative change of
the output, ||out_swapped - out|| / ||out||. A decoder that ignores h (all its information arrives
through skip connections) gives values near 0.

    python scripts/h_dependence.py --weights shapes32
    python scripts/h_dependence.py --checkpoint <run_dir>/checkpoints/last.ckpt   # EMA weights of a training run
"""

from __future__ import annotations

import argparse

import torch

from hspace.diffusion.loading import load_model
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import make_schedule
from hspace.hspace import HSpace


def model_from_checkpoint(path: str):
    from hspace.lightning.ddpm import DDPMTraining

    module = DDPMTraining.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    module.ema.copy_to(module.unet.parameters())
    module.unet.eval().requires_grad_(False)
    return module.diffusion


@torch.no_grad()
def h_swap_change(model, num_samples: int = 16, timesteps=(999, 799, 599, 399, 199, 49)) -> dict[int, float]:
    schedule = make_schedule(model.alphas_cumprod, 50, "trailing")
    x_T, _ = noise_for(range(num_samples), model, schedule)
    x0 = sample(model, schedule, x_T).x0
    changes = {}
    for tau in timesteps:
        a = model.alphas_cumprod[tau]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(tau))
        t = torch.full((num_samples,), tau)
        with HSpace(model.unet, capture=True) as hs:
            out = model.unet(x_t, t).sample
            hs.replace(hs.captured[0].roll(1, dims=0))
            swapped = model.unet(x_t, t).sample
        changes[tau] = float((swapped - out).norm() / out.norm())
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--num-samples", type=int, default=16)
    args = parser.parse_args()
    model = model_from_checkpoint(args.checkpoint) if args.checkpoint else load_model(args.weights)
    for tau, change in h_swap_change(model, args.num_samples).items():
        print(f"tau {tau:4d}: relative change of the output with h swapped {change:.3f}")


if __name__ == "__main__":
    main()
