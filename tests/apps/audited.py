"""A real Hydra app whose build may read a value outside its key (for the audit tests).

$READ_SEED=1: the build reads train.seed (not hashed). $READ_AFTER=1: the task reads
train.seed after the build (outside it). $TO_CONTAINER=1: the build reads all of ``train``.
$READ_KEY: the build also reads that key of ``train``.
$BUILD_SECONDS: the build lasts that long (so a second job waits for it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hydra_cache import CacheEntry

# hydra-core 1.3 warns without version_base, 1.4 warns with it.
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path=None, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def build(staging: Path) -> None:
        seed = cfg.train.seed if os.environ.get("READ_SEED") else 0
        if os.environ.get("TO_CONTAINER"):
            OmegaConf.to_container(cfg.train)
        if os.environ.get("READ_KEY"):  # a key of train named in the environment
            cfg.train[os.environ["READ_KEY"]]
        time.sleep(float(os.environ.get("BUILD_SECONDS", "0")))
        (staging / "arrays.txt").write_text(f"{cfg.data.resize} {cfg.data.normalize} {seed}")

    entry = CacheEntry(cfg.data.cache_dir)
    entry.get_or_build(build)
    print(f"ENTRY {entry.last_outcome} SEEN {entry.path.joinpath('arrays.txt').read_text()}")
    if os.environ.get("READ_AFTER"):
        print(f"SEED {cfg.train.seed}")


if __name__ == "__main__":
    main()
