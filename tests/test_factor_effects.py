"""Effects of edits on the Shapes factors (hspace.metrics.factor_effects)."""

import math
from dataclasses import replace

import numpy as np
import pytest

from hspace.data.shapes import ShapesDataset, render
from hspace.data.shapes_factors import measure_all
from hspace.metrics.factor_effects import DATA_STD, factor_effects


def renders(factors):
    return np.stack([render(f, 32) for f in factors])


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


def test_lost_objects_are_left_out_and_mismatched_lengths_refused(originals):
    blank = np.full((24, 32, 32, 3), 40, dtype=np.uint8)
    effects = factor_effects(measure_all(renders(originals)), measure_all(blank), 32)
    assert effects.count == 0 and math.isnan(effects.normalised["r"]) and effects.valid_fraction == 0.0
    with pytest.raises(ValueError, match="same samples"):
        factor_effects(measure_all(renders(originals)), measure_all(blank[:3]), 32)


def test_edit_factors_script_reports_signed_moves(originals, tmp_path):
    """scripts/shapes_edit_factors.py on an edits file whose one direction moves every object 3 pixels right
    per unit of strength and shrinks it by 1.5 pixels at -1: cx changes predominantly at +1, nothing does at -1
    (the size leak is as large as the move in data standard deviations), and the signed columns give the moves
    in pixels."""
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    columns = [
        [replace(f, cx=f.cx - 3.0, r=f.r - 1.5) for f in originals],
        originals,
        [replace(f, cx=f.cx + 3.0) for f in originals],
    ]
    images = np.stack([renders(c) for c in columns], axis=1)[None]  # (D, N, S, H, W, C)
    tensors = {
        "images": torch.from_numpy(images).permute(0, 1, 2, 5, 3, 4).contiguous(),
        "strengths": torch.tensor([-1.0, 0.0, 1.0]),
    }
    save_file(tensors, str(tmp_path / "edits.safetensors"), metadata={"directions": "pc0"})
    script = Path(__file__).parents[1] / "scripts" / "shapes_edit_factors.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True)
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["pc0"]}
    assert rows["+1"][8:10] == ["cx", "yes"] and rows["-1"][9] == "no", out.stdout
    assert [float(v) for v in rows["+1"][-3:]] == pytest.approx([0.0, 3.0, 0.0], abs=0.1)
    assert [float(v) for v in rows["-1"][-3:]] == pytest.approx([-1.5, -3.0, 0.0], abs=0.1)
    assert "at strengths -1 and +1: 0 of 1 (none)" in out.stdout


def test_edit_factors_script_names_a_missing_edits_file(tmp_path):
    """A run directory without edits.safetensors gets one line naming it and a non-zero exit, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "shapes_edit_factors.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"{tmp_path / 'edits.safetensors'} does not exist: pass the run_dir of a finished hspace-run "
        "(it writes edits.safetensors)"
    ]
