"""Draw an edit grid from a finished run's edits file: chosen strengths, the first rows.

python scripts/edit_grid.py <run_dir> light_background out.png --strengths -5 0 8 --rows 8
python scripts/edit_grid.py <run_dir> light_background out.png --real      # edits_real.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hspace.checks import output_path
from hspace.cli import user_errors_exit
from hspace.edits_file import load_edits
from hspace.images import save_edit_grid


@user_errors_exit  # a bad output path is one line and exit 2
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("direction")
    parser.add_argument("out", type=Path)
    parser.add_argument("--strengths", type=float, nargs="*", help="columns to draw (default: all)")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--real", action="store_true", help="the inverted real images' edits")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()

    output_path(args.out, "out", "file")
    path = args.run_dir / ("edits_real.safetensors" if args.real else "edits.safetensors")
    if not path.is_file():
        parser.exit(2, f"error: no {path.name} in {args.run_dir}: give a finished hspace-run directory\n")
    edits = load_edits(path)
    names, images, strengths, ids = edits.names, edits.images, edits.strengths, edits.ids
    if args.direction not in names:
        parser.exit(2, f"error: {path} has no direction {args.direction!r}; it has {', '.join(names)}\n")
    if args.rows < 1 or args.strengths == []:
        parser.exit(2, "error: nothing to draw: give --rows of at least 1 and at least one value after --strengths\n")
    wanted = strengths if args.strengths is None else args.strengths
    stored = [float(torch.tensor(s, dtype=torch.float32)) for s in wanted]  # the file holds float32 strengths
    missing = [w for w, s in zip(wanted, stored) if s not in strengths]
    if missing:
        parser.exit(2, f"error: strengths {missing} are not in {path} (it has {[round(s, 6) for s in strengths]})\n")
    columns = [strengths.index(s) for s in stored]
    pixels = images[names.index(args.direction)][: args.rows][:, columns].permute(0, 1, 3, 4, 2).numpy()
    title = args.title or f"{args.direction} ({'inverted real images' if args.real else 'generated samples'})"
    print(save_edit_grid(pixels, wanted, title, args.out, row_labels=ids[: args.rows], max_rows=args.rows))


if __name__ == "__main__":
    main()
