"""hspace-sample: draw samples from a pretrained model and write them as a PNG grid (conf/sample.yaml)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hspace.cli import (
    console,
    make_main,
    note_grid_start,
    record_config,
    resolve_device,
    sampler_settings,
    user_errors_exit,
)


@user_errors_exit
def run_sample(cfg: DictConfig) -> Path:
    check_sample(cfg)
    console(cfg)

    from hspace.data.shapes_quality import quality_report
    from hspace.diffusion.loading import load_configured_model
    from hspace.diffusion.sampler import sample_seeds
    from hspace.images import image_grid, save_png, to_uint8

    model = load_configured_model(OmegaConf.to_container(cfg.model, resolve=True), device=resolve_device(cfg.device))
    s = sampler_settings(cfg.sampler)
    schedule = s.schedule(model.alphas_cumprod)
    note_grid_start(s, model.alphas_cumprod)
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.num_samples)
    pixels = to_uint8(sample_seeds(model, schedule, seeds, cfg.batch_size, clip_x0=s.clip_x0))
    path = save_png(image_grid(pixels, ncols=cfg.ncols), cfg.output, scale=2)
    record_config(cfg, cfg.run_dir)
    if cfg.shapes_quality:
        report = quality_report(pixels)
        print(", ".join(f"{k} {v:.3f}" for k, v in report.items()))
    print(f"samples: {path}")
    return path


def check_sample(cfg: DictConfig) -> None:
    """Every setting of hspace-sample, before the model is loaded."""
    from hspace.checks import boolean, integer, output_path
    from hspace.cli.validate import check_device, check_model, check_sampler
    from hspace.errors import UserError
    from hspace.files import check_writable

    check_model(cfg.model)  # first: the weights are named before torch is imported
    output_path(cfg.run_dir, "run_dir", "folder")
    output_path(cfg.output, "output", "file")
    if Path(str(cfg.output)).suffix.lower() != ".png":
        raise UserError(f"output={cfg.output} is not a .png file: the grid is written as PNG, e.g. output=samples.png")
    check_writable(cfg.run_dir, f"run_dir={cfg.run_dir}")
    check_writable(Path(cfg.output).expanduser().parent, f"output={cfg.output}")
    boolean(cfg.shapes_quality, "shapes_quality")
    integer(cfg.num_samples, "num_samples", 1)
    integer(cfg.batch_size, "batch_size", 1)
    integer(cfg.ncols, "ncols", 1)
    integer(cfg.first_seed, "first_seed", 0)
    check_sampler(cfg.sampler)
    check_device(cfg.device, "device")


main = make_main("sample", run_sample)


if __name__ == "__main__":
    main()
