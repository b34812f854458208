"""What an entry held when it was published, and whether it still does.

At publish every file's size and a fast content hash (BLAKE2b, 128 bits) go into the entry's
metadata. ``hydra-cache verify`` and ``CacheEntry(..., verify_on_hit=True)`` compare against
that record, and a damaged entry is moved aside into ``<root>/.hydra-cache/damaged/``, never
deleted silently.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from hydra_cache import journal

_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(folder: Path, *, skip: str = "") -> dict[str, dict[str, Any]]:
    """Relative path -> size and hash of every regular file (symlinks: their target)."""
    files: dict[str, dict[str, Any]] = {}
    for directory, _dirs, names in os.walk(folder):
        for name in names:
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, folder)
            if relative == skip:
                continue
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                files[relative] = {"size": 0, "symlink": os.readlink(full)}
            else:
                files[relative] = {"size": info.st_size, "blake2b": file_hash(full)}
    return files


def damage(folder: Path, recorded: dict[str, dict[str, Any]], *, skip: str = "") -> list[str]:
    """How the files under ``folder`` differ from ``recorded``; empty when intact."""
    found: list[str] = []
    now = fingerprint(folder, skip=skip) if folder.is_dir() else {}
    for name, was in sorted(recorded.items()):
        current = now.get(name)
        if current is None:
            found.append(f"{name}: removed")
        elif current["size"] != was.get("size"):
            how = "truncated" if current["size"] < was.get("size", 0) else "grown"
            found.append(f"{name}: {how} ({was.get('size')} -> {current['size']} bytes)")
        elif "blake2b" in was and current.get("blake2b") != was["blake2b"]:
            found.append(f"{name}: content changed")
        elif "symlink" in was and current.get("symlink") != was["symlink"]:
            found.append(f"{name}: symlink target changed")
    found += [f"{name}: not in the entry's record" for name in sorted(now.keys() - recorded)]
    return found


def quarantine(root: Path, path: Path, problems: list[str]) -> Path:
    """Move a damaged entry aside (never delete it) and journal why."""
    target = (
        journal.state_dir(root)
        / "damaged"
        / (f"{path.parent.name}.{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.urandom(2).hex()}")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)
    journal.append(
        root,
        "delete",
        reason="verify",
        detail="; ".join(problems)[:2000],
        namespace=path.parent.name,
        key=path.name,
        path=str(path),
        moved_to=str(target),
    )
    return target
