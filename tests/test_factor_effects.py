"""Effects of edits on the Shapes factors (hspace.metrics.factor_effects)."""

import math
from dataclasses import replace

import numpy as np
import pytest

from hspace.data.shapes import ShapesDataset, render
from hspace.data.shapes_factors import measure_all
from hspace.metrics.factor_effects import DATA_STD, factor_effects, moves_one_way


def renders(factors):
    return np.stack([render(f, 32) for f in factors])


def faded(pixels, kept):
    """(N, H, W, 3) uint8 images with each pixel moved to its image's corner grey, keeping `kept` of its offset."""
    grey = pixels[:, :1, :1].astype(np.float64)
    return np.round(grey + kept * (pixels - grey)).astype(np.uint8)


@pytest.fixture(scope="module")
def originals():
    ds = ShapesDataset(24, "val")
    return [ds.factors(i) for i in range(24)]


def test_a_pure_move_is_predominantly_cx(originals):
    moved = [replace(f, cx=f.cx + 2.0) for f in originals]
    effects = factor_effects(measure_all(renders(originals)), measure_all(renders(moved)), 32)
    assert effects.change["cx"] == pytest.approx(2.0 / 32, abs=0.005)
    assert effects.normalised["cx"] == pytest.approx(2.0 / 32 / DATA_STD["cx"], abs=0.03)
    assert abs(effects.change["r"]) < 0.005 and abs(effects.change["cy"]) < 0.005
    assert effects.change["background"] == effects.change["colour"] == effects.change["shape"] == 0
    assert effects.dominant == "cx" and effects.predominant and effects.valid_fraction == 1.0 and effects.count == 24


def test_a_colour_change_with_a_leak_into_size(originals):
    recoloured = [replace(f, colour="red" if f.colour != "red" else "blue", r=f.r * 0.95) for f in originals]
    effects = factor_effects(measure_all(renders(originals)), measure_all(renders(recoloured)), 32)
    assert effects.normalised["colour"] == 1.0 and effects.dominant == "colour" and effects.predominant
    assert effects.change["r"] < 0 and effects.normalised["r"] > 0.05  # the leak is measured


def test_two_factors_at_once_are_not_predominant(originals):
    both = [
        replace(
            f,
            background="light" if f.background == "dark" else "dark",
            shape="square" if f.shape != "square" else "circle",
        )
        for f in originals
    ]
    effects = factor_effects(measure_all(renders(originals)), measure_all(renders(both)), 32)
    assert effects.normalised["background"] == 1.0 and effects.normalised["shape"] == 1.0 and not effects.predominant


def test_a_move_one_way_is_told_from_a_jitter_and_from_a_move_the_same_way_at_both_signs(originals):
    reference = measure_all(renders(originals))

    def effects(shift):
        return factor_effects(
            reference, measure_all(renders([replace(f, cx=f.cx + shift(i)) for i, f in enumerate(originals)])), 32
        )

    left, right = effects(lambda i: -2.0), effects(lambda i: 2.0)
    jitter = effects(lambda i: 2.0 if i % 2 else -2.0)  # as large a move, half each way
    assert left.directed and right.directed and not jitter.directed and jitter.dominant == "cx"
    assert moves_one_way(left, right) == "cx" and moves_one_way(right, left) == "cx"
    assert moves_one_way(right, right) is None and moves_one_way(left, jitter) is None
    recoloured = factor_effects(
        reference,
        measure_all(renders([replace(f, colour="red" if f.colour != "red" else "blue") for f in originals])),
        32,
    )
    assert not recoloured.directed and moves_one_way(left, recoloured) is None  # a categorical factor has no way


def test_lost_objects_are_left_out_and_mismatched_lengths_refused(originals):
    blank = np.full((24, 32, 32, 3), 40, dtype=np.uint8)
    effects = factor_effects(measure_all(renders(originals)), measure_all(blank), 32)
    assert effects.count == 0 and math.isnan(effects.normalised["r"]) and effects.valid_fraction == 0.0
    with pytest.raises(ValueError, match="same samples"):
        factor_effects(measure_all(renders(originals)), measure_all(blank[:3]), 32)
    # an unedited image without an object leaves its pair out too, whatever the edit made of it
    reference = measure_all(np.concatenate([blank[:1], renders(originals[1:])]))
    moved = measure_all(renders([replace(f, cx=f.cx + 2.0) for f in originals]))
    effects = factor_effects(reference, moved, 32)
    assert effects.count == 23 and effects.change["cx"] == pytest.approx(2.0 / 32, abs=0.005)


def test_an_effect_exactly_twice_the_next_is_predominant():
    from hspace.metrics.factor_effects import FACTORS, FactorEffects

    def effects(first, second):
        normalised = dict.fromkeys(FACTORS, 0.0) | {"cx": first, "r": second}
        return FactorEffects(dict(normalised), normalised, 8, 1.0)

    assert effects(0.5, 0.25).predominant and not effects(0.5, 0.2501).predominant
    assert not effects(0.0, 0.0).predominant  # nothing moved


def test_edit_factors_script_reports_signed_moves(originals, tmp_path):
    """scripts/shapes_edit_factors.py on an edits file whose first direction moves every object 3 pixels right
    per unit of strength and shrinks it by 1.5 pixels at -1: cx changes predominantly at +1, nothing does at -1
    (the size leak is as large as the move in data standard deviations), and the signed columns give the moves
    in pixels. Its second direction moves objects 3 pixels up at -1 and down at +1 and grows them by 1 pixel at
    -1: y dominates at both ends but not predominantly, and moves one way at each, so it alone moves one factor
    one way."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from hspace.edits_file import save_edits
    from hspace.images import uint8_to_unit

    columns = [
        [replace(f, cx=f.cx - 3.0, r=f.r - 1.5) for f in originals],
        originals,
        [replace(f, cx=f.cx + 3.0) for f in originals],
    ]
    second = [
        [replace(f, cy=f.cy - 3.0, r=f.r + 1.0) for f in originals],
        originals,
        [replace(f, cy=f.cy + 3.0) for f in originals],
    ]
    images = np.stack([np.stack([renders(c) for c in d], axis=1) for d in (columns, second)])  # (D, N, S, H, W, C)
    edited = uint8_to_unit(torch.from_numpy(images).permute(0, 1, 2, 5, 3, 4))  # as a run's edits, in [-1, 1]
    save_edits(tmp_path / "edits.safetensors", edited, [-1.0, 0.0, 1.0], range(len(originals)), "seeds", ["pc0", "pc1"])
    script = Path(__file__).parents[1] / "scripts" / "shapes_edit_factors.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True)
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["pc0"]}
    assert rows["+1"][8:10] == ["cx", "yes"] and rows["-1"][9] == "no", out.stdout
    assert [float(v) for v in rows["+1"][-3:]] == pytest.approx([0.0, 3.0, 0.0], abs=0.1)
    assert [float(v) for v in rows["-1"][-3:]] == pytest.approx([-1.5, -3.0, 0.0], abs=0.1)
    assert "predominantly at strengths -1 and +1: 0 of 2 (none)" in out.stdout
    assert "one way at strengths -1 and +1: 1 of 2 (pc1: cy)" in out.stdout


def test_edit_factors_script_can_leave_out_pairs_the_pixel_judge_fails(originals, tmp_path):
    """Every object moves 3 pixels right, but eight edited objects are faded 45% of the way to the grey, an
    image the renderer never makes (no palette colour), which the measurement reads as a smaller object: with
    --factor-pairs object they count, the radius leaks and the move is no longer predominant; by default they
    are left out, the edit is a pure 3-pixel move in cx, and the valid column still counts all 24 images."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from hspace.edits_file import save_edits
    from hspace.images import uint8_to_unit

    moved = renders([replace(f, cx=f.cx + 3.0) for f in originals])
    moved[:8] = faded(moved[:8], 0.55)
    images = np.stack([renders(originals), moved], axis=1)[None]  # (1, N, 2, H, W, C)
    edited = uint8_to_unit(torch.from_numpy(images).permute(0, 1, 2, 5, 3, 4))
    save_edits(tmp_path / "edits.safetensors", edited, [0.0, 1.0], range(len(originals)), "seeds", ["pc0"])
    script = Path(__file__).parents[1] / "scripts" / "shapes_edit_factors.py"

    def row(*flags):
        out = subprocess.run([sys.executable, str(script), str(tmp_path), *flags], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return next(line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["pc0"])

    counted, valid_only = row("--factor-pairs", "object"), row()
    assert float(counted[5]) > 0.4 and counted[9] == "no"  # r leaks from the faded objects
    assert float(valid_only[5]) < 0.05 and valid_only[8:10] == ["cx", "yes"]
    assert [float(v) for v in valid_only[-3:]] == pytest.approx([0.0, 3.0, 0.0], abs=0.1)
    assert float(valid_only[10]) == float(counted[10]) == pytest.approx(16 / 24, abs=0.01)


def test_edit_factors_script_names_a_missing_edits_file(tmp_path):
    """A run directory without edits.safetensors gets one line naming it and a non-zero exit, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "shapes_edit_factors.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'edits.safetensors'} does not exist: pass the run_dir of a finished hspace-run "
        "(it writes edits.safetensors)"
    ]
