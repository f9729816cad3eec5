"""Writes tests/fixtures/adm_guided_diffusion.safetensors: the outputs of guided-diffusion's own UNetModel on the
tiny configurations, seeded weights and inputs of tests/adm_reference.py, which tests/test_adm.py compares
hspace.diffusion.adm against. It needs a checkout of github.com/openai/guided-diffusion (only its unet.py and
what that imports are used; nothing is downloaded):

    .venv/bin/python scripts/adm_reference_outputs.py --guided-diffusion ~/src/guided-diffusion

Per configuration and timestep it stores the output (eps, then the variance channels when learned) and h, the
middle block's output. With --afhq-dog it also runs both UNets at the full AFHQ-dog configuration
(`model=adm_afhqdog256`, 256x256) on the same seeded weights and prints how far apart their outputs and h are
(too large a model for a fixture)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hspace.files import atomic_write_safetensors  # noqa: E402
from tests.adm_reference import CONFIGS, FIXTURE, TIMESTEPS, inputs, seeded_state  # noqa: E402


def reference_unet(unet_model, config: dict):
    """guided-diffusion's UNetModel with these flags (its attention_resolutions are downsampling factors)."""
    size = config["image_size"]
    return unet_model(
        image_size=size,
        in_channels=3,
        model_channels=config["model_channels"],
        out_channels=6 if config["learn_sigma"] else 3,
        num_res_blocks=config["num_res_blocks"],
        attention_resolutions=tuple(size // r for r in config["attention_resolutions"]),
        dropout=0.0,
        channel_mult=tuple(config["channel_mult"]),
        num_heads=config["num_heads"],
        num_head_channels=config["num_head_channels"],
        num_heads_upsample=config.get("num_heads_upsample", -1),
        use_scale_shift_norm=config["use_scale_shift_norm"],
        resblock_updown=config["resblock_updown"],
    ).eval()


def outputs_and_h(unet, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per timestep of TIMESTEPS, a guided-diffusion UNet's output on x and its middle block's output (h)."""
    captured = []
    hook = unet.middle_block.register_forward_hook(lambda module, args, out: captured.append(out.detach()))
    results = {}
    with torch.no_grad():
        for t in TIMESTEPS:
            captured.clear()
            results[t] = (unet(x, torch.full((len(x),), t)).contiguous(), captured[0].contiguous())
    hook.remove()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guided-diffusion", type=Path, required=True, help="a checkout of openai/guided-diffusion")
    parser.add_argument("--output", type=Path, default=FIXTURE)
    parser.add_argument("--afhq-dog", action="store_true", help="also compare the full AFHQ-dog configuration")
    args = parser.parse_args()
    checkout = args.guided_diffusion.expanduser()
    if args.output.is_dir():
        parser.exit(2, f"error: --output={args.output} is a folder: give the file to write\n")
    if not (checkout / "guided_diffusion" / "unet.py").is_file():
        parser.exit(
            2, f"error: {checkout} holds no guided_diffusion/unet.py: give a checkout of openai/guided-diffusion\n"
        )
    sys.path.insert(0, str(checkout))
    from guided_diffusion.unet import UNetModel

    tensors = {}
    for name, config in CONFIGS.items():
        unet = reference_unet(UNetModel, config)
        unet.load_state_dict(seeded_state({k: tuple(v.shape) for k, v in unet.state_dict().items()}), strict=True)
        for t, (out, h) in outputs_and_h(unet, inputs(config)).items():
            tensors[f"{name}/out@{t}"], tensors[f"{name}/h@{t}"] = out, h
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    atomic_write_safetensors(args.output, tensors, metadata={"guided_diffusion_commit": commit or "unknown"})
    print(f"{args.output}: {len(tensors)} tensors from guided-diffusion {commit or '(commit unknown)'}")
    if args.afhq_dog:
        compare_afhq_dog(UNetModel)


def compare_afhq_dog(unet_model) -> None:
    """Both UNets at the AFHQ-dog flags on the same seeded weights: the largest output and h differences."""
    from omegaconf import OmegaConf

    from hspace.bottleneck import HSpace
    from hspace.diffusion.adm import ADMConfig, ADMUNet

    config = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "adm_afhqdog256.yaml").adm)
    reference = reference_unet(unet_model, config)
    state = seeded_state({k: tuple(v.shape) for k, v in reference.state_dict().items()})
    reference.load_state_dict(state, strict=True)
    ours = ADMUNet(ADMConfig(**config)).eval()
    ours.load_state_dict(state, strict=True)
    x = inputs(config)[:1]
    for t, (expected, expected_h) in outputs_and_h(reference, x).items():
        with torch.no_grad(), HSpace(ours, capture=True) as hs:
            out = ours(x, torch.full((1,), t))
        mine = torch.cat([out.sample, out.variance], dim=1)
        out_gap, h_gap = (mine - expected).abs().max(), (hs.captured[0] - expected_h).abs().max()
        print(
            f"AFHQ-dog flags, t={t}: largest |difference| {float(out_gap):.3g} in the output (of values up to "
            f"{float(expected.abs().max()):.3g}), {float(h_gap):.3g} in h"
        )


if __name__ == "__main__":
    main()
