"""Widen the finest level of a trained Shapes DDPM (hspace.diffusion.widen) and save it as a save_pretrained
directory, to start a wider model's training from what the narrower one learned:

    python scripts/widen_shapes_model.py --weights shapes32 --channels 48 --out outputs/shapes32_wide48_init
    hspace-train experiment=shapes32_ddpm_v6_wide module.init_weights=outputs/shapes32_wide48_init

Prints how far the widened model's output moves from the original's on 64 noised training images (the two
group norms that see a widened skip beside an unwidened decoder path, and the one resnet whose shortcut turns
from a 1x1 convolution into the identity, are not carried over exactly).
"""

from __future__ import annotations

import argparse

from hspace.checks import output_path
from hspace.cli import user_errors_exit
from hspace.errors import UserError


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32", help="a shipped model name or a save_pretrained directory")
    parser.add_argument("--channels", type=int, default=48, help="the finest level's new width")
    parser.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise, in weight std")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the save_pretrained directory to write")
    args = parser.parse_args()
    output_path(args.out, "--out", "folder")
    from hspace.diffusion.weights import check_derived_output

    check_derived_output(args.weights, args.out)
    if args.noise < 0:
        raise UserError(f"--noise must not be negative, not {args.noise}")

    from hspace.diffusion.derived import output_change, save_pretrained_model
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.widen import check_widenable, widen_finest_level

    model = load_model(args.weights)
    try:
        check_widenable(model.unet, args.channels)
    except ValueError as error:
        raise UserError(f"--channels {args.channels}: {error}") from None
    wide = widen_finest_level(model.unet, args.channels, noise=args.noise, seed=args.seed).eval()

    save_pretrained_model(wide, model.scheduler_config, args.out)
    moved = output_change(model, wide)
    params = sum(p.numel() for p in wide.parameters())
    print(f"wrote {args.out}: {params:,} parameters; output moved by {moved:.1%} (relative RMS) on 64 noised images")


if __name__ == "__main__":
    main()
