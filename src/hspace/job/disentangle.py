"""A run's directions scored as codes of ground-truth factors (docs/algorithms.md, "Disentanglement scores").

Rendered Shapes images with known factors are DDIM-inverted on the run's grid, recording h_{T:1}; each
image's code for direction j is the projection of its h_{T:1} on the direction's edit at strength 1,
code_j = sum_t scales[j, t] <h_t, directions[j, t]>. DCI and MIG of those codes against the true factors
go under `disentangle/`, and the same scores of a baseline, the top principal components of the
inverted x_T (as many as there are codes), under `disentangle/x_T_pca/`.

The inversion does not depend on the directions, so with a cache each batch's h_{T:1} and x_T are kept under
a key of the model, the grid and the batch's pixels: a later run on the same model and grid (another method,
other strengths) only projects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file

from hspace.cache import ArtifactCache
from hspace.data.batch import image_batch
from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapesDataset
from hspace.diffusion.inversion import ddim_invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplingSchedule
from hspace.directions.container import Directions
from hspace.files import atomic_write_safetensors
from hspace.identity import tensor_hash
from hspace.metrics.disentanglement import discretise, disentanglement_scores
from hspace.progress import bar

FACTOR_NAMES = ("background", "colour", "shape", "r", "cx", "cy")


@dataclass
class FactorImages:
    """Images (N, C, H, W) in [-1, 1] with their true factors as discrete labels (N, F), named by `names`."""

    images: torch.Tensor
    factors: np.ndarray
    names: tuple[str, ...] = FACTOR_NAMES


def shapes_factor_images(dataset: ShapesDataset, count: int, bins: int = 10) -> FactorImages:
    """The first `count` images of a Shapes split with their factors; r, cx and cy in `bins` equal-width bins."""
    factors = [dataset.factors(i) for i in range(count)]
    categorical = np.array(
        [
            [tuple(BACKGROUNDS).index(f.background), tuple(COLOURS).index(f.colour), SHAPES.index(f.shape)]
            for f in factors
        ]
    )
    continuous = discretise(np.array([[f.r, f.cx, f.cy] for f in factors]), bins)
    images = image_batch(dataset, range(count))
    return FactorImages(images, np.concatenate([categorical, continuous], axis=1))


def direction_codes(h: torch.Tensor, directions: Directions, count: int) -> np.ndarray:
    """codes (N, count): h (N, T, *h_shape) projected on the first `count` directions' edits at strength 1."""
    edits = torch.stack([directions.scaled(j) for j in range(count)]).flatten(2).double()  # (K, T, D)
    return torch.einsum("ntd,ktd->nk", h.flatten(2).double(), edits).numpy()


def principal_codes(x: torch.Tensor, count: int) -> np.ndarray:
    """The projections of the rows of x (N, ...) on their top `count` principal axes. (N, count)"""
    flat = x.flatten(1).double().numpy()
    centred = flat - flat.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:count].T


def inverted_batches(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    images: torch.Tensor,
    batch_size: int,
    cache: ArtifactCache | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(h_{T:1} (b, T, *h_shape), x_T (b, C, H, W)) of consecutive batches of `images`, DDIM-inverted on the grid of
    `schedule`. With a cache, each batch is kept under a key of the model (weights, noise schedule, dtype), the
    grid's timesteps and the batch's pixels, the batch size included (it changes the float rounding)."""
    identity = model.identity() if cache is not None else None  # once: a model without a weights file hashes them
    for start in bar(range(0, len(images), batch_size), "disentangle: inversion", unit="batch"):
        batch = images[start : start + batch_size]

        def compute(batch=batch):
            inverted = ddim_invert(model, schedule, batch, record_h=True)
            return inverted.h, inverted.x_T.cpu()

        if cache is None:
            yield compute()
            continue
        parts = {"model": identity, "timesteps": schedule.timesteps.tolist(), "images": tensor_hash(batch)}
        yield cache.get(
            "inverted_h",
            parts,
            compute,
            save=lambda value, path: atomic_write_safetensors(path, {"h": value[0], "x_T": value[1]}),
            load=read_inversion,
        )


def read_inversion(path) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, x_T) of a cached batch inversion."""
    tensors = load_file(path)
    return tensors["h"], tensors["x_T"]


def disentangle_stage(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    directions: Directions,
    count: int,
    known: FactorImages,
    batch_size: int = 128,
    cache: ArtifactCache | None = None,
) -> dict[str, float]:
    """DCI and MIG of the first `count` directions (and of the x_T baseline) on the images of `known`."""
    hs, x_T = [], []
    for h, x in inverted_batches(model, schedule, known.images, batch_size, cache):
        hs.append(direction_codes(h, directions, count))
        x_T.append(x)
    codes = np.concatenate(hs)
    metrics = {f"disentangle/{k}": v for k, v in disentanglement_scores(codes, known.factors).items()}
    baseline = disentanglement_scores(principal_codes(torch.cat(x_T), count), known.factors)
    metrics |= {f"disentangle/x_T_pca/{k}": v for k, v in baseline.items()}
    metrics["disentangle/num_images"] = len(known.images)
    metrics["disentangle/num_codes"] = count
    return metrics
