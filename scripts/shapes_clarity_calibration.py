"""How the shape-clarity measures of hspace.data.shapes_factors respond to pixel noise alone.

Renders the first N images of the Shapes validation split, adds Gaussian noise of each standard deviation
(in 8-bit levels, per channel, seed 0), and reports per shape class the share whose thresholded fill ratio
lies in its band (`fill`), whose sub-pixel fill ratio does (`extent`), and whose object fits a rendered shape
as tightly as rendered images do (`fit`), with the median sub-pixel fill. A model's deterministic 50-step
samples are reported on the same lines when --weights is given, so a model's shortfall can be told apart
from what noise of its size does to perfect renders.

    python scripts/shapes_clarity_calibration.py
    python scripts/shapes_clarity_calibration.py --weights shapes32 --num-samples 256
"""

from __future__ import annotations

import argparse

import numpy as np

from hspace.data.shapes import SHAPES, ShapesDataset, render
from hspace.data.shapes_factors import CLEAR_FIT_ERROR, ShapeMeasurement, measure_all


def noisy_renders(num_images: int, sigma: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The shape classes and the pixels of the first `num_images` validation renders with Gaussian noise of
    standard deviation `sigma` (8-bit levels) added to each channel, rounded and clipped. (N, 32, 32, 3) uint8"""
    dataset = ShapesDataset(num_images, "val", resolution=32)
    factors = [dataset.factors(i) for i in range(num_images)]
    clean = np.stack([render(f, 32) for f in factors]).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, clean.shape) if sigma > 0 else 0.0
    return [f.shape for f in factors], np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)


def class_line(label: str, shapes: list[str], measurements: list[ShapeMeasurement]) -> str:
    """One line: per class, the shares in the fill band, in the sub-pixel fill band and fitting as renders do,
    and the median sub-pixel fill, over the images of that class (`shapes`, one name per image)."""
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
        cells.append(
            f"{shape} (n={len(of_class)}): fill {fill:.0%} extent {extent:.0%} fit {fit:.0%} median {median:.3f}"
        )
    return f"{label:>12}  " + "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=600, help="rendered images per noise level")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0, 2, 6, 12], help="noise, 8-bit levels")
    parser.add_argument("--weights", default=None, help="also a model's samples: a shipped name or a directory")
    parser.add_argument("--num-samples", type=int, default=256)
    args = parser.parse_args()
    if args.num_images < 1 or args.num_samples < 1:
        raise SystemExit(f"--num-images ({args.num_images}) and --num-samples ({args.num_samples}) must be at least 1")
    if min(args.sigmas) < 0:
        raise SystemExit(f"--sigmas must not be negative, not {min(args.sigmas)}")
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


if __name__ == "__main__":
    main()
