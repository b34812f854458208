"""Hydra plugin of hydra-cache: registers ``${cache_dir:}`` and adds the plugin's configs.

Hydra imports every module under ``hydra_plugins`` at start-up and again in every sweep worker,
so this module stays thin: registering the resolver is idempotent and cheap, and nothing heavy
is imported here.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from hydra_cache.resolver import register

register()


class HydraCacheSearchPathPlugin(SearchPathPlugin):
    """Makes ``hydra/callbacks=cache_manifest`` selectable from any app."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(
            provider="hydra-cache", path="pkg://hydra_plugins.hydra_cache_plugin.conf"
        )
