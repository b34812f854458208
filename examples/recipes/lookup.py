"""Recipe: look an entry up without building it (an evaluation job, a notebook, a check in CI).

python examples/recipes/lookup.py                          # ready, or why not
python examples/recipes/lookup.py data.preprocess.resize=4
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from hydra_cache import CacheEntry
from hydra_cache.explain import explain

log = logging.getLogger(__name__)
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path="conf", config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    entry = CacheEntry(cfg.data.cache_dir)  # deriving the path builds nothing
    meta = entry.metadata()
    if meta is not None:  # ready: published whole (one lstat decides)
        log.info("ready: %s, %d bytes, built %s", entry.path, meta["size_bytes"], meta["created"])
    else:  # missing, being built or torn: say which, and why
        log.info("not ready (%s): %s", entry.state().status, explain(entry.path).summary)


if __name__ == "__main__":
    main()
