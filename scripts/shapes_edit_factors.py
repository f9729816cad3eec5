"""Which Shapes factor does each edited direction change? Measured from the pixels of a run's edits.

For every direction of `<run_dir>/edits.safetensors`, compares each edited sample with its strength-0
sample and reports the share whose background or object colour flipped, and the mean absolute change in
object area, centre (pixels) and fill ratio (area / bounding box: circle ~0.79, square 1, triangle 0.5).
With --classifier, also the two attributes whose probability the shipped Shapes classifier sees change
most at each strength (mean signed change).

    python scripts/shapes_edit_factors.py outputs/run/<date>/<time>
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from hspace.data.shapes_quality import measure_factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--file", default="edits.safetensors")
    parser.add_argument("--classifier", default=None, help="e.g. shapes_attributes")
    args = parser.parse_args()
    path = args.run_dir / args.file
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        names = f.metadata()["directions"].split(",")
    data = load_file(path)
    images = data["images"].permute(0, 1, 2, 4, 5, 3).numpy()  # (D, N, S, H, W, C)
    strengths = data["strengths"].tolist()
    if 0.0 not in strengths:
        raise SystemExit(f"{path} has no strength-0 column to compare with: strengths are {strengths}")
    zero = strengths.index(0.0)
    if args.classifier:
        import torch

        from hspace.classifiers.cnn import AttributeCNN

        classifier = AttributeCNN.load(args.classifier)
        pixels = data["images"].float() / 127.5 - 1  # (D, N, S, C, H, W)
        probs = classifier.probabilities(pixels.flatten(0, 2)).view(*pixels.shape[:3], -1)
        print("classifier: the two attributes changing most (mean change of probability)")
        for d, name in enumerate(names):
            cells = []
            for s, strength in enumerate(strengths):
                if s == zero:
                    continue
                delta = (probs[d, :, s] - probs[d, :, zero]).mean(dim=0)
                top = torch.argsort(delta.abs(), descending=True)[:2]
                cells.append(f"{strength:+g}: " + ", ".join(f"{classifier.attributes[i]} {float(delta[i]):+.2f}" for i in top))
            print(f"{name:>10}  " + " | ".join(cells))
    print(f"{'direction':>10} {'strength':>8} {'bg flip':>8} {'colour flip':>11} {'|d area|':>9} {'|d cx|':>7} {'|d cy|':>7} {'|d fill|':>8} {'lost':>5}")
    for d, name in enumerate(names):
        reference = [measure_factors(p) for p in images[d, :, zero]]
        for s, strength in enumerate(strengths):
            if s == zero:
                continue
            edited = [measure_factors(p) for p in images[d, :, s]]
            pairs = [(r, e) for r, e in zip(reference, edited) if not np.isnan(r.area) and not np.isnan(e.area)]
            lost = len(reference) - len(pairs)
            if not pairs:
                print(f"{name:>10} {strength:>+8g} {'':>8} {'':>11} {'':>9} {'':>7} {'':>7} {'':>8} {lost:>5}")
                continue
            mean = lambda f: np.mean([f(r, e) for r, e in pairs])  # noqa: E731
            print(
                f"{name:>10} {strength:>+8g} {mean(lambda r, e: r.light_background != e.light_background):>8.2f} "
                f"{mean(lambda r, e: r.colour != e.colour):>11.2f} {mean(lambda r, e: abs(e.area - r.area)):>9.1f} "
                f"{mean(lambda r, e: abs(e.cx - r.cx)):>7.2f} {mean(lambda r, e: abs(e.cy - r.cy)):>7.2f} "
                f"{mean(lambda r, e: abs(e.fill - r.fill)):>8.2f} {lost:>5}"
            )


if __name__ == "__main__":
    main()
