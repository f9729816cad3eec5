"""Batches of a dataset's images: every dataset of hspace.data returns items with an "image" tensor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import Dataset


def image_batch(dataset: Dataset, indices: Iterable[int]) -> torch.Tensor:
    """The "image" tensors of `dataset`'s items at `indices`, stacked: (N, C, H, W), in [-1, 1] for hspace.data."""
    return torch.stack([dataset[i]["image"] for i in indices])


def labelled_batches(
    dataset: Dataset, first: int, stop: int, batch_size: int, desc: str
) -> Iterator[tuple[range, torch.Tensor, torch.Tensor]]:
    """Items first..stop-1 of a labelled dataset in batches, with a progress bar: (their indices, images (B, C, H,
    W), attribute labels (B, A) as floats)."""
    from hspace.progress import bar

    for start in bar(range(first, stop, batch_size), desc, unit="batch"):
        indices = range(start, min(start + batch_size, stop))
        items = [dataset[i] for i in indices]
        yield (
            indices,
            torch.stack([it["image"] for it in items]),
            torch.stack([it["attributes"] for it in items]).float(),
        )
