"""Several processes (``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK): the process group, the device of
each rank, the decisions rank 0 takes for all, and downloads one node at a time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sei.errors import SeiUserError
from sei.runtime import resolve_device
from sei.training.config import TrainConfig


@dataclass
class Distributed:
    """This process's place among the ranks (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda") and torch.cuda.is_available():
            # before any collective: NCCL (and broadcast_object_list) use the current device, which
            # would otherwise be cuda:0 on every rank of the node
            torch.cuda.set_device(local_rank)
        owns_group = not dist.is_initialized()
        if owns_group:
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            owns_group=owns_group,
        )

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the value itself with one process)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss terms averaged over ranks: the global batch's values (each rank's are means over
        its equal share), logged by rank 0 and seen by every rank, so a divergence stops them all."""
        values = torch.stack([value.detach().float() for value in terms.values()])
        if self.world_size > 1:
            dist.all_reduce(values)  # SUM: gloo has no AVG
            values = values / self.world_size
        return dict(zip(terms, values.tolist(), strict=True))


def training_device(config: TrainConfig, distributed: Distributed) -> torch.device:
    """The device this rank trains on: ``--device``, and under torchrun with CUDA ``cuda:LOCAL_RANK``."""
    device = resolve_device(config.device)  # CUDA asked but absent is the same one-line error everywhere
    if device.type == "cuda":
        if distributed.world_size > 1:
            if config.device != "cuda":
                raise SeiUserError(
                    "under torchrun pass --device cuda (each process takes cuda:LOCAL_RANK), not "
                    f"{config.device!r}"
                )
            return torch.device("cuda", distributed.local_rank)
    elif device.type not in ("cpu", "mps"):
        raise SeiUserError(f"unknown device {config.device!r}; use cpu, cuda or cuda:N")
    return device


def download_rank_by_rank(config: TrainConfig, distributed: Distributed) -> None:
    """``--download`` with several processes: left alone they would fetch into one folder at once
    and delete each other's partial files. Rank 0 downloads first, then the first process of every
    other node (a no-op on a shared filesystem), while the rest wait on a gloo group with a timeout
    long enough for DIV2K (NCCL's default of 10 minutes is not)."""
    from datetime import timedelta

    from sei.data import load_images

    group = dist.new_group(backend="gloo", timeout=timedelta(hours=6))
    for my_turn in (distributed.is_main, distributed.local_rank == 0 and not distributed.is_main):
        if my_turn:
            for name, split in ((config.dataset, "train"), (config.val_dataset or config.dataset, "test")):
                load_images(name, split=split, root=config.data_root, download=True, resize=config.resize)
        dist.barrier(group=group)
    dist.destroy_process_group(group)
