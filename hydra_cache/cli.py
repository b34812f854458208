"""``hydra-cache``: the command line. Each subcommand is a thin call into the modules.

Exit status: 0 ok, 1 a finding (reserved for ``diff --fail-on-invalidate`` and ``verify``),
2 bad usage or a bad config, with one line on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_cache.errors import HydraCacheError
from hydra_cache.units import human_size

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2


class UsageError(HydraCacheError):
    """Bad arguments on the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and exit 2, like every other error
        raise UsageError(f"{message}; fix: see '{self.prog} --help'")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-cd", "--config-dir", default="conf", help="folder of the app's configs (default: conf)"
    )
    parser.add_argument(
        "-cn", "--config-name", default="config", help="primary config name (default: config)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.resize=4")


def _add_format(parser: argparse.ArgumentParser, *choices: str) -> None:
    parser.add_argument("--format", choices=choices or ("text", "json"), default="text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hydra-cache", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    keys = commands.add_parser("keys", help="list every cache dir of a composed config")
    _add_config_args(keys)
    _add_format(keys)
    why = commands.add_parser("why", help="explain each cache dir that is not ready")
    _add_config_args(why)
    _add_format(why)
    ls = commands.add_parser("ls", help="list the entries under a root")
    ls.add_argument("--root", help="cache root (default: $HYDRA_CACHE_ROOT, then the XDG cache)")
    ls.add_argument("--namespace", help="only this namespace")
    _add_format(ls)
    gc = commands.add_parser("gc", help="evict entries, least recently used first")
    gc.add_argument("--root", help="cache root (default: $HYDRA_CACHE_ROOT, then the XDG cache)")
    gc.add_argument("--max-size", help="evict until the root holds at most this, e.g. 50G")
    gc.add_argument("--older-than", help="evict entries unused for longer, e.g. 30d")
    gc.add_argument("--namespace", help="only this namespace")
    gc.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    gc.add_argument(
        "--grace",
        default="1h",
        help="leftovers (dead builds' staging folders, stale locks) older than "
        "this are removed too (default: 1h)",
    )
    gc.add_argument(
        "--min-idle",
        default="1h",
        help="never evict an entry used more recently than this: it may be in use on "
        "another host (default: 1h)",
    )
    _add_format(gc)
    verify = commands.add_parser("verify", help="find entries whose files changed since publish")
    verify.add_argument(
        "--root", help="cache root (default: $HYDRA_CACHE_ROOT, then the XDG cache)"
    )
    verify.add_argument("--namespace", help="only this namespace")
    verify.add_argument(
        "--repair", action="store_true", help="move damaged entries aside (never deletes them)"
    )
    _add_format(verify)
    diff = commands.add_parser("diff", help="which caches a config change invalidates")
    diff.add_argument("--base", required=True, help="base revision, e.g. origin/main")
    diff.add_argument("--head", help="head revision (default: the working tree)")
    _add_config_args(diff)
    diff.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=A,B",
        help="check every value of KEY (repeatable: the product is checked)",
    )
    diff.add_argument(
        "--override-set",
        action="append",
        default=[],
        metavar="'K=V K2=V2'",
        help="also check this set of overrides (repeatable)",
    )
    diff.add_argument(
        "--fail-on-invalidate",
        action="store_true",
        help="exit 1 when any cache is invalidated (for a required CI check)",
    )
    _add_format(diff, "text", "markdown", "json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args = parser.parse_args(args_list)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        return int(COMMANDS[args.command](args))
    except (HydraCacheError, OSError) as error:
        if debug:
            raise
        text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"hydra-cache: error: {text}", file=sys.stderr)
        return EXIT_USAGE


def _resolved(args: argparse.Namespace) -> list[Any]:
    from omegaconf.errors import OmegaConfBaseException

    from hydra_cache.composing import compose_config
    from hydra_cache.errors import ConfigError
    from hydra_cache.resolver import resolve_all

    cfg = compose_config(args.config_dir, args.config_name, list(args.overrides))
    try:
        return resolve_all(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], text: str) -> None:
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=str))
    else:
        print(text)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def cmd_keys(args: argparse.Namespace) -> int:
    from hydra_cache import registry
    from hydra_cache.store.entry import CacheEntry

    rows = []
    for item in _resolved(args):
        entry = CacheEntry(item.path)
        uncovered = ((entry.metadata() or {}).get("audit") or {}).get("uncovered") or []
        info = registry.lookup(item.path)
        direct = {up.digest for up in item.derived.upstreams}
        # A key that holds a per-run value: no run ever has the key composed here.
        per_run = bool(item.derived.volatile)
        rows.append(
            {
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
        )
    header = ["config key", "namespace", "key", "status", "upstreams", "path"]
    text = (
        _table(
            [
                header,
                *[
                    [
                        r["config_key"],
                        r["namespace"],
                        r["key"] or "(per-run)",
                        r["status"]
                        + (f" (uncovered: {', '.join(r['uncovered'])})" if r["uncovered"] else ""),
                        ", ".join(u["config_key"] for u in r["upstreams"]) or "-",
                        r["path"]
                        or f"a new key on every run: {', '.join(r['per_run'])} is per-run",
                    ]
                    for r in rows
                ],
            ]
        )
        if rows
        else "no ${cache_dir:} found"
    )
    _emit(args, rows, text)
    return EXIT_OK


def cmd_why(args: argparse.Namespace) -> int:
    from hydra_cache import registry
    from hydra_cache.explain import explain

    rows, blocks = [], []
    resolved = _resolved(args)
    for item in resolved:
        explanation = explain(item.path, registry.lookup(item.path))
        rows.append({"config_key": item.config_key, "path": item.path, **explanation.as_dict()})
        if explanation.is_miss or explanation.details:
            blocks.append(f"{item.config_key}: {explanation.as_text()}")
    ready = sum(1 for row in rows if row["kind"] == "hit")
    text = "\n".join(blocks) if blocks else f"all {ready} cache dirs are ready"
    _emit(args, rows, text)
    return EXIT_OK


def _checked_root(args: argparse.Namespace) -> Path:
    """The root named by --root (or the environment), refused if unsafe."""
    from hydra_cache.store.roots import Root, check_root, require_root, select_root

    root = select_root(args.root, base_dir=os.getcwd())
    if args.root is not None:
        root = Root(root.path, "--root")
    check_root(root)
    require_root(root.path, "--root" if args.root is not None else root.source)
    return root.path


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def cmd_ls(args: argparse.Namespace) -> int:
    from hydra_cache.store.eviction import scan

    root = _checked_root(args)
    rows: list[dict[str, Any]] = []
    for found in sorted(scan(root, args.namespace), key=lambda f: (f.namespace, f.last_used)):
        meta = found.metadata
        rows.append(
            {
                "namespace": found.namespace,
                "key": found.key,
                "size_bytes": found.size_bytes,
                "created": meta.get("created"),
                "last_used": _when(found.last_used),
                "run_dir": meta.get("run_dir"),
                "config_key": meta.get("config_key"),
                "path": str(found.path),
            }
        )
    header = ["namespace", "key", "size", "created", "last used", "built by run"]
    cells = [
        [
            r["namespace"],
            r["key"],
            human_size(r["size_bytes"]),
            str(r["created"])[:16].replace("T", " "),
            r["last_used"],
            r["run_dir"] or "-",
        ]
        for r in rows
    ]
    text = _table([header, *cells]) if rows else f"no entries under {root}"
    _emit(args, rows, text)
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
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
    root = _checked_root(args)
    report = eviction.collect(
        root,
        max_size=max_size,
        older_than=older,
        min_idle=min_idle,
        grace=grace,
        namespace=args.namespace,
        dry_run=args.dry_run,
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
        f"{verb} {len(entries)} entries, {human_size(sum(r.size_bytes for r in entries))}, "
        f"and {len(gone) - len(entries)} leftovers"
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
    _emit(args, rows, "\n".join(lines))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from hydra_cache.store.verify import verify

    root = _checked_root(args)
    findings = verify(root, args.namespace, repair=args.repair)
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
    lines.append(
        f"{len(damaged)} damaged entries under {root}"
        if damaged
        else f"all entries under {root} are intact"
    )
    _emit(args, rows, "\n".join(lines))
    return EXIT_FINDING if damaged else EXIT_OK


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
    from hydra_cache import diff, gitrev
    from hydra_cache.errors import ConfigError

    config_dir = Path(os.path.abspath(args.config_dir))
    top = gitrev.repository_of(config_dir if config_dir.is_dir() else Path.cwd())
    relative = os.path.relpath(config_dir, top)
    if relative.startswith(".."):
        raise UsageError(
            f"--config-dir {args.config_dir} is outside the repository {top}; fix: "
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
    "gc": cmd_gc,
    "diff": cmd_diff,
    "verify": cmd_verify,
}

if __name__ == "__main__":
    sys.exit(main())
