"""Moving blobs: parallel downloads verified one by one into a staging folder, and parallel
uploads of the blobs a remote lacks.

Object stores answer one request per object slowly and many at once quickly, so both
directions run on a thread pool (fsspec's sync calls are thread-safe). A download is written
to its final name inside the staging folder; a blob whose size differs, or that is missing,
is a *problem*, and every problem is collected (not just the first), so a torn remote entry is
reported, and repaired, in one pass. Contents are not hashed here: the publish that follows
hashes every file for the entry's metadata anyway (the seal), and the tier compares those
hashes with the manifest's, so each pulled byte is hashed once (hashing here too cost a
second full read of every file). Large files go up as multipart uploads (fsspec decides above
its chunk size), and an object only appears when its upload completes, so a killed upload
never leaves a partial blob.

A push checks which blobs the remote already has with one HEAD request per blob, but only
for blobs of :data:`CHECK_MIN_BYTES` or more: below that, sending the blob again costs about
what asking for it costs, and on a fresh entry nearly every blob is new. Blobs are immutable
and content-addressed, so sending one again rewrites the same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra_cache.errors import HydraCacheError
from hydra_cache.progress import Progress
from hydra_cache.store.remote import layout
from hydra_cache.store.remote.backend import Backend
from hydra_cache.store.remote.manifest import Manifest

log = logging.getLogger(__name__)

#: Parallel transfers: object stores need many requests in flight to fill a link.
WORKERS = 16
#: Smaller blobs are uploaded without asking first whether the remote has them.
CHECK_MIN_BYTES = 1 << 20


class TornRemoteEntry(HydraCacheError):
    """A manifest whose blobs are missing or corrupt: ``problems`` names each, ``bad`` holds
    their SHA-256 digests."""

    def __init__(self, problems: list[str], bad: list[str]) -> None:
        super().__init__("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
        self.problems = problems
        self.bad = bad

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.bad))


def workers() -> int:
    try:
        return max(1, int(os.environ.get("HYDRA_CACHE_REMOTE_WORKERS", WORKERS)))
    except ValueError:
        return WORKERS


def _by_digest(files: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, record in sorted(files.items()):
        if "sha256" in record:
            grouped.setdefault(record["sha256"], []).append(name)
    return grouped


def download(backend: Backend, manifest: Manifest, staging: Path, what: str) -> int:
    """Assemble the entry into ``staging``: folders, then files (each blob once, verified,
    copied to every path that holds it), then symlinks. Returns the bytes downloaded;
    raises :class:`TornRemoteEntry` naming every missing or corrupt blob."""
    files = manifest.files
    for name, record in sorted(files.items()):
        if record.get("dir"):
            (staging / name).mkdir(parents=True, exist_ok=True)
    grouped = _by_digest(files)
    total = sum(int(files[names[0]]["size"]) for names in grouped.values())
    problems: list[str] = []
    bad: list[str] = []

    def fetch(digest: str, names: list[str], progress: Progress) -> str | None:
        first = staging / names[0]
        first.parent.mkdir(parents=True, exist_ok=True)
        expected = int(files[names[0]]["size"])
        try:
            backend.get_file(layout.blob(digest), first, progress)
        except FileNotFoundError:
            return f"{names[0]}: blob {digest[:12]} is missing"
        size = first.stat().st_size
        if size != expected:
            return f"{names[0]}: blob {digest[:12]} has {size} bytes, not {expected}"
        for name in names[1:]:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first, staging / name)
        for name in names:
            os.chmod(staging / name, int(files[name].get("mode", 0o644)))
        return None

    with Progress(total, what, "bytes") as progress, ThreadPoolExecutor(workers()) as pool:
        futures = {
            digest: pool.submit(fetch, digest, names, progress) for digest, names in grouped.items()
        }
        for digest, future in futures.items():
            problem = future.result()
            if problem is not None:
                problems.append(problem)
                bad.append(digest)
    if problems:
        raise TornRemoteEntry(problems, bad)
    for name, record in sorted(files.items()):
        if "symlink" in record:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(record["symlink"], staging / name)
    return total


def upload(
    backend: Backend,
    entry: Path,
    files: dict[str, dict[str, Any]],
    what: str,
    *,
    only: set[str] | None = None,
    force: bool = False,
) -> tuple[int, int]:
    """Upload the blobs of a local entry the remote lacks: (blobs uploaded, bytes).

    ``only`` limits the upload to those digests; ``force`` uploads them even if an object of
    that name exists (a repair replaces a corrupt blob).
    """
    grouped = {d: n for d, n in _by_digest(files).items() if only is None or d in only}
    with ThreadPoolExecutor(workers()) as pool:
        if force:
            missing = list(grouped)
        else:
            large = [d for d in grouped if int(files[grouped[d][0]]["size"]) >= CHECK_MIN_BYTES]
            present = dict(zip(large, pool.map(lambda d: backend.exists(layout.blob(d)), large)))
            missing = [d for d in grouped if not present.get(d, False)]
        total = sum(int(files[grouped[d][0]]["size"]) for d in missing)
        put: Callable[[str], None]
        with Progress(total, what, "bytes") as progress:

            def put(digest: str) -> None:
                backend.put_file(entry / grouped[digest][0], layout.blob(digest), progress)

            list(pool.map(put, missing))
    return len(missing), total
