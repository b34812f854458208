"""The subcommands: each composes (or finds the root), calls the module that does the work,
and renders what it got."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_cache.cli.parser import UsageError, parse
from hydra_cache.cli.render import (
    emit,
    iso,
    plural,
    say_root,
    short_time,
    table,
    values_text,
)
from hydra_cache.errors import HydraCacheError
from hydra_cache.units import human_duration, human_size

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    from hydra_cache import project

    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        defaults = project.load()
        args = parse(args_list, defaults)
        root_was_set = bool(os.environ.get("HYDRA_CACHE_ROOT"))
        project.apply(defaults)
        args.defaults = defaults
        args.project_root = (
            None
            if root_was_set or not defaults.root
            else f"root in {defaults.sources.get('root', 'pyproject.toml')}"
        )
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        return int(COMMANDS[args.command](args))
    except (HydraCacheError, OSError) as error:
        if debug:
            raise
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"hydra-cache: error: {text}", file=sys.stderr)
        return EXIT_USAGE


# ------------------------------------------------------------------ composing and resolving


def _compose(args: argparse.Namespace, overrides: list[str]) -> Any:
    from hydra_cache.composing import compose_config

    return compose_config(args.config_dir, args.config_name, list(overrides), app=args.app)


def _resolved(cfg: Any) -> list[Any]:
    from omegaconf.errors import OmegaConfBaseException

    from hydra_cache.errors import ConfigError
    from hydra_cache.resolver import resolve_all

    try:
        return resolve_all(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def _jobs(args: argparse.Namespace) -> list[list[str]]:
    """The sweep's jobs (``a=1,2`` expands as with ``--multirun``); one job without a sweep."""
    from hydra_cache.composing import expand_sweep

    return expand_sweep(list(args.overrides)) if args.overrides else [[]]


def _shown(overrides: list[str]) -> list[str]:
    """A job's overrides as they may be printed (secrets redacted, as in the manifest)."""
    from hydra_cache.key import shown_overrides

    return shown_overrides(overrides)


def _job_label(overrides: list[str]) -> str:
    return " ".join(_shown(overrides)) or "(no overrides)"


# ----------------------------------------------------------------------------- keys, why


def cmd_keys(args: argparse.Namespace) -> int:
    from hydra_cache import registry
    from hydra_cache.store.entry import CacheEntry

    jobs = _jobs(args)
    rows: list[dict[str, Any]] = []
    for number, overrides in enumerate(jobs):
        for item in _resolved(_compose(args, overrides)):
            entry = CacheEntry(item.path)
            uncovered = ((entry.metadata() or {}).get("audit") or {}).get("uncovered") or []
            info = registry.lookup(item.path)
            direct = {up.digest for up in item.derived.upstreams}
            # A key that holds a per-run value: no run ever has the key composed here.
            per_run = bool(item.derived.volatile)
            row = {
                "config_key": item.config_key,
                "namespace": item.namespace,
                "key": None if per_run else item.derived.key,
                "path": None if per_run else item.path,
                "status": "per-run" if per_run else entry.state().status,
                "root_source": item.root.source,
                "uncovered": uncovered,
                "per_run": list(item.derived.volatile),
                "upstreams": [
                    {k: up[k] for k in ("config_key", "namespace", "key")}
                    for up in (info.upstreams if info else ())
                    if up["digest"] in direct
                ],
            }
            if len(jobs) > 1:
                row = {"job": number, "overrides": _shown(overrides), **row}
            rows.append(row)
    header = ["config key", "namespace", "key", "status", "upstreams", "path"]
    cells = [
        [
            r["config_key"],
            r["namespace"],
            r["key"] or "(per-run)",
            r["status"] + (f" (uncovered: {', '.join(r['uncovered'])})" if r["uncovered"] else ""),
            ", ".join(u["config_key"] for u in r["upstreams"]) or "-",
            r["path"] or f"a new key on every run: {', '.join(r['per_run'])} is per-run",
        ]
        for r in rows
    ]
    if len(jobs) > 1:
        header = ["job", *header]
        cells = [[str(r["job"]), *cell] for r, cell in zip(rows, cells)]
    text = table([header, *cells]) if rows else "no ${cache_dir:} found"
    if len(jobs) > 1:
        legend = [f"job {n}: {_job_label(o)}" for n, o in enumerate(jobs)]
        distinct = len({r["path"] for r in rows})
        text = "\n".join(
            [
                *legend,
                text,
                f"{plural(len(jobs), 'job')} use "
                f"{plural(distinct, 'distinct cache entry', 'distinct cache entries')}",
            ]
        )
    emit(args.format, rows, text)
    return EXIT_OK


def cmd_why(args: argparse.Namespace) -> int:
    from hydra_cache import registry
    from hydra_cache.explain import explain

    jobs = _jobs(args)
    rows: list[dict[str, Any]] = []
    blocks: list[str] = []
    for number, overrides in enumerate(jobs):
        for item in _resolved(_compose(args, overrides)):
            explanation = explain(item.path, registry.lookup(item.path))
            row = {"config_key": item.config_key, "path": item.path, **explanation.as_dict()}
            if len(jobs) > 1:
                row = {"job": number, "overrides": _shown(overrides), **row}
            rows.append(row)
            if explanation.is_miss or explanation.details:
                where = f"[job {number}: {_job_label(overrides)}] " if len(jobs) > 1 else ""
                blocks.append(f"{where}{item.config_key}: {explanation.as_text()}")
    ready = sum(1 for row in rows if row["kind"] == "hit")
    if not rows:
        summary = "no ${cache_dir:} found"
    elif ready == 1 and len(rows) == 1:
        summary = "the 1 cache dir is ready"
    else:
        summary = f"all {ready} cache dirs are ready"
    emit(args.format, rows, "\n".join(blocks) if blocks else summary)
    return EXIT_OK


# ------------------------------------------------------------------------------ the root


def _root(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
    """The root a maintenance command works on, from the same place the app takes it:
    ``--root``, else the selected config's ``hydra_cache.root``, else the environment.
    ``must_exist=False`` for ``pull``, which may be the first thing a new machine runs."""
    from hydra_cache.store.roots import Root, check_root, require_root, select_root

    here = os.getcwd()
    if args.root is not None:
        root = Root(select_root(args.root, base_dir=here).path, "--root")
    else:
        configured, where = None, ""
        if args.config_selected:
            configured, where = _configured_root(args)
        root = select_root(configured, base_dir=here)
        if root.source == "hydra_cache.root":
            root = Root(root.path, f"hydra_cache.root in {where}")
        elif args.project_root and root.source == "$HYDRA_CACHE_ROOT":
            root = Root(root.path, args.project_root)
    check_root(root)
    if must_exist:
        require_root(root.path, "--root" if args.root is not None else root.source)
    say_root(root.path, root.source)
    return root.path


def _settings(args: argparse.Namespace, overrides: list[str] | None = None) -> tuple[Any, str]:
    """The selected config's checked ``hydra_cache`` settings, and how to name the config
    (composed with ``overrides``, one job of a sweep; default: the command line's)."""
    from omegaconf import OmegaConf

    from hydra_cache.errors import ConfigError
    from hydra_cache.settings import parse_settings

    cfg = _compose(args, list(args.overrides if overrides is None else overrides))
    where = f"the config {args.config_name or 'of ' + str(args.app)}"
    node = OmegaConf.select(cfg, "hydra_cache", default=None)
    if node is None:
        return parse_settings(None), where
    try:
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"hydra_cache: cannot resolve it ({first}); fix: correct it") from None
    return parse_settings(value), where  # type: ignore[arg-type]


def _configured_root(args: argparse.Namespace) -> tuple[str | None, str]:
    settings, where = _settings(args)
    return settings.root, where


def _remote_spec(args: argparse.Namespace, overrides: list[str] | None = None) -> Any:
    """The remote a command works on: the selected config's ``hydra_cache.remote``, else
    ``$HYDRA_CACHE_REMOTE``; a usage error when neither names one."""
    from hydra_cache.store.remote import parse_remote

    spec = _settings(args, overrides)[0].remote if args.config_selected else parse_remote(None)
    if spec is None:
        raise UsageError(
            f"{args.command} --remote needs a remote; fix: set hydra_cache.remote in the config "
            "(e.g. s3://bucket/prefix) or $HYDRA_CACHE_REMOTE"
        )
    return spec


# ----------------------------------------------------------------------------- ls, show


def cmd_ls(args: argparse.Namespace) -> int:
    from hydra_cache import maintenance
    from hydra_cache.store.eviction import scan

    if args.remote:
        return _ls_remote(args)
    root = _root(args)
    rows: list[dict[str, Any]] = []
    for found in sorted(scan(root, args.namespace), key=lambda f: (f.namespace, f.last_used)):
        meta = found.metadata
        row: dict[str, Any] = {
            "namespace": found.namespace,
            "key": found.key,
            "status": "ready",
            "size_bytes": found.size_bytes,
            "build_seconds": meta.get("build_seconds"),
            "created": iso(meta.get("created")),
            "last_used": iso(found.last_used),
            "run_dir": meta.get("run_dir"),
            "config_key": meta.get("config_key"),
            "path": str(found.path),
        }
        if args.params:
            row["parameters"] = maintenance.parameters(meta)
        rows.append(row)
    for running in maintenance.in_progress(root, args.namespace):
        rows.append(
            {
                "namespace": running.namespace,
                "key": running.key,
                "status": running.state.status,
                "size_bytes": None,
                "build_seconds": None,
                "created": None,
                "last_used": None,
                "run_dir": None,
                "config_key": None,
                "path": str(running.path),
                "holder": running.state.holder,
                "running_seconds": running.age_seconds,
            }
        )
    if args.plot:
        from hydra_cache.cli.plot import draw

        draw([r for r in rows if r["status"] == "ready"], Path(args.plot), root)
        print(f"wrote {args.plot}", file=sys.stderr)
    header = ["namespace", "key", "size", "created", "last used", "built by run"]
    if args.params:
        header.append("parameters")
    cells = []
    for r in rows:
        if r["status"] == "ready":
            cell = [
                r["namespace"],
                r["key"],
                human_size(r["size_bytes"]),
                short_time(r["created"]),
                short_time(r["last_used"]),
                r["run_dir"] or "-",
            ]
        else:
            who = r["holder"] or {}
            doing = (
                f"building now by {who.get('host', '?')}:{who.get('pid', '?')}"
                if r["status"] == "building"
                else "torn (a killed build's leftovers; gc removes them)"
            )
            since = r["running_seconds"]
            cell = [
                r["namespace"],
                r["key"],
                "-",
                "-",
                "-",
                doing + (f", for {human_duration(since)}" if since is not None else ""),
            ]
        if args.params:
            cell.append(values_text(r.get("parameters") or {}))
        cells.append(cell)
    text = table([header, *cells]) if rows else f"no entries under {root}"
    emit(args.format, rows, text)
    return EXIT_OK


def _ls_remote(args: argparse.Namespace) -> int:
    from hydra_cache.store.remote import ops

    spec = _remote_spec(args)
    listed = ops.entries(spec, args.namespace)
    rows = [item.as_dict() for item in listed]
    cells = [
        [
            item.namespace,
            item.key,
            human_size(item.size_bytes),
            f"{item.built_by.get('host', '?')} ({item.built_by.get('user', '?')})",
            short_time(str(item.built_by.get("time") or "")) or "-",
            human_duration(item.build_seconds) if item.build_seconds is not None else "-",
            str(item.files),
            f"refused: {item.problem}" if item.problem else "",
        ]
        for item in listed
    ]
    header = ["namespace", "key", "size", "built by", "built", "build time", "files", ""]
    total = human_size(sum(item.size_bytes for item in listed))
    text = (
        table([header, *cells])
        + f"\n{plural(len(listed), 'entry', 'entries')} on {spec.url.redacted()}, {total}"
        if listed
        else f"no entries on {spec.url.redacted()}"
    )
    emit(args.format, rows, text)
    return EXIT_OK


def _one_entry(root: Path, spec: str) -> Any:
    from hydra_cache import maintenance
    from hydra_cache.errors import ConfigError

    found = maintenance.find(root, spec)
    if not found:
        raise ConfigError(spec, f"is not an entry under {root}", "see hydra-cache ls")
    if len(found) > 1:
        names = ", ".join(f"{f.namespace}/{f.key}" for f in found)
        raise ConfigError(spec, f"names {len(found)} entries ({names})", "give NAMESPACE/KEY")
    return found[0]


def cmd_show(args: argparse.Namespace) -> int:
    from hydra_cache import maintenance

    root = _root(args)
    found = _one_entry(root, args.key)
    meta = dict(found.metadata.raw)
    params = maintenance.parameters(meta)
    files: dict[str, dict[str, Any]] = meta.get("files") or {}
    upstreams = meta.get("upstreams") or []
    audit = meta.get("audit")
    row = {**meta, "parameters": params, "last_used": iso(found.last_used)}
    lines = [
        f"{found.namespace}/{found.key}",
        f"  path        {found.path}",
        f"  config key  {meta.get('config_key') or '-'}",
        f"  project     {meta.get('project') or '-'}",
        f"  digest      {meta.get('digest') or '-'}",
        f"  built       {short_time(iso(meta.get('created')))} by "
        f"{meta.get('host', '?')}:{meta.get('pid', '?')} in "
        f"{human_duration(float(meta.get('build_seconds') or 0))}, "
        f"run {meta.get('run_dir') or '-'}",
        f"  last used   {short_time(iso(found.last_used))}",
        f"  size        {human_size(found.size_bytes)} in {plural(len(files), 'file')}",
        "  parameters" + ("" if params else "  (none recorded)"),
        *[f"    {name} = {value!r}" for name, value in params.items()],
        "  files",
        *[f"    {name}  {human_size(info.get('size', 0))}" for name, info in sorted(files.items())],
    ]
    if upstreams:
        lines.append("  upstreams")
        lines += [f"    {_upstream_text(item, root)}" for item in upstreams]
    if meta.get("inputs"):
        lines.append("  inputs")
        lines += [
            f"    {name}: {values_text(info or {})}"
            for name, info in (meta["inputs"] or {}).items()
        ]
    if audit is None:
        lines.append("  audit       not audited (hydra_cache.audit=true records reads)")
    elif audit.get("uncovered"):
        lines.append(
            f"  audit       the build read values outside its key: {', '.join(audit['uncovered'])}"
        )
    else:
        lines.append("  audit       every value the build read is in its key")
    emit(args.format, row, "\n".join(lines))
    return EXIT_OK


def _upstream_text(item: Any, root: Path) -> str:
    """``data.cache_dir: data/7adc8c88f537631e`` (and whether it is still under the root)."""
    if not isinstance(item, dict):
        return str(item)
    name = item.get("config_key") or "?"
    where = f"{item.get('namespace', '?')}/{item.get('key') or str(item.get('digest', ''))[:16]}"
    present = (root / where).is_dir()
    return f"{name}: {where}" + ("" if present else " (not under this root now)")


# ------------------------------------------------------------------------ rm, gc, verify


def cmd_rm(args: argparse.Namespace) -> int:
    from hydra_cache import maintenance
    from hydra_cache.store.eviction import scan

    if not args.key and not args.namespace:
        raise UsageError("rm needs KEY or --namespace NS; fix: e.g. hydra-cache rm data/<key>")
    root = _root(args)
    chosen = [_one_entry(root, spec) for spec in args.key]
    if args.namespace:
        chosen += scan(root, args.namespace)
    results = maintenance.remove(root, chosen)
    rows: list[dict[str, Any]] = [
        {
            "namespace": f.namespace,
            "key": f.key,
            "path": str(f.path),
            "size_bytes": f.size_bytes,
            "removed": removed,
            "detail": why,
        }
        for f, removed, why in results
    ]
    lines = [
        f"removed {r['namespace']}/{r['key']} ({human_size(r['size_bytes'])})"
        if r["removed"]
        else f"skipped {r['namespace']}/{r['key']}: {r['detail']}"
        for r in rows
    ]
    removed = [r for r in rows if r["removed"]]
    lines.append(
        f"removed {plural(len(removed), 'cache entry', 'cache entries')}, "
        f"{human_size(sum(r['size_bytes'] for r in removed))}"
    )
    emit(args.format, rows, "\n".join(lines))
    return EXIT_OK if len(removed) == len(rows) else EXIT_FINDING


def cmd_gc(args: argparse.Namespace) -> int:
    from hydra_cache.progress import Progress
    from hydra_cache.store import eviction
    from hydra_cache.units import parse_age, parse_size

    if args.max_size is None and args.older_than is None:
        raise UsageError(
            "gc needs --max-size and/or --older-than; fix: e.g. hydra-cache gc --older-than 30d"
        )
    max_size = parse_size(args.max_size) if args.max_size is not None else None
    older = parse_age(args.older_than) if args.older_than is not None else None
    grace = parse_age(args.grace, "--grace")
    min_idle = parse_age(args.min_idle, "--min-idle")
    if args.remote:
        return _gc_remote(args, max_size, older, grace)
    root = _root(args)
    found = eviction.scan(root, args.namespace)
    with Progress(len(found), "gc") as step:
        report = eviction.collect(
            root,
            max_size=max_size,
            older_than=older,
            min_idle=min_idle,
            grace=grace,
            namespace=args.namespace,
            dry_run=args.dry_run,
            entries=found,
            progress=step,
        )
    rows = [row.as_dict(args.dry_run) for row in report.rows]
    lines = []
    for row in report.rows:
        size = f" ({human_size(row.size_bytes)})" if row.kind == "entry" else ""
        verb = {"skipped": "skipped (in use)", "failed": "failed to remove"}.get(
            row.outcome, row.outcome
        )
        detail = f" [{row.detail}]" if row.detail else ""
        lines.append(f"{verb} {row.path}{size}: {row.reason}{detail}")
    gone = [r for r in report.rows if r.outcome in ("removed", "would remove")]
    entries = [r for r in gone if r.kind == "entry"]
    verb = "would remove" if args.dry_run else "removed"
    lines.append(
        f"{verb} {plural(len(entries), 'entry', 'entries')}, "
        f"{human_size(sum(r.size_bytes for r in entries))}, "
        f"and {plural(len(gone) - len(entries), 'leftover')}"
    )
    failed = [r for r in report.rows if r.outcome == "failed"]
    if failed:
        lines.append(f"failed to remove {len(failed)}: see the lines above")
    if report.target_missed:
        lines.append(
            f"could not reach --max-size {human_size(report.max_size or 0)}: "
            f"{human_size(report.remaining_bytes)} remain in entries that are in use or "
            "being built"
        )
    lines += [f"could not journal: {text}" for text in report.journal_errors]
    emit(args.format, rows, "\n".join(lines))
    return EXIT_OK


def _gc_remote(
    args: argparse.Namespace, max_size: int | None, older: float | None, grace: float
) -> int:
    from hydra_cache.store.remote import ops

    spec = _remote_spec(args)
    if not spec.writes and not args.dry_run:
        raise UsageError(
            f"gc --remote would delete from {spec.url.redacted()}, which this config reads "
            "only (hydra_cache.remote.mode=read); fix: --dry-run, or mode=read-write"
        )
    report = ops.collect(
        spec,
        older_than=older,
        max_size=max_size,
        grace=grace,
        namespace=args.namespace,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    lines = [
        f"{verb} {r.kind} {r.name}"
        + (f" ({human_size(r.size_bytes)})" if r.kind != "lease" else "")
        + f": {r.reason}"
        for r in report.removed
    ]
    by_kind = {k: [r for r in report.removed if r.kind == k] for k in ("manifest", "blob", "lease")}
    lines.append(
        f"{verb} {plural(len(by_kind['manifest']), 'manifest')}, "
        f"{plural(len(by_kind['blob']), 'blob')} "
        f"({human_size(sum(r.size_bytes for r in by_kind['blob']))}) and "
        f"{plural(len(by_kind['lease']), 'expired lease')}; "
        f"{human_size(report.remaining_bytes)} remain referenced"
    )
    if report.young_blobs:
        lines.append(
            f"kept {plural(report.young_blobs, 'unreferenced blob')} younger than --grace "
            f"{args.grace} or than a live lease: an upload may be in flight"
        )
    if report.kept_live_leases:
        lines.append(f"kept {plural(len(report.kept_live_leases), 'live lease')}")
    rows = [r.as_dict() for r in report.removed]
    emit(args.format, rows, "\n".join(lines))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from hydra_cache.progress import Progress
    from hydra_cache.store.eviction import scan
    from hydra_cache.store.verify import verify

    if args.remote:
        return _verify_remote(args)
    if args.deep:
        raise UsageError("--deep is for verify --remote; fix: add --remote, or drop --deep")
    root = _root(args)
    total = len(scan(root, args.namespace))
    with Progress(total, "verify") as step:
        findings = verify(root, args.namespace, repair=args.repair, progress=step)
    rows: list[dict[str, Any]] = [
        {
            "path": str(f.path),
            "verdict": f.verdict,
            "problems": f.problems,
            "moved_to": str(f.moved_to) if f.moved_to else None,
            "note": f.note,
        }
        for f in findings
    ]
    lines = []
    for finding in findings:
        moved = f" (moved to {finding.moved_to})" if finding.moved_to else ""
        note = f" ({finding.note})" if finding.note else ""
        if finding.verdict == "evicted":
            lines.append(f"evicted {finding.path} while verify ran (not damage)")
            continue
        lines.append(f"{finding.verdict} {finding.path}{moved}{note}")
        lines += [f"    {problem}" for problem in finding.problems]
    damaged = [f for f in findings if f.verdict == "damaged"]
    if damaged:
        lines.append(
            f"{plural(len(damaged), 'damaged entry', 'damaged entries')} of {total} under {root}"
        )
    elif total == 1:
        lines.append(f"the 1 entry under {root} is intact")
    else:
        lines.append(f"all {plural(total, 'entry', 'entries')} under {root} are intact")
    emit(args.format, rows, "\n".join(lines))
    return EXIT_FINDING if damaged else EXIT_OK


def _verify_remote(args: argparse.Namespace) -> int:
    from hydra_cache.store.remote import ops

    if args.repair:
        raise UsageError(
            "verify --remote does not repair; fix: run the app (or hydra-cache build) in "
            "read-write mode: a torn entry is rebuilt and its blobs uploaded again"
        )
    spec = _remote_spec(args)
    found = ops.verify(spec, args.namespace, deep=args.deep)
    lines = []
    for item in found:
        if item.verdict != "intact":
            lines.append(f"{item.verdict} {item.namespace}/{item.key}")
            lines += [f"    {problem}" for problem in item.problems]
    bad = [item for item in found if item.verdict != "intact"]
    where = spec.url.redacted()
    how = "sizes and SHA-256" if args.deep else "sizes"
    if bad:
        lines.append(
            f"{len(bad)} of {plural(len(found), 'remote entry', 'remote entries')} on "
            f"{where} are torn or refused ({how} checked)"
        )
    else:
        lines.append(
            f"all {plural(len(found), 'remote entry', 'remote entries')} on {where} "
            f"are intact ({how} checked)"
        )
    emit(args.format, [item.as_dict() for item in found], "\n".join(lines))
    return EXIT_FINDING if bad else EXIT_OK


# ---------------------------------------------------------------------------- push, pull

#: ``KEY`` or ``NAMESPACE/KEY`` among push/pull's positional words (the rest are overrides).
_KEY_WORD = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[0-9a-f]{16}$")


def _targets(args: argparse.Namespace) -> tuple[list[tuple[Path, Path, Any]], Any]:
    """(entry path, root, remote) of every entry push/pull works on, and the fallback remote:
    the KEYs given, else every distinct entry of the config's jobs (a sweep expands)."""
    from hydra_cache import registry
    from hydra_cache.store.remote import ops

    keys = [word for word in args.overrides if _KEY_WORD.match(word)]
    args.overrides = [word for word in args.overrides if not _KEY_WORD.match(word)]
    jobs = _jobs(args)
    spec = _remote_spec(args, jobs[0])
    if keys:
        root = _root(args, must_exist=args.command == "push")
        found: list[tuple[Path, Path, Any]] = []
        for word in keys:
            if args.command == "push":
                entry = _one_entry(root, word)
                found.append((entry.path, root, spec))
            else:
                namespace, key = ops.find(spec, word)
                found.append((root / namespace / key, root, spec))
        return found, spec
    targets: dict[Path, tuple[Path, Path, Any]] = {}
    for overrides in jobs:
        for item in _resolved(_compose(args, overrides)):
            info = registry.lookup(item.path)
            chosen = (info.remote if info else None) or spec
            targets.setdefault(Path(item.path), (Path(item.path), item.root.path, chosen))
    return list(targets.values()), spec


def _move(args: argparse.Namespace) -> int:
    from hydra_cache.progress import Progress
    from hydra_cache.store.remote import ops

    logging.getLogger("hydra_cache.store").setLevel(logging.INFO)
    targets, spec = _targets(args)
    if args.command == "push":
        for _, _, chosen in [(None, None, spec), *targets]:
            if not chosen.writes:
                raise UsageError(
                    f"push writes to {chosen.url.redacted()}, which this config reads only "
                    "(hydra_cache.remote.mode=read); fix: hydra_cache.remote.mode=read-write"
                )
    results: list[Any] = []
    with Progress(len(targets), args.command) as step:
        for path, root, chosen in targets:
            if args.command == "push":
                results.append(ops.push(chosen, path, root))
            else:
                results.append(ops.pull(chosen, path))
            step()
    lines = []
    for moved in results:
        rate = ""
        if moved.outcome in ("pushed", "pulled") and moved.seconds > 0:
            speed = human_size(moved.size_bytes / moved.seconds)
            rate = f" in {human_duration(moved.seconds)} ({speed}/s)"
        size = f" {human_size(moved.size_bytes)}" if moved.size_bytes else ""
        detail = f": {moved.detail}" if moved.detail else ""
        lines.append(f"{moved.outcome:8} {moved.namespace}/{moved.key}{size}{rate}{detail}")
    counts: dict[str, int] = {}
    for moved in results:
        counts[moved.outcome] = counts.get(moved.outcome, 0) + 1
    done = "pushed" if args.command == "push" else "pulled"
    moved_bytes = sum(m.size_bytes for m in results if m.outcome == done)
    words = [
        f"{done} {plural(counts.pop(done, 0), 'entry', 'entries')} ({human_size(moved_bytes)})"
    ]
    names = {
        "present": "already on the remote",
        "here": "already on this machine",
        "raced": "committed first by another machine",
        "absent": "not on the remote",
        "missing": "not built on this machine",
    }
    words += [f"{n} {names.get(k, k)}" for k, n in sorted(counts.items())]
    lines.append(", ".join(words) + f" ({spec.url.redacted()})")
    emit(args.format, [m.as_dict() for m in results], "\n".join(lines))
    bad = {"failed", "damaged", "absent", "refused", "missing"}
    return EXIT_FINDING if any(m.outcome in bad for m in results) else EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    return _move(args)


def cmd_pull(args: argparse.Namespace) -> int:
    return _move(args)


# ---------------------------------------------------------------------------------- build


def cmd_build(args: argparse.Namespace) -> int:
    from hydra_cache import prebuild
    from hydra_cache.composing import load_app
    from hydra_cache.progress import Progress

    if args.jobs < 1:
        raise UsageError(f"-j {args.jobs} is not a number of builds; fix: -j 1 or more")
    logging.getLogger("hydra_cache.store").setLevel(logging.INFO)
    jobs = _jobs(args)
    app_builders = (
        getattr(load_app(args.app).module, prebuild.APP_BUILDERS, None) if args.app else None
    )
    planned = prebuild.plan(jobs, lambda overrides: _compose(args, overrides), app_builders)
    rows: list[dict[str, Any]] = []
    with Progress(len(planned), "build") as step:
        for result in prebuild.run(planned, jobs=args.jobs, app=args.app):
            step()
            rows.append(
                {
                    "config_key": result.config_key,
                    "path": result.path,
                    "outcome": result.outcome,
                    "seconds": round(result.seconds, 3),
                    "error": result.error,
                }
            )
    by_outcome = {
        kind: sum(1 for r in rows if r["outcome"] == kind)
        for kind in ("built", "hit", "waited", "pulled", "failed")
    }
    lines = [
        f"{r['outcome']:7} {r['config_key']} {r['path']}"
        + (f" in {human_duration(r['seconds'])}" if r["outcome"] in ("built", "pulled") else "")
        + (f": {r['error']}" if r["error"] else "")
        for r in rows
    ]
    lines.append(
        f"{plural(len(jobs), 'job')} use "
        f"{plural(len(planned), 'distinct cache entry', 'distinct cache entries')}: "
        f"built {by_outcome['built']}, {by_outcome['hit']} already ready, "
        f"{by_outcome['waited']} built by another process"
        + (f", {by_outcome['pulled']} pulled from the remote" if by_outcome["pulled"] else "")
        + (f", {by_outcome['failed']} failed" if by_outcome["failed"] else "")
    )
    emit(args.format, rows, "\n".join(lines))
    return EXIT_FINDING if by_outcome["failed"] else EXIT_OK


# ----------------------------------------------------------------------------------- diff


def _override_sets(args: argparse.Namespace) -> list[list[str]]:
    """Positional overrides, times the product of every --sweep, plus each --override-set."""
    import shlex

    swept: list[list[str]] = [[]]
    for sweep in args.sweep:
        name, _, values = sweep.partition("=")
        if not name or not values:
            raise UsageError(f"--sweep {sweep!r} is not KEY=A,B; fix: e.g. --sweep data.resize=4,8")
        swept = [[*done, f"{name}={value}"] for done in swept for value in values.split(",")]
    extra = [shlex.split(text) for text in args.override_set]
    sets = (swept if args.sweep else []) + extra if (args.sweep or extra) else [[]]
    return [[*args.overrides, *chosen] for chosen in sets]


def cmd_diff(args: argparse.Namespace) -> int:
    from hydra_cache import gitrev
    from hydra_cache.composing import load_app
    from hydra_cache.errors import ConfigError
    from hydra_cache.explain import diff

    # Each revision is composed in a subprocess from its own tree, so an app's ConfigStore
    # entries do not reach it: --app only supplies the config folder and name here.
    chosen_dir = args.config_dir
    if args.app:
        loaded = load_app(args.app)
        chosen_dir = chosen_dir or loaded.config_path
        args.config_name = args.config_name or loaded.config_name or "config"
    if chosen_dir is None or chosen_dir.startswith("pkg://"):
        raise UsageError(
            "diff needs a config folder; fix: give -cd (or an app whose config_path is a folder)"
        )
    config_dir = Path(os.path.abspath(chosen_dir))
    top = gitrev.repository_of(config_dir if config_dir.is_dir() else Path.cwd())
    relative = os.path.relpath(config_dir, top)
    if relative.startswith(".."):
        raise UsageError(
            f"--config-dir {chosen_dir} is outside the repository {top}; fix: "
            "point -cd at a config folder inside it"
        )
    base = gitrev.resolve_revision(top, args.base, "--base")
    head = gitrev.resolve_revision(top, args.head, "--head") if args.head else None
    sets = _override_sets(args)

    def sides(revision: gitrev.Revision | None) -> list[Any]:
        if revision is None:
            return diff.sides_at(top, config_dir, args.config_name, sets)
        with gitrev.checkout_tree(top, revision, relative) as tree:
            if tree is None:
                return [None for _ in sets]
            try:
                return diff.sides_at(tree, tree / relative, args.config_name, sets)
            except ConfigError as error:
                text = str(error).replace(str(tree / relative), relative).replace(str(tree), ".")
                raise ConfigError(f"at {revision.name}: {text}") from None

    reports = [
        diff.compare(old, new, chosen) for old, new, chosen in zip(sides(base), sides(head), sets)
    ]
    head_name = f"{head.name} ({head.short})" if head else "the working tree"
    where = f"{relative}/{args.config_name}"
    if args.format == "markdown":
        head_md = f"`{head.name}` (`{head.short}`)" if head else "the working tree"
        title = f"Comparing `{base.name}` (`{base.short}`) → {head_md}, config `{where}`."
        print(diff.render_markdown(reports, title), end="")
    elif args.format == "json":
        print(diff.render_json(reports, f"{base.name} ({base.short}) -> {head_name}, {where}"))
    else:
        print(
            diff.render_text(reports, f"{base.name} ({base.short}) -> {head_name}, config {where}")
        )
    invalidated = any(report.invalidated for report in reports)
    return EXIT_FINDING if args.fail_on_invalidate and invalidated else EXIT_OK


COMMANDS = {
    "keys": cmd_keys,
    "why": cmd_why,
    "ls": cmd_ls,
    "show": cmd_show,
    "rm": cmd_rm,
    "gc": cmd_gc,
    "verify": cmd_verify,
    "build": cmd_build,
    "diff": cmd_diff,
    "push": cmd_push,
    "pull": cmd_pull,
}
