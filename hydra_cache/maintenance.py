"""Looking after a root: find entries by key, remove them, see builds in progress.

The command line only parses and renders; what it does to a root is here, on top of the
store's own helpers (the entry lock, in-use marks, the journal, eviction), so a removal by
``hydra-cache rm`` is as safe as one by ``gc``: under the entry's lock, never while in use,
renamed out of place first, journaled.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra_cache.errors import ConfigError
from hydra_cache.store import layout
from hydra_cache.store.entry import CacheEntry, EntryState
from hydra_cache.store.eviction import Found, evict, namespaces, scan
from hydra_cache.store.locking import probe

_KEY = re.compile(r"^[0-9a-f]{16}$")


def find(root: Path, spec: str) -> list[Found]:
    """The published entries ``spec`` names: a key, ``namespace/key`` or the entry's path."""
    text = spec.rstrip("/")
    namespace: str | None = None
    if os.sep in text or "/" in text:
        path = Path(text)
        if (path.is_absolute() or len(path.parts) > 2) and path.parent.parent != root:
            raise ConfigError(
                spec,
                f"is not an entry of the root {root}",
                "name an entry as KEY or NAMESPACE/KEY, or pass the root it is under (--root)",
            )
        namespace, text = path.parent.name, path.name
    if not _KEY.match(text):
        raise ConfigError(
            spec,
            "is not a cache key (16 lowercase hex characters)",
            "copy it from hydra-cache ls or keys, e.g. data/0123456789abcdef",
        )
    return [f for f in scan(root, namespace) if f.key == text]


def remove(root: Path, found: Iterable[Found]) -> list[tuple[Found, bool, str]]:
    """Remove entries under their locks, journaled as ``rm``: (entry, removed?, why not) each.

    An entry being built (its lock held elsewhere) or in use by a process on this host is
    skipped, never removed under it.
    """
    results = []
    for item in found:
        removed, why = evict(item, "removed with hydra-cache rm", root, by="rm")
        if removed:
            _remove_lock(item.path)
        results.append((item, removed, why))
    return results


def _remove_lock(path: Path) -> None:
    """The lock of a removed entry, unless someone took it meanwhile (a deletion by hand
    leaves it behind). A process that opened the old lock file just before this may still
    build beside a newcomer on a new one: the publish stays correct (one rename wins), the
    lock only ever saves duplicate work."""
    lock_path = layout.lock_path(path)
    if not probe(lock_path):
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()


@dataclass(frozen=True)
class InProgress:
    """An entry that is not published but has a lock or staging folder beside it."""

    namespace: str
    key: str
    path: Path
    state: EntryState
    #: Seconds since the newest staging folder of this key was made (None without one).
    age_seconds: float | None


def in_progress(root: Path, namespace: str | None = None) -> list[InProgress]:
    """Builds running now (and killed ones' leftovers), so ``ls`` shows what is coming."""
    found: list[InProgress] = []
    for space in namespaces(root, namespace):
        try:
            names = {item.name for item in os.scandir(space.path)}
        except OSError:
            continue
        keys = set()
        for name in names:
            parsed = layout.parse(name)
            if parsed is not None and parsed.kind in ("staging", "lock"):
                keys.add(parsed.key)
        for key in sorted(keys - names):
            entry = CacheEntry(Path(space.path) / key)
            state = entry.state()
            if state.status not in ("building", "torn"):
                continue
            ages = [item.age_seconds for item in state.leftovers]
            found.append(
                InProgress(space.name, key, entry.path, state, min(ages) if ages else None)
            )
    return found


def describe_holder(state: EntryState) -> str:
    holder = state.holder or {}
    if not holder:
        return "unknown"
    since = holder.get("since")
    age = f", for {time.time() - float(since):.0f}s" if isinstance(since, (int, float)) else ""
    return f"{holder.get('host', '?')}:{holder.get('pid', '?')}{age}"


def parameters(metadata: Any) -> dict[str, Any]:
    """The hashed values of an entry, as dotted key -> value (from its redacted payload)."""
    payload = metadata.get("payload") or {}
    nodes = payload.get("nodes") if isinstance(payload, dict) else None
    if not isinstance(nodes, dict):
        return {}
    flat: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for name, item in value.items():
                walk(item, f"{path}.{name}" if path else str(name))
        elif isinstance(value, list) and value:
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        else:
            flat[path] = value

    for name, value in nodes.items():
        walk(value, "" if name == "." else str(name))
    return flat
