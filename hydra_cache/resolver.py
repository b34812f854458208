"""The ``${cache_dir:}`` resolver: arguments -> hashed nodes -> key -> ``<root>/<namespace>/<key>``.

``${cache_dir:}`` keys the entry by the node that holds the interpolation; ``${cache_dir:a.b,c}``
by the listed nodes (absolute dotted keys, or relative to the holding node with a leading
``.``). The returned path is pure: the same composed config gives the same path on every
machine and in every process, and nothing is written while resolving.

OmegaConf re-runs a resolver on every access. Deriving a key resolves every hashed leaf, so each
result is memoized per config object and checked against a snapshot of the nodes it read: a
repeated access costs identity checks, and a config changed after the first access still gets
its new path. (OmegaConf's own ``use_cache`` is keyed on argument strings only and would be
shared between unrelated configs and sweep jobs.)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import Container, Node, OmegaConf
from omegaconf._utils import split_key
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from hydra_cache import registry
from hydra_cache.errors import ConfigError
from hydra_cache.key import (
    DerivedKey,
    Snapshot,
    derive,
    raise_if_deriving,
    read_node,
    with_extra,
)
from hydra_cache.roots import ENV_ROOT, Root, check_root, select_root
from hydra_cache.settings import Settings, parse_settings

log = logging.getLogger(__name__)

RESOLVER_NAME = "cache_dir"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_NAMESPACE = 120


class CacheDirError(InterpolationResolutionError, ConfigError):
    """A ``${cache_dir:...}`` that cannot be resolved.

    It subclasses OmegaConf's ``InterpolationResolutionError`` so OmegaConf passes our one-line
    message through instead of wrapping it, and :class:`ConfigError` so callers outside
    OmegaConf can catch it as one.
    """


@dataclass(frozen=True)
class ResolvedCacheDir:
    """One resolution, kept in the memo with what it depended on."""

    path: str
    config_key: str
    namespace: str
    derived: DerivedKey
    root: Root
    settings: Settings
    settings_snapshot: Snapshot
    environment: tuple[str | None, ...]
    #: Where the app was launched, when the root is relative to it (else None).
    launch_dir: str | None

    def is_current(self) -> bool:
        return (
            self.environment == _environment()
            and (self.launch_dir is None or self.launch_dir == _launch_dir())
            and self.settings_snapshot.is_current()
            and self.derived.snapshot.is_current()
        )


_MEMO_ATTRIBUTE = "_hydra_cache_memo"


class _Memo(dict):  # type: ignore[type-arg]
    """(id(holding node), args) -> ResolvedCacheDir, kept on the root config object itself.

    Kept there, it lives and dies with the config (a module-level table would keep every config
    alive through the nodes its snapshots hold). OmegaConf's deep copy does not copy it, and it
    pickles empty, so a config sent to a sweep worker carries no memo and no node references.
    """

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_Memo, ())


_checked_roots: set[str] = set()
_announced: set[tuple[str, ...]] = set()


def register() -> None:
    """Register ``${cache_dir:}`` with OmegaConf. Idempotent; safe to call in every worker."""
    OmegaConf.register_new_resolver(RESOLVER_NAME, cache_dir, replace=True, use_cache=False)


def cache_dir(*args: Any, _parent_: Container, _node_: Node, _root_: Container) -> str:
    """Resolve ``${cache_dir:...}`` held by ``_node_`` (whose container is ``_parent_``)."""
    raise_if_deriving()
    if not all(isinstance(arg, str) for arg in args):
        config_key = _node_._get_full_key(None) or RESOLVER_NAME
        bad = next(arg for arg in args if not isinstance(arg, str))
        raise CacheDirError(
            f"{config_key}: ${{cache_dir:...}} takes dotted config keys, got {bad!r}; "
            "fix: write e.g. ${cache_dir:data} or ${cache_dir:data.preprocessing,.source}"
        )
    memo = _memo_of(_root_)
    memo_key = (id(_parent_), args)
    known = memo.get(memo_key)
    if known is not None and known.is_current():
        registry.remember_config(known.path, _root_)
        return str(known.path)
    config_key = _node_._get_full_key(None) or RESOLVER_NAME
    try:
        resolved = _resolve(args, _parent_, _node_, _root_, config_key)
    except ConfigError as error:
        message = str(error)
        if not message.startswith(config_key):
            message = f"{config_key}: {message}"
        raise CacheDirError(message) from None
    memo[memo_key] = resolved
    return resolved.path


def resolve_all(cfg: Container) -> list[ResolvedCacheDir]:
    """Every ``${cache_dir:...}`` in ``cfg`` (outside ``hydra``), resolved, in config order."""
    found: list[ResolvedCacheDir] = []
    for node in _cache_dir_nodes(cfg):
        config_key = node._get_full_key(None) or RESOLVER_NAME
        try:
            node._dereference_node()
        except CacheDirError:
            raise
        except OmegaConfBaseException as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise CacheDirError(
                f"{config_key}: {node._value()!r} is not a valid interpolation ({first}); "
                "fix: write ${cache_dir:} or ${cache_dir:a.b,c}"
            ) from None
        memo = _memo_of(cfg)
        for resolved in reversed(memo.values()):
            if resolved.config_key == config_key:
                found.append(resolved)
                break
    return found


def _cache_dir_nodes(cfg: Container) -> list[Node]:
    pattern = re.compile(r"\$\{\s*" + RESOLVER_NAME + r"\s*:")
    nodes: list[Node] = []

    def visit(container: Container, top: bool) -> None:
        content = container.__dict__["_content"]
        if not isinstance(content, (dict, list)):
            return
        items = content.items() if isinstance(content, dict) else enumerate(content)
        for key, child in items:
            if top and key == "hydra":
                continue
            if child._is_interpolation():
                if pattern.search(child._value()):
                    nodes.append(child)
            elif isinstance(child, Container):
                visit(child, False)

    visit(cfg, True)
    return nodes


def _memo_of(root: Container) -> dict[tuple[int, tuple[Any, ...]], Any]:
    memo = root.__dict__.get(_MEMO_ATTRIBUTE)
    if memo is None:
        memo = root.__dict__[_MEMO_ATTRIBUTE] = _Memo()
    return memo


def _environment() -> tuple[str | None, ...]:
    return (
        os.environ.get(ENV_ROOT),
        os.environ.get("XDG_CACHE_HOME"),
        os.environ.get("HOME"),
    )


def _launch_dir() -> str:
    """Relative roots are relative to where the app was launched, not to Hydra's job dir."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


def _run_dir() -> str | None:
    """The output folder of the Hydra job deriving this key, for the entry's records."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.instance().cfg
    if not isinstance(hydra_cfg, Container):
        return None
    output_dir = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", default=None)
    return str(output_dir) if output_dir else None


def _resolve(
    args: tuple[Any, ...], parent: Container, node: Node, root: Container, config_key: str
) -> ResolvedCacheDir:
    settings_value, settings_snapshot = read_node(root, "hydra_cache")
    settings = parse_settings(settings_value)
    environment = _environment()
    holder = parent._get_full_key(None)
    nodes = _hashed_nodes(args, holder)
    derived = derive(
        root,
        [(holder, parent)] if not args else nodes,
        exclude=settings.exclude,
        salt=settings.salt,
    )
    namespace = sanitise_namespace(nodes[0] or config_key)
    configured = settings.root or environment[0] or environment[1]
    relative = bool(configured) and not os.path.isabs(os.path.expanduser(str(configured)))
    launch_dir = _launch_dir() if relative else None
    derived, shown_inputs = _with_inputs_and_code(root, derived, nodes, settings, namespace)
    cache_root = select_root(settings.root, base_dir=launch_dir or os.getcwd())
    if str(cache_root.path) not in _checked_roots:
        check_root(cache_root, shared=settings.shared)
        _checked_roots.add(str(cache_root.path))
    path = str(cache_root.path / namespace / derived.key)
    _announce(config_key, cache_root, derived)
    registry.remember(
        path,
        registry.EntryInfo(
            config_key=config_key,
            namespace=namespace,
            key=derived.key,
            digest=derived.digest,
            payload=derived.redacted_payload(),
            root=str(cache_root.path),
            root_source=cache_root.source,
            volatile=derived.volatile,
            run_dir=_run_dir(),
            lock_mode=settings.lock,
            shared=settings.shared,
            audit=settings.audit,
            covered=(
                *nodes,
                *settings.exclude,
                *derived.derived_from_cache_dir,
                "hydra",
                "hydra_cache",
            ),
            inputs=shown_inputs,
        ),
    )
    registry.remember_config(path, root)
    return ResolvedCacheDir(
        path,
        config_key,
        namespace,
        derived,
        cache_root,
        settings,
        settings_snapshot,
        environment,
        launch_dir,
    )


def _inside(key: str, nodes: tuple[str, ...]) -> bool:
    return any(node in ("", key) or key.startswith((node + ".", node + "[")) for node in nodes)


def _with_inputs_and_code(
    root: Container,
    derived: DerivedKey,
    nodes: tuple[str, ...],
    settings: Settings,
    namespace: str,
) -> tuple[DerivedKey, dict[str, dict[str, Any]] | None]:
    """Join input-file and code fingerprints to the key (they need the disk and imports,
    so they are taken here, not in the pure key module)."""
    extra: dict[str, Any] = {}
    shown: dict[str, dict[str, Any]] = {}
    inside = [key for key in settings.inputs if _inside(key, nodes)]
    if not inside and settings.code_mode(namespace) == "off" and not settings.code_modules:
        return derived, None
    from hydra_cache import codeprint, inputs  # only when configured: plugin import stays light

    if inside:
        base = _launch_dir()
        digests = {}
        for key in inside:
            value = OmegaConf.select(root, key, throw_on_missing=False)
            digests[key], shown[key] = inputs.fingerprint(key, value, settings.input_mode, base)
        extra["inputs"] = digests
    mode = settings.code_mode(namespace)
    if mode != "off" or settings.code_modules:
        names = codeprint.targets(derived.payload["nodes"]) if mode != "off" else []
        extra["code"] = codeprint.fingerprints(names, settings.code_modules, mode)
    return (with_extra(derived, extra) if extra else derived), (shown or None)


def _hashed_nodes(args: tuple[Any, ...], holder: str) -> tuple[str, ...]:
    if not args:
        return (holder,)
    nodes: list[str] = []
    for arg in args:
        if not isinstance(arg, str) or not arg.strip():
            raise ConfigError(
                f"${{cache_dir:...}} takes dotted config keys, got {arg!r}; "
                "fix: write e.g. ${cache_dir:data} or ${cache_dir:data.preprocessing,.source}"
            )
        nodes.append(_absolute_key(arg.strip(), holder))
    return tuple(nodes)


def _absolute_key(arg: str, holder: str) -> str:
    if not arg.startswith("."):
        return arg
    dots = len(arg) - len(arg.lstrip("."))
    base = split_key(holder) if holder else []
    up = dots - 1
    if up > len(base):
        raise ConfigError(
            f"'{arg}' climbs above the config root; fix: use fewer leading dots "
            "or an absolute dotted key"
        )
    parts = base[: len(base) - up] + ([arg[dots:]] if arg[dots:] else [])
    return ".".join(parts)


def sanitise_namespace(name: str) -> str:
    """A single safe path component: ``[A-Za-z0-9_.-]``, never ``.``/``..``, bounded length."""
    safe = _UNSAFE.sub("_", name)
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    if len(safe) > _MAX_NAMESPACE:
        import hashlib

        safe = safe[: _MAX_NAMESPACE - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe or "_"


def _announce(config_key: str, root: Root, derived: DerivedKey) -> None:
    """Log the root's source once per process, and each volatile value once."""
    if ("root", str(root.path), root.source) not in _announced:
        _announced.add(("root", str(root.path), root.source))
        log.info("hydra-cache root %s (from %s)", root.path, root.source)
    for path in derived.volatile:
        if ("volatile", config_key, path) not in _announced:
            _announced.add(("volatile", config_key, path))
            log.warning(
                "%s: %s holds a per-run value, so its key changes on every run and the cache "
                "misses every time; fix: move %s out of the hashed node or add it to "
                "hydra_cache.exclude",
                config_key,
                path,
                path,
            )
