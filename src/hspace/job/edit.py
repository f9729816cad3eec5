"""Stage 2 of a run: the edits of generated samples and of inverted real images, with what they depart from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hspace.diffusion.inversion import ddim_invert, invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.edits.strategy import EditStrategy
from hspace.edits_file import save_edits
from hspace.progress import bar


@dataclass
class StartingPoints:
    """Where the paths of N images start: x_T and the noise maps z, one row per id (a seed or a dataset index)."""

    ids: list[int]
    id_kind: str  # "seeds" | "indices"
    x_T: torch.Tensor
    z: torch.Tensor | None


@dataclass
class EditedSet(StartingPoints):
    """Edits (D, N, S, C, H, W) in [-1, 1] of the N images whose paths start at these points."""

    edited: torch.Tensor

    def save(self, path: Path, strengths: Sequence[float], names: Sequence[str]) -> Path:
        """The run's edits file (hspace.edits_file)."""
        return save_edits(path, self.edited, strengths, self.ids, self.id_kind, names)


def edit_all(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    x_T,
    z,
    clip_x0: bool,
) -> torch.Tensor:
    """(D, N, S, C, H, W) edits of the first `count` directions."""
    return torch.stack(
        [
            edit.apply(model, schedule, directions, j, x_T, z, clip_x0)
            for j in bar(range(count), "edit", unit="direction")
        ]
    )


def edit_generated(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    seeds: Sequence[int],
    clip_x0: bool,
) -> EditedSet:
    x_T, z = noise_for(seeds, model, schedule)
    edited = edit_all(edit, model, schedule, directions, count, x_T, z, clip_x0)
    return EditedSet(list(seeds), "seeds", x_T, z, edited=edited)


def unedited(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    start: StartingPoints,
    clip_x0: bool,
) -> torch.Tensor:
    """What the edits of paths from these starting points depart from, on the CPU. (N, C, H, W)"""
    return edit.unedited(model, schedule, directions, 0, start.x_T, start.z, clip_x0).cpu()


def invert_for(
    edit: EditStrategy, model: DiffusionModel, schedule: SamplingSchedule, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x_T and noise maps z from which `edit`'s unedited path gives back `images` (N, C, H, W).

    Deterministic grids: DDIM inversion. Stochastic grids: edit-friendly inversion (its z reproduce the image
    exactly), except for an edit that walks DDIM to its step (`inverts_by_ddim`, e.g. boundary_step): DDIM
    inversion, so that path comes back close to the inverted x_t (DDIM inversion and decoding do not quite
    meet: docs/algorithms.md, "The single step"), and fresh noise maps for the steps after it (the paper's
    conditional mode)."""
    if edit.inverts_by_ddim and not schedule.is_deterministic:
        x_T = ddim_invert(model, schedule, images, record_h=False).x_T
        return x_T, noise_for(range(len(images)), model, schedule)[1]
    inverted = invert(model, schedule, images, seeds=range(len(images)))
    return inverted.x_T, inverted.z


def invert_real(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    images: torch.Tensor,
    clip_x0: bool,
) -> tuple[StartingPoints, torch.Tensor]:
    """The inverted real images' starting points and their reconstructions by the edit's unedited path (edit_real
    edits them)."""
    x_T, z = invert_for(edit, model, schedule, images)
    inverted = StartingPoints(list(range(len(images))), "indices", x_T, z)
    return inverted, unedited(edit, model, schedule, directions, inverted, clip_x0)


def edit_real(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    inverted: StartingPoints,
    clip_x0: bool,
) -> EditedSet:
    edited = edit_all(edit, model, schedule, directions, count, inverted.x_T, inverted.z, clip_x0)
    return EditedSet(inverted.ids, inverted.id_kind, inverted.x_T, inverted.z, edited=edited)
