"""The main job at the real sizes: google/ddpm-ema-*-256 (113M parameters) with random weights.

Writes a random-weight copy of the published architecture in the real on-disk format (no download), then runs
`hspace-run` on it for each method and precision: PCA over --pca-samples generated samples and Jacobian
directions of one sample, each followed by editing --samples samples along --directions directions at
--strengths. Reports the run's stage times, seconds per edited image (the edit stage over samples x directions
x strengths) and, on CUDA, the peak memory of each run. Random weights give meaningless images but the real
cost: every UNet call costs what the pretrained model's does.

    python scripts/bench_full_size.py                      # CUDA when available
    python scripts/bench_full_size.py --device cpu --steps 2 --pca-samples 8 --samples 1 --directions 1 --methods pca \
        -- method.num_components=2 method.oversample=2 method.batch_size=4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hspace.checks import choice, integer
from hspace.cli import CONFIG_DIR, user_errors_exit
from hspace.cli.command_line import check_command_line
from hspace.cli.run import check_settings, run
from hspace.diffusion.google_ddpm import save_random_model


@user_errors_exit  # a bad argument is one line and exit 2, before any run starts
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["pca", "jacobian"])
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of every sampling pass")
    parser.add_argument("--pca-samples", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8, help="generated samples edited")
    parser.add_argument("--directions", type=int, default=3)
    parser.add_argument("--strengths", default="[-4.0,-2.0,0.0,2.0,4.0]")
    parser.add_argument("--batch-size", type=int, default=32, help="edit batch size")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run, e.g. method.batch_size=64")
    args = parser.parse_args()
    choice(args.device, "--device", ("auto", "cuda", "cpu"))
    for option, value, minimum in (("--steps", args.steps, 1), ("--pca-samples", args.pca_samples, 2),
                                   ("--samples", args.samples, 1), ("--directions", args.directions, 1),
                                   ("--batch-size", args.batch_size, 1)):  # fmt: skip
        integer(value, option, minimum)

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    accelerator = "cuda" if cuda else "cpu"
    num_strengths = len(args.strengths.strip("[]").split(","))
    edited = args.samples * args.directions * num_strengths
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / "ddpm-256"
        weights.mkdir()  # the random model is written here after the runs' settings, which name it, are checked
        runs = {
            (m, p): run_overrides(args, m, p, weights, accelerator, scratch)
            for m in args.methods
            for p in args.precisions
        }
        for overrides in runs.values():  # every run's settings, before the weights are written or a run starts
            check_command_line(CONFIG_DIR, "run", "hspace-run", overrides)
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                check_settings(compose(config_name="run", overrides=overrides))
        save_random_model(weights)
        name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
        print(
            f"google/ddpm-ema-256 layout, random weights; {name}; torch {torch.__version__}; {args.steps} DDIM "
            f"steps; {edited} edited images per run ({args.samples} samples x {args.directions} directions x "
            f"{num_strengths} strengths)"
        )
        print("| method | precision | directions s | edit s | s per edited image | peak GiB |")
        print("|---|---|---|---|---|---|")
        for (method, precision), overrides in runs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                metrics = run(compose(config_name="run", overrides=overrides))
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if cuda else "-"
            edit_s = metrics["time/edit_s"]
            print(
                f"| {method} | {precision} | {metrics['time/directions_s']:.1f} | {edit_s:.1f} | "
                f"{edit_s / edited:.3f} | {peak} |",
                flush=True,
            )


def run_overrides(args, method: str, precision: str, weights: Path, accelerator: str, scratch: str) -> list[str]:
    """The hspace-run overrides of one method and precision."""
    overrides = [
        "model=ddpm_celebahq256",
        f"model.weights={weights}",
        f"method={method}",
        f"precision={precision}",
        f"trainer.accelerator={accelerator}",
        f"sampler.num_steps={args.steps}",
        f"num_samples={args.samples}",
        f"num_directions={args.directions}",
        f"edit.strengths={args.strengths}",
        f"edit.batch_size={args.batch_size}",
        "real_images=0",
        "metrics=none",
        "logger=none",
        f"run_dir={scratch}/{method}-{precision}",
        f"cache_dir={scratch}/cache-{method}-{precision}",
    ]
    overrides += (
        [f"method.num_samples={args.pca_samples}"] if method == "pca" else [f"method.num_directions={args.directions}"]
    )
    return overrides + args.overrides


if __name__ == "__main__":
    main()
