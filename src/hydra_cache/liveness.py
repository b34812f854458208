"""Who is this process, and is another one still alive?

Lock files and staging folders carry the host and pid of their creator, so a waiter can say who
it waits for and a later run can tell a build in progress from one that was killed.
"""

from __future__ import annotations

import os
import socket
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
