"""Disentanglement by linear projection (Haas et al. eq. 12, after InterFaceGAN; docs/algorithms.md, "Disentanglement").

    v = [I - V (V^T V)^-1 V^T] v0,   V = the flattened conditioning directions as columns

over the whole flattened h_{T:1}: one global projection, not one per step. Computed in float64 as
v0 - Q Q^T v0 with Q an orthonormal basis of span(V) from an SVD, which equals eq. 12 also for conditions
that are not orthogonal to each other, and, where some conditions are combinations of others (one-hot labels:
the class-mean differences of circle, square and triangle), the least-squares answer, whatever their order.
A v0 inside span(V) leaves nothing: the result is 0 (to rounding).
"""

from __future__ import annotations

import torch

RANK_TOL = 1e-10  # singular values below this share of the largest add nothing to the span
LEFT_TOL = 1e-8  # a projection keeping less than this share of v0's norm left nothing (v0 lies in the span)


def orthonormal_basis(columns: torch.Tensor, rank_tol: float = RANK_TOL) -> torch.Tensor:
    """Q (n, r) spanning the columns of (n, m): the left singular vectors of the singular values that count."""
    if not columns.shape[1]:
        return columns.double()
    u, singular, _ = torch.linalg.svd(columns.double(), full_matrices=False)
    return u[:, singular > rank_tol * singular.max()] if singular.max() > 0 else u[:, :0]


def project_out(v0: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
    """v0 (n,) with the span of the rows of `conditions` (m, n) removed, in float64."""
    q = orthonormal_basis(conditions.T)
    v = v0.double() - q @ (q.T @ v0.double())
    if conditions.shape[0] and v.norm() > LEFT_TOL * v0.double().norm():
        cos = (conditions.double() @ v).abs() / (conditions.double().norm(dim=1) * v.norm()).clamp(min=1e-300)
        if float(cos.max()) >= 1e-8:
            raise ArithmeticError(f"projection left |cos| = {float(cos.max()):.2e} with a conditioning direction")
    return v
