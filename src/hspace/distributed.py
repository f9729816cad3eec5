"""Collection across processes (docs/design.md, "Collection across processes").

A direction method that collects statistics over many samples (PCA, class means, the boundary bank) asks
`Shard.current()` which part of the work is its own: one process (rank 0 of 1) does everything; under a
process group each rank takes one contiguous block of the seeds or images, and the ranks merge what they
collected exactly (sums, gathered rows) or as a mergeable sketch (PCA). `run_across_processes` starts such
a group on one machine (gloo on CPU, NCCL with one GPU per rank) and returns rank 0's result.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hspace.errors import UserError


@dataclass(frozen=True)
class Shard:
    """This process's part of a collection: rank `rank` of `world_size` processes."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Shard:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_split(self) -> bool:
        return self.world_size > 1

    def bounds(self, count: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous block of `count` items (blocks differ in size by at most one)."""
        edges = np.linspace(0, count, self.world_size + 1).round().astype(int)
        return int(edges[self.rank]), int(edges[self.rank + 1])

    def take(self, items: Sequence) -> list:
        """This rank's contiguous block of `items`: concatenating every rank's block in rank order gives `items`."""
        start, stop = self.bounds(len(items))
        return list(items[start:stop])

    def device(self) -> torch.device:
        """Where this rank computes: its GPU under NCCL (run_across_processes gives each rank one), else the CPU."""
        if self.is_split and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` concatenated along dim 0 in rank order (sizes along dim 0 may differ)."""
        if not self.is_split:
            return tensor
        device = self.device()
        local = tensor.to(device).contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
        sizes = [int(s) for s in sizes]
        padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)]).to(tensor.device)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over the ranks."""
        if not self.is_split:
            return tensor
        total = tensor.to(self.device()).clone()
        dist.all_reduce(total)
        return total.to(tensor.device)

    def barrier(self) -> None:
        """Wait until every rank has come here."""
        if self.is_split:
            dist.barrier()

    def all_agree(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank: one decision the ranks take together."""
        return int(self.sum(torch.tensor([int(flag)]))) == self.world_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world_size: int, port: int, threads: int, gpus: Sequence[int], fn: Callable, args: tuple, out: str
) -> None:
    torch.set_num_threads(threads)
    use_cuda = torch.cuda.is_available() and (len(gpus) or torch.cuda.device_count()) >= world_size
    if use_cuda:
        torch.cuda.set_device(gpus[rank] if gpus else rank)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    try:
        try:
            result = fn(*args)
        except UserError as error:  # the parent raises it again as the one line it is
            Path(f"{out}.error{rank}").write_text(str(error))
            raise
        if rank == 0:
            torch.save(result, out)  # a tensor dict or a torch-saveable result of this process group's own work
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_across_processes(fn: Callable, args: tuple, world_size: int, gpus: Sequence[int] = ()) -> object:
    """Run `fn(*args)` in `world_size` new processes joined in one process group, and return rank 0's
    result (which must be plain data: tensors, numbers, strings, lists and dicts of them).

    Each process gets cpu_count / world_size torch threads; with as many GPUs as ranks, rank r uses GPU r, or the
    r-th of `gpus` where they are listed (NCCL), else every rank runs on the CPU (gloo). `fn` moves its model to
    its own device."""
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, not {world_size}")
    threads = max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory(prefix="hspace-ranks-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        try:
            worker_args = (world_size, free_port(), threads, tuple(gpus), fn, args, out)
            mp.spawn(_worker, args=worker_args, nprocs=world_size, join=True)
        except Exception:
            refused = sorted(Path(tmp).glob("rank0.pt.error*"))
            if refused:  # a rank refused its work: the others then fail in their collectives, not by themselves
                raise UserError(refused[0].read_text()) from None
            raise
        return torch.load(out, weights_only=True)
