"""Why the pixel judge refuses edited Shapes images: each test it fails, over the edits of one run or many.

Reads every `edits.safetensors` under the given run folders (a run_dir, or a root such as a leaderboard's runs)
and judges each edited image (hspace.data.shapes_quality). It prints how many fail, and how many fail each test:
the border's grey, the background's uniformity, one object, the object's colour. For the images that fail the
uniformity test alone, it describes the off-grey pixels away from the object (those the test counts): how many
there are, and how large their largest connected patch is. Scattered single pixels are grain; a patch of several
pixels is a smear or the trace of an object. With --grid it writes up to 64 of those images, each as the
unedited image (the run's strength-0 column, where it has one), the edited one, and its off-grey pixels in white.

    python scripts/shapes_judge_failures.py <runs_root> --grid uniformity_failures.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hspace.checks import output_path
from hspace.cli import user_errors_exit
from hspace.errors import UserError

PATCH = 8  # pixels: a connected off-grey patch at least this large reads as a smear or a trace, not grain


@user_errors_exit  # a UserError (a bad path) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, or folders holding runs")
    parser.add_argument("--file", default="edits.safetensors")
    parser.add_argument("--grid", default=None, help="write up to 64 images that fail only the uniformity test")
    args = parser.parse_args()
    if args.grid is not None:
        output_path(args.grid, "--grid", "file")
    paths = []
    for root in args.runs:
        if not root.is_dir():
            raise UserError(f"{root} is not a folder: pass run folders of hspace-run, or a folder holding them")
        paths += sorted(root.rglob(args.file))
    if not paths:
        raise UserError(f"no {args.file} under {', '.join(map(str, args.runs))}: pass the folders of finished runs")

    from scipy import ndimage

    from hspace.data.shapes_quality import judge_sample, off_grey
    from hspace.edits_file import load_edits
    from hspace.images import image_grid, save_png

    counts = dict.fromkeys(("images", "failed", "border", "uniformity", "one object", "colour", "uniformity alone"), 0)
    off, patches, examples = [], [], []
    for path in paths:
        edits = load_edits(path)
        images = edits.images.permute(0, 1, 2, 4, 5, 3).numpy()  # (D, N, S, H, W, C)
        zero = edits.strengths.index(0.0) if 0.0 in edits.strengths else None
        for index in np.ndindex(*images.shape[:3]):
            pixels = images[index]
            judged = judge_sample(pixels)
            failed = {
                "border": not judged.border_ok,
                "uniformity": not judged.uniform_ok,
                "one object": not judged.one_object,
                "colour": judged.one_object and not judged.colour_ok,
            }
            counts["images"] += 1
            counts["failed"] += not judged.passed
            for test, fails in failed.items():
                counts[test] += fails
            if failed["uniformity"] and sum(failed.values()) == 1:
                counts["uniformity alone"] += 1
                mask = off_grey(pixels)
                labels, found = ndimage.label(mask)
                sizes = ndimage.sum_labels(np.ones(mask.shape), labels, index=np.arange(1, found + 1))
                off.append(int(mask.sum()))
                patches.append(int(sizes.max()) if found else 0)
                if len(examples) < 64:
                    unedited = images[index[0], index[1], zero] if zero is not None else pixels
                    shown = np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=-1)
                    examples.append(np.concatenate([unedited, pixels, shown], axis=1))
    total = counts["images"]
    print(f"{total} edited images in {len(paths)} files; {counts['failed']} fail the judge")
    for test in ("border", "uniformity", "one object", "colour", "uniformity alone"):
        print(f"  {test:>16}: {counts[test]} ({counts[test] / total:.1%})")
    if off:
        off_array, patch_array = np.array(off), np.array(patches)
        low, mid, high = np.percentile(off_array, [10, 50, 90])
        print(
            f"uniformity alone: off-grey pixels away from the object, median {mid:.0f} (10-90%: {low:.0f}-{high:.0f}); "
            f"largest patch >= {PATCH} pixels in {np.mean(patch_array >= PATCH):.0%}, at most 2 pixels in "
            f"{np.mean(patch_array <= 2):.0%}"
        )
    if args.grid is not None and examples:
        save_png(image_grid(np.stack(examples), ncols=4), args.grid, scale=3)
        print(f"wrote {len(examples)} of them to {args.grid} (unedited | edited | off-grey pixels)")


if __name__ == "__main__":
    main()
