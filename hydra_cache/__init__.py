"""hydra-cache: cache directories that are a pure function of the composed Hydra config.

``${cache_dir:}`` turns the node that holds it into ``<root>/<namespace>/<key>``;
:class:`CacheEntry` builds an entry there exactly once across processes and publishes it
atomically. Heavy modules load on first use, because Hydra imports the plugin (and so this
package) at the start of every app and every sweep worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra_cache.errors import ConfigError, HydraCacheError, LockTimeout

if TYPE_CHECKING:
    from hydra_cache.callback import ManifestCallback
    from hydra_cache.store.entry import CacheEntry

__all__ = [
    "CacheEntry",
    "ConfigError",
    "ManifestCallback",
    "HydraCacheError",
    "LockTimeout",
    "__version__",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "CacheEntry":
        from hydra_cache.store.entry import CacheEntry

        return CacheEntry
    if name == "ManifestCallback":
        from hydra_cache.callback import ManifestCallback

        return ManifestCallback
    raise AttributeError(f"module 'hydra_cache' has no attribute {name!r}")
