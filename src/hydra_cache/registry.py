"""What this process derived for each cache path, so an entry can describe itself.

The resolver fills it (config -> key -> path); :class:`~hydra_cache.entry.CacheEntry` reads it
when it publishes, to put the digest and the (redacted) payload into the entry's metadata.
Data flows one way: nothing here knows about Hydra or about disks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EntryInfo:
    """How one cache path was derived."""

    config_key: str
    namespace: str
    key: str
    digest: str
    payload: dict[str, Any]
    root: str
    root_source: str
    volatile: tuple[str, ...] = ()


_by_path: dict[str, EntryInfo] = {}


def remember(path: str, info: EntryInfo) -> None:
    _by_path[path] = info


def lookup(path: str) -> EntryInfo | None:
    return _by_path.get(path)
