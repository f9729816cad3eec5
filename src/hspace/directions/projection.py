"""Disentanglement by linear projection (Haas et al. eq. 12, after InterFaceGAN; docs/algorithms.md, "Disentanglement").

    v = [I - V (V^T V)^-1 V^T] v0,   V = the flattened conditioning directions as columns

over the whole flattened h_{T:1}: one global projection, not one per step. Computed in float64 as
v0 - Q Q^T v0 with Q an orthonormal basis of span(V) from a QR with a rank check, which equals eq. 12
also for conditions that are not orthogonal to each other.
"""

from __future__ import annotations

import torch


def orthonormal_basis(columns: torch.Tensor, rank_tol: float = 1e-10) -> torch.Tensor:
    """Q (n, r) spanning the columns of (n, m), dropping columns that add nothing (|R_ii| small)."""
    q, r = torch.linalg.qr(columns.double())
    diagonal = r.diagonal().abs()
    keep = diagonal > rank_tol * diagonal.max()
    return q[:, keep]


def project_out(v0: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
    """v0 (n,) with the span of the rows of `conditions` (m, n) removed, in float64."""
    q = orthonormal_basis(conditions.T)
    v = v0.double() - q @ (q.T @ v0.double())
    if conditions.shape[0]:
        cos = (conditions.double() @ v).abs() / (conditions.double().norm(dim=1) * v.norm()).clamp(min=1e-300)
        if float(cos.max()) >= 1e-8:
            raise ArithmeticError(f"projection left |cos| = {float(cos.max()):.2e} with a conditioning direction")
    return v
