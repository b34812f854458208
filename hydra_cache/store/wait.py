"""Waiting for another process's build: take the lock, or see the entry appear.

Waiters poll readiness between short lock attempts and say whom they wait for (host, pid and
for how long), so a hung builder on another node is visible. On a network filesystem a
publish by another node can stay invisible here for up to a minute after the lock is free, so
a process that takes the lock and finds the journal saying the entry was just published polls
for it instead of rebuilding over it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra_cache.errors import LockTimeout
from hydra_cache.store import journal
from hydra_cache.store.liveness import every
from hydra_cache.store.locking import EntryLock
from hydra_cache.units import human_duration

log = logging.getLogger(__name__)

#: How often a waiter re-checks readiness while the lock is held elsewhere.
WAIT_SLICE = 0.5


def take_lock_or_see_ready(
    lock: EntryLock,
    ready: Callable[[], bool],
    *,
    path: Path,
    timeout: float | None,
    log_interval: float,
    last_build: Callable[[], float | None] | None = None,
) -> bool:
    """Take the lock (True), or see the entry published meanwhile (False).

    The lock is always tried at least once, so ``timeout=0`` means "build now if nobody else
    is building", never "give up before trying".
    """
    started = time.monotonic()
    last_log = started
    took: list[float | None] = []  # the namespace's last build time, read at the first log
    while True:
        waited = time.monotonic() - started
        slice_ = WAIT_SLICE if timeout is None else max(0.0, min(WAIT_SLICE, timeout - waited))
        if lock.acquire(slice_):
            return True
        if ready():
            return False
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            raise LockTimeout(
                f"gave up after {now - started:.0f}s waiting for {path} to be built by "
                f"{lock.describe_holder()}; fix: wait longer (timeout=...) or, if that "
                f"process is gone, remove {lock.lock_path}"
            )
        if now - last_log >= log_interval:
            last_log = now
            if not took:
                took.append(last_build() if last_build else None)
            running = lock.holder_age()
            log.info(
                "waiting for %s: being built by %s (waited %s%s)",
                path,
                lock.describe_holder(),
                human_duration(now - started),
                estimate(running if running is not None else now - started, took[0], path),
            )


def estimate(elapsed: float, last: float | None, path: Path) -> str:
    """``; the last build of data took 41 s, about 11 s left``: the one estimate there is."""
    namespace = path.parent.name
    if last is None:
        return f"; no earlier build of {namespace} to estimate from"
    took = f"; the last build of {namespace} took {human_duration(last)}"
    if elapsed <= 0:
        return took
    if elapsed < last:
        return f"{took}, about {human_duration(last - elapsed)} left"
    return f"{took}, this one runs longer"


@contextlib.contextmanager
def progress_log(path: Path, interval: float, last: float | None) -> Iterator[None]:
    """While a build runs, log a line every ``interval`` seconds, so a long build is not silent
    until it ends; each says how long it has run against the namespace's last build."""
    log.info("building %s%s", path, estimate(0.0, last, path))
    started = time.monotonic()

    def beat() -> None:
        elapsed = time.monotonic() - started
        log.info(
            "still building %s: %s elapsed%s",
            path,
            human_duration(elapsed),
            estimate(elapsed, last, path),
        )

    with every(interval, beat, "hydra-cache-progress"):
        yield


def appears_soon(root: Path, path: Path, patience: float, hit: Callable[[], bool]) -> bool:
    """Under the lock, not visible: wait if the journal says it was just published.

    Rebuilding would be correct (the rename would lose to the published entry) but wasteful.
    """
    if patience <= 0:
        return False
    published = journal.recent_publish(root, path.parent.name, path.name, within=patience)
    if published is None:
        return False
    started = time.monotonic()
    delay = 0.05
    log.info(
        "waiting for %s to become visible here: %s:%s published it at %s",
        path,
        published.get("host"),
        published.get("pid"),
        published.get("time"),
    )
    while time.monotonic() - started < patience:
        time.sleep(delay)
        if hit():
            return True
        delay = min(delay * 2, 5.0)
    log.warning(
        "%s was journaled as published but stayed invisible for %.0fs; rebuilding", path, patience
    )
    return False
