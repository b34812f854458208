"""The remote tier's policy, run by :meth:`CacheEntry.get_or_build` on a local miss, under the
local lock (so one process per machine talks to the remote for a key):

1. one request reads the manifest;
2. a manifest (trusted: well formed, and signed when this process has the key) is pulled:
   blobs downloaded in parallel and verified, assembled in a staging folder, and published
   by the local atomic rename like any build (outcome ``pulled``);
3. a manifest whose blobs are missing or corrupt is ``remote-torn``: the entry is built here,
   journaled, and in ``read-write`` mode the blobs are uploaded again (the manifest stays);
4. no manifest: in ``read`` mode build here and write nothing; in ``read-write`` mode take the
   lease (or wait for its holder's manifest, saying whom for), build, publish locally, upload
   the missing blobs, and commit with a conditional create of the manifest. A lost race keeps
   the winner's manifest, with a warning naming the differing files if the builds differ.

The remote never makes a cache dir fail: when it cannot be reached, or errs half-way, the
entry is built here and the reason is logged (scrubbed of credentials). A local hit never
gets here, so a hit never touches the network.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hydra_cache.errors import HydraCacheError, LockTimeout
from hydra_cache.store import journal
from hydra_cache.store.remote import layout, lease, manifest, transfer
from hydra_cache.store.remote.backend import Backend, describe_error, open_backend
from hydra_cache.store.remote.config import RemoteSpec
from hydra_cache.units import human_duration, human_size

log = logging.getLogger(__name__)

#: Waiting for another machine's manifest: first poll, and the longest pause between polls.
POLL_FIRST = 0.2
POLL_MAX = 5.0
WAIT_LOG_INTERVAL = 30.0

Outcome = Literal["built", "pulled", "waited"]
Built = tuple[bool, dict[str, Any], float]
#: ``publish(fill, check=..., extra=...)``: the local atomic publish of an assembled folder.
Publish = Callable[..., Built]

_backends: dict[tuple[str, str, int], Backend] = {}
_backends_lock = threading.Lock()
_marked: set[str] = set()


class PushRefused(HydraCacheError):
    """This process must not push (a signing key is named but not set)."""


@dataclass(frozen=True)
class Pushed:
    """What a push did: ``pushed`` (our manifest is the entry) or ``raced`` (another
    machine's manifest was there first and is kept); files, new blobs and their bytes."""

    outcome: Literal["pushed", "raced"]
    files: int
    blobs: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Result:
    published: bool
    record: dict[str, Any]
    seconds: float
    outcome: Outcome


def backend_for(spec: RemoteSpec) -> Backend:
    """One backend per remote and process (connections and fsspec state are reused)."""
    options = json.dumps(dict(spec.options), sort_keys=True, default=str)
    key = (spec.url.redacted() + repr((spec.url.username, spec.url.password)), options, os.getpid())
    with _backends_lock:
        if key not in _backends:
            _backends[key] = open_backend(spec)
        return _backends[key]


#: After a remote failed to answer a lookup, this process does not ask it again for this long:
#: an unreachable endpoint costs seconds of retries a request, and a job asks once to explain a
#: miss and once more to get the entry.
FAILURE_PAUSE = 300.0
_failures: dict[str, tuple[float, str]] = {}


def note_failure(spec: RemoteSpec, problem: str) -> None:
    """Remember that the remote failed (see :data:`FAILURE_PAUSE`)."""
    _failures[spec.url.redacted()] = (time.monotonic(), problem)


def recent_failure(spec: RemoteSpec) -> str | None:
    """The problem of a failure of this remote less than :data:`FAILURE_PAUSE` ago."""
    found = _failures.get(spec.url.redacted())
    if found is None or time.monotonic() - found[0] > FAILURE_PAUSE:
        return None
    ago = human_duration(time.monotonic() - found[0])
    return f"{found[1]}; it failed {ago} ago, and is not asked again for {FAILURE_PAUSE:.0f} s"


def _kind(record: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if record is None:
        return None
    if record.get("dir"):
        return ("dir",)
    if "symlink" in record:
        return ("symlink", record["symlink"])
    return ("file", int(record.get("size", 0)), record.get("sha256"))


class RemoteTier:
    """The remote tier for one entry at ``path`` (``<root>/<namespace>/<key>``)."""

    def __init__(
        self,
        spec: RemoteSpec,
        path: Path,
        root: Path,
        *,
        wait_log_interval: float = WAIT_LOG_INTERVAL,
        expected: dict[str, Any] | None = None,
    ) -> None:
        #: This config's digest and redacted payload, which a pulled manifest must carry.
        self.expected = expected
        self.spec = spec
        self.path = path
        self.root = root
        self.namespace, self.key = path.parent.name, path.name
        self.manifest_name = layout.manifest(self.namespace, self.key)
        self.lease_name = layout.lease(self.namespace, self.key)
        self.where = spec.url.redacted()
        self.wait_log_interval = wait_log_interval
        self._backend: Backend | None = None

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.key}"

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = backend_for(self.spec)
        return self._backend

    def _say(self, error: BaseException) -> str:
        return describe_error(error, self.spec)

    def get_or_build(
        self, build_here: Callable[[], Built], publish: Publish, timeout: float | None = None
    ) -> Result:
        failed = recent_failure(self.spec)
        if failed is not None:
            log.warning(
                "cannot use the remote %s (%s): building %s here", self.where, failed, self.label
            )
            return self._here(build_here)
        asked = time.monotonic()
        try:
            data = self.backend.read(self.manifest_name)
        except Exception as error:
            note_failure(self.spec, self._say(error))
            log.warning(
                "cannot reach the remote %s (%s, after %s): building %s here",
                self.where,
                self._say(error),
                human_duration(time.monotonic() - asked),
                self.label,
            )
            return self._here(build_here)
        if data is not None:
            return self._from_manifest(data, build_here, publish)
        if not self.spec.writes:
            return self._here(build_here)
        return self._lease_build_push(build_here, publish, timeout)

    # -- reading -------------------------------------------------------------------------

    def _from_manifest(
        self, data: bytes, build_here: Callable[[], Built], publish: Publish
    ) -> Result:
        try:
            found = manifest.parse(
                data, self.namespace, self.key, self.spec.sign_key(), expected=self.expected
            )
        except manifest.ManifestProblem as problem:
            log.warning(
                "not using the remote entry %s on %s: %s; building it here (a manifest is never "
                "overwritten: 'hydra-cache gc --remote' removes a wrong one)",
                self.label,
                self.where,
                problem,
            )
            self._journal("remote-refused", reason=str(problem))
            return self._here(build_here)
        try:
            return self._pull(found, publish)
        except transfer.TornRemoteEntry as torn:
            log.warning(
                "remote-torn: the remote entry %s on %s is incomplete (%s); building it here%s",
                self.label,
                self.where,
                torn,
                ", then repairing the remote" if self.spec.writes else "",
            )
            self._journal("remote-torn", problems=torn.problems[:20])
            result = self._here(build_here)
            if self.spec.writes and result.published:
                self._repair(found, torn, result.record)
            return result
        except Exception as error:
            log.warning(
                "pulling %s from %s failed (%s): building it here",
                self.label,
                self.where,
                self._say(error),
            )
            return self._here(build_here)

    def _pull(self, found: manifest.Manifest, publish: Publish) -> Result:
        started = time.monotonic()

        def fill(staging: Path) -> None:
            transfer.download(self.backend, found, staging, f"pull {self.label}")

        def check(files: dict[str, dict[str, Any]]) -> None:
            wrong = [
                name
                for name in sorted(found.files.keys() | files.keys())
                if _kind(found.files.get(name)) != _kind(files.get(name))
            ]
            if wrong:  # the seal's SHA-256 is the pull's one hash of each file
                bad = sorted(
                    {
                        d
                        for n in wrong
                        if (d := (found.files.get(n) or {}).get("sha256")) is not None
                    }
                )
                problems = [
                    f"{name}: blob {str(found.files[name]['sha256'])[:12]} is corrupt (its "
                    "SHA-256 differs)"
                    if "sha256" in (found.files.get(name) or {})
                    else f"{name}: differs from the manifest once assembled"
                    for name in wrong
                ]
                raise transfer.TornRemoteEntry(problems, bad)

        extra = {
            "pulled_from": {
                "remote": self.where,
                "built_by": found.built_by,
                "build_seconds": found.raw.get("build_seconds"),
                "tree": found.tree,
            }
        }
        published, record, seconds = publish(fill, check=check, extra=extra)
        elapsed = max(time.monotonic() - started, 1e-6)
        files = sum(1 for r in found.files.values() if "sha256" in r)
        log.info(
            "pulled %s from %s: %d files, %s in %.2f s (%s/s)",
            self.label,
            self.where,
            files,
            human_size(found.size_bytes),
            elapsed,
            human_size(found.size_bytes / elapsed),
        )
        return Result(published, record, seconds, "pulled" if published else "waited")

    # -- building and writing ------------------------------------------------------------

    def _here(self, build_here: Callable[[], Built]) -> Result:
        published, record, seconds = build_here()
        return Result(published, record, seconds, "built" if published else "waited")

    def _lease_build_push(
        self, build_here: Callable[[], Built], publish: Publish, timeout: float | None
    ) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        last_said = float("-inf")
        delay = POLL_FIRST
        stale: bytes | None = None
        while True:
            try:
                got = lease.acquire(self.backend, self.lease_name, stale=stale)
            except Exception as error:
                log.warning(
                    "cannot take the lease of %s on %s (%s): building it here, not pushing it",
                    self.label,
                    self.where,
                    self._say(error),
                )
                return self._here(build_here)
            if isinstance(got, lease.Lease):
                return self._build_under_lease(got, build_here, publish)
            holder = got
            # A live holder rewrites its lease every third of its length; one unchanged for
            # longer than a lease lasts is dead, whatever the (maybe skewed) clock wrote in it.
            seen: bytes | None = None
            seen_at = time.monotonic()
            patience = lease.lease_seconds() * 1.5
            while True:
                now = time.monotonic()
                if now - last_said >= self.wait_log_interval:
                    last_said = now
                    self._say_waiting(holder, now - started)
                if deadline is not None and now >= deadline:
                    raise LockTimeout(
                        f"{self.path}: gave up after {human_duration(now - started)} waiting for "
                        f"{holder.get('host')}:{holder.get('pid')}, which builds {self.label} for "
                        f"the remote {self.where}; fix: raise the timeout, or wait"
                    )
                time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))
                delay = min(delay * 1.5, POLL_MAX)
                try:
                    data = self.backend.read(self.manifest_name)
                    if data is not None:
                        return self._from_manifest(data, build_here, publish)
                    current = self.backend.read(self.lease_name)
                except Exception as error:
                    log.warning(
                        "the remote %s failed while waiting (%s): building %s here",
                        self.where,
                        self._say(error),
                        self.label,
                    )
                    return self._here(build_here)
                if current is None:
                    break  # released without a manifest (its build failed): take it
                if current != seen:
                    seen, seen_at = current, time.monotonic()
                elif time.monotonic() - seen_at > patience:
                    stale = current
                    break
                holder = lease.parse(current)
                if lease.expired(holder) or lease.holder_gone(holder):
                    break

    def _say_waiting(self, holder: dict[str, Any], waited: float) -> None:
        now = time.time()
        try:
            held = human_duration(now - float(holder.get("since", now)))
            left = float(holder.get("expires", now)) - now
        except (TypeError, ValueError):
            held, left = "?", 0.0
        last = journal.last_build_seconds(self.root, self.namespace)
        estimate = (
            f"; the last build of {self.namespace} here took {human_duration(last)}"
            if last is not None
            else ""
        )
        log.info(
            "waiting for %s:%s (user %s), which builds %s for the team on %s: held %s, lease "
            "expires in %s unless refreshed, waited %s%s",
            holder.get("host"),
            holder.get("pid"),
            holder.get("user", "?"),
            self.label,
            self.where,
            held,
            human_duration(max(left, 0.0)),
            human_duration(waited),
            estimate,
        )

    def _build_under_lease(
        self, held: lease.Lease, build_here: Callable[[], Built], publish: Publish
    ) -> Result:
        try:
            with held.refreshing():
                # Committed between our lookup and our lease (its builder released the lease)?
                data = self.backend.read(self.manifest_name)
                if data is not None:
                    return self._from_manifest(data, build_here, publish)
                result = self._here(build_here)
                if result.published:
                    self.push(result.record)
                return result
        finally:
            held.release()

    def push(self, record: dict[str, Any]) -> bool:
        """Upload the blobs the remote lacks, then commit the manifest (conditionally).

        True when the remote holds the entry afterwards (ours or a winner's manifest).
        Failures are logged, never raised: the entry is built and published here.
        """
        try:
            self.commit(record)
        except PushRefused as refused:
            log.warning("not pushing %s to %s: %s", self.label, self.where, refused)
            return False
        except Exception as error:
            log.warning(
                "could not push %s to %s (%s); it is built and published on this machine",
                self.label,
                self.where,
                self._say(error),
            )
            return False
        return True

    def commit(self, record: dict[str, Any]) -> Pushed:
        """:meth:`push`, raising what it logs: ``hydra-cache push`` reports each entry's
        outcome itself. :class:`PushRefused` when this process must not push at all."""
        started = time.monotonic()
        built = manifest.build(self.path, record)
        key = self.spec.sign_key()
        if self.spec.sign_key_env and key is None:
            raise PushRefused(
                f"hydra_cache.remote.sign_key_env names ${self.spec.sign_key_env}, which is "
                "not set, and every reader with the key would refuse an unsigned manifest"
            )
        if key is not None:
            built = manifest.sign(built, key)
        count, size = transfer.upload(self.backend, self.path, built["files"], f"push {self.label}")
        self._mark()
        files = sum(1 for r in built["files"].values() if "sha256" in r)
        if self.backend.create(self.manifest_name, manifest.encode(built)) is None:
            self._lost_race(built)
            return Pushed("raced", files, count, size, time.monotonic() - started)
        seconds = time.monotonic() - started
        log.info(
            "pushed %s to %s: %d files (%d blobs sent, %s) in %.2f s",
            self.label,
            self.where,
            files,
            count,
            human_size(size),
            seconds,
        )
        return Pushed("pushed", files, count, size, seconds)

    def _mark(self) -> None:
        """Write the format marker once per remote and process (a lost create is fine)."""
        if self.where in _marked:
            return
        marker = {"kind": "hydra-cache-remote", "format": layout.FORMAT_VERSION}
        self.backend.create(layout.MARKER, json.dumps(marker).encode())
        _marked.add(self.where)

    def _lost_race(self, ours: dict[str, Any]) -> None:
        data = self.backend.read(self.manifest_name)
        theirs: dict[str, Any] = {}
        if data is not None:
            try:
                theirs = json.loads(data)
            except ValueError:
                theirs = {}
        by = (theirs.get("built_by") or {}) if isinstance(theirs, dict) else {}
        if theirs.get("tree") == ours["tree"]:
            log.info(
                "%s was committed to %s by %s first, with the same files; keeping theirs",
                self.label,
                self.where,
                by.get("host"),
            )
            return
        differ = manifest.differences(ours["files"], theirs.get("files") or {})
        log.warning(
            "%s was committed to %s by %s while this process built it, and the build is not "
            "deterministic, %s: %s; the remote keeps its copy (a manifest is never "
            "overwritten) and this machine keeps its own, so stages built from this entry here "
            "and there may differ",
            self.label,
            self.where,
            by.get("host"),
            "this file differs" if len(differ) == 1 else f"these {len(differ)} files differ",
            ", ".join(differ[:10]) + (" ..." if len(differ) > 10 else ""),
        )

    def _repair(
        self, found: manifest.Manifest, torn: transfer.TornRemoteEntry, record: dict[str, Any]
    ) -> None:
        try:
            ours = manifest.files_of(self.path, record.get("files") or {})
            have = {r["sha256"] for r in ours.values() if "sha256" in r}
            fixable = set(torn.bad) & have
            count, size = transfer.upload(
                self.backend, self.path, ours, f"repair {self.label}", only=fixable, force=True
            )
        except Exception as error:
            log.warning("could not repair %s on %s (%s)", self.label, self.where, self._say(error))
            return
        lacking = set(torn.bad) - fixable
        if lacking or not torn.bad:
            log.warning(
                "%s on %s stays torn: this build did not produce %d of its files (is the build "
                "deterministic?); fix: 'hydra-cache gc --remote' can remove its manifest",
                self.label,
                self.where,
                len(lacking) or len(torn.problems),
            )
            return
        self._journal("remote-repaired", blobs=count)
        log.info(
            "repaired %s on %s: uploaded %d blobs again (%s)",
            self.label,
            self.where,
            count,
            human_size(size),
        )

    def _journal(self, event: str, **fields: Any) -> None:
        try:
            journal.append(
                self.root,
                event,
                namespace=self.namespace,
                key=self.key,
                remote=self.where,
                **fields,
            )
        except OSError as error:
            log.debug("could not journal %s: %s", event, error)
