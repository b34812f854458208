"""Progress of long work: a tqdm bar on a terminal, otherwise a line every few seconds.

``verify`` over ten thousand entries, or ``build`` of a sweep, should not look hung. tqdm is in
nearly every ML environment, so it is used when it is installed and stderr is a terminal; it is
never required. Elsewhere (a log file, CI, no tqdm) a plain line is written at most every
``HYDRA_CACHE_PROGRESS_INTERVAL`` seconds (default 10), and nothing at all for work that ends
sooner.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

DEFAULT_INTERVAL = 10.0


def interval() -> float:
    try:
        return float(os.environ.get("HYDRA_CACHE_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


class Progress:
    """``with Progress(total, "verify", "entries") as step: ... step()`` per item done."""

    def __init__(
        self, total: int, what: str, unit: str = "entries", *, stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.what = what
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._interval = interval()
        #: Transfers count from several threads at once.
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.total > 1 and self.stream.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                tqdm = None
            if tqdm is not None:
                if self.unit == "bytes":  # tqdm shows the rate and an estimate itself
                    self._bar = tqdm(
                        total=self.total,
                        desc=self.what,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        file=self.stream,
                    )
                else:
                    self._bar = tqdm(
                        total=self.total, desc=self.what, unit=f" {self.unit}", file=self.stream
                    )
        return self

    def __call__(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(count)
                return
            now = time.monotonic()
            if now - self._last_line < self._interval or self.done >= self.total:
                return
            self._last_line = now
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            elapsed = now - self._started
            if self.unit == "bytes":
                line = f"{self.what}: {self._bytes_line(elapsed)}{share}"
            else:
                line = f"{self.what}: {self.done}/{self.total} {self.unit}{share}, {elapsed:.0f}s"
            print(line, file=self.stream, flush=True)

    def _bytes_line(self, elapsed: float) -> str:
        """``120 MiB of 1.0 GiB, 48 MiB/s, about 19s left``: a transfer's bytes, rate, estimate."""
        from hydra_cache.units import human_duration, human_size

        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {human_duration((self.total - self.done) / rate)} left" if rate else ""
        return f"{human_size(self.done)} of {human_size(self.total)}, {human_size(rate)}/s{left}"

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
