"""Which caches a config change invalidates, and what rebuilding them costs.

Two composed configs (a base and a head revision) are compared cache dir by cache dir, matched
by config key: ``unchanged`` (same key and root), ``invalidated`` (a new key or root, with the
leaf diff that caused it), ``added`` or ``removed``. Because keys are taken over resolved values,
a restructure of the config tree that changes no hashed value comes out unchanged. Config changes
that reach no key are listed apart, as "not affecting any cache".
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache import registry
from hydra_cache.errors import ConfigError
from hydra_cache.key import is_redacted, shown_overrides
from hydra_cache.key.leafdiff import (
    LeafChange,
    leaf_diff,
    payload_leaves,
    root_causes,
    upstream_records,
)
from hydra_cache.store.entry import CacheEntry
from hydra_cache.units import human_duration, human_size

MARKER = "<!-- hydra-cache-diff -->"


@dataclass(frozen=True)
class CacheDir:
    """One cache dir of one composed config."""

    config_key: str
    namespace: str
    key: str
    root: str
    path: str
    payload: dict[str, Any]
    #: Upstream records (config_key, namespace, key, digest, payload), transitively.
    upstreams: tuple[dict[str, Any], ...] = ()
    #: Size and build time from the remote's manifest, when this root has no such entry
    #: (a CI machine): ``{"remote", "size_bytes", "build_seconds"}``.
    remote_cost: dict[str, Any] | None = None


@dataclass(frozen=True)
class Side:
    """Everything compared of one composed config."""

    caches: dict[str, CacheDir]
    values: dict[str, Any]


@dataclass(frozen=True)
class CacheChange:
    config_key: str
    status: str  # unchanged | invalidated | added | removed
    base: CacheDir | None
    head: CacheDir | None
    changes: tuple[LeafChange, ...] = ()
    size_bytes: int | None = None
    build_seconds: float | None = None
    #: What changed upstream, at the root of the chain ("upstream data.cache_dir changed: ...").
    causes: tuple[str, ...] = ()
    #: Where size and build time come from: the local entry, or the remote's manifest (URL).
    cost_from: str | None = None

    @property
    def own_changes(self) -> tuple[LeafChange, ...]:
        """The changes of this entry's own values (upstream digests are said by ``causes``)."""
        if not self.causes:
            return self.changes
        return tuple(c for c in self.changes if c.upstreams() == ([], []))

    def as_dict(self) -> dict[str, Any]:
        def side(cache: CacheDir | None) -> dict[str, Any] | None:
            if cache is None:
                return None
            return {
                "namespace": cache.namespace,
                "key": cache.key,
                "root": cache.root,
                "path": cache.path,
            }

        return {
            "config_key": self.config_key,
            "status": self.status,
            "base": side(self.base),
            "head": side(self.head),
            "changes": [vars(c) for c in self.changes],
            "because_of_upstream": bool(self.causes) and not self.own_changes,
            "upstream_causes": list(self.causes),
            "size_bytes": self.size_bytes,
            "build_seconds": self.build_seconds,
            "cost_from": self.cost_from,
        }


@dataclass(frozen=True)
class Report:
    """The comparison for one set of overrides."""

    overrides: tuple[str, ...]
    caches: tuple[CacheChange, ...]
    unrelated: tuple[LeafChange, ...] = field(default_factory=tuple)

    @property
    def invalidated(self) -> list[CacheChange]:
        return [c for c in self.caches if c.status == "invalidated"]


def compare(base: Side | None, head: Side, overrides: Sequence[str] = ()) -> Report:
    """Compare the cache dirs of ``base`` (None: the config did not exist) and ``head``."""
    base_caches = base.caches if base else {}
    results: list[CacheChange] = []
    affecting: set[str] = set()
    for config_key in [*head.caches, *(k for k in base_caches if k not in head.caches)]:
        old, new = base_caches.get(config_key), head.caches.get(config_key)
        if old is None or new is None:
            only = new or old
            assert only is not None
            affecting.update(payload_leaves(only.payload))
            results.append(CacheChange(config_key, "added" if old is None else "removed", old, new))
            continue
        if old.key == new.key and old.root == new.root:
            results.append(CacheChange(config_key, "unchanged", old, new))
            continue
        changes = leaf_diff(old.payload, new.payload)
        if old.root != new.root:
            changes.insert(0, LeafChange("cache root", old.root, new.root))
        affecting.update(c.key for c in changes)
        meta = CacheEntry(old.path).metadata() or {}
        cost_from = "local" if meta else None
        if not meta and old.remote_cost:  # CI has no local entries; the team's remote does
            meta, cost_from = old.remote_cost, str(old.remote_cost["remote"])
        causes = root_causes(
            changes, upstream_records(list(old.upstreams)), upstream_records(list(new.upstreams))
        )
        results.append(
            CacheChange(
                config_key,
                "invalidated",
                old,
                new,
                tuple(changes),
                meta.get("size_bytes"),
                meta.get("build_seconds"),
                tuple(causes),
                cost_from,
            )
        )
    everything = leaf_diff(base.values if base else None, head.values)
    unrelated = tuple(
        c for c in everything if c.key not in affecting and not c.key.startswith("hydra_cache.root")
    )
    return Report(tuple(shown_overrides(overrides)), tuple(results), unrelated)


# ----------------------------------------------------------------------------- composing


def compose_side(config_dir: str, config_name: str, overrides: list[str]) -> Side:
    """The cache dirs and values of one composed config, in this process."""
    from hydra_cache.composing import compose_config
    from hydra_cache.key import config_values
    from hydra_cache.resolver import resolve_all

    cfg = compose_config(config_dir, config_name, overrides)
    caches = {}
    for item in resolve_all(cfg):
        info = registry.lookup(item.path)
        caches[item.config_key] = CacheDir(
            item.config_key,
            item.namespace,
            item.derived.key,
            str(item.root.path),
            item.path,
            item.derived.redacted_payload(),
            tuple(info.upstreams) if info else (),
            _remote_cost(item.path, info),
        )
    return Side(caches, config_values(cfg))


def _remote_cost(path: str, info: registry.EntryInfo | None) -> dict[str, Any] | None:
    """Size and build time from the remote's manifest (one request, no writes), when the
    entry is not on this machine and a remote is configured; None otherwise."""
    if info is None or info.remote is None or CacheEntry(path).ready:
        return None
    from hydra_cache.store.remote import ops

    found = ops.lookup(info.remote, info.namespace, info.key)
    if found.status != "present" or found.manifest is None:
        return None
    seconds = found.manifest.raw.get("build_seconds")
    return {
        "remote": found.where,
        "size_bytes": found.manifest.size_bytes,
        "build_seconds": float(seconds) if isinstance(seconds, (int, float)) else None,
    }


def sides_at(
    tree: Path, config_dir: Path, config_name: str, sets: Sequence[list[str]]
) -> list[Side]:
    """The sides of every override set, composed in a subprocess that imports code from
    ``tree`` first: code fingerprints then see each revision's own code, not the checkout's.
    """
    request = {
        "tree": str(tree),
        "config_dir": str(config_dir),
        "config_name": config_name,
        "sets": [list(chosen) for chosen in sets],
    }
    with tempfile.TemporaryDirectory(prefix="hydra-cache-side-") as scratch:
        answer = Path(scratch) / "sides.json"
        request["answer"] = str(answer)
        done = subprocess.run(
            [sys.executable, "-c", _SERVE, json.dumps(request)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not answer.exists():
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise ConfigError(lines[-1] if lines else f"composing failed (exit {done.returncode})")
        found = json.loads(answer.read_text(encoding="utf-8"))
    return [
        Side({k: CacheDir(**v) for k, v in side["caches"].items()}, side["values"])
        for side in found
    ]


_SERVE = (
    "import sys\nfrom hydra_cache.explain.diff import serve_sides\n"
    "sys.exit(serve_sides(sys.argv[1]))"
)


def serve_sides(request_text: str) -> int:
    """The subprocess half of :func:`sides_at` (errors: one line on stderr, exit 2)."""
    request = json.loads(request_text)
    sys.path.insert(0, request["tree"])
    try:
        sides = [
            compose_side(request["config_dir"], request["config_name"], chosen)
            for chosen in request["sets"]
        ]
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return 2
    payload = [
        {
            "caches": {
                k: {**dataclasses.asdict(v), "upstreams": list(v.upstreams)}
                for k, v in side.caches.items()
            },
            "values": side.values,
        }
        for side in sides
    ]
    Path(request["answer"]).write_text(json.dumps(payload, default=str), encoding="utf-8")
    return 0


# ----------------------------------------------------------------------------- rendering


def _cost(reports: Sequence[Report]) -> tuple[int, int, float, int]:
    """Distinct invalidated base entries: count, bytes, seconds, how many have unknown cost."""
    seen: dict[str, CacheChange] = {}
    for report in reports:
        for change in report.invalidated:
            assert change.base is not None
            seen.setdefault(change.base.path, change)
    size = sum(c.size_bytes or 0 for c in seen.values())
    seconds = sum(c.build_seconds or 0.0 for c in seen.values())
    unknown = sum(1 for c in seen.values() if c.size_bytes is None)
    return len(seen), size, seconds, unknown


def summary_line(reports: Sequence[Report]) -> str:
    count, size, seconds, unknown = _cost(reports)
    if count == 0:
        return "no cache invalidated"
    noun = "cache" if count == 1 else "caches"
    if unknown == count:
        return f"{count} {noun} invalidated, size and rebuild time unknown"
    duration = human_duration(seconds)
    cost = f"~{human_size(size)} / {'' if duration.startswith('<') else '~'}{duration} to rebuild"
    if unknown:
        cost += f" ({unknown} of {count} unknown)"
    return f"{count} {noun} invalidated, {cost}"


def _entry(cache: CacheDir | None) -> str:
    return f"{cache.namespace}/{cache.key}" if cache else "-"


def _cost_text(change: CacheChange) -> str:
    if change.size_bytes is None:
        return "cost unknown"
    seconds = human_duration(change.build_seconds or 0.0)
    remote = f", from {change.cost_from}" if _from_remote(change) else ""
    return f"{human_size(change.size_bytes)}, {seconds} to rebuild{remote}"


def _from_remote(change: CacheChange) -> bool:
    return change.cost_from not in (None, "local")


def render_text(reports: Sequence[Report], title: str) -> str:
    lines = [f"hydra-cache diff: {title}", summary_line(reports)]
    for report in reports:
        if len(reports) > 1 or report.overrides:
            lines.append(f"\nwith overrides: {' '.join(report.overrides) or '(none)'}")
        width = max((len(c.config_key) for c in report.caches), default=0)
        for change in report.caches:
            where = {
                "added": _entry(change.head),
                "removed": _entry(change.base),
                "unchanged": _entry(change.head),
            }.get(change.status, f"{_entry(change.base)} -> {_entry(change.head)}")
            line = f"{change.status:<11}  {change.config_key:<{width}}  {where}"
            if change.status == "invalidated":
                line += f"  ({_cost_text(change)})"
            lines.append(line)
            lines += [f"    {cause}" for cause in change.causes]
            lines += [f"    {c}" for c in change.own_changes]
        if not report.caches:
            lines.append("no ${cache_dir:} in this config")
        if report.unrelated:
            lines.append("not affecting any cache:")
            lines += [f"    {c}" for c in report.unrelated]
    return "\n".join(lines)


def _md(value: Any) -> str:
    text = value if isinstance(value, str) and value.startswith("<") else json.dumps(value)
    return "`" + str(text).replace("`", "'").replace("|", "\\|") + "`"


def _md_text(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _md_change(change: LeafChange) -> str:
    if is_redacted(change.old) or is_redacted(change.new):
        return f"`{change.key}`: changed (secret)"
    if change.kind == "added":
        return f"`{change.key}`: (absent) → {_md(change.new)}"
    if change.kind == "removed":
        return f"`{change.key}`: {_md(change.old)} → (absent)"
    return f"`{change.key}`: {_md(change.old)} → {_md(change.new)}"


def render_markdown(reports: Sequence[Report], title: str) -> str:
    """A pull-request comment: a summary line, a table per override set, other changes."""
    lines = [MARKER, f"### hydra-cache: {summary_line(reports)}", "", title]
    remotes: set[str] = set()
    for report in reports:
        lines.append("")
        if len(reports) > 1 or report.overrides:
            lines += [f"**Overrides:** `{' '.join(report.overrides) or '(none)'}`", ""]
        if not report.caches:
            lines.append("No `${cache_dir:}` in this config.")
            continue
        lines += [
            "| cache | status | entry | what changed | size | rebuild |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for change in report.caches:
            status = f"**{change.status}**" if change.status == "invalidated" else change.status
            entry = {
                "invalidated": f"`{_entry(change.base)}` → `{_entry(change.head)}`",
                "removed": f"`{_entry(change.base)}`",
            }.get(change.status, f"`{_entry(change.head)}`")
            what = "<br>".join(
                [*(_md_text(cause) for cause in change.causes)]
                + [_md_change(c) for c in change.own_changes]
            )
            size = rebuild = ""
            if change.status == "invalidated":
                known = change.size_bytes is not None
                size = human_size(change.size_bytes or 0) if known else "unknown"
                rebuild = human_duration(change.build_seconds or 0.0) if known else "unknown"
                if known and _from_remote(change):
                    size += " ¹"
                    remotes.add(str(change.cost_from))
            lines.append(
                f"| `{change.config_key}` | {status} | {entry} | {what} | {size} | {rebuild} |"
            )
        if report.unrelated:
            count = len(report.unrelated)
            noun = "change" if count == 1 else "changes"
            lines += [
                "",
                f"<details><summary>{count} config {noun} not affecting any cache</summary>",
                "",
            ]
            lines += [f"- {_md_change(c)}" for c in report.unrelated]
            lines += ["", "</details>"]
    if remotes:
        where = ", ".join(f"`{r}`" for r in sorted(remotes))
        lines += ["", f"¹ size and build time read from the team's remote {where}."]
    return "\n".join(lines) + "\n"


def render_json(reports: Sequence[Report], title: str) -> str:
    count, size, seconds, unknown = _cost(reports)
    return json.dumps(
        {
            "title": title,
            "summary": summary_line(reports),
            "invalidated": count,
            "size_bytes": size,
            "build_seconds": seconds,
            "unknown_cost": unknown,
            "sets": [
                {
                    "overrides": list(r.overrides),
                    "caches": [c.as_dict() for c in r.caches],
                    "unrelated": [vars(c) for c in r.unrelated],
                }
                for r in reports
            ],
        },
        indent=1,
        default=str,
    )
