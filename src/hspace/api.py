"""Editing from Python (a notebook, a script) without Hydra or output folders.

    from hspace import api
    from hspace.directions.pca import PCA

    model = api.load_model("shapes32")
    directions = api.find_directions(model, PCA(num_samples=64, num_components=4, oversample=8, batch_size=32))
    edited = api.edit_seeds(model, directions, seeds=[0, 1], index=0, strengths=[-4, 0, 4])
    edited.grid().save("pc0.png")            # PIL images; edited.images (N, S, C, H, W) in [-1, 1]

Directions from a run load with `api.load_directions(<run_dir>/directions.safetensors)`; real images (PIL or
tensors) are inverted and edited with `api.edit_images`. The sampling grid defaults to the one the directions
were found on, with deterministic DDIM (eta 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hspace.cache import ArtifactCache
from hspace.diffusion.loading import load_model as _load_model
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.method import DirectionMethod
from hspace.edits.shift import ShiftEdit
from hspace.edits.strategy import EditStrategy, check_pairing
from hspace.images import image_grid, to_uint8
from hspace.job.edit import invert_for


@dataclass
class Edited:
    """Edits of N images at S strengths: `images` (N, S, C, H, W) in [-1, 1], `unedited` (N, C, H, W)."""

    images: torch.Tensor
    unedited: torch.Tensor
    strengths: list[float]

    def pil(self) -> list[list[Image.Image]]:
        """The edits as PIL images, one row per input image, one column per strength."""
        pixels = to_uint8(self.images.flatten(0, 1)).reshape(*self.images.shape[:2], *self.images.shape[-2:], 3)
        return [[Image.fromarray(p) for p in row] for row in pixels]

    def grid(self, scale: int = 4) -> Image.Image:
        """All edits as one image: rows are the inputs, columns the strengths (enlarged `scale` times)."""
        pixels = to_uint8(self.images.flatten(0, 1))
        grid = Image.fromarray(image_grid(pixels, ncols=len(self.strengths)))
        return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def load_model(source: str = "shapes32", device: str | torch.device = "cpu") -> DiffusionModel:
    """A pretrained model: a shipped name, a save_pretrained directory or a Hugging Face id (see README)."""
    return _load_model(source, device=device)


def load_directions(path: str | Path) -> Directions:
    return Directions.load(path)


def default_sampler(directions: Directions) -> SamplerSettings:
    """The grid the directions were found on, walked by deterministic DDIM."""
    grid = directions.sampler
    return SamplerSettings(
        num_steps=len(directions.timesteps),
        spacing=grid.get("spacing", "leading"),
        final_alpha=grid.get("final_alpha", "one"),
    )


def find_directions(
    model: DiffusionModel,
    method: DirectionMethod,
    sampler: SamplerSettings | None = None,
    cache_dir: str | Path | None = None,
) -> Directions:
    """The directions of `method` (e.g. PCA(...)) for `model` on `sampler`'s grid (default: 50 trailing steps for
    the shipped model's schedule); cached under `cache_dir` when given."""
    sampler = sampler or SamplerSettings(spacing="trailing")
    return method.find(model, sampler, ArtifactCache(cache_dir) if cache_dir else None)


def prepared(
    model: DiffusionModel,
    directions: Directions,
    strengths: Sequence[float],
    edit: EditStrategy | None,
    sampler: SamplerSettings | None,
) -> tuple[EditStrategy, SamplerSettings]:
    sampler = sampler or default_sampler(directions)
    edit = replace(edit, strengths=list(strengths)) if edit is not None else ShiftEdit(strengths=list(strengths))
    check_pairing(edit, directions.extra, "these directions")
    schedule = sampler.schedule(model.alphas_cumprod)
    directions.check_compatible(model.weight_hash, model.h_shape, schedule.timesteps)
    return edit, sampler


def edit_seeds(
    model: DiffusionModel,
    directions: Directions,
    seeds: Sequence[int],
    index: int = 0,
    strengths: Sequence[float] = (-4.0, 0.0, 4.0),
    edit: EditStrategy | None = None,
    sampler: SamplerSettings | None = None,
) -> Edited:
    """Generated samples (one per seed) edited along direction `index` at every strength (ShiftEdit by default)."""
    edit, sampler = prepared(model, directions, strengths, edit, sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    x_T, z = noise_for(list(seeds), model, schedule)
    edited = edit.apply(model, schedule, directions, index, x_T, z, sampler.clip_x0)
    unedited = edit.unedited(model, schedule, directions, index, x_T, z, sampler.clip_x0).cpu()
    return Edited(edited, unedited, list(edit.strengths))


def as_tensor(images, size: int) -> torch.Tensor:
    """PIL images or a tensor (N, C, H, W) in [-1, 1] as a tensor at the model's size."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arrays = [np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def edit_images(
    model: DiffusionModel,
    directions: Directions,
    images,
    index: int = 0,
    strengths: Sequence[float] = (-4.0, 0.0, 4.0),
    edit: EditStrategy | None = None,
    sampler: SamplerSettings | None = None,
) -> Edited:
    """Real images (PIL images, or a tensor (N, C, H, W) in [-1, 1]) inverted and edited along direction `index`;
    `unedited` holds their reconstructions."""
    edit, sampler = prepared(model, directions, strengths, edit, sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    x_T, z = invert_for(edit, model, schedule, as_tensor(images, model.image_shape[-1]).to(model.device))
    edited = edit.apply(model, schedule, directions, index, x_T, z, sampler.clip_x0)
    unedited = edit.unedited(model, schedule, directions, index, x_T, z, sampler.clip_x0).cpu()
    return Edited(edited, unedited, list(edit.strengths))
