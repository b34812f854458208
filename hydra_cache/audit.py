"""Key-coverage audit: which config values a build reads that its key does not cover.

While a build runs with the audit on, every leaf read from the job's config (``cfg.a.b``,
``cfg["a"]``, iteration, ``OmegaConf.to_container``/``to_yaml``) is recorded by wrapping two
OmegaConf internals for the duration of the build. A read of a value outside the entry's
hashed nodes (and not excluded, nor a cache dir) is a value the cache silently ignores: runs
that differ only in it would share the entry.

Not seen: values read from a copy of the config made before the build started (a plain dict
from ``to_container``, a dataclass from ``to_object``), or read in another process or thread.
With the audit off nothing is wrapped and it costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import Container, Node
from omegaconf.basecontainer import BaseContainer

_lock = threading.Lock()
_active: list[Recorder] = []
_originals: dict[str, Any] = {}


class Recorder:
    """The leaf reads of one build, from one config."""

    def __init__(self, config: Any, covered: tuple[str, ...]) -> None:
        self.config = config
        self.covered = covered
        self.reads: dict[str, None] = {}

    def note(self, container: Container, key: Any, node: Any) -> None:
        if isinstance(node, Container) or container._get_root() is not self.config:
            return
        raw = node._value() if isinstance(node, Node) else node
        if isinstance(raw, str) and "cache_dir" in raw and "${" in raw:
            return  # a cache dir, or a path derived from one
        self.reads[container._get_full_key(key)] = None

    def note_subtree(self, container: Container) -> None:
        if container._get_root() is not self.config:
            return
        self.reads[container._get_full_key(None) or "."] = None

    def uncovered(self) -> list[str]:
        return [key for key in self.reads if not _is_covered(key, self.covered)]


def _is_covered(key: str, covered: tuple[str, ...]) -> bool:
    for prefix in covered:
        if prefix in ("", ".") or key == prefix or key.startswith((prefix + ".", prefix + "[")):
            return True
    return False


def _resolve_with_default(
    self: BaseContainer, key: Any, value: Any, *args: Any, **kwargs: Any
) -> Any:
    for recorder in _active:
        recorder.note(self, key, value)
    return _originals["_resolve_with_default"](self, key, value, *args, **kwargs)


def _to_content(conf: Container, *args: Any, **kwargs: Any) -> Any:
    for recorder in _active:
        recorder.note_subtree(conf)
    return _originals["_to_content_function"](conf, *args, **kwargs)


@contextmanager
def recording(config: Any, covered: tuple[str, ...]) -> Iterator[Recorder]:
    """Record the leaf reads from ``config`` while the block runs."""
    recorder = Recorder(config, covered)
    with _lock:
        if not _active:
            _originals["_resolve_with_default"] = BaseContainer._resolve_with_default
            _originals["_to_content"] = BaseContainer.__dict__["_to_content"]
            _originals["_to_content_function"] = _originals["_to_content"].__func__
            BaseContainer._resolve_with_default = _resolve_with_default  # type: ignore[method-assign]
            BaseContainer._to_content = staticmethod(_to_content)  # type: ignore[method-assign]
        _active.append(recorder)
    try:
        yield recorder
    finally:
        with _lock:
            _active.remove(recorder)
            if not _active:
                BaseContainer._resolve_with_default = _originals["_resolve_with_default"]  # type: ignore[method-assign]
                BaseContainer._to_content = _originals["_to_content"]  # type: ignore[method-assign]
