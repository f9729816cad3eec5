"""The Directions container and its file format (docs/design.md, "The directions file").

A file is safetensors holding `directions` (k, T, *h_shape), per-step `scales` (k, T) and `timesteps` (T,),
plus method-specific tensors under `extra.<name>`, with JSON metadata under the key "hspace": the method,
the names of the k directions, model id and weight hash, sampler settings, h shape, the settings that
made them, and what the method reports about them (info, metrics, plots).
The edit of direction j at strength gamma and step idx is dh = gamma * scales[j, idx] * vectors[j, idx].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hspace.checks import output_path
from hspace.errors import UserError
from hspace.files import atomic_write_safetensors
from hspace.plots import LinePlot

if TYPE_CHECKING:
    from hspace.diffusion.model import DiffusionModel

FORMAT_VERSION = 2  # 2: metrics and plots in the metadata; version 1 files load without them


@dataclass
class Directions:
    vectors: torch.Tensor  # (k, T, *h_shape) axes (unit per step for PCA); the file's `directions` tensor
    scales: torch.Tensor  # (k, T) per-step scale that strength 1 means (std for PCA)
    timesteps: torch.Tensor  # (T,) the sampling grid the directions belong to, noisiest first
    names: list[str]
    method: str
    model_id: str
    weight_hash: str
    sampler: dict  # num_steps, spacing, eta, final_alpha of the grid the method walked
    config: dict = field(default_factory=dict)  # the method settings that made them (its identity)
    # method-specific tensors (names in the method's `provides`), one row per direction
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # method-specific results worth keeping (e.g. explained variance per step)
    # numbers a run logs; time/* only by the run that computed them
    metrics: dict[str, float] = field(default_factory=dict)
    plots: dict[str, LinePlot] = field(default_factory=dict)  # figures a run draws into grids/<name>.png
    # the model's training schedule and prediction type (DiffusionModel.noise_schedule); empty in older files
    noise_schedule: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        k, T = self.vectors.shape[:2]
        if not isinstance(self.names, list) or not all(isinstance(name, str) for name in self.names):
            raise ValueError(f"names {self.names!r} are not a list of direction names")
        if self.scales.shape != (k, T) or self.timesteps.shape != (T,) or len(self.names) != k:
            raise ValueError(
                f"inconsistent directions: {tuple(self.vectors.shape)}, scales {tuple(self.scales.shape)}, "
                f"{len(self.names)} names"
            )
        for key, tensor in self.extra.items():  # one row per direction
            if tensor.ndim == 0 or tensor.shape[0] != k:
                raise ValueError(
                    f"extra tensor {key} of shape {tuple(tensor.shape)} has no row for each of {k} directions"
                )

    @property
    def h_shape(self) -> tuple[int, ...]:
        return tuple(self.vectors.shape[2:])

    @property
    def finds_h(self) -> bool:
        """Whether any direction has an h vector (LOCO's directions move x_t and have none)."""
        return bool(self.vectors.abs().amax() > 0) if self.vectors.numel() else False

    def scaled(self, index: int) -> torch.Tensor:
        """v_t = scales[j, t] * vectors[j, t] at every step: the h offset of strength 1. (T, *h_shape)"""
        return self.vectors[index] * self.scales[index].view(-1, *([1] * len(self.h_shape)))

    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "names": self.names,
            "model_id": self.model_id,
            "weight_hash": self.weight_hash,
            "sampler": self.sampler,
            "h_shape": list(self.h_shape),
            "config": self.config,
            "info": self.info,
            "metrics": self.metrics,
            "plots": {name: asdict(plot) for name, plot in self.plots.items()},
            "noise_schedule": self.noise_schedule,
        }

    def save(self, path: str | Path) -> Path:
        """The directions file at `path` (`~` expanded), written atomically."""
        path = output_path(path, "path", "file")
        tensors = {"directions": self.vectors, "scales": self.scales, "timesteps": self.timesteps}
        tensors |= {f"extra.{k}": v for k, v in self.extra.items()}
        return atomic_write_safetensors(path, tensors, {"hspace": json.dumps(self.metadata())})

    @classmethod
    def load(cls, path: str | Path) -> Directions:
        """The directions file at `path`, or one line saying why it cannot be read."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"no directions file at {path}: run the method first or fix the path")
        try:
            return cls.read(path)
        except (ValueError, OSError) as error:
            raise UserError(
                f"{path} is not a readable hspace directions file ({error}): give a directions.safetensors that "
                "hspace-run wrote"
            ) from None

    @classmethod
    def read(cls, path: Path) -> Directions:
        """The directions file at `path`: a ValueError when it is damaged or not one, an OSError when the disk
        fails (the cache discards the first and keeps the entry on the second)."""
        try:
            tensors = load_file(path)
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                meta = json.loads(json.loads(f.read(header_len))["__metadata__"]["hspace"])
            plots = {name: LinePlot(**plot) for name, plot in meta.get("plots", {}).items()}
            return cls(
                vectors=tensors["directions"],
                scales=tensors["scales"],
                timesteps=tensors["timesteps"],
                names=meta["names"],
                method=meta["method"],
                model_id=meta["model_id"],
                weight_hash=meta["weight_hash"],
                sampler=meta["sampler"],
                config=meta["config"],
                extra={k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")},
                info=meta.get("info", {}),
                metrics=meta.get("metrics", {}),
                plots=plots,
                noise_schedule=meta.get("noise_schedule", {}),
            )
        except (SafetensorError, KeyError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{type(error).__name__}: {error}") from None

    def check_fits(self, model: DiffusionModel, timesteps: torch.Tensor, source: str = "directions") -> None:
        """Refuse, in one line, directions that do not fit `model` on the grid `timesteps`: another model's first
        (by its weights, so its other schedule is not blamed), then another noise schedule, h shape or grid. The
        model's h shape is probed (one UNet call) only when its weights and schedule agree."""
        self.check_weights(model.weights_identity, source)
        self.check_noise_schedule(model.noise_schedule, source)
        self.check_compatible(model.weights_identity, model.h_shape, timesteps, source)

    def check_weights(self, weight_hash: str, source: str = "directions") -> None:
        if self.weight_hash != weight_hash:
            raise UserError(
                f"{source} were made for model {self.model_id} (weights {self.weight_hash[:12]}), not this one "
                f"(weights {weight_hash[:12]}): recompute them for this model"
            )

    def check_compatible(
        self, weight_hash: str, h_shape: tuple[int, ...], timesteps: torch.Tensor, source: str = "directions"
    ) -> None:
        """Refuse, in one line, directions made for another model, h shape or sampling grid."""
        self.check_weights(weight_hash, source)
        if self.h_shape != tuple(h_shape):
            raise UserError(
                f"{source} have h shape {self.h_shape} but this model's h is {tuple(h_shape)}: recompute them for "
                "this model"
            )
        if self.timesteps.tolist() != timesteps.tolist():
            raise UserError(
                f"{source} belong to a {len(self.timesteps)}-step grid {self.timesteps[:3].tolist()}..., not this "
                "run's "
                f"{len(timesteps)}-step grid {timesteps[:3].tolist()}...: set sampler.num_steps/spacing to match or "
                "recompute"
            )

    def check_noise_schedule(self, noise_schedule: dict[str, str], source: str = "directions") -> None:
        """Refuse directions found under another training schedule or prediction type (a pipeline given a scheduler
        other than the model's own samples other images); files that predate the record pass."""
        differ = [key for key in self.noise_schedule if self.noise_schedule[key] != noise_schedule.get(key)]
        if differ:
            raise UserError(
                f"{source} were found under {', '.join(f'{k} {self.noise_schedule[k]}' for k in differ)}, but this "
                f"model has {', '.join(f'{k} {noise_schedule.get(k)}' for k in differ)}: use the scheduler config "
                "saved with the model's weights (scheduler_config.json)"
            )
