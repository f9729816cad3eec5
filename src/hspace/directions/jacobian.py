"""`method=jacobian`: image-specific directions, the top right singular vectors of J_t = d eps / d h_t
at fixed x_t (Haas et al. eq. 6; docs/algorithms.md, "Jacobian directions").

The sample (seed `sample_seed`) is generated on the run's grid with its own stored noise, so
the Jacobians belong to the image that is edited. The vectors found at the grid step nearest training
timestep `tau` are applied at every step, scaled by the per-step singular values (`scale_mode=sigma_t`,
the reference behaviour, which needs the iteration at every step), by the singular values at tau
(`sigma_tau`) or not at all (`none`). An optional binary mask restricts eps to a region (eqs. 9-10).
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
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.jacobian_map import jacobian_products
from hspace.directions.method import DirectionMethod
from hspace.directions.signs import canonical_rows
from hspace.directions.subspace import (
    SingularTriplets,
    block_subspace_iteration,
    check_iteration_settings,
    check_nonzero,
    check_rank,
    sequential_power_iteration,
)
from hspace.errors import UserError
from hspace.precision import float32_model, ieee_float32
from hspace.progress import bar

SCALE_MODES = ("sigma_t", "sigma_tau", "none")
SOLVERS = ("block", "sequential")


def region_mask(
    image_shape: tuple[int, int, int],
    box: list[int] | None = None,
    file: str | None = None,
    settings: tuple[str, str] = ("method.mask_box", "method.mask_file"),
) -> torch.Tensor | None:
    """A binary (C, H, W) mask from a pixel box [top, left, bottom, right) or a grey-scale image file
    (inside: every pixel above black, after a larger image is resized to the model's with bicubic filtering);
    None for no mask. `settings` names the two config keys in error messages."""
    box_key, file_key = settings
    if box is not None and file is not None:
        raise UserError(f"give {box_key} or {file_key}, not both")
    c, h, w = image_shape
    if box is not None:
        top, left, bottom, right = box
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise UserError(f"{box_key}={list(box)} is not a box [top, left, bottom, right) inside the {h}x{w} image")
        mask = torch.zeros(c, h, w)
        mask[:, top:bottom, left:right] = 1
        return mask
    if file is not None:
        pixels = read_mask_image(file, file_key)
        factor = pixels.shape[0] // h
        if factor < 1 or pixels.shape != (h * factor, w * factor):
            raise UserError(
                f"{file_key}={file} is {pixels.shape[1]}x{pixels.shape[0]} pixels but the model's images are "
                f"{w}x{h}: give a mask of the image size or a whole multiple of it"
            )
        if factor > 1:  # a larger mask (CelebAMask-HQ's are 512 pixels) is resized as LOCO Edit's code does (bicubic)
            from PIL import Image

            pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BICUBIC))
        inside = pixels > 0  # every pixel the region reaches, as LOCO Edit's code keeps them
        if not inside.any():
            raise UserError(
                f"{file_key}={file} is black everywhere, so its region holds no pixel: paint it white inside"
            )
        return torch.from_numpy(inside).float().expand(c, h, w).clone()
    return None


def read_mask_image(file: str, setting: str = "method.mask_file") -> np.ndarray:
    """A mask image as grey levels (H, W), or one line saying why it cannot be one."""
    from PIL import Image, UnidentifiedImageError

    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"no mask image at {setting}={file}: give a grey-scale image, white inside the region")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{setting}={file} is not a readable image ({type(error).__name__}): give a PNG") from None


@dataclass
class JacobianDirections(DirectionMethod):
    sample_seed: int = 0  # the generated sample whose Jacobians are used
    num_directions: int = 3  # k
    tau: int = 500  # training timestep whose vectors are applied (the nearest grid step)
    scale_mode: str = "sigma_t"  # sigma_t | sigma_tau | none
    solver: str = "block"  # block (Alg. 1) | sequential (power iteration with deflation)
    oversample: int = 2  # block: extra columns p
    tol: float = 1.0e-3  # relative eigen-residual every one of the k vectors must reach
    min_iters: int = 3
    max_iters: int = 50
    seed: int = 0  # start vectors
    chunk: int | None = None  # vectors pushed through the decoder at once (memory); None: all
    mask_box: list[int] | None = None
    mask_file: str | None = None

    name = "jacobian"
    version = 3  # 2: region masks are resized as LOCO Edit's code does; 3: the sequential solver's zero singular values

    def __post_init__(self):
        integer(self.num_directions, "method.num_directions", 1)
        integer(self.sample_seed, "method.sample_seed", 0)
        integer(self.seed, "method.seed", 0)
        integer(self.tau, "method.tau", 0, 999)
        choice(self.scale_mode, "method.scale_mode", SCALE_MODES)
        choice(self.solver, "method.solver", SOLVERS)
        check_iteration_settings(self.oversample, self.tol, self.min_iters, self.max_iters, self.chunk)
        if self.mask_box is not None and (
            not isinstance(self.mask_box, (list, tuple))
            or len(self.mask_box) != 4
            or not all(isinstance(v, int) for v in self.mask_box)
        ):
            raise UserError(
                f"method.mask_box={self.mask_box!r} must be four whole numbers [top, left, bottom, right) in pixels"
            )
        if self.mask_file is not None:
            read_mask_image(
                self.mask_file
            )  # refuses a missing or unreadable file now, its size once the model is known

    def identity(self) -> dict:
        """The settings, with the mask file's content instead of its path."""
        identity = super().identity()
        if self.mask_file is not None and Path(self.mask_file).expanduser().is_file():
            identity["mask_file"] = hashlib.sha256(Path(self.mask_file).expanduser().read_bytes()).hexdigest()
        return identity

    def solve(self, products, k: int) -> SingularTriplets:
        if self.solver == "block":
            return block_subspace_iteration(
                products.jvp,
                products.vjp,
                products.n,
                k,
                self.oversample,
                self.tol,
                self.min_iters,
                self.max_iters,
                self.seed,
                products.h.dtype,
                products.h.device,
            )
        return sequential_power_iteration(
            products.jvp,
            products.vjp,
            products.m,
            k,
            self.tol,
            self.min_iters,
            self.max_iters,
            self.seed,
            products.h.dtype,
            products.h.device,
        )

    def check_model(self, model: DiffusionModel) -> None:
        self.checked_mask(model)

    def checked_mask(self, model: DiffusionModel) -> torch.Tensor | None:
        """The region mask, after refusing a rank that h or the masked eps cannot have."""
        mask = region_mask(model.image_shape, self.mask_box, self.mask_file)
        outputs = (
            ("values of eps", math.prod(model.image_shape))
            if mask is None
            else ("masked values of eps", int(mask.sum()))
        )
        check_rank(
            self.num_directions, "method.num_directions", dict([("values of h", math.prod(model.h_shape)), outputs])
        )
        return mask

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        with ieee_float32():  # no TF32 in the products, and float32 weights (hspace.precision)
            return self.find_without_tf32(float32_model(model), sampler)

    def find_without_tf32(self, model: DiffusionModel, sampler: SamplerSettings) -> Directions:
        mask = self.checked_mask(model)  # a bad mask or rank stops before any sampling
        mask = mask.to(model.device) if mask is not None else None
        k = self.num_directions
        schedule = sampler.schedule(model.alphas_cumprod)  # the run's own grid and eta: the edited image's trajectory
        num_steps = schedule.num_steps
        x_T, z = noise_for([self.sample_seed], model, schedule)
        trajectory = sample(model, schedule, x_T, z, record_x=True, clip_x0=sampler.clip_x0)  # the edited path
        at = schedule.index_of(self.tau)
        # the applied step first: a zero Jacobian there is refused before the other steps' iterations
        steps = [at, *(idx for idx in range(num_steps) if idx != at)] if self.scale_mode == "sigma_t" else [at]
        sigma = torch.ones(k, num_steps)
        log = {"iterations": {}, "converged": {}, "jvp_count": 0, "vjp_count": 0}
        vectors = None
        for idx in bar(steps, "jacobian", unit="step"):
            x_t = trajectory.x_t[0, idx].to(model.device, model.dtype)
            result = self.solve(jacobian_products(model, x_t, int(schedule.timesteps[idx]), mask, self.chunk), k)
            if idx == at:  # elsewhere zero singular values are scales: no edit at that step (eps = x_T at zero SNR)
                check_nonzero(
                    result.values,
                    "method.num_directions",
                    f"the Jacobian of eps by h at tau={int(schedule.timesteps[idx])}",
                    "choose another region (method.mask_box, method.mask_file) or method.tau",
                )
            sigma[:, idx] = result.values.cpu()
            tau_i = int(schedule.timesteps[idx])
            log["iterations"][tau_i], log["converged"][tau_i] = result.iterations, result.converged
            log["jvp_count"] += result.jvp_count
            log["vjp_count"] += result.vjp_count
            if idx == at:
                vectors = canonical_rows(result.right.cpu().float())
                log["iterations_at_tau"] = result.log  # per iteration: sigma_j and the relative residual r_j
                log["stopped_because"] = (
                    f"every residual below {self.tol}" if result.converged else f"max_iters={self.max_iters} reached"
                )
        for name in ("iterations", "converged"):  # in the grid's order, noisiest first
            log[name] = {tau: log[name][tau] for tau in sorted(log[name], reverse=True)}
        singular_at_tau = sigma[:, at].tolist()
        if self.scale_mode == "sigma_tau":
            sigma[:] = sigma[:, at : at + 1]
        elif self.scale_mode == "none":
            sigma[:] = 1.0
        tau_at = int(schedule.timesteps[at])
        return self.directions(
            model,
            sampler,
            vectors.reshape(k, 1, *model.h_shape).expand(k, num_steps, *model.h_shape).contiguous(),
            sigma,
            [f"jac{j}_t{tau_at}" for j in range(k)],
            info={"tau": tau_at, "singular_values_at_tau": singular_at_tau, **log},
        )
