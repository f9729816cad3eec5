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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hspace.cache import ArtifactCache
from hspace.checks import integer, note
from hspace.data.image_files import image_tensor, load_image
from hspace.diffusion.loading import load_model as _load_model
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for
from hspace.diffusion.schedule import SamplerSettings, SamplingSchedule
from hspace.directions.container import Directions
from hspace.directions.method import DirectionMethod
from hspace.edits.shift import ShiftEdit
from hspace.edits.strategy import EditStrategy, check_pairing, check_strengths
from hspace.errors import UserError
from hspace.images import image_grid, to_uint8
from hspace.job.edit import checked_edits, invert_for
from hspace.job.find import directions_from_method


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
        scale = integer(scale, "scale", 1)
        pixels = to_uint8(self.images.flatten(0, 1))
        grid = Image.fromarray(image_grid(pixels, ncols=len(self.strengths)))
        return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def load_model(source: str = "shapes32", device: str | torch.device = "cpu") -> DiffusionModel:
    """A pretrained model: a shipped name, a save_pretrained directory or a Hugging Face id (see README)."""
    return _load_model(source, device=device)


def load_directions(path: str | Path) -> Directions:
    return Directions.load(path)


def default_sampler(directions: Directions) -> SamplerSettings:
    """The grid the directions were found on (with its clipping), walked by deterministic DDIM."""
    grid = directions.sampler
    return SamplerSettings(
        num_steps=len(directions.timesteps),
        spacing=grid.get("spacing", "leading"),
        final_alpha=grid.get("final_alpha", "one"),
        clip_x0=grid.get("clip_x0", False),
    )


def find_directions(
    model: DiffusionModel,
    method: DirectionMethod,
    sampler: SamplerSettings | None = None,
    cache_dir: str | Path | None = None,
) -> Directions:
    """The directions of `method` (e.g. PCA(...)) for `model` on `sampler`'s grid (default: 50 trailing steps for
    the shipped model's schedule); cached under `cache_dir` when given, as hspace-run caches them (the same
    entry: a run with the same method, model and grid finds them there)."""
    check_type(model, DiffusionModel, "model", "api.load_model(...)")
    check_type(method, DirectionMethod, "method", "PCA(num_components=4) from hspace.directions.pca")
    sampler = SamplerSettings(spacing="trailing") if sampler is None else sampler
    check_type(sampler, SamplerSettings, "sampler", "SamplerSettings(num_steps=50)")
    return directions_from_method(method, model, sampler, ArtifactCache(cache_dir) if cache_dir else None)[0]


def check_type(value, kind: type, name: str, example: str) -> None:
    """One line when an argument is not of the type the API takes (a method's name for the method, say)."""
    if not isinstance(value, kind):
        raise UserError(
            f"{name} is a {type(value).__name__} ({value!r:.60}), not a {kind.__name__}: give e.g. {example}"
        )


def as_list(values, name: str) -> list:
    """Seeds or strengths as a list: a list or tuple, a range, a numpy array or a tensor; one line otherwise."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return values.tolist() if values.ndim else [values.item()]
    if values is None or isinstance(values, (str, bytes, int, float, np.number)):
        raise UserError(f"{name}={values!r} is not a list: give a list, e.g. {name}=[{values!r}]")
    try:
        return list(values)
    except TypeError:
        raise UserError(f"{name} is a {type(values).__name__}, not a list: give a list") from None


DEFAULT_STRENGTHS = (-4.0, 0.0, 4.0)


@dataclass(frozen=True)
class PreparedEdit:
    """An edit checked against the model and the directions, ready to run."""

    edit: EditStrategy
    sampler: SamplerSettings
    schedule: SamplingSchedule  # the sampler's grid on the model
    index: int  # the direction, counted from the start


def prepared(
    model: DiffusionModel,
    directions: Directions,
    index: int,
    strengths: Sequence[float] | None,
    edit: EditStrategy | None,
    sampler: SamplerSettings | None,
) -> PreparedEdit:
    """The edit (its own strengths unless `strengths` is given; ShiftEdit at -4, 0, 4 by default), the sampler, its
    grid and the direction's index (a negative one counts from the end), checked against the model and the
    directions before any model runs."""
    check_type(model, DiffusionModel, "model", "api.load_model(...)")
    check_type(directions, Directions, "directions", "api.load_directions(<run_dir>/directions.safetensors)")
    count = len(directions.names)
    index = integer(index.item() if isinstance(index, torch.Tensor) else index, "index", -count, count - 1) % count
    sampler = default_sampler(directions) if sampler is None else sampler
    check_type(sampler, SamplerSettings, "sampler", "SamplerSettings(num_steps=50)")
    if strengths is not None:
        strengths = as_list(strengths, "strengths")
    if edit is None:
        edit = ShiftEdit(strengths=list(DEFAULT_STRENGTHS if strengths is None else strengths))
    else:
        check_type(edit, EditStrategy, "edit", "ShiftEdit(strengths=[-4, 0, 4]) from hspace.edits.shift")
        edit = edit if strengths is None else replace(edit, strengths=strengths)
    check_strengths(edit.strengths)  # an edit of one's own may not check them itself
    check_pairing(edit, directions.extra, "these directions", directions.finds_h)
    schedule = sampler.schedule(model.alphas_cumprod)
    edit.check_schedule(schedule)
    directions.check_fits(model, schedule.timesteps)
    return PreparedEdit(edit, sampler, schedule, index)


def edit_seeds(
    model: DiffusionModel,
    directions: Directions,
    seeds: Sequence[int],
    index: int = 0,
    strengths: Sequence[float] | None = None,
    edit: EditStrategy | None = None,
    sampler: SamplerSettings | None = None,
) -> Edited:
    """Generated samples (one per seed) edited along direction `index` at every strength: `strengths`, else the
    edit's own, else -4, 0, 4 (ShiftEdit by default)."""
    seeds = seed_list(seeds)
    ready = prepared(model, directions, index, strengths, edit, sampler)
    x_T, z = noise_for(seeds, model, ready.schedule)
    return run_prepared(ready, model, directions, x_T, z)


def run_prepared(
    ready: PreparedEdit,
    model: DiffusionModel,
    directions: Directions,
    x_T: torch.Tensor,
    z: torch.Tensor | None,
    states: Mapping[int, torch.Tensor] | None = None,
) -> Edited:
    """The edits of x_T (with noise maps z, or None; with the inverted `states` of real images, or None) and what
    they depart from."""
    edit, schedule, index, clip_x0 = ready.edit, ready.schedule, ready.index, ready.sampler.clip_x0
    edited = checked_edits(edit, edit.apply(model, schedule, directions, index, x_T, z, clip_x0, states=states), x_T)
    unedited = edit.unedited(model, schedule, directions, index, x_T, z, clip_x0, states=states).cpu()
    return Edited(edited, unedited, list(edit.strengths))


def seed_list(seeds) -> list[int]:
    """`seeds` as a non-empty list of whole numbers (numpy integers too; 1.0 is not a seed: seeds are hashed)."""
    if isinstance(seeds, (int, np.integer)):
        raise UserError(f"seeds={seeds} is one number: give a list of seeds, e.g. seeds=[{seeds}] or range({seeds})")
    listed = as_list(seeds, "seeds")
    if not listed:
        raise UserError("seeds is empty: give at least one seed, e.g. seeds=[0, 1]")
    return [integer(seed, f"seeds[{i}]", 0) for i, seed in enumerate(listed)]


def as_tensor(images, shape: tuple[int, int, int]) -> torch.Tensor:
    """Images as an (N, C, H, W) float tensor in [-1, 1] at the model's `shape`: a tensor of that shape (one image
    of (C, H, W) too), or PIL images or image files (one or a list), resized to it. Anything else is one line."""
    size = shape[-1]
    if isinstance(images, np.ndarray):  # as a tensor: (N, C, H, W) floats in [-1, 1], or refused as one would be
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        return checked_pixels(images.unsqueeze(0) if images.dim() == 3 else images, shape)
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    try:
        listed = list(images)
    except TypeError:
        raise UserError(
            f"images of type {type(images).__name__}: give a tensor (N, C, H, W) in [-1, 1], PIL images or image files"
        ) from None
    if not listed:
        raise UserError("images is empty: give at least one image")
    tensors = []
    for i, image in enumerate(listed):
        if isinstance(image, (str, Path)):
            tensors.append(load_image(Path(image).expanduser(), size))
        elif isinstance(image, Image.Image):
            tensors.append(image_tensor(image, size))
        else:
            raise UserError(f"images[{i}] is a {type(image).__name__}: give PIL images or image file paths")
    return torch.stack(tensors)


def checked_pixels(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image tensor the model can invert: floats in [-1, 1] of (N, *shape), else one line saying what differs."""
    if not images.is_floating_point():
        raise UserError(
            f"images is a {images.dtype} tensor: give floats in [-1, 1], e.g. images.float() / 127.5 - 1 for 0..255"
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise UserError(
            f"images has shape {tuple(images.shape)} but the model takes (N, {', '.join(map(str, shape))}): "
            "resize them, or pass PIL images (resized for you)"
        )
    if len(images) == 0:
        raise UserError("images is empty: give at least one image")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(dim=1).nonzero()[0])
        raise UserError(f"images[{bad}] holds NaN or infinite values: give finite pixels in [-1, 1]")
    low, high = images.min().item(), images.max().item()
    if low < -1.5 or high > 1.5:  # samples overshoot [-1, 1] a little (sampling does not clip); 0..255 does not
        raise UserError(f"images range over [{low:.3g}, {high:.3g}]: give pixels in [-1, 1] (x / 127.5 - 1 for 0..255)")
    if low >= 0.0:  # torchvision's ToTensor gives 0..1, which would be read as pixels no darker than mid-grey
        note(
            f"images range over [{low:.3g}, {high:.3g}], none below 0: the model takes [-1, 1], so if these are 0..1 "
            "pixels (torchvision's ToTensor), give images * 2 - 1"
        )
    return images.float()


def edit_images(
    model: DiffusionModel,
    directions: Directions,
    images,
    index: int = 0,
    strengths: Sequence[float] | None = None,
    edit: EditStrategy | None = None,
    sampler: SamplerSettings | None = None,
) -> Edited:
    """Real images (PIL images or image files, one or a list, or a tensor (N, C, H, W) in [-1, 1]) inverted and
    edited along direction `index` at `strengths` (as edit_seeds); `unedited` holds their reconstructions."""
    pixels = as_tensor(images, model.image_shape)
    ready = prepared(model, directions, index, strengths, edit, sampler)
    starts_at = ready.edit.starts_at(directions, [ready.index])
    start = invert_for(ready.edit, model, ready.schedule, pixels.to(model.device), starts_at)
    return run_prepared(ready, model, directions, start.x_T, start.z, start.states)
