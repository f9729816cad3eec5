"""The edits file: what hspace-run writes is what the analysis scripts read, and a foreign file is one line."""

import pytest
import torch
from safetensors.torch import save_file

from hspace.edits_file import load_edits, save_edits
from hspace.errors import UserError
from hspace.images import unit_to_uint8


def test_edits_round_trip_as_the_pngs_round_them(tmp_path):
    edited = torch.rand(2, 3, 4, 3, 8, 8) * 2.2 - 1.1  # (D, N, S, C, H, W), a little outside [-1, 1]
    path = save_edits(tmp_path / "edits.safetensors", edited, [-2.0, 0.0, 1.5, 2.0], [7, 8, 9], "indices", ["a", "b"])
    loaded = load_edits(path)
    assert torch.equal(loaded.images, unit_to_uint8(edited)) and loaded.images.dtype == torch.uint8
    assert loaded.strengths == [-2.0, 0.0, 1.5, 2.0] and loaded.ids == [7, 8, 9]
    assert loaded.id_kind == "indices" and loaded.names == ["a", "b"]


def test_unit_to_uint8_maps_hand_values_clamped_and_rounded():
    """(x + 1) * 127.5 with x clamped to [-1, 1], rounded: -1 -> 0, 0 -> 127.5 -> 128, 1 -> 255, and
    -0.5 -> 63.75 -> 64, not the 63 truncation would give."""
    values = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.2])
    expected = torch.tensor([0, 0, 64, 128, 191, 255, 255], dtype=torch.uint8)
    assert torch.equal(unit_to_uint8(values), expected)
    assert torch.equal(unit_to_uint8(values.double().view(1, 7, 1, 1)), expected.view(1, 7, 1, 1))


def test_a_missing_or_foreign_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no edits file at"):
        load_edits(tmp_path / "none.safetensors")
    save_file({"images": torch.zeros(1, 1, 1, 3, 2, 2, dtype=torch.uint8)}, tmp_path / "x.safetensors")
    with pytest.raises(UserError, match="is not a readable edits file") as error:
        load_edits(tmp_path / "x.safetensors")
    assert "\n" not in str(error.value)


def test_a_file_whose_parts_disagree_is_one_line(tmp_path):
    """Images for 2 directions x 1 sample x 1 strength, with 3 seeds and 1 name: refused on load, as is a direction
    name holding the comma the file joins names with."""
    save_file(
        {
            "images": torch.zeros(2, 1, 1, 3, 4, 4, dtype=torch.uint8),
            "strengths": torch.ones(1),
            "seeds": torch.arange(3),
        },
        tmp_path / "x.safetensors",
        {"directions": "a", "layout": "direction,sample,strength,channel,height,width"},
    )
    with pytest.raises(UserError, match="for 1 directions, 3 seeds and 1 strengths"):
        load_edits(tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="may not hold a comma"):
        save_edits(tmp_path / "y.safetensors", torch.zeros(2, 1, 1, 3, 4, 4), [1.0], [0], "seeds", ["a,b", "c"])
    assert not (tmp_path / "y.safetensors").exists()


def test_a_grid_is_no_wider_than_its_images():
    import numpy as np

    from hspace.images import image_grid

    pixels = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    assert image_grid(pixels, ncols=99_999_999).shape == (6, 16, 3)  # one row of 3, 1-pixel padding
    assert image_grid(pixels, ncols=2).shape == (11, 11, 3)
