"""The lease: who builds an entry for the team right now, so other machines wait instead of
building it again.

A lease is a small object ``leases/<namespace>/<key>`` holding host, pid, user, since, expires
and a random token. It is created with the same conditional create as a manifest, refreshed
by its holder while the build runs (every third of its lifetime, by a compare-and-swap on the
version it last wrote, so a holder that was taken over learns it), and deleted when the
manifest is committed or the build fails.

Taking over: a lease past its expiry, or held by a process of this host that is gone, may be
taken by a compare-and-swap on the version that was read (S3 ``If-Match``, a rename on a
folder; delete-then-create elsewhere, where two takers can both win). Correctness never depends
on the lease: if two machines build, the conditional create of the manifest keeps exactly one
result, and the other is discarded with a warning if the two differ. Expiry compares the
writer's clock with the reader's: clocks kept by NTP agree far better than a lease lasts.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra_cache.store.layout import pid_namespace
from hydra_cache.store.liveness import every, hostname, process_alive
from hydra_cache.store.remote.backend import Backend

log = logging.getLogger(__name__)

#: How long a lease lasts unless refreshed; ``$HYDRA_CACHE_REMOTE_LEASE_SECONDS`` overrides.
LEASE_SECONDS = 120.0


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("HYDRA_CACHE_REMOTE_LEASE_SECONDS", LEASE_SECONDS)))
    except ValueError:
        return LEASE_SECONDS


def _user() -> str:
    with contextlib.suppress(KeyError, OSError):
        return getpass.getuser()
    return "unknown"


def new_record(ttl: float, since: float | None = None, token: str | None = None) -> dict[str, Any]:
    now = time.time()
    return {
        "host": hostname(),
        "pid": os.getpid(),
        "pidns": pid_namespace(),
        "user": _user(),
        "since": since if since is not None else now,
        "expires": now + ttl,
        "token": token or secrets.token_hex(8),
    }


def parse(data: bytes) -> dict[str, Any]:
    """A lease's record; an unreadable one counts as expired long ago (so it can be taken)."""
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return {"host": "?", "pid": 0, "since": 0.0, "expires": 0.0, "token": ""}
    return record


def expired(record: dict[str, Any], now: float | None = None) -> bool:
    now = time.time() if now is None else now
    try:
        return float(record.get("expires", 0)) < now
    except (TypeError, ValueError):
        return True


def holder_gone(record: dict[str, Any]) -> bool:
    """The holder is a process of this host (and PID namespace) that no longer runs."""
    try:
        pid, pidns = int(record.get("pid", 0)), int(record.get("pidns", 0))
    except (TypeError, ValueError):
        return False
    return process_alive(str(record.get("host", "")), pid, pidns) is False


@dataclass
class Lease:
    """A lease this process holds."""

    backend: Backend
    name: str
    version: str
    record: dict[str, Any]
    ttl: float
    lost: bool = field(default=False)

    def refresh(self) -> bool:
        """Extend the lease; False (and no more refreshes) once another process took it."""
        record = new_record(self.ttl, self.record["since"], self.record["token"])
        try:
            version = self.backend.replace(self.name, _encode(record), self.version)
        except Exception as error:  # a failed refresh is retried at the next beat
            log.debug("could not refresh the lease %s: %s", self.name, type(error).__name__)
            return True
        if version is None:
            log.warning(
                "the lease %s was taken over by another process (this build took longer than "
                "its lease); building on, the manifest's conditional create decides",
                self.name,
            )
            self.lost = True
            return False
        self.version, self.record = version, record
        return True

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[None]:
        with every(self.ttl / 3, self.refresh, "hydra-cache-lease"):
            yield

    def release(self) -> None:
        """Delete the lease if it is still ours (best effort: it expires anyway)."""
        if self.lost:
            return
        with contextlib.suppress(Exception):
            found = self.backend.read(self.name)
            if found is not None and parse(found).get("token") == self.record["token"]:
                self.backend.delete(self.name)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


def acquire(
    backend: Backend, name: str, ttl: float | None = None, *, stale: bytes | None = None
) -> Lease | dict[str, Any]:
    """Take the lease: a :class:`Lease`, or the record of the live holder.

    ``stale`` is a lease's exact bytes that a waiter saw unchanged for longer than a holder
    refreshes it: its holder is gone whatever its ``expires`` says (a clock running ahead, or
    a planted lease), so it is taken over like an expired one.
    """
    ttl = ttl or lease_seconds()
    for _attempt in range(5):
        record = new_record(ttl)
        version = backend.create(name, _encode(record))
        if version is not None:
            return Lease(backend, name, version, record, ttl)
        found = backend.read_versioned(name)
        if found is None:
            continue  # released between our create and our read: try again
        data, current = found
        holder = parse(data)
        not_refreshed = stale is not None and data == stale
        if not (expired(holder) or holder_gone(holder) or not_refreshed):
            return holder
        why = "gone" if holder_gone(holder) else "expired" if expired(holder) else "not refreshed"
        record = new_record(ttl)
        version = backend.replace(name, _encode(record), current)
        if version is not None:
            log.info(
                "took over the lease %s of %s:%s (%s)",
                name,
                holder.get("host"),
                holder.get("pid"),
                why,
            )
            return Lease(backend, name, version, record, ttl)
    found_data = backend.read(name)
    return parse(found_data) if found_data is not None else new_record(ttl)
