"""The Directions container and its file format (DESIGN.md "Contracts").

A file is safetensors holding `directions` (k, T, *h_shape), per-step `scales` (k, T) and `timesteps` (T,),
plus any method-specific tensors, with JSON metadata under the key "hspace": method, the names of the k
directions, model id and weight hash, sampler settings, h shape and the config that made it.
The edit of direction j at strength gamma and step idx is dh = gamma * scales[j, idx] * directions[j, idx].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hspace.errors import UserError
from hspace.images import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass
class Directions:
    directions: torch.Tensor  # (k, T, *h_shape) axes (unit per step for PCA)
    scales: torch.Tensor  # (k, T) per-step scale that strength 1 means (std for PCA)
    timesteps: torch.Tensor  # (T,) the sampling grid the directions belong to, noisiest first
    names: list[str]
    method: str
    model_id: str
    weight_hash: str
    sampler: dict  # num_steps, spacing, eta, final_alpha of the grid
    config: dict = field(default_factory=dict)  # the method settings that made them
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # method-specific tensors
    info: dict = field(default_factory=dict)  # method-specific results worth keeping (e.g. explained variance)

    def __post_init__(self):
        k, T = self.directions.shape[:2]
        if self.scales.shape != (k, T) or self.timesteps.shape != (T,) or len(self.names) != k:
            raise ValueError(f"inconsistent directions: {tuple(self.directions.shape)}, scales {tuple(self.scales.shape)}, {len(self.names)} names")

    @property
    def h_shape(self) -> tuple[int, ...]:
        return tuple(self.directions.shape[2:])

    def scaled(self, index: int) -> torch.Tensor:
        """v_t = scales[j, t] * directions[j, t] at every step: the h offset of strength 1. (T, *h_shape)"""
        return self.directions[index] * self.scales[index].view(-1, *([1] * len(self.h_shape)))

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
        }

    def save(self, path: str | Path) -> Path:
        tensors = {"directions": self.directions, "scales": self.scales, "timesteps": self.timesteps}
        tensors |= {f"extra.{k}": v for k, v in self.extra.items()}
        data = save({k: v.contiguous().cpu() for k, v in tensors.items()}, metadata={"hspace": json.dumps(self.metadata())})
        return atomic_write_bytes(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | Path) -> Directions:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"no directions file at {path}: run the method first or fix the path")
        try:
            tensors = load_file(path)
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                meta = json.loads(json.loads(f.read(header_len))["__metadata__"]["hspace"])
        except (SafetensorError, KeyError, ValueError, OSError) as error:
            raise UserError(f"{path} is not a readable hspace directions file ({error}); delete it and recompute") from None
        return cls(
            directions=tensors["directions"],
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
        )

    def check_compatible(self, weight_hash: str, h_shape: tuple[int, ...], timesteps: torch.Tensor, source: str = "directions") -> None:
        """Refuse, in one line, directions made for another model, h shape or sampling grid."""
        if self.weight_hash != weight_hash:
            raise UserError(f"{source} were made for model {self.model_id} (weights {self.weight_hash[:12]}), not this one (weights {weight_hash[:12]}): recompute them for this model")
        if self.h_shape != tuple(h_shape):
            raise UserError(f"{source} have h shape {self.h_shape} but this model's h is {tuple(h_shape)}: recompute them for this model")
        if self.timesteps.tolist() != timesteps.tolist():
            raise UserError(
                f"{source} belong to a {len(self.timesteps)}-step grid {self.timesteps[:3].tolist()}..., not this run's "
                f"{len(timesteps)}-step grid {timesteps[:3].tolist()}...: set sampler.num_steps/spacing to match or recompute"
            )


@dataclass
class StepOffsets:
    """h offsets strength_r * v_t for a batch of strengths: callable as the sampler's `h_offset(idx)`.

    Steps outside `window` (a bool mask over step indices, or None for all steps) get no edit.
    """

    v: torch.Tensor  # (T, *h_shape) the scaled direction of every step
    strengths: torch.Tensor  # (B,) one strength per batch row
    window: torch.Tensor | None = None  # (T,) bool

    def __call__(self, idx: int) -> torch.Tensor | None:
        if self.window is not None and not bool(self.window[idx]):
            return None
        return self.strengths.to(self.v.dtype).view(-1, *([1] * (self.v.ndim - 1))) * self.v[idx]
