"""One entry on disk, and the maintenance of a root: no OmegaConf, no Hydra.

``layout`` names every file and folder; ``metadata`` reads and writes the entry's record;
``atomic`` is the one small-file writer; ``publish`` and ``wait`` are the two halves of
``get_or_build``; ``locking``, ``inuse`` and ``liveness`` say who builds, who reads and who is
alive; ``integrity`` fingerprints files; ``journal`` records publishes and removals;
``eviction`` (gc) and ``verify`` maintain a root; ``roots`` says what a root may be.
:class:`CacheEntry` is the facade users see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hydra_cache.store.entry import CacheEntry, EntryState, Leftover

__all__ = ["CacheEntry", "EntryState", "Leftover"]


def __getattr__(name: str) -> Any:
    # Lazy: the resolver imports store.roots when Hydra starts, and must not pay for the rest.
    if name in __all__:
        from hydra_cache.store import entry

        return getattr(entry, name)
    raise AttributeError(f"module 'hydra_cache.store' has no attribute {name!r}")
