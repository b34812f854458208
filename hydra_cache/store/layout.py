"""Every name hydra-cache puts on disk, built and parsed in this one module.

A root holds ``.hydra-cache/`` (the marker: only a folder holding it is a root that ``gc``,
``verify`` and ``ls`` will touch) and one folder per namespace. Beside each entry
``<namespace>/<key>`` live, all with names no other tool would choose:

- ``<key>.lock``: the build lock (only prevents duplicate work);
- ``.<key>.staging.<host>.<pidns>.<pid>.<token>``: a build in progress, or a killed one;
- ``.<key>.evicting.<token>`` and ``.<key>.aside.<token>``: an entry on its way out.

Maintenance only ever removes a name that :func:`parse` recognises, so a ``Cargo.lock`` or a
user's folder that happens to sit under a root is never touched. Keeping building and parsing
together is what makes that promise checkable: a name this module cannot parse is not ours.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: hydra-cache's own folder in a root: its presence is what makes a folder a root.
STATE_DIR_NAME = ".hydra-cache"
JOURNAL_NAME = "journal.jsonl"
#: The previous journal after a rotation (the journal is bounded; see journal.py).
JOURNAL_ROTATED_NAME = "journal.1.jsonl"
JOURNAL_LOCK_NAME = "journal.jsonl.lock"
DAMAGED_DIR_NAME = "damaged"
#: The entry's metadata file: its presence (as a regular file) is what makes an entry ready.
METADATA_NAME = ".hydra-cache.json"
LOCK_SUFFIX = ".lock"
STAGING_INFIX = ".staging."
EVICTING_INFIX = ".evicting."
ASIDE_INFIX = ".aside."

#: A key as the resolver derives it: 16 lowercase hex characters.
KEY_PATTERN = re.compile(r"^[0-9a-f]{16}$")
#: A namespace as the resolver sanitises it.
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_NAME = r"[A-Za-z0-9_.-]+?"
_STAGING = re.compile(
    rf"^\.(?P<key>{_NAME})\.staging\.(?P<host>.+)\.(?P<pidns>\d+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{{8}})$"
)
#: Staging names written before the PID namespace joined them.
_STAGING_V1 = re.compile(
    rf"^\.(?P<key>{_NAME})\.staging\.(?P<host>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{{4,8}})$"
)
_ASIDE = re.compile(rf"^\.(?P<key>{_NAME})\.(?P<kind>evicting|aside)\.(?P<token>[0-9a-f]{{4,8}})$")
_DAMAGED = re.compile(
    r"^(?P<namespace>[A-Za-z0-9_.-]+)\.(?P<key>[0-9a-f]{16})\.\d{8}T\d{6}\.[0-9a-f]{4}$"
)

Kind = Literal["entry", "lock", "staging", "evicting", "aside"]


@dataclass(frozen=True)
class Name:
    """A name beside entries that hydra-cache made, and what it is."""

    kind: Kind
    key: str
    host: str = ""
    pid: int = 0
    #: The builder's PID namespace (inode number of /proc/<pid>/ns/pid), 0 if unknown.
    pidns: int = 0


def token() -> str:
    """Eight random hex characters: makes a temporary name unique across hosts and retries."""
    return os.urandom(4).hex()


@functools.lru_cache(maxsize=1)
def pid_namespace() -> int:
    """This process's PID namespace: two containers on one host can both have a pid 7."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return 0
    digits = "".join(ch for ch in link if ch.isdigit())
    return int(digits) if digits else 0


def lock_path(entry: Path) -> Path:
    return entry.with_name(entry.name + LOCK_SUFFIX)


def metadata_path(entry: Path) -> Path:
    return entry / METADATA_NAME


def staging_path(entry: Path, host: str, pid: int) -> Path:
    return entry.with_name(f".{entry.name}{STAGING_INFIX}{host}.{pid_namespace()}.{pid}.{token()}")


def evicting_path(entry: Path) -> Path:
    return entry.with_name(f".{entry.name}{EVICTING_INFIX}{token()}")


def staging_prefix(entry: Path) -> str:
    return f".{entry.name}{STAGING_INFIX}"


def state_dir(root: Path) -> Path:
    return root / STATE_DIR_NAME


def journal_path(root: Path) -> Path:
    return state_dir(root) / JOURNAL_NAME


def rotated_journal_path(root: Path) -> Path:
    return state_dir(root) / JOURNAL_ROTATED_NAME


def journal_lock_path(root: Path) -> Path:
    return state_dir(root) / JOURNAL_LOCK_NAME


def damaged_dir(root: Path) -> Path:
    return state_dir(root) / DAMAGED_DIR_NAME


def damaged_path(root: Path, entry: Path, stamp: str) -> Path:
    """Where a damaged entry is moved: ``damaged/<namespace>.<key>.<stamp>.<4 hex>``."""
    return damaged_dir(root) / f"{entry.parent.name}.{entry.name}.{stamp}.{os.urandom(2).hex()}"


def is_damaged_copy(name: str) -> bool:
    return _DAMAGED.match(name) is not None


def is_key(name: str) -> bool:
    return KEY_PATTERN.match(name) is not None


def is_namespace(name: str) -> bool:
    return NAMESPACE_PATTERN.match(name) is not None and name not in (".", "..")


def parse(name: str) -> Name | None:
    """What a name inside a namespace folder is, or None when hydra-cache did not make it.

    Only names keyed by a real key (16 hex characters) count: ``Cargo.lock`` is not a lock.
    """
    if is_key(name):
        return Name("entry", name)
    if name.endswith(LOCK_SUFFIX) and is_key(name[: -len(LOCK_SUFFIX)]):
        return Name("lock", name[: -len(LOCK_SUFFIX)])
    found = parse_staging(name)
    if found is not None:
        return found if is_key(found.key) else None
    match = _ASIDE.match(name)
    if match and is_key(match["key"]):
        return Name("evicting" if match["kind"] == "evicting" else "aside", match["key"])
    return None


def parse_staging(name: str) -> Name | None:
    """Host, pid and PID namespace of a staging folder's builder (any key, even a hand-made
    path's), or None when ``name`` is not a staging folder."""
    match = _STAGING.match(name)
    if match:
        return Name("staging", match["key"], match["host"], int(match["pid"]), int(match["pidns"]))
    match = _STAGING_V1.match(name)
    if match:
        return Name("staging", match["key"], match["host"], int(match["pid"]))
    return None
