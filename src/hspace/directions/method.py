"""The contract of a direction-finding method (docs/design.md, "Methods and edits").

A method is a dataclass of settings that subclasses DirectionMethod, with
- `name`: its config name (`method=<name>`, conf/method/<name>.yaml);
- `provides`: the names of the Directions.extra tensors its directions carry (an edit states what it
  requires, and the run refuses a pairing that lacks them before any work);
- `find(model, sampler, cache)`: its Directions on the run's sampling grid, built with `directions()`;
- `check_model(model)`: refuses, in one line, settings that do not fit the loaded model, before any work;
- `walked_sampler(sampler)`: the settings `find` samples with, the run's own unless the method fixes some (its
  eta); the cache keys directions by them, so a run that changes what a method walks does not reuse its directions;
- `collects_across_processes`: True where `find` takes its block of the samples from `Shard.current()` and
  merges with the other ranks (`hspace-run trainer=ddp` then runs it in one process per device);
- `place(device)`: moves what `find` computes with beside the model (a classifier) to each rank's device.

`identity()` is what the cache keys its directions by: every field, where a field holding an object (a
classifier, a datamodule) contributes that object's own identity (the hash of its weights, the content of
its data; hspace.identity). A setting whose object has no identity is refused, never printed into a key.
Override `identity()` only to add what the fields do not show (e.g. the content of a file they name). Beside
it the key holds the name, the class of a method outside hspace and `version`: the code itself is not keyed,
so a change to what `find` computes raises `version`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from hspace.cache import ArtifactCache
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.identity import identity_of
from hspace.plots import LinePlot
from hspace.registry import Registry

METHODS = Registry("hspace.directions", ("pca", "random", "jacobian", "class_mean", "boundary", "loco"))


class DirectionMethod(ABC):
    name: ClassVar[str]
    provides: ClassVar[tuple[str, ...]] = ()
    # whether its directions have h vectors (LOCO's move x_t and have none): an edit that reads them refuses it
    finds_h: ClassVar[bool] = True
    # whether find() splits its collection over samples across the ranks of a process group (hspace.distributed)
    collects_across_processes: ClassVar[bool] = False
    # raise it when find() changes what it computes: the cache keys directions by it (and by the class of a method
    # outside hspace), not by the code, so directions cached by the old code are not reused
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        METHODS.add(cls)

    @abstractmethod
    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        """Directions for `model` on the grid of `sampler` (num_steps, spacing, eta, final_alpha)."""

    def check_model(self, model: DiffusionModel) -> None:
        """Refuse, in one line, settings that do not fit the model (a mask region outside its images); called once
        the model is loaded, before any work. By default every model fits."""

    def place(self, device: torch.device) -> None:
        """Move what `find` computes with beside the model (a classifier) to `device`. A collection split across
        processes calls it to hand that to its ranks through CPU memory and to put it on each rank's own device. By
        default there is nothing to move."""

    def walked_sampler(self, sampler: SamplerSettings) -> SamplerSettings:
        """The settings `find` samples with, given the run's: the run's own by default."""
        return sampler

    def identity(self) -> dict:
        if not dataclasses.is_dataclass(self):
            raise TypeError(
                f"{type(self).__name__} must be a dataclass (its fields are its settings) or override identity()"
            )
        return {f.name: identity_of(getattr(self, f.name), f"method.{f.name}") for f in dataclasses.fields(self)}

    def directions(
        self,
        model: DiffusionModel,
        sampler: SamplerSettings,
        vectors: torch.Tensor,
        scales: torch.Tensor,
        names: list[str],
        *,
        extra: dict[str, torch.Tensor] | None = None,
        info: dict | None = None,
        metrics: dict[str, float] | None = None,
        plots: dict[str, LinePlot] | None = None,
    ) -> Directions:
        """This method's Directions for `model`, on the grid of `sampler` (the settings it walked, its eta
        included): timesteps, model id, weight hash and settings filled in."""
        extra = extra or {}
        unexpected = sorted(set(extra) ^ set(self.provides))
        if unexpected:
            raise ValueError(
                f"method {self.name} provides {list(self.provides)} but made extra tensors {sorted(extra)}"
            )
        return Directions(
            vectors=vectors,
            scales=scales,
            timesteps=sampler.schedule(model.alphas_cumprod).timesteps,
            names=names,
            method=self.name,
            model_id=model.name,
            weight_hash=model.weights_identity,
            sampler=sampler.walk(),
            config=self.identity(),
            extra=extra,
            info=info or {},
            metrics=metrics or {},
            plots=plots or {},
            noise_schedule=model.noise_schedule,
        )


def registered_methods() -> dict[str, type[DirectionMethod]]:
    """Every method class known to this process: the built-in ones and any other imported subclass."""
    return METHODS.all()
