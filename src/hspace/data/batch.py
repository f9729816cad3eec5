"""Batches of a dataset's images: every dataset of hspace.data returns items with an "image" tensor."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils.data import Dataset


def image_batch(dataset: Dataset, indices: Iterable[int]) -> torch.Tensor:
    """The "image" tensors of `dataset`'s items at `indices`, stacked: (N, C, H, W), in [-1, 1] for hspace.data."""
    return torch.stack([dataset[i]["image"] for i in indices])
