"""A real Hydra app with chained stages: each stage's build reads its upstream's files.

Stages are the top-level nodes listed in $STAGES (in order); each holds ``cache_dir:
${cache_dir:}`` and, but the first, a ``source`` that points into its upstream's entry.
Prints ``STAGE <name> <outcome> <path>`` per stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hydra_cache import CacheEntry

VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path=None, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    for name in os.environ.get("STAGES", "raw,tokens,features").split(","):
        node = cfg[name]

        def build(staging: Path, node: DictConfig = node, name: str = name) -> None:
            params = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()}
            upstream = ""
            if "source" in node:
                upstream = (Path(node.source) / "out.json").read_text()
            (staging / "out.json").write_text(
                json.dumps({"stage": name, "params": params, "upstream": upstream})
            )

        entry = CacheEntry(node.cache_dir)
        entry.get_or_build(build)
        print(f"STAGE {name} {entry.last_outcome} {node.cache_dir}", flush=True)


if __name__ == "__main__":
    main()
