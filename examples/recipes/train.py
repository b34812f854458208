"""Recipe: the instantiate pattern. ``instantiate(cfg.data)`` gives a loader whose cache dir
is keyed by ``data.preprocess`` alone, so loader knobs (batch size, workers) never rebuild it.

    python examples/recipes/train.py                      # builds
    python examples/recipes/train.py data.batch_size=32   # hit: not in the key
    python examples/recipes/train.py data.preprocess.resize=4   # a new entry
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).parent))  # the recipe modules named by _target_

log = logging.getLogger(__name__)
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path="conf", config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")


if __name__ == "__main__":
    main()
