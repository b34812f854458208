"""Rendering for the command line: tables, JSON, times, counts in plain English."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from hydra_cache.units import plural

__all__ = ["emit", "iso", "plural", "say_root", "short_time", "table", "values_text"]


def emit(fmt: str, rows: Any, text: str) -> None:
    """JSON for ``--format json``, else the text."""
    if fmt == "json":
        print(json.dumps(rows, indent=1, default=str))
    else:
        print(text)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def iso(when: float | str | None) -> str | None:
    """ISO 8601 with a UTC offset (``2026-11-28T04:26:18+00:00``), from a Unix time or from
    a record's time (written ``+0000``, which not every parser takes)."""
    if when is None or when == "":
        return None
    if isinstance(when, (int, float)):
        moment = datetime.fromtimestamp(when).astimezone()
    else:
        try:
            moment = datetime.strptime(str(when), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return str(when)
    return moment.isoformat(timespec="seconds")


def short_time(when: str | None) -> str:
    """``2026-11-28T04:26:18+00:00`` as ``2026-11-28 04:26`` for a table cell."""
    return str(when)[:16].replace("T", " ") if when else "-"


def say_root(path: object, source: str) -> None:
    """Which root a command works on and where that came from, on stderr (stdout stays the
    command's output, parseable in every format)."""
    print(f"root {path} (from {source})", file=sys.stderr)


def values_text(values: dict[str, Any], limit: int = 80) -> str:
    text = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."
