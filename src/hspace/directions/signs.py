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


def canonical_margins_numpy(rows: np.ndarray) -> np.ndarray:
    """(k,): how firmly canonical_rows decides each row's sign, 1 - |b| / |a| in [0, 1], where a is the row's
    largest-|entry| and b its largest-|entry| of the other sign (0 if none). Near 0 the two are nearly tied, and
    rounding decides the sign; a row of zeros has margin 0."""
    rows = np.asarray(rows, dtype=np.float64)
    flat = rows.reshape(len(rows), int(np.prod(rows.shape[1:])))
    if flat.size == 0:  # no rows (a one-step grid has no later steps), or rows of no entries
        return np.zeros(len(flat))
    largest = flat[np.arange(len(flat)), np.abs(flat).argmax(axis=1)]
    other = np.where(np.sign(flat) == -np.sign(largest)[:, None], np.abs(flat), 0.0).max(axis=1)
    magnitude = np.abs(largest)
    return np.divide(magnitude - other, magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)
