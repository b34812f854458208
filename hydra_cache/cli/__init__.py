"""``hydra-cache``: the command line. Argument parsing and rendering only: each subcommand is
a thin call into the modules that do the work (composing, resolver, explain, diff, the store,
maintenance, prebuild).

Exit status: 0 ok, 1 a finding (``diff --fail-on-invalidate``, ``verify``, an ``rm`` or
``build`` that could not finish), 2 bad usage or a bad config, with one line on stderr
(``--debug``, anywhere on the line, shows the traceback).
"""

from __future__ import annotations

from hydra_cache.cli.commands import main
from hydra_cache.cli.parser import UsageError, build_parser

__all__ = ["UsageError", "build_parser", "main"]
