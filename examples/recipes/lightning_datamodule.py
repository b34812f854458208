"""The Lightning version of :class:`digits_recipes.DigitsData`: the same ``prepare_data``,
which builds the entry, and a ``setup`` that reads it into tensors.

Lightning calls ``prepare_data`` once per node (on its first process) and ``setup`` on every
process. ``get_or_build`` in ``prepare_data`` is what makes the first safe across nodes that
share a filesystem too: one process builds, the others wait and reuse its entry.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning
import numpy as np
import torch
from digits_recipes import DigitsData
from torch.utils.data import DataLoader, TensorDataset

log = logging.getLogger(__name__)


class DigitsDataModule(DigitsData, lightning.LightningDataModule):
    def setup(self, stage: str | None = None) -> None:
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
