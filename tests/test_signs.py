"""The sign convention shared by PCA, Jacobian and LOCO directions (hspace.directions.signs)."""

import numpy as np
import torch

from hspace.directions.signs import canonical_rows, canonical_rows_numpy


def slow_canonical(rows: np.ndarray) -> np.ndarray:
    out = rows.copy()
    for j, row in enumerate(rows):
        flat = row.ravel()
        largest = max(range(flat.size), key=lambda i: abs(flat[i]))  # the first of equal magnitudes
        if flat[largest] < 0:
            out[j] = -row
    return out


def test_each_row_is_flipped_so_its_largest_entry_is_positive_whatever_sign_it_came_with():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 3, 4, 4, generator=generator, dtype=torch.float64)
    flips = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64).reshape(-1, 1, 1, 1)
    canonical = canonical_rows(rows)
    assert torch.equal(canonical_rows(rows * flips), canonical)  # the sign it came with does not matter
    assert torch.equal(canonical, torch.from_numpy(slow_canonical(rows.numpy())))
    flat = canonical.reshape(6, -1)
    assert (flat.gather(1, flat.abs().argmax(dim=1, keepdim=True)) > 0).all()


def test_the_numpy_form_keeps_the_dtype_and_a_row_of_zeros_stays_zero():
    rows = np.array([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [3.0, -3.0, 1.0]], dtype=np.float32)
    canonical = canonical_rows_numpy(rows)
    assert canonical.dtype == np.float32
    np.testing.assert_array_equal(canonical, [[-0.5, 2.0, -1.0], [0.0, 0.0, 0.0], [3.0, -3.0, 1.0]])
    np.testing.assert_array_equal(canonical, slow_canonical(rows))
