"""The quality of a Shapes DDPM, measured from pixels: the numbers of its model card.

Draws seeds 0..N-1 with deterministic 50-step DDIM on the trailing grid (--first-seed and --steps draw others:
held-out seeds for choosing between weights, finer grids for the sampler's share of an error) and reports
- the pixel judge (hspace.data.shapes_quality): pass fraction and each criterion;
- shape clarity (hspace.data.shapes_factors): the share of samples whose object fits a rendered shape as
  well as rendered images do, the shares whose fill ratio and whose sub-pixel fill ratio lie in their
  class's band, the median fit error and the shape classes found;
- the dependence of the output on h (hspace.metrics.h_dependence) at six timesteps;
and writes the first 64 samples as a grid when asked, and the first 64 samples whose object's fill ratio
lies outside its class's band as another (--outside-band-grid: what keeps the model short of the clarity
target); with --classifier, that classifier's agreement with the factors measured from the pixels of the
valid samples.

    python scripts/shapes_model_quality.py --weights shapes32
    python scripts/shapes_model_quality.py --checkpoint <run_dir>/checkpoints/last.ckpt --grid samples.png
    python scripts/shapes_model_quality.py --outside-band-grid outside_band.png
    python scripts/shapes_model_quality.py --checkpoint <ckpt> --trained-weights --first-seed 256 --num-samples 1024
"""

from __future__ import annotations

import argparse
import json
import sys

from hspace.checks import output_path
from hspace.cli import user_errors_exit
from hspace.errors import UserError


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32", help="a shipped model name or a save_pretrained directory")
    parser.add_argument("--checkpoint", default=None, help="a training checkpoint (its EMA weights)")
    parser.add_argument(
        "--trained-weights", action="store_true", help="with --checkpoint: its trained weights instead of the EMA's"
    )
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--first-seed", type=int, default=0, help="draw seeds first-seed..first-seed+num-samples-1")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (the model card's numbers use 50)")
    parser.add_argument("--grid", default=None, help="write the first 64 samples to this PNG")
    parser.add_argument(
        "--outside-band-grid", default=None, help="write the first 64 samples whose fill ratio is outside its band"
    )
    parser.add_argument("--classifier", default=None, help="also its agreement with the pixels, e.g. shapes_attributes")
    args = parser.parse_args()
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, not {args.num_samples}")
    if args.first_seed < 0:
        raise UserError(f"--first-seed must not be negative, not {args.first_seed}")
    if not 1 <= args.steps <= 1000:
        raise UserError(f"--steps must be between 1 and 1000, not {args.steps}")
    for option, path in (("--grid", args.grid), ("--outside-band-grid", args.outside_band_grid)):
        if path is not None:
            output_path(path, option, "file")
    if args.trained_weights and not args.checkpoint:
        raise UserError(
            "--trained-weights reads a training checkpoint: add --checkpoint <run_dir>/checkpoints/last.ckpt"
        )
    # Imported once the arguments are checked: diffusers and Lightning take seconds to import.
    from hspace.classifiers.cnn import AttributeCNN
    from hspace.data.shapes_factors import measure_all
    from hspace.images import image_grid, save_png
    from hspace.metrics.model_quality import classifier_agreement, model_quality
    from hspace.run_record import finite

    classifier = AttributeCNN.load(args.classifier) if args.classifier else None  # a wrong name: before sampling
    if args.checkpoint:
        from hspace.lightning.ddpm import model_from_checkpoint

        model = model_from_checkpoint(args.checkpoint, ema=not args.trained_weights)
    else:
        from hspace.diffusion.loading import load_model

        model = load_model(args.weights)
    report, pixels = model_quality(model, args.num_samples, first_seed=args.first_seed, num_steps=args.steps)
    if classifier is not None:
        report["classifier_agreement"] = classifier_agreement(pixels, classifier)
    if args.grid:
        save_png(image_grid(pixels[:64], ncols=8), args.grid, scale=3)
    if args.outside_band_grid:
        outside = [i for i, m in enumerate(measure_all(pixels)) if m.shape >= 0 and not m.fill_in_band][:64]
        if outside:
            save_png(image_grid(pixels[outside], ncols=8), args.outside_band_grid, scale=3)
        else:
            print(f"no fill ratio outside its band; {args.outside_band_grid} not written", file=sys.stderr)
    print(json.dumps(finite(report), indent=2, allow_nan=False))  # nothing measured (NaN) as null: strict JSON


if __name__ == "__main__":
    main()
