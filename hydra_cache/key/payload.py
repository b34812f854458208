"""The canonical payload and its digest: the one serialisation every key is taken over.

The payload is JSON with sorted keys, so a key does not depend on YAML key order, flow or block
style, ``PYTHONHASHSEED`` or the process. JSON keeps ``1``, ``1.0``, ``true``, ``"1"`` and
``null`` distinct, and writes floats by their shortest round-tripping ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: Bump whenever the payload layout or the conversion of any value changes: every key changes.
#: 2: upstream entries join as their digests; structured-config classes; relative_to bases;
#: resolver results that are lists or dicts.
SCHEMA_VERSION = 2
#: Length of the key used in paths; the full SHA-256 is kept in the entry's metadata.
KEY_LENGTH = 16
#: Stands for a per-run value that cannot be resolved outside a job (e.g. in the CLI).
UNRESOLVED_PER_RUN = "<per-run value>"
#: An upstream entry's path, as it joins a downstream key: its full digest, never its path.
UPSTREAM_MARKER = "<upstream:{digest}>"
UPSTREAM_PATTERN = re.compile(r"<upstream:([0-9a-f]{64})>")
#: An absolute path under the n-th ``hydra_cache.relative_to`` base joins relative to it.
RELATIVE_MARKER = "<relative_to[{index}]>"


def canonical_json(payload: Any) -> str:
    """The one serialisation every digest is taken over."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    )


def digest_of(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def upstream_digests(value: str) -> list[str]:
    """The upstream digests a hashed string value carries."""
    return UPSTREAM_PATTERN.findall(value)
