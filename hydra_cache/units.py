"""Sizes and durations, read from the command line and written for people."""

from __future__ import annotations

import re

from hydra_cache.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str, option: str = "--max-size") -> int:
    """``500MB``, ``1.5GiB``, ``10G`` or a byte count -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{option} {text!r} is not a size; fix: write e.g. 500MB, 10G or 1.5TiB")
    number, unit, binary = float(match[1]), match[2].lower(), match[3]
    base = 1024 if binary or not unit else 1000
    return int(number * base ** "_kmgtp".index(unit or "_"))


def parse_age(text: str, option: str = "--older-than") -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _AGE.match(text)
    if not match:
        raise ConfigError(f"{option} {text!r} is not an age; fix: write e.g. 12h, 7d or 2w")
    return float(match[1]) * _AGE_UNITS[match[2].lower()]


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)  # clocks of two hosts can disagree a little
    if seconds < 0.1:
        return "<0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 cache entry``, ``3 cache entries``: counts people read, in plain English."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"
