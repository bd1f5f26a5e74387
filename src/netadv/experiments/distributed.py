"""Where a run's processes run: one CPU or GPU, or the ranks of a torchrun launch.

Everything the loop and the tasks do across ranks goes through here: the process group, sums
and gathers over the ranks, and each rank's share of an epoch's examples.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class Placement:
    """This process's rank among ``world`` processes, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


def setup(device: str) -> Placement:
    """The placement torchrun's environment gives (the process group is initialised), or one
    process on ``device`` without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Placement(0, 1, pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return Placement(rank, world, torch.device("cuda", local))
    dist.init_process_group("gloo")
    return Placement(rank, world, torch.device("cpu"))


def shutdown(place: Placement) -> None:
    """End a finished run's process group: every rank waits for the others first, so that
    none tears its connections down while another still talks to it (with gloo, the rank
    left talking aborts)."""
    if place.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def hardware(place: Placement) -> str:
    """One line naming where a run ran (s/epoch compares only within one machine), with torch's
    intra-op threads per process."""
    device = place.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    threads = torch.get_num_threads()
    return (
        f"{place.world} x {device.type} ({name}), torch {torch.__version__}, "
        f"{threads} thread{'s' if threads > 1 else ''}"
    )


def sum_over_ranks(values: list[float], place: Placement) -> list[float]:
    """Each value summed over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=place.device)
    if place.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def max_over_ranks(values: list[float], place: Placement) -> list[float]:
    """Each value's maximum over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=place.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather(items: list[Any], place: Placement) -> list[Any]:
    """Every rank's ``items``, concatenated in rank order."""
    if place.world == 1:
        return items
    parts: list[Any] = [None] * place.world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def rank_sampler(data: Any, place: Placement, seed: int, epoch: int) -> DistributedSampler:
    """This rank's share of ``data`` for ``epoch``: a seeded shuffle of all, cut into ranks."""
    sampler = DistributedSampler(data, num_replicas=place.world, rank=place.rank, seed=seed)
    sampler.set_epoch(epoch)
    return sampler


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A fresh, seed-determined generator per epoch, the same after a resume: stream 0 for the
    training order, stream 1 for the DataLoader's worker seeds."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + stream * 1_000_000_007)


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
