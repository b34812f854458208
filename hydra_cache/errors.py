"""The exceptions hydra-cache raises.

Every message is one line that names the config key (or path, or option) at fault, says what is
wrong and how to fix it: ``<key>: <problem>; fix: <fix>``. :class:`ConfigError` carries the three
parts, so a caller (the CLI, a test, a notebook) can show them its own way. All exceptions
pickle, because Hydra moves them across joblib and submitit worker boundaries.
"""

from __future__ import annotations

import re

#: A key worth naming: a dotted config key, an option (``--root``) or a setting (``$ENV``).
_KEY = re.compile(r"^([^\s:;]+): ")


class HydraCacheError(Exception):
    """Base class of every hydra-cache error."""


def render(key: str | None, problem: str, fix: str | None) -> str:
    """The one line every hydra-cache error is: ``key: problem; fix: fix``."""
    text = f"{key}: {problem}" if key else problem
    return f"{text}; fix: {fix}" if fix else text


class ConfigError(HydraCacheError, ValueError):
    """The composed config cannot give a cache dir: a bad node, value, setting or root.

    ``ConfigError(key, problem, fix)`` renders ``key: problem; fix: fix``. A single argument is
    taken as the whole line (older callers, and OmegaConf, which rebuilds exceptions from their
    message); its parts are then read back from it, so ``.config_key``, ``.problem`` and
    ``.fix`` are always there.
    """

    def __init__(self, key: str, problem: str | None = None, fix: str | None = None) -> None:
        if problem is None:
            super().__init__(key)
        else:
            super().__init__(render(key, problem, fix))
            self._given = (key or None, problem, fix)

    def _split(self) -> tuple[str | None, str, str | None]:
        # Read back from the message when not given: OmegaConf and pickle rebuild the exception
        # from its message alone, and subclasses mixed with OmegaConf's skip this __init__.
        given: tuple[str | None, str, str | None] | None = self.__dict__.get("_given")
        return given or _parts(str(self.args[0]) if self.args else "")

    @property
    def config_key(self) -> str | None:
        """The config key, option or setting at fault (None when the line names none).

        Not ``.key``: OmegaConf's exceptions, which the resolver's error also is, use that name.
        """
        return self._split()[0]

    @property
    def problem(self) -> str:
        return self._split()[1]

    @property
    def fix(self) -> str | None:
        return self._split()[2]


class EntryError(ConfigError):
    """A ``${cache_dir:}`` that cannot be resolved; the message starts with its config key.

    A downstream entry that fails because an upstream one did says so once, naming itself and
    the upstream that failed (``features.cache_dir: upstream data.cache_dir: ...``), not every
    stage of a chain in between.
    """


def _parts(message: str) -> tuple[str | None, str, str | None]:
    first = message.strip().splitlines()[0] if message.strip() else message
    body, _, fix = first.partition("; fix: ")
    match = _KEY.match(body)
    key = match[1] if match else None
    problem = body[match.end() :] if match else body
    return key, problem, fix or None


class LockTimeout(HydraCacheError, TimeoutError):
    """``get_or_build(timeout=...)`` gave up waiting for another process's build."""


class UnsafePathError(HydraCacheError, OSError):
    """Something that may have been planted (a symlink, a FIFO) sits where hydra-cache writes."""


class NotAnEntryError(HydraCacheError, FileExistsError):
    """Something that is not a cache entry sits at an entry's path: never moved or deleted."""


class DamagedEntryError(HydraCacheError, OSError):
    """``verify_on_hit`` found an entry damaged again right after rebuilding it."""
