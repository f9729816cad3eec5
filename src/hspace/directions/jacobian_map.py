"""The map h -> M ⊙ eps_theta(x_t, tau | mid_block output := h) at fixed x_t, and its matrix-free
products (docs/algorithms.md, "Jacobian directions"): forward-mode JVPs through `torch.func.jvp` and reverse-mode
VJPs through one `torch.func.vjp`, both vmapped over blocks of vectors, so a block pays the primal pass once.
(`torch.func.linearize` would save that pass per block, but tracing the UNet to build it cost about 7 s per step
on 2 CPU cores, far more than the iteration it serves.)

The skips and the time embedding are recomputed from x_t inside the map but do not depend on h, so only
the decoder path from h contributes. For v- or x0-predicting models eps is recovered from the output
(hspace.diffusion.ddim.to_x0_eps), so J is always d eps / d h.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from hspace.bottleneck import HSpace, capture_h
from hspace.diffusion.ddim import to_x0_eps
from hspace.diffusion.model import DiffusionModel


@dataclass
class JacobianProducts:
    h: torch.Tensor  # the point the Jacobian is taken at (the natural h_t, h_shape; or an x_t)
    eps: torch.Tensor  # the map's value there, flattened (m,): M ⊙ eps for the h map
    jvp: Callable[[torch.Tensor], torch.Tensor]  # (b, n) -> (b, m)
    vjp: Callable[[torch.Tensor], torch.Tensor]  # (b, m) -> (b, n)

    @property
    def n(self) -> int:
        return self.h.numel()

    @property
    def m(self) -> int:
        return self.eps.numel()


def masked_eps_of_h(
    model: DiffusionModel, x_t: torch.Tensor, tau: int, mask: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(h) = flatten(M ⊙ eps(x_t, tau | h)) for one sample x_t (C, H, W) and h (h_shape)."""
    unet = model.unet
    alpha_bar = float(model.alphas_cumprod[tau])
    t = torch.full((1,), tau, device=x_t.device, dtype=torch.long)

    def f(h: torch.Tensor) -> torch.Tensor:
        # The math attention kernel: the fused ones have no forward-mode derivative.
        with sdpa_kernel(SDPBackend.MATH), HSpace(unet) as hs:
            hs.replace(h[None])
            output = unet(x_t[None], t).sample[0]
        eps = to_x0_eps(output, x_t, alpha_bar, model.prediction_type)[1]
        return (eps if mask is None else eps * mask).flatten()

    return f


def jacobian_products(
    model: DiffusionModel, x_t: torch.Tensor, tau: int, mask: torch.Tensor | None = None, chunk: int | None = None
) -> JacobianProducts:
    """Matrix-free J and J^T at (x_t, tau), optionally masked. Vectors are rows; `chunk` bounds how many
    are pushed through the decoder at once (memory)."""
    if model.unet.training:
        raise ValueError("the Jacobian needs the UNet in eval mode (dropout would make it random)")
    h0 = capture_h(model, x_t[None], tau, autocast=False)[0]
    return matrix_free(masked_eps_of_h(model, x_t, tau, mask), h0, chunk)


def matrix_free(f: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor, chunk: int | None = None):
    """The products of the Jacobian of f (a tensor of `point`'s shape -> a flat vector) at `point`, as rows:
    JVPs and VJPs, both vmapped (`chunk` rows at a time)."""
    output, vjp_fn = vjp(f, point)
    batched_jvp = vmap(lambda v: jvp(f, (point,), (v,))[1], randomness="error", chunk_size=chunk)
    batched_vjp = vmap(lambda u: vjp_fn(u)[0], randomness="error", chunk_size=chunk)
    shape = point.shape

    def jvp_rows(V: torch.Tensor) -> torch.Tensor:
        return batched_jvp(V.reshape(-1, *shape)).reshape(V.shape[0], -1)

    def vjp_rows(U: torch.Tensor) -> torch.Tensor:
        return batched_vjp(U).reshape(U.shape[0], -1)

    return JacobianProducts(point, output.detach(), jvp_rows, vjp_rows)


def dense_jacobian(
    model: DiffusionModel, x_t: torch.Tensor, tau: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The full (m, n) Jacobian by forward mode, for tests on tiny models."""
    from torch.func import jacfwd

    h0 = capture_h(model, x_t[None], tau, autocast=False)[0]
    return jacfwd(masked_eps_of_h(model, x_t, tau, mask))(h0).reshape(-1, h0.numel())
