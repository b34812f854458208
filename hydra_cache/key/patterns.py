"""``hydra_cache.exclude`` patterns: which config keys stay out of every key.

A pattern is a dotted key in either spelling of list indices (``a.0.b`` or ``a[0].b``); a
segment ``*`` matches one key segment, ``**`` any number of them (none included), and a
segment may hold ``fnmatch`` wildcards (``num_*``). A pattern must match something in the
composed config: a misspelt exclude would otherwise leave the value in the key, silently.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable

_INDEX = re.compile(r"\[(\d+)\]")
_WILD = frozenset("*?[")


def segments(key: str) -> tuple[str, ...]:
    """``a[0].b`` and ``a.0.b`` -> ``("a", "0", "b")``."""
    return tuple(part for part in _INDEX.sub(r".\1", key).split(".") if part != "")


def normal(key: str) -> str:
    """The one spelling patterns and paths are compared in (``a.0.b``)."""
    return ".".join(segments(key)) if "[" in key else key


def _is_wild(part: str) -> bool:
    return any(ch in _WILD for ch in part) and not part.isdigit()


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    if head == path[0] or (_is_wild(head) and fnmatch.fnmatchcase(path[0], head)):
        return _match(rest, path[1:])
    return False


class ExcludeRules:
    """Compiled exclude patterns, with the cheap questions the key walk asks on its way."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._exact: set[str] = set()
        self._wild: list[tuple[str, ...]] = []
        self._parents: set[str] = set()
        for pattern in self.patterns:
            parts = segments(pattern)
            if any(_is_wild(part) for part in parts):
                self._wild.append(parts)
            else:
                self._exact.add(".".join(parts))
                self._parents.update(".".join(parts[:i]) for i in range(len(parts)))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excludes(self, path: str) -> bool:
        """Whether the value at ``path`` (OmegaConf's spelling) stays out."""
        key = normal(path)
        if key in self._exact:
            return True
        if self._wild:
            parts = segments(key)
            return any(_match(pattern, parts) for pattern in self._wild)
        return False

    def may_exclude_below(self, path: str) -> bool:
        """Whether some child of ``path`` may be excluded (else its children are not checked)."""
        return bool(self._wild) or normal(path) in self._parents

    def unmatched(self, keys: Iterable[str]) -> list[tuple[str, str | None]]:
        """Patterns that match none of ``keys``, each with the closest key as a suggestion."""
        spelled = [normal(key) for key in keys]
        found: list[tuple[str, str | None]] = []
        for pattern in self.patterns:
            parts = segments(pattern)
            if any(_match(parts, segments(key)) for key in spelled):
                continue
            close = difflib.get_close_matches(".".join(parts), spelled, n=1, cutoff=0.6)
            found.append((pattern, close[0] if close else None))
        return found

    def covering(self, node: str) -> str | None:
        """The pattern that excludes ``node`` or one of its ancestors, if any."""
        parts = segments(node)
        for cut in range(len(parts) + 1):
            prefix = ".".join(parts[:cut])
            if not prefix:
                continue
            for pattern in self.patterns:
                if _match(segments(pattern), segments(prefix)):
                    return pattern
        return None
