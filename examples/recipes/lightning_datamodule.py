"""The Lightning version of :class:`digits_recipes.DigitsData`.

Lightning calls ``prepare_data`` once per node (on its first process) and ``setup`` on every
process. ``get_or_build`` in ``prepare_data`` is what makes the first safe across nodes that
share a filesystem too: one process builds, the others wait and reuse its entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from hydra_cache import CacheEntry

log = logging.getLogger(__name__)


class DigitsDataModule(lightning.LightningDataModule):
    def __init__(
        self,
        preprocess: Callable[[Path], None],
        cache_dir: str,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
    ) -> None:
        super().__init__()
        self.preprocess, self.cache_dir = preprocess, cache_dir
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory

    def prepare_data(self) -> None:
        entry = CacheEntry(self.cache_dir)
        entry.get_or_build(self.preprocess)
        log.info("prepare_data (pid %d): %s %s", os.getpid(), entry.last_outcome, entry.path)

    def setup(self, stage: str) -> None:
        with np.load(Path(self.cache_dir) / "arrays.npz") as found:
            x, y = torch.from_numpy(found["x"]), torch.from_numpy(found["y"])
        self.train = TensorDataset(x, y)
        rank = self.trainer.global_rank
        log.info("setup (pid %d, rank %d): %d samples", os.getpid(), rank, len(y))

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            shuffle=True,
        )
