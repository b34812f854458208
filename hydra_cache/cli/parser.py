"""The ``hydra-cache`` argument parser, and the defaults it fills in.

Selecting the config is the same for every command and the same as for a Hydra app:
``-cd/--config-dir``, ``-cn/--config-name``, ``--app`` and overrides as positional arguments,
with defaults from ``[tool.hydra-cache]`` and ``HYDRA_CACHE_*`` (see :mod:`hydra_cache.project`).
``--debug`` and ``--format`` are global: they work anywhere on the line, and so do overrides
(``keys data.resize=4 -cn train model.C=1``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from hydra_cache.errors import HydraCacheError
from hydra_cache.project import Defaults

FORMATS = ("text", "json", "markdown")
#: Commands that take overrides (root commands use them to compose the config that names the
#: root: ``ls -cd conf hydra_cache.root=/x``).
WITH_OVERRIDES = ("keys", "why", "diff", "build", "ls", "gc", "verify", "show", "push", "pull")


class UsageError(HydraCacheError):
    """Bad arguments on the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and exit 2, like every other error
        raise UsageError(f"{message}; fix: see '{self.prog} --help'")


def _add_config_args(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    parser.add_argument(
        "-cd",
        "--config-dir",
        help="folder of the app's configs (default: [tool.hydra-cache] config_dir, the app's "
        "config_path, else conf)",
    )
    parser.add_argument(
        "-cn",
        "--config-name",
        help="primary config name (default: [tool.hydra-cache] config_name, the app's, "
        "else config)",
    )
    parser.add_argument(
        "--app",
        help="the Hydra app, as a file (examples/train.py) or a module (pkg.train): its "
        "@hydra.main config_path/config_name, ConfigStore entries and job name are used",
    )
    if positional:
        parser.add_argument(
            "overrides", nargs="*", help="Hydra overrides, e.g. data.resize=4 (a=1,2 sweeps)"
        )


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        help="cache root (default: the config's hydra_cache.root when a config is selected, "
        "else $HYDRA_CACHE_ROOT, then the XDG cache)",
    )
    _add_config_args(parser, positional=False)


def _add_transfer_commands(commands: Any) -> None:
    """``push`` and ``pull``: the entries of a config or sweep, or the KEYs given."""
    for name, verb in (("push", "upload"), ("pull", "download")):
        move = commands.add_parser(
            name,
            help=f"{verb} the entries of a config or sweep (or KEYs) "
            + ("to" if name == "push" else "from")
            + " the remote",
        )
        _add_config_args(move)
        move.add_argument(
            "-m", "--multirun", action="store_true", help="accepted for symmetry with the app"
        )
        move.add_argument(
            "--root",
            help="cache root for KEY arguments (default: as for ls: --root, the config's "
            "hydra_cache.root, $HYDRA_CACHE_ROOT, the XDG cache)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hydra-cache",
        description="Cache directories that are a pure function of the composed Hydra config.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks (anywhere)")
    parser.add_argument("--format", choices=FORMATS, help="text, json or markdown (anywhere)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    keys = commands.add_parser("keys", help="list every cache dir of a composed config")
    _add_config_args(keys)
    why = commands.add_parser("why", help="explain each cache dir that is not ready")
    _add_config_args(why)

    ls = commands.add_parser("ls", help="list the entries (and builds in progress) of a root")
    _add_root(ls)
    ls.add_argument("--namespace", help="only this namespace")
    ls.add_argument("--params", action="store_true", help="show each entry's hashed values")
    ls.add_argument("--plot", metavar="OUT.png", help="draw sizes and build times (matplotlib)")
    ls.add_argument(
        "--remote", action="store_true", help="list the remote's entries (hydra_cache.remote)"
    )

    show = commands.add_parser("show", help="one entry: parameters, files, upstreams, audit")
    show.add_argument("key", help="KEY, NAMESPACE/KEY or the entry's path")
    _add_root(show)

    rm = commands.add_parser("rm", help="remove entries safely (under their locks, journaled)")
    rm.add_argument("key", nargs="*", help="KEY, NAMESPACE/KEY or the entry's path")
    rm.add_argument("--namespace", help="remove every entry of this namespace")
    _add_root(rm)

    gc = commands.add_parser("gc", help="evict entries, least recently used first")
    _add_root(gc)
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
    gc.add_argument(
        "--remote",
        action="store_true",
        help="collect the remote instead: manifests by commit age and size, then blobs no "
        "manifest references once older than --grace, then expired leases",
    )

    verify = commands.add_parser("verify", help="find entries whose files changed since publish")
    _add_root(verify)
    verify.add_argument("--namespace", help="only this namespace")
    verify.add_argument(
        "--repair", action="store_true", help="move damaged entries aside (never deletes them)"
    )
    verify.add_argument(
        "--remote",
        action="store_true",
        help="verify the remote instead: every manifest's blobs exist with the right size",
    )
    verify.add_argument(
        "--deep", action="store_true", help="with --remote: download every blob and hash it"
    )

    _add_transfer_commands(commands)

    build = commands.add_parser(
        "build", help="pre-build the distinct cache entries of a sweep, each once"
    )
    _add_config_args(build)
    build.add_argument(
        "-m", "--multirun", action="store_true", help="accepted for symmetry with the app"
    )
    build.add_argument("-j", "--jobs", type=int, default=1, help="builds at a time (default 1)")

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
    return parser


def _pull_globals(argv: list[str]) -> tuple[list[str], bool, str | None]:
    """Take ``--debug`` and ``--format X`` from anywhere on the line."""
    rest: list[str] = []
    debug = False
    chosen: str | None = None
    words = iter(argv)
    for word in words:
        if word == "--":
            rest += [word, *words]
            break
        if word == "--debug":
            debug = True
        elif word == "--format":
            chosen = next(words, None)
            if chosen is None:
                raise UsageError("--format needs a value; fix: --format text|json|markdown")
        elif word.startswith("--format="):
            chosen = word.split("=", 1)[1]
        else:
            rest.append(word)
    if chosen is not None and chosen not in FORMATS:
        raise UsageError(
            f"--format {chosen!r} is not one of {', '.join(FORMATS)}; fix: --format json"
        )
    return rest, debug, chosen


def parse(argv: Sequence[str], defaults: Defaults) -> argparse.Namespace:
    """Parse the line, then fill the config selection from the project's defaults."""
    rest, debug, chosen = _pull_globals(list(argv))
    parser = build_parser()
    args, extra = parser.parse_known_args(rest)
    stray = [word for word in extra if word.startswith("-") and word != "--"]
    if stray or (extra and args.command not in WITH_OVERRIDES):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    args.overrides = [*getattr(args, "overrides", []), *[w for w in extra if w != "--"]]
    args.debug = debug
    args.format = chosen or "text"
    if args.format == "markdown" and args.command != "diff":
        raise UsageError("--format markdown is for diff only; fix: --format text or json")
    args.config_selected = any(
        getattr(args, name, None) for name in ("config_dir", "config_name", "app")
    ) or bool(defaults.configured)
    args.config_dir = args.config_dir or defaults.config_dir
    args.config_name = args.config_name or defaults.config_name
    args.app = args.app or defaults.app
    if args.app and (args.app.endswith(".py") or "/" in args.app):
        args.app = os.path.abspath(args.app)
    if not args.app:
        args.config_dir = args.config_dir or "conf"
        args.config_name = args.config_name or "config"
    return args
