"""hspace-sample: draw samples from a pretrained model and write them as a PNG grid (conf/sample.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hspace.cli import CONFIG_DIR, user_errors_exit


def resolve_device(name: str):
    import torch

    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


@user_errors_exit
def run_sample(cfg: DictConfig) -> Path:
    import torch

    from hspace.data.shapes_quality import quality_report
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.sampler import initial_noise, sample
    from hspace.diffusion.schedule import make_schedule
    from hspace.images import image_grid, save_png, to_uint8

    model = load_model(cfg.model.weights, device=resolve_device(cfg.device))
    s = cfg.sampler
    eta = OmegaConf.to_object(s.eta) if OmegaConf.is_config(s.eta) else s.eta
    schedule = make_schedule(model.alphas_cumprod, s.num_steps, s.spacing, eta, s.final_alpha)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.num_samples))
    batches = []
    for start in range(0, len(seeds), cfg.batch_size):
        x_T, z = initial_noise(seeds[start : start + cfg.batch_size], model.image_shape, s.num_steps, with_z=not schedule.is_deterministic)
        batches.append(sample(model, schedule, x_T, z, clip_x0=s.clip_x0).x0.cpu())
    pixels = to_uint8(torch.cat(batches))
    path = save_png(image_grid(pixels, ncols=cfg.ncols), cfg.output, scale=2)
    if cfg.shapes_quality:
        report = quality_report(pixels)
        print(", ".join(f"{k} {v:.3f}" for k, v in report.items()))
    print(f"samples: {path}")
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_sample(cfg)


if __name__ == "__main__":
    main()
