"""Stage 2 of a run: the edits of generated samples and of inverted real images, with what they depart from."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hspace.diffusion.inversion import ddim_invert, invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.edits.strategy import EditStrategy
from hspace.edits_file import save_edits
from hspace.errors import UserError
from hspace.progress import bar


@dataclass
class StartingPoints:
    """Where the paths of N images start: x_T and the noise maps z, one row per id (a seed or a dataset index);
    for inverted real images also their inverted states at the grid indices where the edit starts
    (EditStrategy.starts_at), None for generated samples."""

    ids: list[int]
    id_kind: str  # "seeds" | "indices"
    x_T: torch.Tensor
    z: torch.Tensor | None
    states: dict[int, torch.Tensor] | None = None


@dataclass
class EditedSet(StartingPoints):
    """Edits (D, N, S, C, H, W) in [-1, 1] of the N images whose paths start at these points."""

    edited: torch.Tensor = field(kw_only=True)

    def save(self, path: Path, strengths: Sequence[float], names: Sequence[str]) -> Path:
        """The run's edits file (hspace.edits_file)."""
        return save_edits(path, self.edited, strengths, self.ids, self.id_kind, names)


def edit_all(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    start: StartingPoints,
    clip_x0: bool,
) -> torch.Tensor:
    """(D, N, S, C, H, W) edits of the first `count` directions."""
    edited = []
    for j in bar(range(count), "edit", unit="direction"):
        result = edit.apply(model, schedule, directions, j, start.x_T, start.z, clip_x0, states=start.states)
        edited.append(checked_edits(edit, result, start.x_T))
    return torch.stack(edited)


def checked_edits(edit: EditStrategy, result, x_T: torch.Tensor) -> torch.Tensor:
    """What `edit.apply` returned for the paths from x_T (N, C, H, W): a tensor (N, S, C, H, W) with one column per
    strength, else one line saying what it returned."""
    expected = (x_T.shape[0], len(edit.strengths), *x_T.shape[1:])
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != expected:
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise UserError(
            f"edit={edit.name}: {type(edit).__name__}.apply returned {shape} for {expected[0]} samples at "
            f"{expected[1]} strengths, not (N, S, C, H, W) = {expected}: return one column per strength"
        )
    return result


def edit_generated(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    seeds: Sequence[int],
    clip_x0: bool,
) -> EditedSet:
    start = StartingPoints(list(seeds), "seeds", *noise_for(seeds, model, schedule))
    edited = edit_all(edit, model, schedule, directions, count, start, clip_x0)
    return EditedSet(start.ids, start.id_kind, start.x_T, start.z, edited=edited)


def unedited(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    start: StartingPoints,
    clip_x0: bool,
) -> torch.Tensor:
    """What the edits of paths from these starting points depart from, on the CPU. (N, C, H, W)"""
    return edit.unedited(model, schedule, directions, 0, start.x_T, start.z, clip_x0, states=start.states).cpu()


def invert_for(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    images: torch.Tensor,
    starts_at: Collection[int] = (),
) -> StartingPoints:
    """Where `edit`'s paths start for `images` (N, C, H, W), so that its unedited path gives them back, with the
    inverted states at the grid indices `starts_at` (`edit.starts_at` of the directions to edit: where its edits
    start, e.g. x_tm; None when it names none, so the edits start at x_T).

    An edit that walks DDIM to its step (`inverts_by_ddim`, e.g. boundary_step): DDIM inversion on every grid,
    and fresh noise maps for the steps after it on a stochastic one (the paper's conditional mode). Any other
    edit: DDIM inversion on a deterministic grid, edit-friendly inversion (its z reproduce the image exactly)
    on a stochastic one."""
    ids = list(range(len(images)))
    if edit.inverts_by_ddim:
        inverted = ddim_invert(model, schedule, images, record_h=False, states_at=starts_at)
        z = noise_for(ids, model, schedule)[1]
    else:
        inverted = invert(model, schedule, images, seeds=ids, states_at=starts_at)
        z = inverted.z
    return StartingPoints(ids, "indices", inverted.x_T, z, inverted.states if starts_at else None)


def invert_real(
    edit: EditStrategy,
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    images: torch.Tensor,
    clip_x0: bool,
) -> tuple[StartingPoints, torch.Tensor]:
    """The inverted real images' starting points for the edits along the first `count` directions, and their
    reconstructions by the edit's unedited path (edit_real edits them)."""
    inverted = invert_for(edit, model, schedule, images, edit.starts_at(directions, range(count)))
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
    edited = edit_all(edit, model, schedule, directions, count, inverted, clip_x0)
    return EditedSet(inverted.ids, inverted.id_kind, inverted.x_T, inverted.z, edited=edited)
