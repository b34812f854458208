"""An entry's metadata file: one typed record, one writer, one reader.

The reader never follows a symlink and never blocks on a FIFO planted at the metadata path
(``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``), and it reads the whole file whatever its size:
an entry of 50,000 files has metadata of several MiB, and a size cap made such entries
invisible to ``ls``, ``verify`` and ``gc``. The file's modification time is the entry's
"last used" mark (hits refresh it), so the reader returns it from the same ``fstat``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache.store import layout
from hydra_cache.store.atomic import atomic_write
from hydra_cache.store.locking import read_regular

log = logging.getLogger(__name__)

#: 2: directories (empty ones and symlinks to folders included) are recorded in ``files``.
FORMAT = 2


@dataclass(frozen=True)
class Metadata:
    """What an entry's metadata file says, plus when the entry was last used."""

    path: str
    namespace: str
    key: str
    size_bytes: int
    files: dict[str, dict[str, Any]]
    host: str
    pid: int
    format: int
    #: Modification time of the metadata file: the entry's last use.
    last_used: float
    #: Every field as written, for the records that show them (manifest, why, ls).
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)


def read(entry: Path) -> Metadata | None:
    """The entry's metadata, or None when it is not published (or not ours, or unreadable)."""
    found = read_regular(layout.metadata_path(entry), None)
    if found is None:
        return None
    data, status = found
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    files = raw.get("files")
    try:
        return Metadata(
            path=str(raw.get("path") or entry),
            namespace=str(raw.get("namespace") or entry.parent.name),
            key=str(raw.get("key") or entry.name),
            size_bytes=int(raw.get("size_bytes") or 0),
            files=files if isinstance(files, dict) else {},
            host=str(raw.get("host") or ""),
            pid=int(raw.get("pid") or 0),
            format=int(raw.get("format") or 1),
            last_used=status.st_mtime,
            raw=raw,
        )
    except (TypeError, ValueError):
        return None


def write(staging: Path, record: dict[str, Any]) -> None:
    """Write the metadata into a staging folder, durably (the publish renames it into place)."""
    data = json.dumps(record, indent=1, sort_keys=True).encode()
    atomic_write(layout.metadata_path(staging), data)
