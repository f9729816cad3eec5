"""Which Shapes factor does each edited direction change? Measured from the pixels of a run's edits.

For every direction of `<run_dir>/edits.safetensors` and strength, compares each edited sample with its
strength-0 sample, both measured by hspace.data.shapes_factors, and prints the normalised effect on each
factor (hspace.metrics.factor_effects: flip rates of background, colour and shape; mean |change| of r, cx,
cy over their data standard deviation), the dominant factor, whether the edit changes it predominantly
(at least twice any other effect), the share of edited images that are still valid Shapes images, and the
mean signed change of r, cx and cy in pixels (a direction that moves a factor one way has a signed change near
its mean absolute change; one that jitters it has a signed change near 0).
The last lines count the directions that change one factor predominantly at the largest strengths of
either sign, and those that move one continuous factor one way there (each way at one sign, whatever else
changes; hspace.metrics.factor_effects.moves_one_way).
With --classifier, also the two attributes whose probability the shipped Shapes classifier sees change
most at each strength (mean signed change). The effects are taken over the pairs whose two images pass the
pixel judge, as a run's factor metrics are by default (metrics.factor_pairs=valid); the valid column counts
every edited image.
With --factor-pairs object, over every pair whose two images hold an object, valid or not (an image the renderer
never makes, e.g. two objects or a faded object of no palette colour, is then measured as if it were one).

    python scripts/shapes_edit_factors.py outputs/run/<date>/<time>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hspace.cli import user_errors_exit
from hspace.data.shapes_factors import measure_all
from hspace.edits_file import load_edits
from hspace.errors import UserError
from hspace.images import uint8_to_unit
from hspace.metrics.factor_effects import CONTINUOUS, FACTORS, factor_effects, judged, moves_one_way


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--file", default="edits.safetensors")
    parser.add_argument("--classifier", default=None, help="e.g. shapes_attributes")
    parser.add_argument(
        "--factor-pairs",
        choices=("valid", "object"),
        default="valid",
        help="the pairs the effects are taken over: both images pass the pixel judge (default, as "
        "metrics.factor_pairs), or both hold an object, valid or not",
    )
    args = parser.parse_args()
    path = args.run_dir / args.file
    if not path.is_file():
        raise UserError(f"{path} does not exist: pass the run_dir of a finished hspace-run (it writes {args.file})")
    edits = load_edits(path)
    names, strengths = edits.names, edits.strengths
    images = edits.images.permute(0, 1, 2, 4, 5, 3).numpy()  # (D, N, S, H, W, C)
    if 0.0 not in strengths:
        raise UserError(f"{path} has no strength-0 column to compare with: strengths are {strengths}")
    zero = strengths.index(0.0)
    if args.classifier:
        import torch

        from hspace.classifiers.cnn import AttributeCNN

        classifier = AttributeCNN.load(args.classifier)
        pixels = uint8_to_unit(edits.images)  # (D, N, S, C, H, W)
        probs = classifier.probabilities(pixels.flatten(0, 2)).view(*pixels.shape[:3], -1)
        print("classifier: the two attributes changing most (mean change of probability)")
        for d, name in enumerate(names):
            cells = []
            for s, strength in enumerate(strengths):
                if s == zero:
                    continue
                delta = (probs[d, :, s] - probs[d, :, zero]).mean(dim=0)
                top = torch.argsort(delta.abs(), descending=True)[:2]
                cells.append(
                    f"{strength:+g}: " + ", ".join(f"{classifier.attributes[i]} {float(delta[i]):+.2f}" for i in top)
                )
            print(f"{name:>10}  " + " | ".join(cells))
    resolution = images.shape[-2]
    print(
        f"{'direction':>10} {'strength':>8} "
        + " ".join(f"{f:>10}" for f in FACTORS)
        + f" {'dominant':>10} {'alone':>5} {'valid':>5} "
        + " ".join(f"{f + ' px':>7}" for f in CONTINUOUS)
    )
    lowest, highest = min(strengths), max(strengths)
    both_signs = lowest < 0 < highest
    predominant, one_way = [], []
    valid_only = args.factor_pairs == "valid"
    for d, name in enumerate(names):
        reference = measure_all(images[d, :, zero])
        reference = judged(reference) if valid_only else reference
        ends = {}  # the effects at the largest strengths of either sign
        for s, strength in enumerate(strengths):
            if s == zero:
                continue
            edited = measure_all(images[d, :, s])
            effects = factor_effects(reference, judged(edited) if valid_only else edited, resolution)
            if strength in (lowest, highest):
                ends[strength] = effects
            cells = " ".join(f"{effects.normalised[f]:>10.2f}" for f in FACTORS)
            signed = " ".join(f"{effects.change[f] * resolution:>+7.2f}" for f in CONTINUOUS)
            print(
                f"{name:>10} {strength:>+8g} {cells} {effects.dominant:>10} "
                f"{'yes' if effects.predominant else 'no':>5} {effects.valid_fraction:>5.2f} {signed}"
            )
        if all(effects.predominant for effects in ends.values()):
            predominant.append(name)
        moved = moves_one_way(ends[lowest], ends[highest]) if both_signs else None
        if moved:
            one_way.append(f"{name}: {moved}")
    ends_label = f"at strengths {lowest:+g} and {highest:+g}"
    print(
        f"directions changing one factor predominantly {ends_label}: "
        f"{len(predominant)} of {len(names)} ({', '.join(predominant) or 'none'})"
    )
    if both_signs:
        print(
            f"directions moving one factor one way {ends_label}: "
            f"{len(one_way)} of {len(names)} ({', '.join(one_way) or 'none'})"
        )


if __name__ == "__main__":
    main()
