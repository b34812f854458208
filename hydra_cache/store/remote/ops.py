"""The remote as a whole, for the commands: look an entry up, list, push, pull, verify and
collect garbage.

An app never comes here: its cache dirs go through :mod:`.tier`. These are the operations a
person runs (``hydra-cache push/pull/ls --remote/verify --remote/gc --remote``) and the
explanations read (``why``, ``diff``), so each says what it did per entry instead of logging
and carrying on.

Two promises hold here:

- :func:`lookup` makes exactly one request and never writes: ``why`` and ``diff`` may run in
  a read-only pull-request job against the team's remote.
- :func:`collect` removes manifests first and blobs only once no manifest references them and
  they are older than a grace period (a blob that young may belong to an upload whose manifest
  is not committed yet), and it never touches a live lease. Blobs written after the oldest
  live lease was taken are kept as well, however long that build runs. ``dry_run`` writes
  nothing at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hydra_cache.errors import HydraCacheError
from hydra_cache.progress import Progress
from hydra_cache.store.remote import layout, lease, manifest, transfer
from hydra_cache.store.remote.backend import Backend, ObjectInfo, RemoteError, describe_error
from hydra_cache.store.remote.config import RemoteSpec
from hydra_cache.store.remote.tier import (
    PushRefused,
    RemoteTier,
    backend_for,
    note_failure,
    recent_failure,
)
from hydra_cache.units import human_duration, human_size

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _failing_as_one_line(spec: RemoteSpec, doing: str) -> Iterator[None]:
    """Any failure of the remote as one line, scrubbed of credentials, with a fix."""
    try:
        yield
    except (HydraCacheError, KeyboardInterrupt):
        raise
    except Exception as error:
        raise RemoteError(
            f"{doing} {spec.url.redacted()} failed: {describe_error(error, spec)}; fix: check "
            "the URL, the credentials and hydra_cache.remote.options (endpoint_url, profile)"
        ) from None


# ------------------------------------------------------------------------------- lookup


@dataclass(frozen=True)
class Lookup:
    """What the remote holds for one entry, from one request.

    ``present``: a manifest this process would pull; ``refused``: a manifest it would not
    trust (``problem`` says why); ``absent``; ``unreachable`` (``problem`` is the error,
    scrubbed of credentials).
    """

    status: Literal["present", "refused", "absent", "unreachable"]
    where: str
    manifest: manifest.Manifest | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = self.manifest
        return {
            "status": self.status,
            "remote": self.where,
            "problem": self.problem,
            "size_bytes": found.size_bytes if found else None,
            "build_seconds": found.raw.get("build_seconds") if found else None,
            "built_by": found.built_by if found else None,
        }


def lookup(spec: RemoteSpec, namespace: str, key: str) -> Lookup:
    """The entry's manifest, checked as a pull would check it: one request, no writes."""
    where = spec.url.redacted()
    failed = recent_failure(spec)
    if failed is not None:
        return Lookup("unreachable", where, problem=failed)
    asked = time.monotonic()
    try:
        data = backend_for(spec).read(layout.manifest(namespace, key))
    except Exception as error:
        problem = describe_error(error, spec)
        note_failure(spec, problem)
        took = human_duration(time.monotonic() - asked)
        return Lookup("unreachable", where, problem=f"{problem} (after {took})")
    if data is None:
        return Lookup("absent", where)
    try:
        found = manifest.parse(data, namespace, key, spec.sign_key())
    except manifest.ManifestProblem as problem:
        return Lookup("refused", where, problem=str(problem))
    return Lookup("present", where, found)


# --------------------------------------------------------------------------------- list


@dataclass(frozen=True)
class Listed:
    """One manifest on the remote, as ``ls --remote`` shows it.

    ``problem`` is set for a manifest this process would not trust (unsigned when a key is
    set, malformed); its blobs are still known when its file list could be read, so gc never
    takes them for garbage while the manifest is there.
    """

    namespace: str
    key: str
    name: str
    committed: float
    size_bytes: int
    files: int
    built_by: dict[str, Any]
    build_seconds: float | None
    blobs: dict[str, int]
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "key": self.key,
            "size_bytes": self.size_bytes,
            "files": self.files,
            "built_by": self.built_by,
            "build_seconds": self.build_seconds,
            "committed": self.committed if math.isfinite(self.committed) else None,
            "problem": self.problem,
        }


def _read_manifest(
    backend: Backend, spec: RemoteSpec, name: str, info: ObjectInfo
) -> Listed | None:
    parsed = layout.parse_manifest_name(name)
    if parsed is None:
        return None
    namespace, key = parsed
    data = backend.read(name)
    if data is None:  # removed since the listing
        return None
    problem: str | None = None
    try:
        found = manifest.parse(data, namespace, key, spec.sign_key())
    except manifest.ManifestProblem as refused:
        problem = str(refused)
        try:
            found = manifest.parse(data, namespace, key, None)
        except manifest.ManifestProblem:
            return Listed(namespace, key, name, info.modified, 0, 0, {}, None, {}, problem)
    seconds = found.raw.get("build_seconds")
    return Listed(
        namespace,
        key,
        name,
        info.modified,
        found.size_bytes,
        sum(1 for r in found.files.values() if "sha256" in r),
        found.built_by,
        float(seconds) if isinstance(seconds, (int, float)) else None,
        found.blobs(),
        problem,
    )


def entries(spec: RemoteSpec, namespace: str | None = None) -> list[Listed]:
    """Every manifest on the remote (of ``namespace``), oldest commit first: one listing,
    then the manifests read in parallel."""
    prefix = f"{layout.ENTRIES}/{namespace}" if namespace else layout.ENTRIES
    if namespace:
        layout.check_entry_name(namespace, "0" * 16)
    with _failing_as_one_line(spec, "listing"), ThreadPoolExecutor(transfer.workers()) as pool:
        backend = backend_for(spec)
        listing = backend.listing(prefix)
        found = pool.map(lambda item: _read_manifest(backend, spec, *item), listing.items())
        return sorted(
            (f for f in found if f is not None), key=lambda f: (f.committed, f.namespace, f.key)
        )


def find(spec: RemoteSpec, text: str) -> tuple[str, str]:
    """(namespace, key) of ``KEY`` or ``NAMESPACE/KEY`` on the remote (a bare key is looked
    for in every namespace)."""
    namespace, _, key = text.rpartition("/")
    if namespace:
        layout.check_entry_name(namespace, key)
        return namespace, key
    layout.check_entry_name("x", key)
    with _failing_as_one_line(spec, "listing"):
        names = backend_for(spec).list(layout.ENTRIES)
    found = sorted(
        parsed
        for name in names
        if (parsed := layout.parse_manifest_name(name)) is not None and parsed[1] == key
    )
    if not found:
        raise HydraCacheError(
            f"{key} is not an entry on {spec.url.redacted()}; fix: see hydra-cache ls --remote"
        )
    if len(found) > 1:
        which = ", ".join(f"{n}/{k}" for n, k in found)
        raise HydraCacheError(f"{key} names {len(found)} remote entries ({which}); fix: give one")
    return found[0]


# ---------------------------------------------------------------------------- push, pull


@dataclass(frozen=True)
class Moved:
    """One entry of a push or pull: what happened, and the numbers behind it."""

    namespace: str
    key: str
    path: str
    outcome: str
    detail: str = ""
    size_bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def push(spec: RemoteSpec, path: Path, root: Path) -> Moved:
    """Push the local entry at ``path``: ``pushed``, ``raced`` (another machine's manifest
    landed first), ``present`` (already on the remote: nothing sent), ``missing`` (not
    built here), ``damaged`` (its files changed since publish: never shared) or ``failed``."""
    from hydra_cache.store.entry import CacheEntry
    from hydra_cache.store.verify import problems_of

    namespace, key = path.parent.name, path.name
    record = CacheEntry(path).metadata()
    if record is None:
        return Moved(namespace, key, str(path), "missing", "not built on this machine")
    size = int(record.get("size_bytes") or 0)
    found = lookup(spec, namespace, key)
    if found.status == "present":
        return Moved(namespace, key, str(path), "present", "already on the remote", size)
    if found.status == "unreachable":
        return Moved(namespace, key, str(path), "failed", str(found.problem), size)
    problems = problems_of(path)
    if problems:
        return Moved(namespace, key, str(path), "damaged", "; ".join(problems[:3]), size)
    if found.status == "refused":  # never overwritten: say so instead of racing it
        return Moved(
            namespace,
            key,
            str(path),
            "failed",
            f"the remote's manifest is refused ({found.problem}) and a manifest is never "
            "overwritten; fix: hydra-cache gc --remote removes it",
            size,
        )
    tier = RemoteTier(spec, path, root)
    try:
        done = tier.commit(record)
    except PushRefused as refused:
        return Moved(namespace, key, str(path), "failed", str(refused), size)
    except Exception as error:
        return Moved(namespace, key, str(path), "failed", describe_error(error, spec), size)
    detail = f"{done.blobs} blobs sent for {done.files} files"
    if done.outcome == "raced":
        detail = "another machine committed it first; its manifest is kept"
    return Moved(namespace, key, str(path), done.outcome, detail, done.bytes, done.seconds)


class _NotPulled(HydraCacheError):
    """The remote copy could not be used; ``pull`` never builds."""


def _refuse_build(staging: Path) -> None:
    raise _NotPulled(
        "the remote copy could not be used (the warning above says why); fix: run the app to "
        "build it here, or see hydra-cache verify --remote"
    )


def pull(spec: RemoteSpec, path: Path) -> Moved:
    """Pull the entry at ``path`` from the remote: ``pulled``, ``here`` (already on this
    machine: a no-op), ``absent``, ``refused``, or ``failed``. Never builds, and never writes
    to the remote (a pull takes no lease)."""
    from hydra_cache.store.entry import CacheEntry

    namespace, key = path.parent.name, path.name
    entry = CacheEntry(path)
    if entry.ready:
        return Moved(namespace, key, str(path), "here", "already on this machine")
    found = lookup(spec, namespace, key)
    if found.status != "present" or found.manifest is None:
        detail = {"absent": f"not on {found.where}"}.get(found.status, str(found.problem))
        status = "failed" if found.status == "unreachable" else found.status
        return Moved(namespace, key, str(path), status, detail)
    entry._remote = dataclasses.replace(spec, mode="read")  # a reader: no lease, no repair
    started = time.monotonic()
    try:
        entry.get_or_build(_refuse_build)
    except _NotPulled as error:
        return Moved(namespace, key, str(path), "failed", str(error))
    outcome = entry.last_outcome or "pulled"
    return Moved(
        namespace,
        key,
        str(path),
        "pulled" if outcome == "pulled" else "here",
        "" if outcome == "pulled" else "published meanwhile by another process here",
        found.manifest.size_bytes,
        time.monotonic() - started,
    )


# ------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Checked:
    """One remote entry verified: ``intact``, ``torn`` (blobs missing, short or corrupt) or
    ``refused`` (a manifest this process would not trust)."""

    namespace: str
    key: str
    verdict: Literal["intact", "torn", "refused"]
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "problems": list(self.problems)}


def verify(spec: RemoteSpec, namespace: str | None = None, *, deep: bool = False) -> list[Checked]:
    """Check that every manifest's blobs exist with the recorded size (one listing of the
    blobs); with ``deep`` also download each distinct blob once and compare its SHA-256."""
    with _failing_as_one_line(spec, "verifying"):
        return _verify(spec, namespace, deep=deep)


def _verify(spec: RemoteSpec, namespace: str | None, *, deep: bool) -> list[Checked]:
    backend = backend_for(spec)
    listed = entries(spec, namespace)
    blobs = backend.listing(layout.BLOBS)
    corrupt: dict[str, str] = {}
    if deep:
        wanted = {d: s for f in listed for d, s in f.blobs.items()}
        present = {d: s for d, s in wanted.items() if blobs.get(layout.blob(d), None) is not None}
        corrupt = _hash_blobs(backend, present)
    found: list[Checked] = []
    for item in listed:
        problems: list[str] = []
        for digest, size in sorted(item.blobs.items()):
            info = blobs.get(layout.blob(digest))
            if info is None:
                problems.append(f"blob {digest[:12]} is missing")
            elif info.size != size:
                problems.append(f"blob {digest[:12]} has {info.size} bytes, not {size}")
            elif digest in corrupt:
                problems.append(f"blob {digest[:12]} {corrupt[digest]}")
        if item.problem is not None:
            found.append(Checked(item.namespace, item.key, "refused", (item.problem, *problems)))
        else:
            verdict: Literal["intact", "torn"] = "torn" if problems else "intact"
            found.append(Checked(item.namespace, item.key, verdict, tuple(problems)))
    return found


def _hash_blobs(backend: Backend, blobs: dict[str, int]) -> dict[str, str]:
    """Download each blob into a private temporary folder and hash it: digest -> problem."""
    bad: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="hydra-cache-verify-") as scratch,
        Progress(sum(blobs.values()), "verify --remote --deep", "bytes") as progress,
        ThreadPoolExecutor(transfer.workers()) as pool,
    ):

        def check(digest: str) -> tuple[str, str | None]:
            local = Path(scratch) / digest
            try:
                backend.get_file(layout.blob(digest), local, progress)
            except FileNotFoundError:
                return digest, "is missing"
            try:
                ok = manifest.sha256_of(local) == digest
            finally:
                local.unlink(missing_ok=True)
            return digest, None if ok else "is corrupt (its SHA-256 differs)"

        for digest, problem in pool.map(check, sorted(blobs)):
            if problem is not None:
                bad[digest] = problem
    return bad


# ----------------------------------------------------------------------------------- gc


@dataclass(frozen=True)
class Removal:
    """One object ``collect`` removed (or would remove), and why."""

    kind: Literal["manifest", "blob", "lease"]
    name: str
    size_bytes: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Collected:
    removed: list[Removal] = field(default_factory=list)
    kept_live_leases: list[str] = field(default_factory=list)
    young_blobs: int = 0
    remaining_bytes: int = 0
    dry_run: bool = False


def collect(
    spec: RemoteSpec,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    grace: float = 3600.0,
    namespace: str | None = None,
    dry_run: bool = False,
    now: Callable[[], float] = time.time,
) -> Collected:
    """Remove manifests committed longer than ``older_than`` ago, then the oldest until the
    blobs the remaining manifests reference fit in ``max_size``; then blobs no manifest
    references that are older than ``grace`` (and than the oldest live lease); then leases
    that expired more than ``grace`` ago. ``namespace`` limits which manifests may go (blobs
    are judged against every manifest of the remote)."""
    with _failing_as_one_line(spec, "collecting garbage on"):
        return _collect(spec, older_than, max_size, grace, namespace, dry_run, now)


def _collect(  # noqa: PLR0917  (the keywords of collect, passed on)
    spec: RemoteSpec,
    older_than: float | None,
    max_size: int | None,
    grace: float,
    namespace: str | None,
    dry_run: bool,
    now: Callable[[], float],
) -> Collected:
    backend = backend_for(spec)
    report = Collected(dry_run=dry_run)
    everything = entries(spec)
    at = now()

    def drop(kind: Literal["manifest", "blob", "lease"], name: str, size: int, why: str) -> None:
        if not dry_run:
            backend.delete(name)
        report.removed.append(Removal(kind, name, size, why))

    kept: list[Listed] = []
    for item in everything:  # oldest commit first
        mine = namespace is None or item.namespace == namespace
        age = at - item.committed
        if mine and older_than is not None and age > older_than:
            drop("manifest", item.name, item.size_bytes, f"committed {_days(age)} ago")
        else:
            kept.append(item)
    if max_size is not None:
        total = _referenced_bytes(kept)
        for item in list(kept):
            if total <= max_size:
                break
            if namespace is not None and item.namespace != namespace:
                continue
            kept.remove(item)
            drop(
                "manifest",
                item.name,
                item.size_bytes,
                f"the oldest while the remote holds over {human_size(max_size)}",
            )
            total = _referenced_bytes(kept)
    # A manifest committed since the first listing may reference a blob that looked unused:
    # list again right before blobs go (a writer reuses a blob it finds, without uploading).
    seen = {item.name for item in everything}
    again = [f for f in entries(spec) if f.name not in seen] if not dry_run else []
    referenced = {d for item in [*kept, *again] for d in item.blobs}
    _collect_blobs_and_leases(backend, report, referenced, at=at, grace=grace, drop=drop)
    report.remaining_bytes = _referenced_bytes([*kept, *again])
    for removal in report.removed:
        log.info(
            "%s %s %s (%s)",
            "would remove" if dry_run else "removed",
            removal.kind,
            removal.name,
            removal.reason,
        )
    return report


def _collect_blobs_and_leases(
    backend: Backend,
    report: Collected,
    referenced: set[str],
    *,
    at: float,
    grace: float,
    drop: Callable[[Literal["manifest", "blob", "lease"], str, int, str], None],
) -> None:
    """Blobs no manifest references, older than the grace and than the oldest live lease
    (a build that started then may have uploaded them, its manifest still to come); then
    leases expired for longer than the grace. Live leases are never touched."""
    leases = _leases(backend)
    live = {name: record for name, record in leases.items() if not lease.expired(record, at)}
    report.kept_live_leases = sorted(live)
    cutoff = at - grace
    for record in live.values():
        since = record.get("since")
        if isinstance(since, (int, float)):
            cutoff = min(cutoff, float(since) - 60.0)  # a minute of clock skew
    for name, info in backend.listing(layout.BLOBS).items():
        if name.rpartition("/")[2] in referenced:
            continue
        if not info.modified < cutoff:
            report.young_blobs += 1
            continue
        drop("blob", name, info.size, "no manifest references it")
    for name, record in leases.items():
        if name in live:
            continue
        try:
            expired_for = at - float(record.get("expires", 0))
        except (TypeError, ValueError):
            expired_for = math.inf
        if expired_for > grace:
            drop("lease", name, 0, f"expired {_days(expired_for)} ago")


def _referenced_bytes(items: Iterable[Listed]) -> int:
    return sum({d: s for item in items for d, s in item.blobs.items()}.values())


def _leases(backend: Backend) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in backend.list(layout.LEASES):
        data = backend.read(name)
        if data is not None:
            found[name] = lease.parse(data)
    return found


def _days(seconds: float) -> str:
    return "an unknown time" if not math.isfinite(seconds) else human_duration(seconds)


def marker(spec: RemoteSpec) -> dict[str, Any] | None:
    """The remote's format marker, or None before the first push."""
    data = backend_for(spec).read(layout.MARKER)
    if data is None:
        return None
    try:
        found = json.loads(data)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
