"""Data parallelism on torch.distributed: which rank this process is, and the few collectives
the trainer needs.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`process_group` joins the
process group: gloo on the CPU, nccl on CUDA with each rank on GPU ``LOCAL_RANK``. Without it a
run has one rank, no process group, and every collective here returns at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from sparsecircuits.config import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one run (rank 0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The ranks of the process group this process belongs to, or one rank without one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def writer(self) -> bool:
        """Rank 0: the only rank that touches the run folder."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (shares differ by at most one row)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def sum_(self, tensors: list[Tensor]) -> None:
        """Sum every tensor over the ranks, in place, in one all-reduce."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
            tensor.copy_(part.view_as(tensor))

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def from_writer(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 only and return its (picklable) result on every rank. An
        exception it raises is raised on every rank, so none waits for a rank that stopped."""
        if self.world == 1:
            return work()
        payload: list[Any] = [None]
        if self.writer:
            try:
                payload[0] = (work(), None)
            except Exception as err:  # shared, then raised on every rank below
                payload[0] = (None, err)
        dist.broadcast_object_list(payload, src=0)
        result, error = payload[0]
        if error is not None:
            raise error
        return result


ALONE = Ranks()
"""One process, no process group."""


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) for the block, and leave it
    after; one process without them (or with ``WORLD_SIZE=1``) runs alone, with no group. A
    group someone else already set up is used as it is and left in place."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        yield Ranks.current()
        return
    cuda = device.type == "cuda"
    if cuda:
        if device.index is not None:
            raise ConfigError(f"run.device: {str(device)!r} puts all {world} ranks on one GPU; "
                              f"use \"cuda\" (each rank takes GPU LOCAL_RANK)")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield Ranks.current()
    finally:
        dist.destroy_process_group()
