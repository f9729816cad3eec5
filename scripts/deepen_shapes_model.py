"""Add coarse levels under the bottleneck of a trained Shapes DDPM (hspace.diffusion.deepen) and save it as a
save_pretrained directory, to start a model with a smaller h from what the shallower one learned:

    python scripts/deepen_shapes_model.py --weights shapes32 --levels 2 --out outputs/shapes32_h1_init
    hspace-train experiment=shapes32_ddpm_h1 module.init_weights=outputs/shapes32_h1_init

Prints the new h's shape, how many parameters are new, and how far the deepened model's output moves from the
original's on 64 noised training images (everything below the old coarsest up block is new).
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
    parser.add_argument("--levels", type=int, default=2, help="how many coarser levels to add")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new levels' initialisation")
    parser.add_argument("--out", required=True, help="the save_pretrained directory to write")
    args = parser.parse_args()
    output_path(args.out, "--out", "folder")
    from hspace.diffusion.weights import check_derived_output

    check_derived_output(args.weights, args.out)
    if args.levels < 1:
        raise UserError(f"--levels must be at least 1, not {args.levels}")

    from hspace.diffusion.deepen import deepen_bottleneck, deepened_config, new_parameters
    from hspace.diffusion.derived import output_change, save_pretrained_model
    from hspace.diffusion.loading import load_model

    model = load_model(args.weights)
    try:
        deepened_config(model.unet, args.levels)
    except ValueError as error:
        raise UserError(f"--levels {args.levels}: {error}") from None
    deep = deepen_bottleneck(model.unet, args.levels, seed=args.seed).eval()

    save_pretrained_model(deep, model.scheduler_config, args.out)
    moved = output_change(model, deep)
    state = deep.state_dict()
    fresh = sum(state[k].numel() for k in new_parameters(model.unet, deep, args.levels))
    total = sum(p.numel() for p in deep.parameters())
    side = deep.config.sample_size // 2 ** (len(deep.config.block_out_channels) - 1)
    print(
        f"wrote {args.out}: h {deep.config.block_out_channels[-1]}x{side}x{side}, {total:,} parameters "
        f"({fresh:,} new); output moved by {moved:.1%} (relative RMS) on 64 noised images"
    )


if __name__ == "__main__":
    main()
