"""Input fingerprints: the content of files and folders named in the config joins the key.

``hydra_cache.inputs: [data.path]`` makes a changed input file a different key, even when its
path stays the same. Two modes (``hydra_cache.input_mode``):

- ``stat`` (default): size and modification time (ns) of every file. Costs one ``lstat`` per
  file; touching a file changes the key.
- ``sha256``: size and SHA-256 of every file. Reads every byte (hashes are remembered per
  process by path, size, mtime and inode); only a content change changes the key.

Symlinks are followed in both modes: a file reached through a link counts by its target's
content, and a linked folder (``ln -s /scratch/datasets data``) is walked. Folders are walked
in sorted order, each real folder once (a link cycle ends there), up to
:data:`MAX_INPUT_FILES` files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from hydra_cache.errors import ConfigError
from hydra_cache.store.liveness import iso_time

MAX_INPUT_FILES = 100_000
_content_hashes: dict[tuple[str, int, int, int], str] = {}


def fingerprint(key: str, value: Any, mode: str, base_dir: str) -> tuple[str, dict[str, Any]]:
    """The digest that joins the key, and what ``why`` shows (path, files, bytes, modified)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(
            f"hydra_cache.inputs names {key}, whose value {value!r} is not a path; "
            f"fix: point {key} at a file or folder, or drop it from the inputs"
        )
    path = Path(os.path.join(base_dir, os.path.expanduser(os.fspath(value))))
    try:
        top = os.stat(path)
    except OSError:
        raise ConfigError(
            f"{key}: input {path} does not exist; fix: create it (or the target of the link "
            f"there), or point {key} at an existing file or folder"
        ) from None
    files = [(path.name, path, top)] if not stat.S_ISDIR(top.st_mode) else _walk(key, path)
    listing = hashlib.sha256()
    total, newest = 0, 0
    for relative, full, info in files:
        total += info.st_size
        newest = max(newest, info.st_mtime_ns)
        if mode == "sha256" and stat.S_ISREG(info.st_mode):
            token = _content_hash(full, info)
        else:
            token = str(info.st_mtime_ns)
        listing.update(f"{relative}\0{info.st_size}\0{token}\n".encode("utf-8", "surrogateescape"))
    shown = {
        "path": str(path),
        "files": len(files),
        "bytes": total,
        "modified": iso_time(newest / 1e9) if files else None,
        "mode": mode,
    }
    return listing.hexdigest(), shown


def _walk(key: str, folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    found: list[tuple[str, Path, os.stat_result]] = []
    seen: set[tuple[int, int]] = set()
    for directory, dirs, names in os.walk(folder, followlinks=True):
        here = os.stat(directory)
        if (here.st_dev, here.st_ino) in seen:  # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs.sort()
        for name in sorted(names):
            full = Path(directory) / name
            try:
                info = os.stat(full)
            except OSError:  # a broken link: its name still counts, so adding one changes keys
                info = os.lstat(full)
            found.append((os.path.relpath(full, folder), full, info))
            if len(found) > MAX_INPUT_FILES:
                raise ConfigError(
                    f"{key}: input {folder} holds more than {MAX_INPUT_FILES:,} files; fix: "
                    "point it at a smaller folder, or fingerprint a manifest file instead"
                )
    return found


def _content_hash(path: Path, info: os.stat_result) -> str:
    memo = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
    known = _content_hashes.get(memo)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        known = _content_hashes[memo] = digest.hexdigest()
    return known
