"""Streaming collection of h_{T:1} over generated samples, one batch of seeds at a time, optionally cached."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from safetensors.torch import load_file

from hspace.cache import ArtifactCache
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplingSchedule
from hspace.files import atomic_write_safetensors
from hspace.progress import bar


def schedule_description(schedule: SamplingSchedule) -> dict:
    return {
        "timesteps": schedule.timesteps.tolist(),
        "eta": schedule.eta.tolist(),
        "alpha_bar_prev_last": float(schedule.alpha_bar_prev[-1]),
    }


def collect_h(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    seeds: Sequence[int],
    batch_size: int,
    cache: ArtifactCache | None = None,
    clip_x0: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the natural h of every step for consecutive batches of seeds. Each item: (b, T, *h_shape) float32.

    Only one batch is in memory at a time; with a cache, each batch is stored under a key of the model
    (weights, noise schedule, parameterisation, dtype), the sampling schedule, the clip setting and the
    batch's seeds, so later runs skip the sampling.
    """
    identity = model.identity() if cache is not None else None  # once: a model without a weights file hashes them
    for start in bar(range(0, len(seeds), batch_size), "collect h", unit="batch"):
        batch = list(seeds[start : start + batch_size])

        def compute(batch=batch):
            x_T, z = noise_for(batch, model, schedule)
            return sample(model, schedule, x_T, z, record_h=True, clip_x0=clip_x0).h

        if cache is None:
            yield compute()
            continue
        parts = {
            "model": identity,
            "schedule": schedule_description(schedule),
            "clip_x0": clip_x0,
            "seeds": batch,
        }
        yield cache.get(
            "h",
            parts,
            compute,
            save=lambda h, path: atomic_write_safetensors(path, {"h": h}),
            load=lambda path: load_file(path)["h"],
        )
