"""Top singular triplets of a linear map known only through its products (docs/algorithms.md, "Jacobian directions").

The map J: R^n -> R^m is given by `jvp(V)` (rows of V (b, n) -> rows of J v (b, m)) and `vjp(U)`
(rows (b, m) -> rows of J^T u (b, n)). Two solvers:

- `block_subspace_iteration` (paper Alg. 1, the default): V <- orth(J^T J V) with k + p columns at a
  time, stopping when every relative eigen-residual ||J^T J r_j - sigma_j^2 r_j|| / sigma_j^2 of the top k
  Ritz vectors r_j of span(V) is below `tol` (after `min_iters`), or at `max_iters`.
- `sequential_power_iteration` (paper Alg. 2 with b = 1, the reference code's method): one vector at a
  time in output space, deflated against the left vectors already found, with the same residual test.

Both count the products they used, so their cost can be compared at equal accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Products = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SingularTriplets:
    right: torch.Tensor  # (k, n) unit right singular vectors, rows
    values: torch.Tensor  # (k,) singular values, descending
    left: torch.Tensor  # (k, m) unit left singular vectors, rows
    iterations: int
    converged: bool
    jvp_count: int  # single-vector products J v
    vjp_count: int  # single-vector products J^T u
    log: list[dict] = field(default_factory=list)  # per iteration: sigma, residual


# A singular value below this share of the largest is taken for a zero one: float32 products round a zero
# singular value to about 1e-7 of the largest.
ZERO_SINGULAR_VALUE = 1e-5


def check_rank(k: int, setting: str, bounds: dict[str, int]) -> None:
    """Refuse, before any product, asking for more singular vectors than a map has: a map from or to `size`
    values has at most `size` of them, for every ("values of h", size) of `bounds`."""
    from hspace.errors import UserError

    for what, size in bounds.items():
        if k > size:
            raise UserError(
                f"{setting}={k} asks for more directions than the {size} {what} allow: ask for at most {size}"
            )


def check_nonzero(values: torch.Tensor, setting: str, map_name: str, if_zero: str) -> None:
    """Refuse singular triplets whose singular values are zero (below ZERO_SINGULAR_VALUE of the largest): their
    vectors are any vectors of a null space, not directions the map moves. `if_zero`: what to do when the whole
    map is zero."""
    from hspace.errors import UserError

    rank = int((values > ZERO_SINGULAR_VALUE * values.max().clamp(min=torch.finfo(values.dtype).tiny)).sum())
    if rank == 0:
        raise UserError(f"{map_name} is zero, so it has no direction to find: {if_zero}")
    if rank < len(values):
        raise UserError(
            f"{setting}={len(values)}, but {map_name} has only {rank} singular values above zero: "
            f"ask for at most {rank}"
        )


def check_iteration_settings(oversample: int, tol: float, min_iters: int, max_iters: int, chunk: int | None) -> None:
    """The solver settings a method passes to the iterations here (method.oversample, tol, min_iters, max_iters,
    chunk), each refused in one line when out of range."""
    from hspace.checks import integer, number

    integer(oversample, "method.oversample", 0)
    number(tol, "method.tol", 0.0)
    integer(min_iters, "method.min_iters", 1)
    integer(max_iters, "method.max_iters", min_iters)
    if chunk is not None:
        integer(chunk, "method.chunk", 1)


def orthonormal_rows(rows: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(rows.T)
    return q.T


def block_subspace_iteration(
    jvp: Products,
    vjp: Products,
    n: int,
    k: int,
    oversample: int = 2,
    tol: float = 1e-3,
    min_iters: int = 3,
    max_iters: int = 50,
    seed: int = 0,
    dtype=torch.float32,
    device="cpu",
) -> SingularTriplets:
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and {n}, got {k}")
    width = min(k + oversample, n)
    generator = torch.Generator().manual_seed(seed)
    V = orthonormal_rows(torch.randn(width, n, generator=generator, dtype=torch.float64)).to(dtype=dtype, device=device)
    jvps = vjps = 0
    log = []
    converged = False
    for iteration in range(1, max_iters + 1):
        # Rayleigh-Ritz in span(V): the SVD of J V^T gives the best triplets there, ordered by sigma.
        u_left, sigma, vh = torch.linalg.svd(jvp(V).T.double(), full_matrices=False)
        ritz = (vh @ V.double()).to(dtype)  # (width, n) Ritz right vectors, J r_j = sigma_j u_j
        left = u_left.T.to(dtype)
        W = vjp(left)  # J^T u_j = sigma_j r_j exactly when r_j is a singular vector
        jvps, vjps = jvps + width, vjps + width
        sigma = sigma.to(dtype)
        # ||J^T J r_j - sigma_j^2 r_j|| / sigma_j^2 = ||J^T u_j - sigma_j r_j|| / sigma_j
        residual = (W - sigma[:, None] * ritz).norm(dim=1) / sigma.clamp(min=torch.finfo(sigma.dtype).tiny)
        log.append({"iteration": iteration, "sigma": sigma[:k].tolist(), "residual": residual[:k].tolist()})
        if iteration >= min_iters and float(residual[:k].max()) < tol:
            converged = True
            break
        V = orthonormal_rows(W.double()).to(dtype)  # span(J^T J V): one step of subspace iteration
    return SingularTriplets(ritz[:k], sigma[:k], left[:k], iteration, converged, jvps, vjps, log)


def sequential_power_iteration(
    jvp: Products,
    vjp: Products,
    m: int,
    k: int,
    tol: float = 1e-3,
    min_iters: int = 3,
    max_iters: int = 200,
    seed: int = 0,
    dtype=torch.float32,
    device="cpu",
) -> SingularTriplets:
    """Power iteration on J J^T in output space, one vector at a time, deflated against those found."""
    generator = torch.Generator().manual_seed(seed)
    lefts: list[torch.Tensor] = []
    rights, values, log = [], [], []
    jvps = vjps = 0
    total_iterations, all_converged = 0, True
    for j in range(k):
        w = torch.randn(m, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
        found = torch.stack(lefts) if lefts else None
        if found is not None:
            w = w - found.T @ (found @ w)
        w = w / w.norm()
        converged = False
        for iteration in range(1, max_iters + 1):
            g = vjp(w[None])[0]
            q = jvp(g[None])[0]
            jvps, vjps = jvps + 1, vjps + 1
            if found is not None:
                q = q - found.T @ (found @ q)
            lam = q.norm()
            residual = float((q - (w @ q) * w).norm() / lam.clamp(min=torch.finfo(lam.dtype).tiny))
            if lam == 0:  # w lies in the null space of J J^T: its singular value is 0 (check_nonzero refuses it)
                break
            w = q / lam
            log.append({"vector": j, "iteration": iteration, "sigma": float(lam.sqrt()), "residual": residual})
            if iteration >= min_iters and residual < tol:
                converged = True
                break
        total_iterations += iteration
        all_converged &= converged
        if found is not None:  # again: where J J^T w is all rounding (a zero singular value), w leans on found
            w = w - found.T @ (found @ w)
            w = w / w.norm()
        g = vjp(w[None])[0]
        vjps += 1
        sigma = g.norm()
        lefts.append(w)
        rights.append(g / sigma.clamp(min=torch.finfo(sigma.dtype).tiny))  # 0, not NaN, for a zero singular value
        values.append(sigma)
    return SingularTriplets(
        torch.stack(rights), torch.stack(values), torch.stack(lefts), total_iterations, all_converged, jvps, vjps, log
    )
