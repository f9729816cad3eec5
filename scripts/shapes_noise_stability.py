"""How rough is a Shapes model's map from noise to image? (hspace.metrics.noise_stability)

Draws seeds first-seed.. by deterministic DDIM from their noise x_T and from sqrt(1 - a^2) x_T + a n for each
amount a, measures both from pixels and prints, per factor, the normalised effect (flip rate; mean |change|
over the data std) beside the reference map's, where each factor reads its own coordinate of the noise, and
their ratio (1: as stable as the reference; larger: rougher). With --empirical N the map is not a network's but
that of the exact denoiser of N rendered training images on the model's schedule (hspace.diffusion.empirical):
what the data's own probability-flow map does.

    python scripts/shapes_noise_stability.py                       # the shipped model, 64 samples
    python scripts/shapes_noise_stability.py --weights <dir> --amounts 0.03 0.1 0.2 --json stability.json
    python scripts/shapes_noise_stability.py --empirical 20000 --num-samples 256
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hspace.checks import integer, output_path
from hspace.cli import user_errors_exit
from hspace.errors import UserError


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.03, 0.1, 0.2])
    parser.add_argument(
        "--empirical", type=int, default=None, help="the exact denoiser of this many rendered training images"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, not {args.num_samples}")
    integer(args.steps, "--steps", 1, 1000)  # DDIM steps on the 1000 training timesteps
    if args.empirical is not None and args.empirical < 1:
        raise UserError(f"--empirical must be at least 1 image, not {args.empirical}")
    if args.json is not None:
        output_path(args.json, "--json", "file")
    bad = [a for a in args.amounts if not 0.0 < a <= 1.0]
    if bad:
        raise UserError(f"--amounts must lie in (0, 1], not {bad}: a is the weight of fresh noise in x_T")

    from hspace.diffusion.loading import load_model
    from hspace.files import atomic_write_text
    from hspace.metrics.factor_effects import FACTORS
    from hspace.metrics.noise_stability import noise_stability

    model = load_model(args.weights)
    source = model
    if args.empirical is not None:
        from hspace.data.batch import image_batch
        from hspace.data.shapes import ShapesDataset
        from hspace.diffusion.empirical import EmpiricalDenoiser
        from hspace.progress import bar

        dataset = ShapesDataset(args.empirical, "train", resolution=model.image_shape[-1])
        images = image_batch(dataset, bar(range(len(dataset)), "render", unit="image"))
        source = EmpiricalDenoiser(images, model.alphas_cumprod)
    rows = noise_stability(source, args.amounts, args.num_samples, args.first_seed, args.steps)
    print(f"{'amount':>6} {'':>9} " + " ".join(f"{f:>10}" for f in FACTORS))
    for row in rows:
        print(f"{row.amount:>6g} {'model':>9} " + " ".join(f"{row.measured.normalised[f]:>10.3f}" for f in FACTORS))
        print(f"{'':>6} {'reference':>9} " + " ".join(f"{row.reference[f]:>10.3f}" for f in FACTORS))
        print(f"{'':>6} {'ratio':>9} " + " ".join(f"{row.ratio(f):>10.2f}" for f in FACTORS))
    pairs = ", ".join(f"{row.measured.count} at {row.amount:g}" for row in rows)
    print(f"pairs with an object in both images, of {args.num_samples}: {pairs}")
    if args.json is not None:
        record = {
            "weights": args.weights,
            "empirical": args.empirical,
            "num_samples": args.num_samples,
            "first_seed": args.first_seed,
            "steps": args.steps,
            "amounts": {
                str(row.amount): {
                    "model": row.measured.normalised,
                    "reference": row.reference,
                    "pairs": row.measured.count,
                }
                for row in rows
            },
        }
        text = json.dumps(record, indent=2) + "\n"
        atomic_write_text(args.json, text)


if __name__ == "__main__":
    main()
