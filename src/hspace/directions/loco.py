"""`method=loco`: LOCO Edit (Chen et al., NeurIPS 2024; docs/algorithms.md, "LOCO Edit"): local edit directions
in x_t from the low-rank Jacobian of the posterior mean.

At one step t_edit of a generated sample's own trajectory, f(x_t) = x0_hat(x_t) is the posterior-mean
predictor. Its Jacobian restricted to a region Omega of the output, J_in = M ⊙ d f / d x_t, is found matrix-free
(J^T u by reverse mode, J v by a second reverse pass through it, block subspace iteration): its top `edit_rank` right
singular vectors change the region the most. The top `null_rank` right singular vectors of the complement's
Jacobian, J_out = (1 - M) ⊙ d f / d x_t, are the directions that change the rest of the image the most; they
are projected out of the edit directions (and these renormalised), so that to first order an edit moves Omega
and leaves the rest alone. Directions live in x_t at t_edit (`extra["x_directions"]`, (k, C, H, W)); the
direction tensor marks that step with scale 1 (edit=xt_shift applies them there).

Each direction is flipped so that its largest entry is positive: a singular vector's sign is arbitrary, and the
solver's would follow its seed, `chunk` and the device's rounding (which still decide it where the largest two
entries tie in magnitude with opposite signs).

Masks: `object` (Shapes: the object's region measured from the sample's pixels, grown by `mask_margin`
pixels), a pixel box, a mask image, or none.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hspace.cache import ArtifactCache
from hspace.checks import choice, integer
from hspace.data.image_files import DECODING_VERSION, check_image, load_image
from hspace.diffusion.ddim import to_x0_eps
from hspace.diffusion.inversion import invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.jacobian import read_mask_image, region_mask
from hspace.directions.jacobian_map import JacobianProducts
from hspace.directions.method import DirectionMethod
from hspace.directions.signs import canonical_rows
from hspace.directions.subspace import block_subspace_iteration, check_iteration_settings, check_nonzero, check_rank
from hspace.errors import UserError
from hspace.images import to_uint8
from hspace.precision import float32_model, ieee_float32

MASKS = ("object", "box", "file", "none")


def posterior_mean_map(model: DiffusionModel, tau: int, mask: torch.Tensor | None = None):
    """F(X) = flatten(M ⊙ x0_hat(X, tau)) row by row for a batch X (B, C, H, W): the posterior-mean predictor,
    optionally masked. Rows do not interact (eval mode), so the batch's Jacobian is block diagonal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    alpha_bar = float(model.alphas_cumprod[tau])

    def f(x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), tau, dtype=torch.long, device=x.device)
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no forward-mode derivative
            output = model.unet(x, t).sample
        x0 = to_x0_eps(output, x, alpha_bar, model.prediction_type)[0]
        return (x0 if mask is None else x0 * mask).flatten(1)

    return f


def posterior_products(
    model: DiffusionModel, x_t: torch.Tensor, tau: int, mask: torch.Tensor | None = None, chunk: int | None = None
) -> JacobianProducts:
    """Matrix-free products of J = M ⊙ d x0_hat / d x_t at (x_t, tau), as rows. A block of vectors is one batch of
    copies of x_t through the UNet, `chunk` rows at a time: J^T u by reverse mode, and J v as the derivative of
    the (linear) map u -> J^T u in the direction v, a second reverse pass. Forward mode is not used: its group-norm
    rule fails on the non-contiguous tangents that attention blocks hand on."""
    if model.unet.training:
        raise ValueError("the Jacobian needs the UNet in eval mode (dropout would make it random)")
    f = posterior_mean_map(model, tau, mask)
    x_t = x_t.detach()
    shape = x_t.shape

    def in_chunks(rows: torch.Tensor, product) -> torch.Tensor:
        size = chunk or rows.shape[0]
        with torch.enable_grad():
            return torch.cat([product(rows[i : i + size]) for i in range(0, rows.shape[0], size)]).detach()

    def transposed(b: int, create_graph: bool):
        x = x_t.expand(b, *shape).contiguous().requires_grad_(True)
        y = f(x)  # (b, m)
        u = torch.zeros_like(y, requires_grad=True)
        (jt_u,) = torch.autograd.grad(y, x, grad_outputs=u, create_graph=create_graph)
        return u, jt_u

    def jvp_rows(V: torch.Tensor) -> torch.Tensor:
        def product(part: torch.Tensor) -> torch.Tensor:
            u, jt_u = transposed(len(part), create_graph=True)
            return torch.autograd.grad(jt_u, u, grad_outputs=part.reshape(-1, *shape))[0]

        return in_chunks(V, product)

    def vjp_rows(U: torch.Tensor) -> torch.Tensor:
        def product(part: torch.Tensor) -> torch.Tensor:
            x = x_t.expand(len(part), *shape).contiguous().requires_grad_(True)
            return torch.autograd.grad(f(x), x, grad_outputs=part)[0].reshape(len(part), -1)

        return in_chunks(U, product)

    with torch.no_grad():
        value = f(x_t[None])[0]
    return JacobianProducts(x_t, value, jvp_rows, vjp_rows)


def object_mask(pixels: np.ndarray, margin: int = 1) -> torch.Tensor:
    """The object's region of a Shapes image (H, W, 3) uint8, grown by `margin` pixels, as a (3, H, W) 0/1 mask."""
    from hspace.data.shapes_factors import object_region

    region = object_region(pixels, margin)
    if region is None:
        raise UserError("method.mask=object: the sample has no object to edit; choose another method.sample_seed")
    return torch.from_numpy(region).float().expand(3, *region.shape).clone()


def project_out(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Rows of `vectors` (k, n) without their components along the orthonormal rows of `basis` (r, n), renormalised."""
    projected = vectors - (vectors @ basis.T) @ basis
    norms = projected.norm(dim=1, keepdim=True)
    if bool((norms < 1e-6).any()):
        raise UserError("an edit direction lies in the span of the directions projected out: lower method.null_rank")
    return projected / norms


@dataclass
class LocoDirections(DirectionMethod):
    sample_seed: int = 0  # the generated sample whose Jacobian is used (edits transfer to every edited seed)
    image_file: str | None = None  # instead: a real image, inverted on the run's grid and decoded to t_edit (the paper)
    t_edit: int = 600  # training timestep of the edit (the nearest grid step)
    edit_rank: int = 3  # directions: top right singular vectors of the masked Jacobian
    null_rank: int = 5  # top right singular vectors of the complement's Jacobian projected out (0: none)
    mask: str = "object"  # object | box | file | none
    mask_box: list[int] | None = None  # mask=box: [top, left, bottom, right) in pixels
    mask_file: str | None = None  # mask=file: a grey-scale image, white inside the region
    mask_margin: int = 1  # mask=object: pixels the measured object region is grown by
    oversample: int = 2
    tol: float = 1.0e-3
    min_iters: int = 3
    max_iters: int = 100
    seed: int = 0
    chunk: int | None = None

    name = "loco"
    version = 3  # 2: region masks are resized as LOCO Edit's code does; 3: canonical signs
    provides = ("x_directions",)
    finds_h = False

    def __post_init__(self):
        integer(self.sample_seed, "method.sample_seed", 0)
        integer(self.seed, "method.seed", 0)
        integer(self.t_edit, "method.t_edit", 0, 999)
        integer(self.edit_rank, "method.edit_rank", 1)
        integer(self.null_rank, "method.null_rank", 0)
        choice(self.mask, "method.mask", MASKS)
        integer(self.mask_margin, "method.mask_margin", 0)
        check_iteration_settings(self.oversample, self.tol, self.min_iters, self.max_iters, self.chunk)
        if self.mask == "box" and (not isinstance(self.mask_box, (list, tuple)) or len(self.mask_box) != 4):
            raise UserError(f"method.mask=box needs method.mask_box=[top,left,bottom,right), not {self.mask_box!r}")
        if self.mask == "file":
            if self.mask_file is None:
                raise UserError("method.mask=file needs method.mask_file=<a grey-scale image, white inside>")
            read_mask_image(self.mask_file)
        if self.image_file is not None:
            check_image(self.image_file, "method.image_file")

    def identity(self) -> dict:
        """The settings, with the content of the image and mask files they name instead of their paths."""
        identity = super().identity()
        for key in ("image_file", "mask_file"):
            path = getattr(self, key)
            if path is not None:
                identity[key] = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
        if self.image_file is not None:  # taken at the decoded x_t since; earlier entries were at the inverted one
            identity["image_point"] = "decoded"
            identity["decoding"] = DECODING_VERSION
        return identity

    def starting_point(
        self, model: DiffusionModel, schedule, index: int, clip_x0: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t at grid index `index` (C, H, W) and the image it leads to (C, H, W) in [-1, 1]: the generated
        sample's own trajectory, or for a real image the point its edit starts from: the image inverted to x_T
        as the run inverts it and decoded down to the step, as edit=xt_shift walks it and as the paper's code
        does (DDIM inversion and decoding do not quite meet). On a stochastic grid the inversion's noise is that
        of the run's first real image (seed 0): list the image first in real_image_files to edit it where its
        Jacobian was taken."""
        if self.image_file is None:
            x_T, z = noise_for([self.sample_seed], model, schedule)
            trajectory = sample(model, schedule, x_T, z, record_x=True, clip_x0=clip_x0)
            return trajectory.x_t[0, index], trajectory.x0[0].cpu()
        image = load_image(Path(self.image_file).expanduser(), model.image_shape[1])
        inverted = invert(model, schedule, image[None].to(model.device, model.dtype), seeds=[0])
        before = inverted.z[:, :index] if inverted.z is not None else None
        x_t = (
            sample(model, schedule.steps(0, index), inverted.x_T, before, clip_x0=clip_x0).x0 if index else inverted.x_T
        )
        return x_t[0], image

    def check_model(self, model: DiffusionModel) -> None:
        values = math.prod(model.image_shape)
        check_rank(self.edit_rank, "method.edit_rank", {"values of x_t": values})
        if self.mask != "none":  # without a region nothing is projected out
            check_rank(self.null_rank, "method.null_rank", {"values of x_t": values})
        if self.mask in ("box", "file"):  # the object's region is measured on the sample
            self.check_region(self.region(model, None))

    def check_region(self, mask: torch.Tensor | None) -> None:
        """Refuse more edit directions than the region has values, or more directions projected out than the
        rest of the image has (none when the region covers it)."""
        if mask is None:
            return
        check_rank(self.edit_rank, "method.edit_rank", {"values of x0 inside the region": int(mask.sum())})
        check_rank(self.null_rank, "method.null_rank", {"values of x0 outside the region": int((1 - mask).sum())})

    def region(self, model: DiffusionModel, x0: torch.Tensor | None) -> torch.Tensor | None:
        """The (C, H, W) mask of the region to edit, for the sample x0 (C, H, W) in [-1, 1]."""
        if self.mask == "object":
            return object_mask(to_uint8(x0[None])[0], self.mask_margin)
        if self.mask == "box":
            return region_mask(model.image_shape, box=list(self.mask_box))
        if self.mask == "file":
            return region_mask(model.image_shape, file=self.mask_file)
        return None

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        with ieee_float32():  # no TF32 in the products, and float32 weights (hspace.precision)
            return self.find_without_tf32(float32_model(model), sampler)

    def find_without_tf32(self, model: DiffusionModel, sampler: SamplerSettings) -> Directions:
        self.check_model(model)  # a bad region or rank stops before any sampling
        schedule = sampler.schedule(model.alphas_cumprod)  # the run's grid: the edited samples walk the same path
        index = schedule.index_of(self.t_edit)
        tau = int(schedule.timesteps[index])
        x_t, image = self.starting_point(model, schedule, index, sampler.clip_x0)
        x_t = x_t.to(model.device, model.dtype)
        mask = self.region(model, image)
        if self.mask == "object":  # measured on the sample: box and file regions were checked with the model
            self.check_region(mask)
        mask = mask.to(model.device) if mask is not None else None
        n = x_t.numel()
        inside = posterior_products(model, x_t, tau, mask, self.chunk)
        found = block_subspace_iteration(
            inside.jvp, inside.vjp, n, self.edit_rank, self.oversample, self.tol, self.min_iters, self.max_iters,
            self.seed, x_t.dtype, x_t.device,
        )  # fmt: skip
        check_nonzero(
            found.values, "method.edit_rank", f"the posterior mean's Jacobian at tau={tau} inside the region",
            "choose a region (method.mask) where the prediction depends on x_t",
        )  # fmt: skip
        vectors = found.right
        info = {
            "t_edit": tau,
            "t_index": index,
            "singular_values": found.values.tolist(),
            "iterations": found.iterations,
        }
        metrics = {}
        if self.null_rank and mask is not None:
            outside = posterior_products(model, x_t, tau, 1 - mask, self.chunk)
            rest = block_subspace_iteration(
                outside.jvp, outside.vjp, n, self.null_rank, self.oversample, self.tol, self.min_iters,
                self.max_iters, self.seed + 1, x_t.dtype, x_t.device,
            )  # fmt: skip
            check_nonzero(
                rest.values, "method.null_rank", f"the posterior mean's Jacobian at tau={tau} outside the region",
                "set method.null_rank=0",
            )  # fmt: skip
            before = outside.jvp(vectors).norm(dim=1) / inside.jvp(vectors).norm(dim=1)
            vectors = project_out(vectors, rest.right)
            after = outside.jvp(vectors).norm(dim=1) / inside.jvp(vectors).norm(dim=1)
            info |= {"null_singular_values": rest.values.tolist(), "leak_ratio_before": before.tolist()}
            info["leak_ratio_after"] = after.tolist()
            names = [f"loco{j}" for j in range(self.edit_rank)]
            metrics = {f"directions/{name}/leak_ratio": float(after[j]) for j, name in enumerate(names)}
        steps = schedule.num_steps
        scales = torch.zeros(self.edit_rank, steps)
        scales[:, index] = 1.0
        return self.directions(
            model,
            sampler,
            torch.zeros(self.edit_rank, steps, *model.h_shape),
            scales,
            [f"loco{j}" for j in range(self.edit_rank)],
            extra={"x_directions": canonical_rows(vectors.detach().cpu()).reshape(self.edit_rank, *model.image_shape)},
            info=info,
            metrics=metrics,
        )
