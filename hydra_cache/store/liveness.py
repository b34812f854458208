"""Who is this process, is another one still alive, how old is a timestamp, what time it is,
and a periodic beat a running builder shows it is alive by.

Lock files and staging folders carry the host, PID namespace and pid of their creator, so a
waiter can say who it waits for and a later run can tell a build in progress from one that was
killed. A process on another host, or in another PID namespace (a container) on this one, is
*unknown*, never dead: its pid means nothing here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache

from hydra_cache.store.layout import pid_namespace

#: Clocks of two hosts may disagree by this much without anything being called skewed.
CLOCK_TOLERANCE = 300.0


@lru_cache(maxsize=1)
def hostname() -> str:
    return socket.gethostname() or "localhost"


def process_alive(host: str, pid: int, pidns: int = 0) -> bool | None:
    """True/False for a process of this host and PID namespace; ``None`` when unknowable."""
    if host != hostname():
        return None
    if pidns and pid_namespace() and pidns != pid_namespace():
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def age(then: float, now: float | None = None) -> float:
    """Seconds between ``then`` and now, as a distance.

    A timestamp in the future (another host's clock runs ahead, or a file was touched with a
    future date) counts by how far ahead it is: a negative age compared against a grace
    period would otherwise keep the thing forever.
    """
    now = time.time() if now is None else now
    return abs(now - then)


def iso_time(timestamp: float) -> str:
    """Local time with its UTC offset, as every record of hydra-cache writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


@contextlib.contextmanager
def every(interval: float, action: Callable[[], bool | None], name: str) -> Iterator[None]:
    """Call ``action`` every ``interval`` seconds in a daemon thread while the block runs (the
    builder's heartbeat and its progress lines); an ``action`` returning False stops early."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            if action() is False:
                return

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
