"""The training loader: one stream of shuffled batches, a function of the seed alone, that a resume continues.

PyTorch's shuffling loader draws each epoch's order, and its workers' seed, from torch's global stream when the
epoch starts. A training resumed from a checkpoint saved mid-epoch drew a new order for the rest of that epoch,
and a training stopped by max_steps or max_time mid-epoch resumes, in Lightning's count, at the start of the next
epoch. Here the batches form one stream: pass e over the data is a permutation drawn from its own generator,
seeded by (seed, e), cut into full batches (a last partial batch is left out, as drop_last does). An iteration
gives one pass's worth of batches from where the last one stopped, so each epoch Lightning starts takes the
stream's next batches (fewer in an epoch it resumes), and nothing is drawn from the global stream. The loader
and its datamodule keep how many batches it has handed out (StreamPlace); Lightning saves that in every
checkpoint and hands it back on resume. Together with the random streams the module saves
(hspace.lightning.random_states), a resumed training takes the same steps as an unbroken one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hspace.distributed import Shard
from hspace.errors import UserError

WORKER_SEEDS = 0  # the stream the loader's workers' seeds come from; pass e over the data draws from stream e + 1


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A generator seeded by (seed, stream): different streams and seeds get unrelated draws."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class BatchStream(Sampler[list[int]]):
    """Batches of indices into `size` items: batch b is slot b mod n of pass b div n over the data, where each pass
    is a permutation drawn from seeded_generator(seed, pass + 1), cut into n = size div (batch_size * world_size)
    rows of batch_size * world_size (the rest of the pass is left out), and rank `rank` of `world_size` processes
    takes its own batch_size of each row. Iterating gives n batches, one pass's worth, from batch `start` on."""

    def __init__(self, size: int, batch_size: int, seed: int, shard: Shard = Shard()):
        if size < batch_size * shard.world_size:
            raise UserError(
                f"{size} training images make no batch of data.batch_size={batch_size} for each of "
                f"{shard.world_size} processes: give a smaller batch size, fewer devices or more data"
            )
        self.size, self.batch_size, self.seed, self.shard = size, batch_size, seed, shard
        self.start = 0

    def order(self, data_pass: int) -> torch.Tensor:
        """This rank's batches of pass `data_pass` over the data: a (len(self), batch_size) tensor of indices."""
        permutation = torch.randperm(self.size, generator=seeded_generator(self.seed, data_pass + 1))
        rows = permutation[: len(self) * self.batch_size * self.shard.world_size].view(len(self), -1)
        return rows[:, self.shard.rank * self.batch_size : (self.shard.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        data_pass, slot = divmod(self.start, len(self))
        batches = self.order(data_pass)[slot:].tolist()
        if slot:
            batches += self.order(data_pass + 1)[:slot].tolist()
        return iter(batches)

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.shard.world_size)


@dataclass
class StreamPlace:
    """How many batches of the stream a training has taken. The datamodule keeps it and saves it in every
    checkpoint (LightningDataModule.state_dict, which Lightning restores on every resume, however the run was
    limited); every loader it builds, a reloaded one too, shares it."""

    batches: int = 0


class ResumableLoader(DataLoader):
    """`dataset` in the batches of a BatchStream (this process's, under a process group: it shards the data itself,
    so Lightning must not put a DistributedSampler in), from the shared `place` on. With `repeat` every iteration
    starts again at the first batch (Lightning's overfit_batches). Lightning also sees a stateful loader, which
    saves and restores the same place."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        shard: Shard = Shard(),
        place: StreamPlace | None = None,
        repeat: bool = False,
    ):
        stream = BatchStream(len(dataset), batch_size, seed, shard)
        super().__init__(
            dataset,
            batch_sampler=stream,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=seeded_generator(seed, WORKER_SEEDS),  # not torch's global stream
        )
        self.stream, self.repeat = stream, repeat
        self.place = place if place is not None else StreamPlace()

    def __iter__(self) -> Iterator:
        # Lightning takes one batch per step from a loader whose length it knows, so the batches handed out are
        # the ones trained on; workers may have loaded more, which the next iteration draws again.
        self.stream.start = 0 if self.repeat else self.place.batches
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator) -> Iterator:
        for batch in batches:
            if not self.repeat:
                self.place.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.place.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.place.batches = int(state["batches"])
