"""Key-coverage audit: which config values a build reads that its key does not cover.

While a build runs with the audit on, every leaf read from the job's config (``cfg.a.b``,
``cfg["a"]``, iteration, ``OmegaConf.to_container``/``to_yaml``) is recorded by wrapping two
OmegaConf internals for the duration of the build (``_omegaconf.patched_reads``). A read of
a value outside the entry's
hashed nodes (and not excluded, nor a cache dir) is a value the cache silently ignores: runs
that differ only in it would share the entry.

Not seen: values read from a copy of the config made before the build started (a plain dict
from ``to_container``, a dataclass from ``to_object``), or read in another process or thread.
With the audit off nothing is wrapped and it costs nothing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from omegaconf import Container, Node

from hydra_cache._omegaconf import full_key, patched_reads, root_of, value
from hydra_cache.key import ExcludeRules, scrub

_lock = threading.Lock()
_active: list[Recorder] = []
#: The active patch of OmegaConf's read path, held while any recorder is active.
_patches: list[ExitStack] = []


class Recorder:
    """The leaf reads of one build, from one config."""

    def __init__(
        self, config: Any, covered: tuple[str, ...], excluded: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        self.covered = covered
        self.excluded = ExcludeRules(excluded)
        self.reads: dict[str, None] = {}

    def see(self, container: Container, key: Any, node: Any) -> None:
        """One read: a leaf (``key`` set) or a whole subtree converted (``key`` None)."""
        if root_of(container) is not self.config:
            return
        if key is None:
            self.reads[full_key(container) or "."] = None
            return
        if isinstance(node, Container):
            return
        raw = value(node) if isinstance(node, Node) else node
        if isinstance(raw, str) and "cache_dir" in raw and "${" in raw:
            return  # a cache dir, or a path derived from one
        self.reads[full_key(container, key)] = None

    def uncovered(self) -> list[str]:
        """Reads outside the key: outside every hashed node, or excluded inside one (spelled
        as they may be written down: a name that holds credentials by its fingerprint)."""
        return [
            scrub(key)
            for key in self.reads
            if not _is_covered(key, self.covered) or self._excluded(key)
        ]

    def _excluded(self, key: str) -> bool:
        if not self.excluded:
            return False
        cuts = [match.start() for match in re.finditer(r"[.\[]", key)] + [len(key)]
        return any(self.excluded.excludes(key[:cut]) for cut in cuts)


def _is_covered(key: str, covered: tuple[str, ...]) -> bool:
    key = _dotted(key)
    for prefix in map(_dotted, covered):
        if prefix in ("", ".") or key == prefix or key.startswith(prefix + "."):
            return True
    return False


def _dotted(key: str) -> str:
    """``a.b[1]`` and ``a.b.1`` name the same value (reads say the first, keys may say either)."""
    return re.sub(r"\[(\d+)\]", r".\1", key)


def _hook(container: Container, key: Any, node: Any) -> None:
    for recorder in _active:
        recorder.see(container, key, node)


@contextmanager
def recording(
    config: Any, covered: tuple[str, ...], excluded: tuple[str, ...] = ()
) -> Iterator[Recorder]:
    """Record the leaf reads from ``config`` while the block runs (recorders may nest and
    run in several threads: OmegaConf is patched once, while any recorder is active)."""
    recorder = Recorder(config, covered, excluded)
    with _lock:
        if not _active:
            patch = ExitStack()
            patch.enter_context(patched_reads(_hook))
            _patches.append(patch)
        _active.append(recorder)
    try:
        yield recorder
    finally:
        with _lock:
            _active.remove(recorder)
            if not _active:
                _patches.pop().close()
