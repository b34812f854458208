"""The build of the under-keyed example: it splits with train.seed, outside the data key."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


def build(cfg: Any, staging: Path) -> None:
    rows = list(range(100))
    random.Random(cfg.train.seed).shuffle(rows)
    cut = int(len(rows) * (1 - cfg.data.test_size))
    (staging / "split.txt").write_text(f"{cfg.data.resize}\n{rows[:cut]}\n{rows[cut:]}\n")
