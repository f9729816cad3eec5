"""The contract of an editing strategy (docs/design.md, "Methods and edits").

An edit is a dataclass of settings that subclasses EditStrategy, with
- `name`: its config name (`edit=<name>`, conf/edit/<name>.yaml);
- `strengths`: the columns of its grids;
- `requires`: the Directions.extra tensors it reads (the run refuses a method that does not provide
  them, naming the methods that do, before any work: check_pairing);
- `reads_h`: whether it moves h along the directions' h vectors (directions without any, such as LOCO's,
  which live in x_t, are refused for it: check_pairing); True unless the edit says otherwise, since an edit
  that moved h along vectors of zeros would silently draw the unedited sample;
- `apply(...)`: the edited samples at every strength;
- `check_schedule(schedule)`: refuses settings that do not fit the model's sampling grid;
- `unedited(...)`: what those edits depart from (by default the plain sample; an edit with a path of its
  own overrides it, and sets `inverts_by_ddim` when that path is deterministic DDIM up to the edit, so
  real images are inverted by DDIM and get fresh noise after the edit even on a stochastic grid);
- `starts_at(directions, indices)`: the grid indices where an `inverts_by_ddim` edit leaves x_T's path. A real
  image's DDIM-inverted states there reach `apply` and `unedited` as `states`, so its edit starts from the
  inverted state rather than from x_T walked back down (BoundaryDiffusion's conditional mode).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import torch

from hspace.checks import number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.errors import UserError
from hspace.metrics.keys import strength_label
from hspace.registry import Registry

EDITS = Registry("hspace.edits", ("shift", "xt_shift", "boundary_step"))


def registered_edits() -> dict[str, type[EditStrategy]]:
    """Every edit class known to this process: the built-in ones and any other imported subclass."""
    return EDITS.all()


class EditStrategy(ABC):
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    reads_h: ClassVar[bool] = True
    inverts_by_ddim: ClassVar[bool] = False
    strengths: Sequence[float]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        EDITS.add(cls)

    @abstractmethod
    def apply(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        directions: Directions,
        index: int,
        x_T: torch.Tensor,
        z: torch.Tensor | None,
        clip_x0: bool = False,
        states: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Edit samples (x_T (N, C, H, W), noise maps z (N, T, C, H, W) or None) along direction `index`
        at every strength. `states`: for inverted real images, their inverted x_t at the grid indices
        `starts_at` names (None for generated samples). (N, S, C, H, W) in [-1, 1]"""

    def check_schedule(self, schedule: SamplingSchedule) -> None:
        """Refuse, in one line, settings that do not fit the sampling grid; called once the model's grid is
        known, before any direction is found or edit drawn. By default every grid fits."""

    def starts_at(self, directions: Directions, indices: Iterable[int]) -> set[int]:
        """Grid indices (0 is x_T) where the edits along these directions leave the path of x_T: a real image's
        DDIM-inverted states there are handed to `apply` and `unedited`. By default none: edits start at x_T."""
        return set()

    def unedited(
        self,
        model: DiffusionModel,
        schedule: SamplingSchedule,
        directions: Directions,
        index: int,
        x_T: torch.Tensor,
        z: torch.Tensor | None,
        clip_x0: bool = False,
        states: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The samples the edits of x_T depart from. (N, C, H, W)"""
        return sample(model, schedule, x_T, z, clip_x0=clip_x0).x0


def check_strengths(strengths) -> list[float]:
    """An edit's strengths: a non-empty list of finite numbers (NaN would silently draw black images)."""
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, Sequence) or not len(strengths):
        raise UserError(f"edit.strengths={strengths!r} must be a non-empty list of numbers, e.g. [-2,0,2]")
    for i, value in enumerate(strengths):
        number(value, f"edit.strengths[{i}]")
    return [float(s) for s in strengths]


def check_strength_labels(strengths: Sequence[float]) -> None:
    """Strengths a run scores: no two may share a label in the metric names (hspace.metrics.keys: 6 significant
    digits), where one would overwrite the other's metrics. (An edit itself may repeat a strength.)"""
    labels: dict[str, int] = {}
    for i, value in enumerate(strengths):
        label = strength_label(value)
        if label in labels:
            raise UserError(
                f"edit.strengths[{labels[label]}] and edit.strengths[{i}] are both {label} in the metric names "
                "(strengths are named by 6 significant digits): give each strength once"
            )
        labels[label] = i


def check_pairing(edit: EditStrategy, provided: Iterable[str], source: str, finds_h: bool = True) -> None:
    """Refuse, in one line, directions that lack what `edit` reads: extra tensors (`provided`), or h vectors
    (`finds_h`: whether the directions have any). `source` names where they come from (e.g. "method=pca" or "the
    directions file <path>")."""
    from hspace.directions.method import registered_methods

    provided = set(provided)
    missing = [name for name in edit.requires if name not in provided]
    if not missing:
        if edit.reads_h and not finds_h:
            fits = sorted(name for name, cls in registered_edits().items() if not cls.reads_h)
            raise UserError(
                f"edit={edit.name} moves h along the directions' h vectors (reads_h), but {source} gives directions "
                f"with none (they move x_t): use edit={' or edit='.join(fits)} with them, or a method that finds h "
                "directions"
            )
        return
    providers = sorted(name for name, cls in registered_methods().items() if set(edit.requires) <= set(cls.provides))
    fix = (
        f"use {' or '.join(f'method={p}' for p in providers)} with it" if providers else "no known method provides them"
    )
    raise UserError(
        f"edit={edit.name} reads {', '.join(missing)} from its directions, which {source} does not provide: {fix}, or "
        "choose another edit"
    )
