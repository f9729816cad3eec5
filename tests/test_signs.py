"""The sign convention shared by PCA, Jacobian and LOCO directions (hspace.directions.signs)."""

import numpy as np
import torch

from hspace.directions.signs import canonical_margins_numpy, canonical_rows, canonical_rows_numpy


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


def slow_margin(row: np.ndarray) -> float:
    flat = [float(x) for x in row.ravel()]
    largest = max(flat, key=abs)
    if largest == 0:
        return 0.0
    other = max((abs(x) for x in flat if x * largest < 0), default=0.0)
    return 1 - other / abs(largest)


def test_the_margin_of_a_canonical_sign_is_the_gap_to_the_largest_entry_of_the_other_sign():
    rows = np.array([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [3.0, -3.0, 1.0], [1.0, 0.5, 0.25], [-4.0, 1.0, 3.0]])
    np.testing.assert_allclose(canonical_margins_numpy(rows), [0.5, 0.0, 0.0, 1.0, 0.25])
    generator = np.random.default_rng(0)
    rows = generator.normal(size=(8, 3, 4))
    margins = canonical_margins_numpy(rows)
    np.testing.assert_allclose(margins, [slow_margin(row) for row in rows])
    np.testing.assert_allclose(canonical_margins_numpy(-rows), margins)  # a row's sign does not change its margin


def test_no_rows_have_no_margins():
    assert canonical_margins_numpy(np.zeros((0, 5))).shape == (0,)
