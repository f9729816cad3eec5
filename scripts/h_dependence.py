"""How much does a UNet's output depend on its bottleneck h? (hspace.metrics.h_dependence)

python scripts/h_dependence.py --weights shapes32
python scripts/h_dependence.py --checkpoint <run_dir>/checkpoints/last.ckpt   # EMA weights of a training run
"""

from __future__ import annotations

import argparse

from hspace.checks import integer
from hspace.cli import user_errors_exit


@user_errors_exit  # a UserError (a bad path or name) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="shapes32")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--num-samples", type=int, default=16)
    args = parser.parse_args()
    integer(args.num_samples, "--num-samples", 2)  # h is swapped between samples
    # Imported once the arguments are checked: diffusers and Lightning take seconds to import.
    from hspace.metrics.h_dependence import h_swap_change

    if args.checkpoint:
        from hspace.lightning.ddpm import model_from_checkpoint

        model = model_from_checkpoint(args.checkpoint)
    else:
        from hspace.diffusion.loading import load_model

        model = load_model(args.weights)
    for tau, change in h_swap_change(model, args.num_samples).items():
        print(f"tau {tau:4d}: relative change of the output with h swapped {change:.3f}")


if __name__ == "__main__":
    main()
