"""Every name on a remote, and the checks that keep a hostile manifest from naming others.

Format version 1::

    hydra-cache-remote.json             {"format": 1}: written once by the first writer
    blobs/<sha256>                      file contents, immutable, addressed by their SHA-256
    entries/<namespace>/<key>.json      one manifest per entry: the only commit point
    leases/<namespace>/<key>            who builds the entry now (a duplicate-work guard only)

A reader refuses a remote whose marker says a newer format, instead of misreading it.
"""

from __future__ import annotations

import posixpath
import re

FORMAT_VERSION = 1
MARKER = "hydra-cache-remote.json"
BLOBS = "blobs"
ENTRIES = "entries"
LEASES = "leases"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[0-9a-f]{16}$")


def is_sha256(text: object) -> bool:
    return isinstance(text, str) and _SHA256.match(text) is not None


def check_entry_name(namespace: str, key: str) -> None:
    """Refuse names a sanitised cache path cannot have (they would escape their folder)."""
    if not _NAMESPACE.match(namespace) or not _KEY.match(key):
        raise ValueError(f"not a cache entry name: {namespace!r}/{key!r}")


def blob(digest: str) -> str:
    if not is_sha256(digest):
        raise ValueError(f"not a SHA-256 digest: {digest!r}")
    return f"{BLOBS}/{digest}"


def manifest(namespace: str, key: str) -> str:
    check_entry_name(namespace, key)
    return f"{ENTRIES}/{namespace}/{key}.json"


def lease(namespace: str, key: str) -> str:
    check_entry_name(namespace, key)
    return f"{LEASES}/{namespace}/{key}"


def parse_manifest_name(name: str) -> tuple[str, str] | None:
    """(namespace, key) of ``entries/<namespace>/<key>.json`` (relative to the remote)."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != ENTRIES or not parts[2].endswith(".json"):
        return None
    namespace, key = parts[1], parts[2][: -len(".json")]
    if not _NAMESPACE.match(namespace) or not _KEY.match(key):
        return None
    return namespace, key


def safe_relative(path: str) -> bool:
    """Whether a manifest's file path stays inside the entry: relative, normalised, no ``..``,
    no empty or dot segments, no backslashes or NUL bytes."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        return False
    if path.startswith("/") or posixpath.normpath(path) != path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
