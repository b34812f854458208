"""Recipe code shared by the recipe apps: a preprocessing function and a loader over its entry.

``preprocess`` is what ``data.preprocess`` (a ``_partial_`` node) instantiates to; ``DigitsData``
is what ``data`` instantiates to. The loader takes the cache dir as a plain string: it never
needs to know how the key was made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from hydra_cache import CacheEntry

log = logging.getLogger(__name__)


def preprocess(staging: Path, *, resize: int, normalize: str) -> None:
    """The expensive step: resize and normalise the digits, save the arrays into ``staging``."""
    digits = load_digits()
    images = digits.images.astype(np.float32)
    rows = np.linspace(0, images.shape[1] - 1, resize).round().astype(int)
    features = images[:, rows][:, :, rows].reshape(len(images), -1)
    if normalize == "standard":
        features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    np.savez(staging / "arrays.npz", x=features, y=digits.target)


class DigitsData:
    """A plain loader with the two hooks Lightning uses: build once, then read."""

    def __init__(
        self,
        preprocess: Callable[[Path], None],
        cache_dir: str,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
    ) -> None:
        super().__init__()  # cooperative: the Lightning version mixes this class in
        self.preprocess, self.cache_dir = preprocess, cache_dir
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.arrays: dict[str, Any] = {}

    def prepare_data(self) -> None:
        """Build the entry if no process has (any number may call this at once)."""
        entry = CacheEntry(self.cache_dir)
        entry.get_or_build(self.preprocess)
        log.info("prepare_data (pid %d): %s %s", os.getpid(), entry.last_outcome, entry.path)

    def setup(self, stage: str | None = None) -> None:
        """Read only: the entry is complete, or this raises instead of reading half of it."""
        with np.load(Path(self.cache_dir) / "arrays.npz") as found:
            self.arrays = dict(found)
        log.info("setup: %d samples, batch_size %d", len(self.arrays["y"]), self.batch_size)
