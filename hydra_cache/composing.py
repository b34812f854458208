"""Compose a config the way a Hydra app would, for the command line.

This is the CLI's one door into Hydra: the same config dir, config name and overrides give the
same composed config, and so the same cache dirs, as the app itself.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, open_dict

from hydra_cache.errors import ConfigError
from hydra_cache.resolver import register


def compose_config(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config (with its ``hydra`` node, so ``${hydra:...}`` resolves)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    register()
    directory = os.path.abspath(config_dir)
    if not os.path.isdir(directory):
        raise ConfigError(
            f"--config-dir {config_dir}: no such directory; fix: point -cd at the "
            "folder that holds your app's configs"
        )
    try:
        with initialize_config_dir(config_dir=directory, job_name="hydra-cache", **version_base()):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception as error:
        raise ConfigError(
            f"cannot compose {config_name!r} from {config_dir}: {_reason(error)}; fix: correct "
            "the file, key or override it names"
        ) from None
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = os.getcwd()
    HydraConfig.instance().set_config(cfg)
    return cfg


def version_base() -> dict[str, Any]:
    """``version_base`` for Hydra's API: 1.3 warns without it, 1.4 warns with it."""
    import hydra

    return {} if hydra.__version__.startswith("1.4") else {"version_base": None}


def _reason(error: BaseException) -> str:
    """The first informative message along the cause chain, on one line, with its key."""
    seen: BaseException | None = error
    while seen is not None:
        lines = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
        if lines:
            key = next(
                (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")),
                "",
            )
            said = " ".join(
                line
                for line in lines[:2]
                if not line.startswith(("full_key:", "object_type=", "reference_type="))
            )
            return f"{key}: {said}" if key else said
        seen = seen.__cause__ or seen.__context__
    return type(error).__name__
