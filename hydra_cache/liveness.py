"""Who is this process, is another one still alive, and what time is it (for records)?

Lock files and staging folders carry the host and pid of their creator, so a waiter can say who
it waits for and a later run can tell a build in progress from one that was killed.
"""

from __future__ import annotations

import os
import socket
import time
from functools import lru_cache


@lru_cache(maxsize=1)
def hostname() -> str:
    return socket.gethostname() or "localhost"


def process_alive(host: str, pid: int) -> bool | None:
    """True/False for a process on this host; ``None`` when it runs elsewhere (unknowable)."""
    if host != hostname():
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


def iso_time(timestamp: float) -> str:
    """Local time with its UTC offset, as every record of hydra-cache writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))
