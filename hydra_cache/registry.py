"""What this process derived and did for each cache path.

The resolver fills it (config -> key -> path); :class:`~hydra_cache.store.entry.CacheEntry` reads it
when it publishes, to put the digest, the redacted payload and the run into the entry's
metadata, and records what each ``get_or_build`` did so the manifest callback can report it at
the end of the job. Nothing here knows about Hydra or about disks.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hydra_cache.key.walk import KNOWN
    from hydra_cache.store.remote.config import RemoteSpec

log = logging.getLogger(__name__)

#: ``KNOWN`` (every cache path this process derived, so keys recognise them inside plain
#: strings) lives in key.walk; it is reached through this module lazily, so the store, which
#: reads this registry, never imports OmegaConf.
__all__ = ["KNOWN", "EntryInfo", "Outcome"]


def __getattr__(name: str) -> Any:
    if name == "KNOWN":
        from hydra_cache.key.walk import KNOWN

        return KNOWN
    raise AttributeError(f"module 'hydra_cache.registry' has no attribute {name!r}")


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
    run_dir: str | None = None
    lock_mode: Literal["auto", "flock", "soft"] = "auto"
    shared: bool = False
    audit: bool = False
    #: Dotted keys whose reads a build may make: hashed nodes, upstreams' nodes, cache dirs.
    covered: tuple[str, ...] = ()
    #: ``hydra_cache.exclude`` patterns: reads there are not covered by the key either.
    excluded: tuple[str, ...] = ()
    #: Per input key: path, files, bytes, modified (shown by why; not hashed).
    inputs: dict[str, dict[str, Any]] | None = None
    #: Entries whose cache dirs hashed values derive from: config_key, key, digest.
    upstreams: tuple[dict[str, Any], ...] = ()
    #: The hashed nodes (absolute dotted keys).
    nodes: tuple[str, ...] = ()
    #: The project the entry belongs to (``hydra_cache.project``, or the folder holding the
    #: config dir); None when unknown.
    project: str | None = None
    #: ``hydra_cache.remote`` (or ``$HYDRA_CACHE_REMOTE``): the team's copy; never in the key.
    remote: RemoteSpec | None = None


@dataclass(frozen=True)
class Outcome:
    """What one ``get_or_build`` call did."""

    action: str  # hit | built | waited | pulled
    build_seconds: float | None = None
    size_bytes: int | None = None


_by_path: dict[str, EntryInfo] = {}
_configs: dict[str, weakref.ref[Any]] = {}
_outcomes: dict[str, Outcome] = {}


def remember(path: str, info: EntryInfo) -> None:
    _by_path[path] = info


def lookup(path: str) -> EntryInfo | None:
    return _by_path.get(path)


def remember_config(path: str, config: Any) -> None:
    """The config object whose resolution gave ``path`` (for the read audit)."""
    _configs[path] = weakref.ref(config)


def config_of(path: str) -> Any:
    ref = _configs.get(path)
    return ref() if ref is not None else None


def note_outcome(path: str, outcome: Outcome) -> None:
    # A build or a wait is more telling than a later hit in the same job.
    if outcome.action == "hit" and path in _outcomes:
        return
    _outcomes[path] = outcome


def outcome(path: str) -> Outcome | None:
    return _outcomes.get(path)


def forget_outcomes() -> None:
    """Called at job start: a joblib worker runs many jobs in one process."""
    _outcomes.clear()


def audited_build(path: str, build: Callable[[Path], object], staging: Path) -> list[str] | None:
    """Run ``build`` recording which config values it reads; return those outside the key.

    Lives here, with the Hydra glue, so the store never imports OmegaConf: the store asks for
    an audited build, and this looks up the config that derived ``path``.
    """
    info = lookup(path)
    config = config_of(path)
    if info is None or config is None:
        log.warning(
            "cannot audit the build of %s: its path was not resolved from a config in this process",
            path,
        )
        build(staging)
        return None
    from hydra_cache.audit import recording

    with recording(config, info.covered, info.excluded) as recorder:
        build(staging)
    uncovered = recorder.uncovered()
    for key in uncovered:
        log.warning(
            "build of %s read %s, which is not part of its key: runs that differ "
            "only in %s will share this entry",
            info.config_key,
            key,
            key,
        )
    return uncovered
