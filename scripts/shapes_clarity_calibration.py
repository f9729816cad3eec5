"""How the shape-clarity measures of hspace.data.shapes_factors respond to pixel noise alone.

Renders the first N images of the Shapes validation split, adds Gaussian noise of each standard deviation
(in 8-bit levels, per channel, seed 0), and reports per shape class the share whose thresholded fill ratio
lies in its band (`fill`), whose sub-pixel fill ratio does (`extent`), and whose object fits a rendered shape
as tightly as rendered images do (`fit`), with the median sub-pixel fill. A model's deterministic 50-step
samples are reported on the same lines when --weights is given, so a model's shortfall can be told apart
from what noise of its size does to perfect renders. With --restore-from, the model also takes the renders
noised to each of those training timesteps (the nearest step of its 50-step grid, noise seed 0) back to
images by deterministic DDIM: whether it keeps a perfect outline it is handed, or rounds it.

    python scripts/shapes_clarity_calibration.py
    python scripts/shapes_clarity_calibration.py --weights shapes32 --num-samples 256 --restore-from 99 199 399
"""

from __future__ import annotations

import argparse

import numpy as np

from hspace.cli import user_errors_exit
from hspace.data.shapes import SHAPES, ShapesDataset, render
from hspace.data.shapes_factors import CLEAR_FIT_ERROR, ShapeMeasurement, measure_all
from hspace.errors import UserError


def noisy_renders(num_images: int, sigma: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The shape classes and the pixels of the first `num_images` validation renders with Gaussian noise of
    standard deviation `sigma` (8-bit levels) added to each channel, rounded and clipped. (N, 32, 32, 3) uint8"""
    dataset = ShapesDataset(num_images, "val", resolution=32)
    factors = [dataset.factors(i) for i in range(num_images)]
    clean = np.stack([render(f, 32) for f in factors]).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, clean.shape) if sigma > 0 else 0.0
    return [f.shape for f in factors], np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)


def restored_renders(model, pixels: np.ndarray, timestep: int) -> tuple[int, np.ndarray]:
    """The grid step nearest `timestep`, and the model's deterministic 50-step DDIM output from rendered `pixels`
    (N, H, W, 3) uint8 noised to that step (noise seed 0)."""
    import torch

    from hspace.diffusion.sampler import sample
    from hspace.diffusion.schedule import make_schedule
    from hspace.images import from_pixels, to_uint8
    from hspace.progress import bar

    schedule = make_schedule(model.alphas_cumprod, 50, "trailing")
    index = schedule.index_of(timestep)
    a = float(schedule.alpha_bar[index])
    x0 = from_pixels(pixels)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    restored = []
    with torch.no_grad():
        for rows in bar(torch.arange(len(x0)).split(128), f"restore from t={timestep}", unit="batch"):
            x_t = a**0.5 * x0[rows] + (1 - a) ** 0.5 * noise[rows]
            restored.append(to_uint8(sample(model, schedule.steps(index), x_t).x0))
    return int(schedule.timesteps[index]), np.concatenate(restored)


def class_line(label: str, shapes: list[str], measurements: list[ShapeMeasurement], with_kept: bool = False) -> str:
    """One line: per class, the shares in the fill band, in the sub-pixel fill band and fitting as renders do,
    and the median sub-pixel fill, over the images of that class (`shapes`, one name per image); `with_kept`
    adds the share measured as that class (when `shapes` are the classes rendered, not measured)."""
    cells = []
    for shape in SHAPES:
        of_class = [m for s, m in zip(shapes, measurements) if s == shape]
        if not of_class:
            cells.append(f"{shape}: none")
            continue
        fill = np.mean([m.fill_in_band for m in of_class])
        extent = np.mean([m.extent_fill_in_band for m in of_class])
        fit = np.mean([m.fit_error <= CLEAR_FIT_ERROR for m in of_class])
        median = np.nanmedian([m.extent_fill for m in of_class])
        kept = f" kept {np.mean([m.shape == SHAPES.index(shape) for m in of_class]):.0%}" if with_kept else ""
        cells.append(
            f"{shape} (n={len(of_class)}):{kept} fill {fill:.0%} extent {extent:.0%} fit {fit:.0%} median {median:.3f}"
        )
    return f"{label:>12}  " + "  ".join(cells)


@user_errors_exit  # a UserError (a bad argument or path) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=600, help="rendered images per noise level")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0, 2, 6, 12], help="noise, 8-bit levels")
    parser.add_argument("--weights", default=None, help="also a model's samples: a shipped name or a directory")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument(
        "--restore-from", type=int, nargs="*", default=[], help="training timesteps to restore renders from"
    )
    args = parser.parse_args()
    if args.num_images < 1 or args.num_samples < 1:
        raise UserError(f"--num-images ({args.num_images}) and --num-samples ({args.num_samples}) must be at least 1")
    if min(args.sigmas) < 0:
        raise UserError(f"--sigmas must not be negative, not {min(args.sigmas)}")
    if args.restore_from and not args.weights:
        raise UserError("--restore-from needs a model: pass --weights")
    if any(not 0 <= t < 1000 for t in args.restore_from):
        raise UserError(f"--restore-from takes training timesteps in 0..999, not {args.restore_from}")
    model = None
    if args.weights:
        from hspace.diffusion.loading import load_model

        model = load_model(args.weights)
    for sigma in args.sigmas:
        shapes, pixels = noisy_renders(args.num_images, sigma)
        print(class_line(f"sigma {sigma:g}", shapes, measure_all(pixels)))
    if model is not None:
        from hspace.metrics.model_quality import draw_samples

        measurements = [m for m in measure_all(draw_samples(model, args.num_samples)) if m.shape >= 0]
        print(class_line("samples", [SHAPES[m.shape] for m in measurements], measurements))
    if args.restore_from:
        shapes, renders = noisy_renders(args.num_images, 0)
    for timestep in args.restore_from:
        step, pixels = restored_renders(model, renders, timestep)
        print(class_line(f"from t={step}", shapes, measure_all(pixels), with_kept=True))


if __name__ == "__main__":
    main()
