"""The exceptions hydra-cache raises.

Every message is one line that names the config key (or path) at fault and says how to fix it.
All exceptions pickle, because Hydra moves them across joblib and submitit worker boundaries.
"""

from __future__ import annotations


class HydraCacheError(Exception):
    """Base class of every hydra-cache error."""


class ConfigError(HydraCacheError, ValueError):
    """The composed config cannot give a cache dir: a bad node, value, setting or root."""


class LockTimeout(HydraCacheError, TimeoutError):
    """``get_or_build(timeout=...)`` gave up waiting for another process's build."""


class UnsafePathError(HydraCacheError, OSError):
    """Something that may have been planted (a symlink, a FIFO) sits where hydra-cache writes."""


class NotAnEntryError(HydraCacheError, FileExistsError):
    """Something that is not a cache entry sits at an entry's path: never moved or deleted."""


class DamagedEntryError(HydraCacheError, OSError):
    """``verify_on_hit`` found an entry damaged again right after rebuilding it."""
