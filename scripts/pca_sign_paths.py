"""How PCA's sign rules fare on one collection reached by two paths: streaming and exact PCA of the same h.

Both fits find the same axes to rounding; per sign rule (`method.sign_reference`) this prints, for each of the
first components and in all, how many steps take the other sign in one fit than in the other, and how many
neighbouring steps point against each other in the streaming fit (an edit turning round between two steps), in
all and among neighbours that overlap by more than method.sign_restart_overlap (the same axis, not a swap).
The h of the collection is read from the cache where the default run left it (same samples, grid and eta).

python scripts/pca_sign_paths.py                    # the default run's PCA of the shipped Shapes DDPM
python scripts/pca_sign_paths.py --num-samples 128 --show 3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hspace.checks import integer
from hspace.cli import user_errors_exit


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--num-components", type=int, default=25)
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--spacing", default="trailing", help="the model's grid (shapes32: trailing)")
    parser.add_argument("--show", type=int, default=5, help="components listed one by one")
    parser.add_argument(
        "--cache",
        default=os.environ.get("HSPACE_CACHE") or str(Path.home() / ".cache" / "hspace"),
        help="cache directory (default: hspace-run's, $HSPACE_CACHE or ~/.cache/hspace)",
    )
    args = parser.parse_args()
    # Imported before the checks for PCA's defaults; diffusers, imported with the model, takes seconds.
    from hspace.checks import choice
    from hspace.diffusion.schedule import SPACINGS
    from hspace.directions.pca import PCA
    from hspace.errors import UserError

    tracked = PCA.oversample  # streaming PCA tracks num_components + oversample axes, within a batch of batch_size
    integer(args.num_components, "--num-components", 1, PCA.batch_size - tracked)
    integer(args.num_samples, "--num-samples", args.num_components + tracked)
    integer(args.num_steps, "--num-steps", 2)
    integer(args.show, "--show", 0, args.num_components)
    choice(args.spacing, "--spacing", SPACINGS)
    if Path(args.cache).exists() and not Path(args.cache).is_dir():
        raise UserError(f"--cache={args.cache} is a file: point it at a directory")
    from dataclasses import replace

    from hspace.cache import ArtifactCache
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.pca import SIGN_REFERENCES, align_signs, opposite_signs, reversals

    model = load_model(args.weights)
    sampler = SamplerSettings(num_steps=args.num_steps, spacing=args.spacing)
    cache = ArtifactCache(args.cache)
    method = PCA(num_samples=args.num_samples, num_components=args.num_components)
    streaming = method.fit(model, sampler, cache)
    exact = replace(method, exact_max_n=args.num_samples).fit(model, sampler, cache)
    total = args.num_components * args.num_steps
    print(f"{args.num_components} components x {args.num_steps} steps, {args.num_samples} samples")
    cut = method.sign_restart_overlap  # chain_restart's, and what counts as the same axis turning round
    print(f"reversals: neighbouring steps pointing against each other (in brackets: overlapping by more than {cut})")
    for reference in SIGN_REFERENCES:
        opposite = opposite_signs(streaming.axes, exact.axes, reference, cut)
        aligned = align_signs(streaming.axes, reference, cut)[0]
        turns, same_axis = reversals(aligned), reversals(aligned, cut)
        first = ", ".join(f"pc{j} {opposite[j]}/{turns[j]} ({same_axis[j]})" for j in range(args.show))
        print(
            f"{reference}: steps of other sign, streaming against exact: {opposite.sum()} of {total}; "
            f"reversals: {turns.sum()} ({same_axis.sum()})"
            + (f"; per component, other sign/reversals: {first}" if first else "")
        )


if __name__ == "__main__":
    main()
