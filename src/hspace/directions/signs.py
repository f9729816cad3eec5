"""The sign convention of directions that have none of their own (singular vectors, principal axes): each row is
flipped so that its largest-magnitude entry is positive. A row's sign then follows from its values alone, not from
the rounding of the solver or the path that found it, as long as its largest entry is not tied in magnitude."""

from __future__ import annotations

import numpy as np
import torch


def canonical_rows(rows: torch.Tensor) -> torch.Tensor:
    """(k, ...) -> each row (the leading index) flipped so that its largest-|entry| is positive; rows of zeros
    stay zero."""
    flat = rows.reshape(len(rows), -1)
    index = flat.abs().argmax(dim=1)
    signs = torch.sign(flat.gather(1, index[:, None]))
    return rows * signs.reshape(-1, *([1] * (rows.ndim - 1)))


def canonical_rows_numpy(rows: np.ndarray) -> np.ndarray:
    """canonical_rows of a numpy array, in its dtype."""
    return canonical_rows(torch.from_numpy(np.ascontiguousarray(rows))).numpy()
