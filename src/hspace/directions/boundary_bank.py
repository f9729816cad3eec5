"""BoundaryDiffusion's latent bank: labelled latents at grid indices (x_t and h_t per index, every attribute's
score), from generated samples scored by a classifier or from labelled real images inverted up the grid, gathered
over processes, and stored as safetensors for the cache."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open

from hspace.bottleneck import capture_h
from hspace.classifiers import AttributeClassifier
from hspace.data.batch import labelled_batches
from hspace.diffusion.inversion import ddim_invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.distributed import Shard
from hspace.errors import UserError
from hspace.files import atomic_write_safetensors
from hspace.progress import bar


@dataclass
class LatentBank:
    """Latents of labelled images at some grid indices: x_t (N, D_x) and h_t (N, D_h) per index, and every
    attribute's score of each image (N, A): a classifier's probability, or a dataset's label. One bank serves
    every attribute it scores; `labels` picks one."""

    x: dict[int, np.ndarray]
    h: dict[int, np.ndarray]
    scores: np.ndarray
    attributes: list[str]

    def labels(self, attribute: str, threshold: float = 0.5) -> np.ndarray:
        """(N,) labels in {-1, +1}: +1 where the attribute's score reaches `threshold`."""
        if attribute not in self.attributes:
            raise UserError(f"the bank scores no attribute {attribute!r}: it has {', '.join(self.attributes)}")
        return np.where(self.scores[:, self.attributes.index(attribute)] >= threshold, 1, -1)


@torch.no_grad()
def generated_bank(
    model: DiffusionModel,
    schedule,
    t_indices: list[int],
    seeds: list[int],
    classifier: AttributeClassifier,
    batch_size: int = 64,
    clip_x0: bool = False,
) -> LatentBank:
    """For each grid index, x_t and h_t of generated samples (deterministic DDIM; h_t from the call at
    (x_t, t)), scored by the classifier's probabilities on x_0. Across processes, each rank samples its block
    of the seeds and the ranks gather the bank in seed order."""
    xs = {i: [] for i in t_indices}
    hs = {i: [] for i in t_indices}
    scores = []
    shard = Shard.current()
    seeds = shard.take(seeds)
    for start in bar(range(0, len(seeds), batch_size), "boundary bank", unit="batch"):
        x_T, _ = noise_for(seeds[start : start + batch_size], model, schedule)
        trajectory = sample(model, schedule, x_T, record_x=True, record_h=True, clip_x0=clip_x0)
        for i in t_indices:
            xs[i].append(trajectory.x_t[:, i].flatten(1))
            hs[i].append(trajectory.h[:, i].flatten(1))
        scores.append(classifier.probabilities(trajectory.x0).float().cpu())
    return gathered_bank(xs, hs, scores, list(classifier.attributes), shard, model)


@torch.no_grad()
def inverted_bank(
    model: DiffusionModel,
    schedule,
    t_indices: list[int],
    dataset,
    names: list[str],
    count: int,
    batch_size: int = 64,
) -> LatentBank:
    """Like generated_bank, for labelled real images DDIM-inverted up the grid as far as the noisiest of the
    indices: x_t at each index and h_t = mid-block output of the call at (x_t, t) (pitfall B6: not the last
    inversion call's), scored by the dataset's labels (`names`)."""
    xs = {i: [] for i in t_indices}
    hs = {i: [] for i in t_indices}
    scores = []
    shard = Shard.current()  # each rank inverts its block of images; the ranks gather the bank in order
    first, stop = shard.bounds(count)
    top = min(t_indices)  # DDIM inversion climbs from the image: the steps above the noisiest index are not needed
    below = schedule.steps(top)
    for _, images, labels in labelled_batches(dataset, first, stop, batch_size, "boundary bank (inverted)"):
        states = ddim_invert(model, below, images, record_h=False, states_at=[i - top for i in t_indices]).states
        for i in t_indices:  # index i of the grid is index i - top of `below`
            x = states[i - top].to(model.device, model.dtype)
            xs[i].append(x.flatten(1).cpu())
            hs[i].append(capture_h(model, x, schedule.timesteps[i]).flatten(1).cpu())
        scores.append(labels)
    return gathered_bank(xs, hs, scores, names, shard, model)


def gathered_bank(
    xs: dict, hs: dict, scores: list, attributes: list[str], shard: Shard, model: DiffusionModel
) -> LatentBank:
    """The bank as arrays, every rank's rows in rank order (a rank without rows, when there are fewer samples
    than ranks, adds none)."""

    def stack(parts: list[torch.Tensor], width: int) -> np.ndarray:
        rows = torch.cat(parts).float().cpu() if parts else torch.zeros(0, width)
        return shard.gather(rows).numpy()

    x_width, h_width = math.prod(model.image_shape), math.prod(model.h_shape)
    return LatentBank(
        x={i: stack(v, x_width).astype(np.float64) for i, v in xs.items()},
        h={i: stack(v, h_width).astype(np.float64) for i, v in hs.items()},
        scores=stack(scores, len(attributes)).astype(np.float32),
        attributes=list(attributes),
    )


def save_bank(bank: LatentBank, path) -> None:
    tensors = {f"x.{i}": torch.from_numpy(v) for i, v in bank.x.items()} | {
        f"h.{i}": torch.from_numpy(v) for i, v in bank.h.items()
    }
    tensors["scores"] = torch.from_numpy(bank.scores)
    atomic_write_safetensors(path, tensors, {"attributes": json.dumps(bank.attributes)})


def load_bank(path) -> LatentBank:
    with safe_open(str(path), "pt") as f:  # the tensors and the attribute names in one read
        tensors = {key: f.get_tensor(key).numpy() for key in f.keys()}
        attributes = json.loads(f.metadata()["attributes"])
    pick = lambda prefix: {int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    return LatentBank(pick("x."), pick("h."), tensors["scores"], attributes)
