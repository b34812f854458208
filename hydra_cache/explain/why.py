"""Why is the cached training file missing? One answer per entry, with the evidence.

For an entry that is not ready, the most specific of these applies:

- ``building``: a live process holds the lock (host, pid, for how long);
- ``torn``: a build was killed and left its staging folder;
- ``evicted``: ``hydra-cache gc`` removed it (the journal says when and why);
- ``deleted``: the journal says it was published, and no hydra-cache deletion is recorded;
- ``root-moved``: the same key is ready under another root this user has used;
- ``volatile``: the key holds a per-run value, so it can never hit;
- ``key-changed``: other entries of the namespace exist; the nearest is shown as a leaf diff;
- ``never-built``: nothing of this namespace was ever built under this root.

With a remote (``hydra_cache.remote``), a local miss is first looked up there, with one request
and no writes: ``on-remote`` (the team's copy will be pulled, by whom and when it was built,
how big), ``remote-torn`` (the manifest is there, but a pull on this machine found blobs
missing or corrupt, as the journal records), or ``remote-refused`` (a manifest this process
would not trust: unsigned or badly signed when a key is set). When the remote has nothing, or
cannot be asked, the local explanation stands and says so in one more line.

Everything shown comes from redacted payloads: a secret never reaches an explanation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache.key.leafdiff import (
    CODE_PREFIX,
    INPUT_PREFIX,
    LeafChange,
    leaf_diff,
    root_causes,
    schema_of,
    upstream_records,
)
from hydra_cache.registry import EntryInfo
from hydra_cache.store import journal
from hydra_cache.store.entry import METADATA_NAME, CacheEntry, EntryState
from hydra_cache.units import human_duration, human_size, plural


@dataclass(frozen=True)
class Explanation:
    """Why one cache dir is (not) ready: a kind, one line, details and the raw evidence."""

    kind: str
    summary: str
    details: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def is_miss(self) -> bool:
        return self.kind != "hit"

    def as_text(self) -> str:
        return "\n".join([self.summary, *(f"    {line}" for line in self.details)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "details": list(self.details),
            "evidence": self.evidence,
        }


def describe_change(
    change: LeafChange, old_inputs: dict[str, Any] | None, new_inputs: dict[str, Any] | None
) -> str:
    """One line for a change; input and code fingerprints are said in words."""
    if change.key.startswith(INPUT_PREFIX):
        name = change.key[len(INPUT_PREFIX) :]
        before = (old_inputs or {}).get(name) or {}
        after = (new_inputs or {}).get(name) or {}
        if change.kind != "changed" or not before or not after:
            return (
                f"input {name} was {'added to' if change.kind == 'added' else 'dropped from'}"
                " the key"
                if change.kind != "changed"
                else f"input {name} changed on disk"
            )
        return (
            f"input {name} changed on disk since the entry was built (size "
            f"{human_size(before.get('bytes', 0))} -> {human_size(after.get('bytes', 0))}, "
            f"modified {before.get('modified')} -> {after.get('modified')})"
        )
    if change.key.startswith(CODE_PREFIX):
        name = change.key[len(CODE_PREFIX) :]
        if change.kind == "added":  # the entry was built before fingerprints were switched on
            return f"a code fingerprint of {name} was added to the key (hydra_cache.code)"
        if change.kind == "removed":
            return f"the code fingerprint of {name} was dropped from the key (hydra_cache.code)"
        return f"the source of {name} changed since the entry was built"
    return str(change)


def published_entries(namespace_dir: Path) -> Iterator[dict[str, Any]]:
    """Metadata of every published entry in one namespace folder (symlinks are not followed)."""
    try:
        items = list(os.scandir(namespace_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    for item in items:
        if item.name.startswith(".") or not item.is_dir(follow_symlinks=False):
            continue
        try:
            with open(os.path.join(item.path, METADATA_NAME), encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            yield meta


def explain(path: str | Path, info: EntryInfo | None = None) -> Explanation:
    """Explain the state of the cache dir at ``path`` (``info`` is how it was derived)."""
    here = _explain_here(path, info)
    if not here.is_miss or here.kind in ("building", "torn") or info is None or not info.remote:
        return here
    return _with_remote(here, info)


def _with_remote(here: Explanation, info: EntryInfo) -> Explanation:
    """The local miss, seen from the remote: one lookup request, never a write."""
    from hydra_cache.store.remote import ops

    assert info.remote is not None
    found = ops.lookup(info.remote, info.namespace, info.key)
    evidence = {**here.evidence, "remote": found.as_dict()}
    where = found.where
    if found.status == "absent":
        note = f"not on the remote {where} either"
        return Explanation(here.kind, here.summary, (*here.details, note), evidence)
    if found.status == "unreachable":
        note = f"the remote {where} could not be asked: {found.problem}"
        return Explanation(here.kind, here.summary, (*here.details, note), evidence)
    locally = f"on this machine: {here.summary}"
    if found.status == "refused":
        return Explanation(
            "remote-refused",
            f"on the remote {where}, but its manifest is refused: {found.problem}; it will be "
            "built here",
            (
                locally,
                "fix: push it again from a machine with the signing key after "
                "'hydra-cache gc --remote' removes the refused manifest",
            ),
            evidence,
        )
    assert found.manifest is not None
    by = found.manifest.built_by
    size = human_size(found.manifest.size_bytes)
    built = f"built by host {by.get('host', '?')} on {by.get('time', '?')} ({size})"
    torn = _last_torn(Path(info.root), info.namespace, info.key)
    if torn is not None:
        problems = [str(p) for p in torn.get("problems") or []]
        evidence["remote_torn"] = torn
        return Explanation(
            "remote-torn",
            f"remote-torn: on the remote {where}, {built}, but a pull here on "
            f"{torn.get('time', '?')} found {plural(len(problems), 'blob')} missing or corrupt; "
            "it will be built here (and repaired on the remote in read-write mode)",
            (*problems[:10], locally, "check every entry: hydra-cache verify --remote"),
            evidence,
        )
    seconds = found.manifest.raw.get("build_seconds")
    took = (
        f"; building it took {human_duration(float(seconds))} there"
        if isinstance(seconds, (int, float))
        else ""
    )
    return Explanation(
        "on-remote",
        f"not on this machine, but on the remote {where}, {built}: it will be pulled",
        (f"{plural(len(found.manifest.blobs()), 'distinct file')}{took}", locally),
        evidence,
    )


def _last_torn(root: Path, namespace: str, key: str) -> dict[str, Any] | None:
    """The journal's newest ``remote-torn`` record of the entry, unless a repair followed."""
    events = [
        r
        for r in journal.history(root, namespace, key)
        if r.get("event") in ("remote-torn", "remote-repaired")
    ]
    return events[-1] if events and events[-1].get("event") == "remote-torn" else None


def _explain_here(path: str | Path, info: EntryInfo | None = None) -> Explanation:
    """The local half of :func:`explain`."""
    entry = CacheEntry(path)
    info = info if info is not None else entry.info  # derived in this process: diffable
    target = entry.path
    namespace = info.namespace if info else target.parent.name
    key = info.key if info else target.name
    root = Path(info.root) if info else target.parent.parent
    state = entry.state()
    evidence: dict[str, Any] = {
        "path": str(target),
        "root": str(root),
        "namespace": namespace,
        "key": key,
        "status": state.status,
    }
    if state.status == "hit":
        meta = entry.metadata() or {}
        uncovered = (meta.get("audit") or {}).get("uncovered") or []
        evidence["uncovered"] = uncovered
        return Explanation(
            "hit",
            f"hit: {target} (built {meta.get('created', '?')} by run {meta.get('run_dir') or '?'})",
            tuple(
                f"its build read {key}, which is not part of its key: runs that differ only "
                f"in {key} share this entry"
                for key in uncovered
            ),
            evidence=evidence,
        )
    elsewhere = _ready_elsewhere(root, namespace, key)
    also = [
        f"also: the same entry is ready under {other} (built {meta.get('created', '?')})"
        for other, meta in elsewhere
    ]
    for check in (_building, _torn):
        found = check(target, state, evidence)
        if found:
            return Explanation(found[0], found[1], (*found[2], *also), evidence)
    history = journal.history(root, namespace, key)
    if history:
        found = _from_journal(target, history, evidence)
        if found:
            return Explanation(found[0], found[1], (*found[2], *also), evidence)
    if elsewhere:
        return _root_moved(target, root, elsewhere, evidence)
    if info and info.volatile:
        return _volatile(target, info, evidence)
    return _key_changed_or_never(target, root, namespace, info, evidence)


Finding = tuple[str, str, tuple[str, ...]]


def _building(target: Path, state: EntryState, evidence: dict[str, Any]) -> Finding | None:
    if state.status != "building" or state.holder is None:
        return None
    holder = state.holder
    age = time.time() - float(holder.get("since", time.time()))
    evidence["holder"] = holder
    return (
        "building",
        f"building now: {holder.get('host')}:{holder.get('pid')} has been "
        f"building {target} for {human_duration(age)}",
        ("it will be reused when published; waiters poll for it",),
    )


def _torn(target: Path, state: EntryState, evidence: dict[str, Any]) -> Finding | None:
    if state.status != "torn":
        return None
    dead = [item for item in state.leftovers if item.alive is not True]
    evidence["leftovers"] = [item.name for item in dead]
    first = dead[0]
    how = "was killed" if first.alive is False else "on another host did not finish"
    return (
        "torn",
        f"torn: a build by {first.host}:{first.pid} {how} {human_duration(first.age_seconds)} "
        f"ago and left {target.parent / first.name}",
        ("the next build removes its leftovers and rebuilds the entry",),
    )


def _from_journal(
    target: Path, history: list[dict[str, Any]], evidence: dict[str, Any]
) -> Finding | None:
    publishes = [r for r in history if r.get("event") == "publish"]
    if not publishes:
        return None
    last = publishes[-1]
    deletions = [
        r
        for r in history
        if r.get("event") == "delete" and float(r.get("unix", 0)) >= float(last.get("unix", 0))
    ]
    built = (
        f"it was built {last.get('time')} by {last.get('host')}:{last.get('pid')}"
        f" (run {last.get('run_dir') or 'unknown'})"
    )
    evidence["published"] = last
    if deletions:
        gone = deletions[-1]
        evidence["deleted"] = gone
        reason = gone.get("reason", "?")
        kind, by = {
            "gc": ("evicted", "evicted by hydra-cache gc"),
            "verify": ("damaged", "moved aside as damaged by hydra-cache verify"),
        }.get(reason, ("deleted", f"deleted by hydra-cache ({reason})"))
        return (
            kind,
            f"{by}: {target} was removed {gone.get('time')} ({gone.get('detail') or 'no detail'})",
            (
                built,
                *(
                    [f"the damaged copy is kept at {gone['moved_to']}"]
                    if gone.get("moved_to")
                    else []
                ),
            ),
        )
    return (
        "deleted",
        f"deleted outside hydra-cache: {target} was published, and hydra-cache "
        "recorded no deletion (a person, a script or a cron job removed it)",
        (built, "the next build recreates it"),
    )


def _ready_elsewhere(root: Path, namespace: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for other in journal.known_roots():
        if Path(other) == root:
            continue
        meta = CacheEntry(Path(other) / namespace / key).metadata()
        if meta is not None:
            found.append((other, meta))
    return found


def _root_moved(
    target: Path,
    root: Path,
    elsewhere: list[tuple[str, dict[str, Any]]],
    evidence: dict[str, Any],
) -> Explanation:
    other, meta = elsewhere[0]
    there = Path(other) / target.parent.name / target.name
    evidence["ready_under"] = [name for name, _ in elsewhere]
    source = meta.get("root_source") or "?"
    return Explanation(
        "root-moved",
        f"root moved: this key is ready under {other} (root from {source} then), "
        f"but the root is now {root}",
        (
            f"built {meta.get('created', '?')} by {meta.get('host')}:{meta.get('pid')} "
            f"(run {meta.get('run_dir') or 'unknown'})",
            f"fix: point back with hydra_cache.root={other}",
            # The new root as hydra-cache makes one (0700, with its marker), so ls, verify
            # and gc accept it at once.
            f"  or copy the entry: mkdir -p -m 700 {root} {root}/.hydra-cache && "
            f"mkdir -p {target.parent} && cp -a {there} {target.parent}/",
        ),
        evidence,
    )


def _volatile(target: Path, info: EntryInfo, evidence: dict[str, Any]) -> Explanation:
    evidence["volatile"] = list(info.volatile)
    names = ", ".join(info.volatile)
    return Explanation(
        "volatile",
        f"volatile key: {names} holds a per-run value, so {info.config_key} gets a new key on "
        "every run and never hits",
        (f"fix: move {names} out of the hashed node, or add it to hydra_cache.exclude",),
        evidence,
    )


def _key_changed_or_never(
    target: Path, root: Path, namespace: str, info: EntryInfo | None, evidence: dict[str, Any]
) -> Explanation:
    siblings = list(published_entries(target.parent))
    others: set[str] = set()
    if info is not None and info.project is not None:
        # Another project's entries of a namespace with the same name ("data") explain nothing
        # about this one's miss; entries that recorded no project may be this project's.
        ours = (None, info.project)
        others = {str(m["project"]) for m in siblings if m.get("project") not in ours}
        siblings = [m for m in siblings if m.get("project") in ours]
    if siblings and info is None:
        return Explanation(
            "key-changed",
            f"not built: {plural(len(siblings), 'other entry', 'other entries')} of namespace "
            f"{namespace} {'exists' if len(siblings) == 1 else 'exist'} under {root}, but how "
            f"{target.name} was derived is unknown "
            "here, so no values can be compared",
            ("fix: run 'hydra-cache why' with the job's config (-cd/-cn and its overrides)",),
            evidence,
        )
    if not siblings or info is None:
        project = f" of project {info.project}" if others and info is not None else ""
        besides = (
            f" ({plural(len(others), 'other project')} use{'s' if len(others) == 1 else ''} "
            f"namespace {namespace}: {', '.join(sorted(others))})"
            if others
            else ""
        )
        return Explanation(
            "never-built",
            f"never built: no entry of namespace {namespace}{project} exists under {root}{besides}",
            ("the first run with on_miss=build builds it",),
            evidence,
        )
    described = [meta for meta in siblings if meta.get("payload") is not None]
    if not described:
        return Explanation(
            "key-changed",
            f"not built: {plural(len(siblings), 'entry', 'entries')} of namespace {namespace} "
            f"under {root} recorded no parameters to compare with (built by a process that did "
            "not derive their paths: a spawned worker, or CacheEntry(path) made by hand)",
            ("the first run with on_miss=build builds it",),
            evidence,
        )
    siblings = described
    scored = sorted(
        ((leaf_diff(meta.get("payload"), info.payload), meta) for meta in siblings),
        key=lambda item: (len(item[0]), -_unix(item[1])),
    )
    changes, nearest = scored[0]
    evidence["nearest"] = {
        "key": nearest.get("key"),
        "path": nearest.get("path"),
        "changes": [vars(c) for c in changes],
    }
    built = (
        f"nearest built {nearest.get('created', '?')} by run "
        f"{nearest.get('run_dir') or 'unknown'}: {nearest.get('path')}"
    )
    old_schema = schema_of(nearest.get("payload"))
    new_schema = schema_of(info.payload)
    if old_schema != new_schema:
        return Explanation(
            "key-changed",
            f"key changed: hydra-cache's key schema changed ({old_schema} -> {new_schema}), "
            f"so every key of {namespace} is new; the old entries are kept until gc",
            (built,),
            evidence,
        )
    causes = root_causes(
        changes,
        upstream_records(nearest.get("upstreams") or []),
        upstream_records(list(info.upstreams)),
    )
    if causes:
        evidence["upstream_causes"] = causes
    own = [c for c in changes if c.upstreams() == ([], [])]
    shown = [
        *causes,
        *(describe_change(c, nearest.get("inputs"), info.inputs) for c in own),
    ] or ["no visible value differs: a redacted value changed"]
    count = len(own) + len(causes)
    if causes and not own:
        if len(causes) == 1:
            summary, shown = f"key changed: {causes[0]}", []
        else:
            summary = f"key changed: {len(causes)} upstream cache dirs changed"
    else:
        verb = "value differs" if count == 1 else "values differ"
        summary = (
            f"key changed: {count} hashed {verb} from the nearest entry "
            f"{nearest.get('key')} of {namespace} ({len(siblings)} in all)"
        )
    return Explanation("key-changed", summary, (*shown, built), evidence)


def _unix(meta: dict[str, Any]) -> float:
    try:
        return os.stat(os.path.join(str(meta.get("path")), METADATA_NAME)).st_mtime
    except OSError:
        return 0.0
