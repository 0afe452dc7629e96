"""Data parallelism through torch.distributed: started by `torchrun`, one process a device.

Each rank computes its slice of every global batch (the batch size in the configs is global),
DDP averages the gradients, so N processes follow the same loss curve as one process with the
same global batch. Rank 0 alone writes metrics, checkpoints and the progress bar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .config import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This rank's rows of a global batch."""
        if global_batch % self.world:
            raise ConfigError(
                f"batch ({global_batch}) must be divisible by the {self.world} processes"
            )
        n = global_batch // self.world
        return slice(self.rank * n, (self.rank + 1) * n)


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPUs); single process
    otherwise. Returns the rank layout and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    if d.world == 1:
        return model
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean over ranks (a copy)."""
    t = t.detach().clone()
    if d.world > 1:
        dist.all_reduce(t)
        t /= d.world
    return t


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank if it is true on any (so all ranks stop at the same step)."""
    if d.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
