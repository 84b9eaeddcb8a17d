"""The order of the data: a stream of per-epoch permutations, cut into global batches, split by rank."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from sei.errors import SeiUserError
from sei.runtime import derive_seed


class StepBatches(torch.utils.data.Sampler):
    """Yields, for each step from ``start_step``, this rank's share of the global batch as
    ``(epoch, index)`` keys. Position ``p`` of the stream is image ``perm_{p // n}[p % n]``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise SeiUserError(
                f"batch size {batch_size} must be divisible by the number of processes {world_size}"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=generator)}
        return self._perms[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        share = self.batch_size // self.world_size
        first = step * self.batch_size + self.rank * share
        return [
            (p // self.n, int(self._permutation(p // self.n)[p % self.n]))
            for p in range(first, first + share)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while step < self.total_steps:  # read each time: a time budget re-plans the total during the run
            yield self.keys(step)
            step += 1

    def __len__(self) -> int:
        return self.total_steps - self.start_step


class KeyedPatches(torch.utils.data.Dataset):
    """Adapts a :class:`sei.data.PatchDataset` to ``(epoch, index)`` keys (each worker has its copy)."""

    def __init__(self, patches: Any) -> None:
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.patches.set_epoch(epoch)
        return self.patches[index]
