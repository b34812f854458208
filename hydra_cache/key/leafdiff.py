"""Leaf-by-leaf differences between two payloads: what ``why``, ``diff`` and ``testing`` show.

Payloads are compared as flat maps of dotted key -> value, so a change deep inside a list or a
structured node reads as one line. Secrets are already redacted in the payloads compared
here; a redacted value never shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hydra_cache.key.payload import UPSTREAM_PATTERN
from hydra_cache.key.rules import is_redacted
from hydra_cache.key.walk import child_path

INPUT_PREFIX = "input "
CODE_PREFIX = "code of "
CLASS_SUFFIX = " (class)"


@dataclass(frozen=True)
class LeafChange:
    """One hashed value that differs between two payloads."""

    key: str
    old: Any
    new: Any
    #: "changed", "added" (only in the new payload) or "removed" (only in the old one).
    kind: str = "changed"

    def __str__(self) -> str:
        if self.kind == "added":
            return f"{self.key}: (absent) -> {show(self.new)}"
        if self.kind == "removed":
            return f"{self.key}: {show(self.old)} -> (absent)"
        if is_redacted(self.old) or is_redacted(self.new):
            return f"{self.key}: changed (secret)"
        return f"{self.key}: {show(self.old)} -> {show(self.new)}"

    def upstreams(self) -> tuple[list[str], list[str]]:
        """The upstream digests the old and the new value carry."""
        return _digests(self.old), _digests(self.new)


def _digests(item: Any) -> list[str]:
    return UPSTREAM_PATTERN.findall(item) if isinstance(item, str) else []


def show(item: Any) -> str:
    if is_redacted(item):
        return "<redacted>"
    if isinstance(item, str) and "<upstream:" in item:
        return json.dumps(
            UPSTREAM_PATTERN.sub(lambda m: f"<upstream {m.group(1)[:16]}>", item),
            ensure_ascii=False,
        )
    return json.dumps(item, ensure_ascii=False)


def flatten(item: Any, path: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value (an empty dict or list counts as a leaf)."""
    if isinstance(item, dict) and item:
        return {
            k: v
            for name, sub in item.items()
            for k, v in flatten(sub, child_path(path, name)).items()
        }
    if isinstance(item, list) and item:
        return {
            k: v
            for index, sub in enumerate(item)
            for k, v in flatten(sub, child_path(path, index)).items()
        }
    return {path: item}


def payload_leaves(payload: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted key -> value of every hashed leaf of a payload: the salt, structured classes,
    input and code fingerprints included (``input <key>``, ``code of <name>``)."""
    if not payload:
        return {}
    leaves: dict[str, Any] = {}
    for name, item in (payload.get("nodes") or {}).items():
        leaves.update(flatten(item, "" if name == "." else name))
    if payload.get("salt") is not None:
        leaves["hydra_cache.salt"] = payload["salt"]
    for path, cls in (payload.get("types") or {}).items():
        leaves[f"{path}{CLASS_SUFFIX}"] = cls
    for key, digest in (payload.get("inputs") or {}).items():
        leaves[f"{INPUT_PREFIX}{key}"] = digest
    for name, digest in (payload.get("code") or {}).items():
        leaves[f"{CODE_PREFIX}{name}"] = digest
    return leaves


def leaf_diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[LeafChange]:
    """Leaf-by-leaf differences between two payloads' hashed values."""
    before = payload_leaves(old)
    after = payload_leaves(new)
    changes: list[LeafChange] = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            changes.append(LeafChange(key, before[key], None, "removed"))
        elif key not in before:
            changes.append(LeafChange(key, None, after[key], "added"))
        elif _typed(before[key]) != _typed(after[key]):
            changes.append(LeafChange(key, before[key], after[key]))
    return changes


def _typed(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def schema_of(payload: dict[str, Any] | None) -> int | None:
    """The key schema a payload was made with (None when unknown)."""
    found = (payload or {}).get("schema")
    return found if isinstance(found, int) else None


def upstream_records(payloads: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Digest -> upstream record (config_key, payload, ...), from an entry's records."""
    return {
        record["digest"]: record
        for record in payloads
        if isinstance(record, dict) and isinstance(record.get("digest"), str)
    }


def root_causes(
    changes: list[LeafChange],
    old_upstreams: dict[str, dict[str, Any]],
    new_upstreams: dict[str, dict[str, Any]],
    depth: int = 0,
) -> list[str]:
    """Explain the changes that are upstream digests by what changed in the upstream.

    ``features.arrays: <upstream a>/x -> <upstream b>/x`` says nothing to a person; this
    turns it into ``upstream data.cache_dir changed: data.resize: 8 -> 4``, following a
    chain of stages down to the values that changed at its root.
    """
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for change in changes:
        olds, news = change.upstreams()
        for old, new in zip(olds, news):
            if old == new or (old, new) in seen:
                continue
            seen.add((old, new))
            before, after = old_upstreams.get(old), new_upstreams.get(new)
            name = (after or before or {}).get("config_key", "an upstream cache dir")
            if before is None or after is None or depth > 8:
                lines.append(f"upstream {name} changed (key {old[:16]} -> {new[:16]})")
                continue
            inner = leaf_diff(before.get("payload"), after.get("payload"))
            deeper = root_causes(inner, old_upstreams, new_upstreams, depth + 1)
            plain = [str(c) for c in inner if c.upstreams() == ([], [])]
            if plain:
                lines.append(f"upstream {name} changed: {'; '.join(plain)}")
                lines += deeper
            elif deeper:  # changed only because its own upstream did: one line down the chain
                lines.append(f"upstream {name} changed, because its {deeper[0]}")
                lines += deeper[1:]
            else:
                lines.append(f"upstream {name} changed (a redacted value or the schema)")
        if len(olds) != len(news):
            lines.append(f"{change.key}: the upstream cache dirs it derives from changed")
    return lines
