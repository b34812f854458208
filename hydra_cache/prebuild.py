"""``hydra-cache build``: build a sweep's distinct cache entries once each, before the sweep.

A sweep of 4 jobs over 2 keys, launched as is, starts both jobs of a key at once: one builds,
the other holds a worker while it waits. Pre-built, every job of the sweep is a hit. Each
distinct entry is built once, up to ``-j`` at a time in separate processes, each through
:meth:`CacheEntry.get_or_build`, so the usual guarantees hold (one builder per key across
processes and hosts, atomic publish, journal, heartbeat).

The build function of an entry takes ``(node, staging)``: the config node that holds the cache
dir and the private folder to write into. It is found, in this order:

1. ``_build_: pkg.module.function`` in that node;
2. ``hydra_cache.builders: {<namespace>: pkg.module.function}``;
3. ``hydra_cache_builders = {"<namespace>": function}`` in the app module (``--app``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_cache.errors import ConfigError

log = logging.getLogger(__name__)

BUILD_KEY = "_build_"
APP_BUILDERS = "hydra_cache_builders"


@dataclass
class Planned:
    """One distinct entry of the sweep and what builds it."""

    path: str
    config_key: str
    namespace: str
    #: The dotted key of the node that holds the cache dir (handed to the build function).
    holder: str
    #: ``pkg.module.function``, or ``app:<namespace>`` for the app module's table.
    builder: str
    #: The composed config of the first job that uses the entry (pickled into a worker).
    cfg: DictConfig = field(repr=False)
    #: Indexes of the sweep's jobs that use it.
    jobs: list[int] = field(default_factory=list)
    ready: bool = False
    #: Paths of the entries it is chained to (built before it).
    upstreams: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Result:
    path: str
    config_key: str
    #: hit, built, waited or pulled (as ``CacheEntry.last_outcome``), or failed.
    outcome: str
    seconds: float
    error: str | None = None


def plan(
    sweep: list[list[str]],
    compose: Callable[[list[str]], DictConfig],
    app_builders: dict[str, Any] | None,
) -> list[Planned]:
    """The distinct entries of the sweep's jobs, each with its build function's name."""
    from hydra_cache.resolver import resolve_all
    from hydra_cache.store.entry import CacheEntry

    found: dict[str, Planned] = {}
    for number, overrides in enumerate(sweep):
        cfg = compose(overrides)
        for item in resolve_all(cfg):
            known = found.get(item.path)
            if known is not None:
                known.jobs.append(number)
                continue
            holder = item.config_key.rpartition(".")[0]
            builder = _builder_name(cfg, item.config_key, holder, item.namespace, app_builders)
            found[item.path] = Planned(
                item.path,
                item.config_key,
                item.namespace,
                holder,
                builder,
                cfg,
                [number],
                CacheEntry(item.path).ready,
                frozenset(up.path for up in item.derived.upstreams),
            )
    return list(found.values())


def _builder_name(
    cfg: DictConfig,
    config_key: str,
    holder: str,
    namespace: str,
    app_builders: dict[str, Any] | None,
) -> str:
    node = OmegaConf.select(cfg, holder) if holder else cfg
    if isinstance(node, DictConfig) and BUILD_KEY in node:
        name = node[BUILD_KEY]
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{holder}.{BUILD_KEY}",
                f"must be a dotted function name, not {name!r}",
                f"write e.g. {BUILD_KEY}: mypkg.prepare.build",
            )
        return name
    settings = OmegaConf.select(cfg, "hydra_cache.builders", default=None)
    if settings is not None and namespace in settings:
        return str(settings[namespace])
    if app_builders and namespace in app_builders:
        return f"app:{namespace}"
    raise ConfigError(
        config_key,
        "has no build function, so hydra-cache build cannot build it",
        f"set hydra_cache.builders.{namespace}=mypkg.prepare.build, or {BUILD_KEY} in "
        f"{holder or 'the node'}, or {APP_BUILDERS} = {{'{namespace}': build}} in the app module",
    )


def load_builder(name: str, app: str | None) -> Callable[[Any, Path], object]:
    """The build function a name stands for (imported in the process that builds)."""
    if name.startswith("app:"):
        from hydra_cache.composing import load_app

        if app is None:
            raise ConfigError(name, "names the app's builders, but no app is given", "--app")
        table = getattr(load_app(app).module, APP_BUILDERS, {}) or {}
        function = table.get(name[4:])
        if isinstance(function, str):
            return load_builder(function, app)
    else:
        module_name, _, attribute = name.replace(":", ".").rpartition(".")
        try:
            function = getattr(importlib.import_module(module_name), attribute, None)
        except ImportError as error:
            raise ConfigError(
                name,
                f"cannot be imported ({error})",
                "check the name, and that its package is importable from the project folder",
            ) from None
    if not callable(function):
        raise ConfigError(name, "is not a function", "name a function taking (node, staging)")
    return function  # type: ignore[no-any-return]


def _build_one(
    cfg: DictConfig, config_key: str, holder: str, builder: str, app: str | None
) -> Result:
    """Build one entry (in a worker process, or inline with ``-j 1``)."""
    from hydra_cache import registry
    from hydra_cache.composing import install
    from hydra_cache.resolver import register
    from hydra_cache.store.entry import CacheEntry

    register()
    install(cfg)
    if not logging.getLogger().handlers:  # a fresh worker process: say what the CLI says
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("hydra_cache.store").setLevel(logging.INFO)
    started = time.monotonic()
    path = str(OmegaConf.select(cfg, config_key))
    try:
        function = load_builder(builder, app)
        node = OmegaConf.select(cfg, holder) if holder else cfg
        entry = CacheEntry(path)
        entry.get_or_build(lambda staging: function(node, staging))
    except Exception as error:
        text = (str(error).strip().splitlines() or [""])[0]
        log.error("building %s failed: %s: %s", path, type(error).__name__, text)
        return Result(
            path,
            config_key,
            "failed",
            time.monotonic() - started,
            f"{type(error).__name__}: {text}",
        )
    done = registry.outcome(path)  # the build's own time, without this worker's imports
    seconds = done.build_seconds if done and done.build_seconds is not None else None
    return Result(
        path,
        config_key,
        entry.last_outcome or "hit",
        seconds if seconds is not None else time.monotonic() - started,
    )


def waves(todo: list[Planned]) -> Iterator[list[Planned]]:
    """The entries to build, in waves: each wave only after the entries it is chained to (a
    features stage reads its data stage's entry, so it cannot be built beside it)."""
    remaining = list(todo)
    while remaining:
        pending = {item.path for item in remaining}
        wave = [item for item in remaining if not item.upstreams & pending]
        wave = wave or remaining  # a cycle cannot be composed; never loop on one
        yield wave
        remaining = [item for item in remaining if item not in wave]


def run(planned: list[Planned], *, jobs: int, app: str | None) -> Iterator[Result]:
    """Build every planned entry that is not ready, up to ``jobs`` at a time, upstream stages
    first; results as they finish."""
    todo = [item for item in planned if not item.ready]
    for item in planned:
        if item.ready:
            yield Result(item.path, item.config_key, "hit", 0.0)
    if jobs <= 1 or len(todo) <= 1:
        for wave in waves(todo):
            for item in wave:
                yield _build_one(item.cfg, item.config_key, item.holder, item.builder, app)
        return
    import multiprocessing

    # "spawn": the parent may hold threads and Hydra's global state; a fork would copy both.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context) as pool:
        for wave in waves(todo):
            futures: dict[Future[Result], Planned] = {
                pool.submit(
                    _build_one, item.cfg, item.config_key, item.holder, item.builder, app
                ): item
                for item in wave
            }
            for future in as_completed(futures):
                item = futures[future]
                try:
                    yield future.result()
                except Exception as error:  # the worker itself died
                    yield Result(item.path, item.config_key, "failed", 0.0, repr(error))
