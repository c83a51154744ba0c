"""Data parallelism's few shared facts, in one place: how many processes torchrun started, which
one this is, and sums and means over them. Every process draws from one random stream (each
seeds it alike and checkpoints rank 0's), so that a resume is exact; where processes need
draws of their own they draw the world's and take their share (`own_draws`).

Outside torchrun every function is the single-process case: world 1, rank 0, sums unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch


def world_size() -> int:
    """The number of training processes torchrun starts (its WORLD_SIZE; 1 without torchrun),
    known before the process group is: the global batch is batch_size times this."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number of processes, got {value!r}") from None
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    return world


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes) of the started process group; (0, 1) without one."""
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def own_draws(draw: Callable[[int], torch.Tensor], count: int) -> torch.Tensor:
    """This process's `count` rows of draw(world * count), the world's draws from the stream the
    processes share (rows rank * count to (rank + 1) * count): each process gets others, and the
    stream moves alike in every one."""
    rank, world = rank_and_world()
    return draw(world * count)[rank * count:(rank + 1) * count]


def own_generator(device: torch.device | str) -> torch.Generator:
    """A generator on `device` for this process's own draws, seeded from the stream the processes
    share (own_draws of one seed): the draws resume exactly from a checkpoint of that stream."""
    seed = own_draws(lambda n: torch.randint(2**62, (n,), dtype=torch.int64), 1)
    return torch.Generator(device).manual_seed(int(seed))


def summed(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over the processes (a new tensor; `value` itself without a process group)."""
    if is_distributed():
        value = value.clone()
        torch.distributed.all_reduce(value)
    return value


def averaged(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the processes (a new tensor; `value` itself without a process group)."""
    if is_distributed():
        return summed(value) / torch.distributed.get_world_size()
    return value
