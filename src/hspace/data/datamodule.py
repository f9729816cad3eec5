"""LightningDataModules over any map-style image dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from hspace.checks import integer, number
from hspace.data.epoch_order import ResumableLoader, StreamPlace
from hspace.data.image_files import DECODING_VERSION
from hspace.data.shapes import ATTRIBUTES, ShapesDataset
from hspace.distributed import Shard
from hspace.errors import UserError


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Fractions in [0, 1] that add up to at most 1: more would put images in two splits. (All of them in val and
    test, leaving no training set, serves a run that only edits or scores; training refuses an empty split.)"""
    number(val_fraction, "data.val_fraction", 0.0, 1.0)
    number(test_fraction, "data.test_fraction", 0.0, 1.0)
    if val_fraction + test_fraction > 1:
        raise UserError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} add up to more than 1, which "
            "would put images in two splits: give fractions of the images, e.g. 0.05 each"
        )


def split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes of `count` images split by the fractions (rounded; never more than `count`)."""
    check_split_fractions(val_fraction, test_fraction)
    n_test = min(round(count * test_fraction), count)
    n_val = min(round(count * val_fraction), count - n_test)
    return count - n_val - n_test, n_val, n_test


@runtime_checkable
class Fingerprinted(Protocol):
    """A dataset that can say what every one of its items is without decoding them (file names, sizes and
    modification times, labels), so that a cache keyed by the data misses when any item changes."""

    def fingerprint(self) -> str: ...


def files_fingerprint(files, labels=None) -> str:
    """A hash of image files (their paths, sizes and modification times) and, where given, their labels: a
    JSON-able mapping from a file's key to its label vector."""
    digest = hashlib.sha256()
    for path in files:
        stat = Path(path).stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    if labels is not None:
        for key in sorted(labels):
            digest.update(f"{key}:{np.asarray(labels[key], dtype=np.float64).tobytes().hex()};".encode())
    return digest.hexdigest()[:32]


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test loaders over three datasets whose items hold an `image` in [-1, 1] (and, for
    labelled data, `attributes` in {0, 1} named by `attributes`)."""

    def __init__(self, train: Dataset, val: Dataset, test: Dataset, batch_size: int = 64, num_workers: int = 0):
        super().__init__()
        self.datasets = {"train": train, "val": val, "test": test}
        self.batch_size = integer(batch_size, "data.batch_size", 1)
        self.num_workers = integer(num_workers, "data.num_workers", 0)
        self.attributes: list[str] = []
        self.training_place = StreamPlace()  # the training loaders' place in their order, saved in checkpoints

    def state_dict(self) -> dict[str, int]:
        return {"training_batches": self.training_place.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.training_place.batches = int(state["training_batches"])

    def identity(self) -> str:
        """What the data are, for cache keys: the type, the attribute names, and per split its length, its
        fingerprint (every item, without decoding an image: Fingerprinted) and the pixels and labels of its
        first and last items (which cover the image size and the decoding)."""
        digest = hashlib.sha256(f"{type(self).__name__}:{','.join(self.attributes)}:{DECODING_VERSION}".encode())
        for name, dataset in self.datasets.items():
            digest.update(f"{name}:{len(dataset)}".encode())
            if isinstance(dataset, Fingerprinted):
                digest.update(dataset.fingerprint().encode())
            for index in sorted({0, len(dataset) - 1}) if len(dataset) else []:
                item = dataset[index]
                for key in ("image", "attributes"):
                    if key in item:
                        digest.update(torch.as_tensor(item[key]).float().contiguous().numpy().tobytes())
        return digest.hexdigest()[:32]

    def label_column(self, attribute: str) -> int:
        """The column of `attribute` in the items' `attributes`, or one line naming the labels there are."""
        if attribute not in self.attributes:
            raise UserError(
                f"the data has no label {attribute!r}: its attributes are {', '.join(self.attributes) or 'none'}"
            )
        return self.attributes.index(attribute)

    def _loader(self, split: str) -> DataLoader:
        """The split in order; under a process group this rank's contiguous block of it (the datamodule shards its
        loaders itself, as the training loader must: metrics that sum over ranks, such as the classifier's
        accuracy, then see every image once)."""
        dataset = self.datasets[split]
        shard = Shard.current()
        if shard.is_split:
            dataset = Subset(dataset, range(*shard.bounds(len(dataset))))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def check_trainable(self) -> None:
        """Training drops the last partial batch: a train split smaller than one batch would give none."""
        count = len(self.datasets["train"])
        if count < self.batch_size:
            raise UserError(
                f"data.batch_size={self.batch_size} is more than the {count} training images: "
                f"give data.batch_size={max(count, 1)} or less, or more training data"
            )

    def train_dataloader(self) -> ResumableLoader:
        """Full batches in an order drawn from the run's seed (torch's initial seed, which hspace-train sets to
        `seed`); a resumed training goes on in the same order (hspace.data.epoch_order). Under a process group each
        rank takes its own batches (the Trainer must leave the loader's sampler alone: use_distributed_sampler)."""
        self.check_trainable()
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0  # the same first batches each epoch
        return ResumableLoader(
            self.datasets["train"],
            self.batch_size,
            torch.initial_seed(),
            self.num_workers,
            Shard.current(),
            self.training_place,
            repeat=overfit,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ShapesDataModule(ImageDataModule):
    """The Shapes benchmark with disjoint, deterministic train/val/test splits."""

    def __init__(
        self,
        resolution: int = 32,
        seed: int = 0,
        n_train: int = 100_000,
        n_val: int = 1_000,
        n_test: int = 1_000,
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        integer(n_train, "data.n_train", 1)
        integer(n_val, "data.n_val", 0)
        integer(n_test, "data.n_test", 0)
        integer(seed, "data.seed", 0)
        super().__init__(
            ShapesDataset(n_train, "train", seed, resolution),
            ShapesDataset(n_val, "val", seed, resolution),
            ShapesDataset(n_test, "test", seed, resolution),
            batch_size,
            num_workers,
        )
        self.resolution = resolution
        self.attributes = list(ATTRIBUTES)
