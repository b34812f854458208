"""A real Hydra app for the tests: resolves the keys named in $PROBE_KEYS and records them.

Each job writes ``probe.json`` into its output folder (submitit jobs' stdout goes to log files,
so a file is the one channel every launcher keeps).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# hydra-core 1.3 warns without version_base, 1.4 warns with it.
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path=None, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    if os.environ.get("PROBE_BUILD"):
        from hydra_cache import CacheEntry

        entry = CacheEntry(cfg.data.cache_dir)
        entry.get_or_build(lambda staging: (staging / "built.txt").write_text("ok"))
        print(f"ENTRY {entry.last_outcome}")
    keys = [k for k in os.environ.get("PROBE_KEYS", "data.cache_dir").split(",") if k]
    values = {key: OmegaConf.select(cfg, key) for key in keys}
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    record = {"num": HydraConfig.get().job.get("num", 0) or 0, "values": values, "pid": os.getpid()}
    (output_dir / "probe.json").write_text(json.dumps(record))
    print("PROBE " + json.dumps(values))


if __name__ == "__main__":
    main()
