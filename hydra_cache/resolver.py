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

import dataclasses
import functools
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import Container, Node, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from hydra_cache import _omegaconf, registry
from hydra_cache.errors import ConfigError, EntryError
from hydra_cache.key import (
    Context,
    DerivedKey,
    ExcludeRules,
    Identity,
    Snapshot,
    Upstream,
    all_keys,
    derive,
    enter_entry,
    holds_credentials,
    read_node,
    scrub,
    with_extra,
)
from hydra_cache.key.walk import holds_path, is_deriving, string_values
from hydra_cache.settings import Settings, parse_settings
from hydra_cache.store.roots import ENV_PINNED_ROOT, ENV_ROOT, Root, check_root, select_root

log = logging.getLogger(__name__)

RESOLVER_NAME = "cache_dir"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_NAMESPACE = 120


class CacheDirError(InterpolationResolutionError, EntryError, CompactHydraException):
    """A ``${cache_dir:...}`` that cannot be resolved.

    It subclasses OmegaConf's ``InterpolationResolutionError`` so OmegaConf passes our one-line
    message through instead of wrapping it, :class:`ConfigError` so callers outside OmegaConf
    can catch it as one, and Hydra's ``CompactHydraException`` so a Hydra app prints the line
    alone instead of a traceback (``HYDRA_FULL_ERROR=1`` still shows it).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        _report_compactly()

    def __str__(self) -> str:
        # OmegaConf appends "full_key: ... object_type=..." lines on the way out; ours names
        # the key already, and the promise is one line.
        text = super().__str__().strip()
        return text.splitlines()[0] if text else text


_FULL_ERROR_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def _report_compactly() -> None:
    """Keep the one-line report on hydra-core 1.4 too.

    1.3 prints a task's ``CompactHydraException`` as its message alone; 1.4 prints every
    exception a task raises with its (filtered) traceback, through ``sys.excepthook`` when one
    is installed. So, inside a Hydra job on 1.4, and only if nobody installed a hook of their
    own, the first error of ours installs one that prints our line and Hydra's hint, and hands
    everything else (and anything under ``HYDRA_FULL_ERROR=1``) to Python's own hook.
    """
    if sys.excepthook is not sys.__excepthook__ or not _hydra_reports_tracebacks():
        return
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        sys.excepthook = _compact_excepthook


def _hydra_reports_tracebacks() -> bool:
    import hydra

    version = re.match(r"(\d+)\.(\d+)", hydra.__version__)
    return bool(version) and (int(version[1]), int(version[2])) >= (1, 4)  # type: ignore[index]


def _compact_excepthook(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if isinstance(error, CacheDirError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
        sys.stderr.write(f"{error}\n\n{_FULL_ERROR_HINT}\n")
        return
    sys.__excepthook__(kind, error, trace)


@dataclass(frozen=True)
class ResolvedCacheDir:
    """One resolution, kept in the memo with what it depended on."""

    path: str
    config_key: str
    namespace: str
    identity: Identity
    derived: DerivedKey
    root: Root
    settings: Settings
    settings_snapshot: Snapshot
    environment: tuple[str | None, ...]
    #: Where the app was launched, when the root is relative to it (else None).
    launch_dir: str | None
    #: The ``hydra_cache.inputs`` keys whose fingerprints joined this key.
    inputs_used: tuple[str, ...] = ()
    #: (key, value, mode, base) of each input, to re-check its files on every access.
    input_checks: tuple[tuple[str, Any, str, str], ...] = ()

    def is_current(self) -> bool:
        return (
            self.environment == _environment()
            and (self.launch_dir is None or self.launch_dir == _launch_dir())
            and self.settings_snapshot.is_current(self.identity)
            and self.derived.snapshot.is_current(self.identity)
            and self._inputs_unchanged()
        )

    def _inputs_unchanged(self) -> bool:
        """Input files are re-fingerprinted on every access (a file rewritten after the first
        access must not keep the old key). ``stat`` costs a stat per file; ``sha256`` re-reads
        only files whose size, mtime or inode changed."""
        if not self.input_checks:
            return True
        from hydra_cache import inputs

        recorded = self.derived.payload.get("inputs") or {}
        for key, value, mode, base in self.input_checks:
            try:
                digest, _shown = inputs.fingerprint(key, value, mode, base)
            except ConfigError:
                return False
            if recorded.get(key) != digest:
                return False
        return True


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
    _omegaconf.register_resolver(RESOLVER_NAME, cache_dir)


def cache_dir(*args: Any, _parent_: Container, _node_: Node, _root_: Container) -> str:
    """Resolve ``${cache_dir:...}`` held by ``_node_`` (whose container is ``_parent_``)."""
    if not all(isinstance(arg, str) for arg in args):
        where = scrub(_omegaconf.full_key(_node_) or RESOLVER_NAME)
        bad = next(arg for arg in args if not isinstance(arg, str))
        raise CacheDirError(
            f"{where}: ${{cache_dir:...}} takes dotted config keys, got {bad!r}; "
            "fix: write e.g. ${cache_dir:data} or ${cache_dir:data.preprocessing,.source}"
        )
    memo = _memo_of(_root_)
    memo_key = (id(_parent_), args)
    known = memo.get(memo_key)
    config_key: str | None = None  # (worked out only off the hit path)
    if is_deriving():  # another entry's key is being derived: own, upstream or a cycle?
        if known is not None:
            enter_entry(known.identity, known.config_key)
        else:
            config_key = _config_key(_node_, args)
            try:
                identity = _hashed_nodes(args, _omegaconf.full_key(_parent_))
            except ConfigError as error:
                raise CacheDirError(f"{config_key}: {error}") from None
            enter_entry(identity, config_key)
    if known is not None and known.is_current():
        registry.remember_config(known.path, _root_)
        return str(known.path)
    if config_key is None:
        config_key = _config_key(_node_, args)
    try:
        resolved = _resolve(args, _parent_, _root_, config_key)
    except ConfigError as error:
        message = str(error)
        if isinstance(error, EntryError) and not message.startswith(config_key):
            message = f"{config_key}: upstream {_failed_entry(message)}"
        elif not message.startswith(config_key):
            message = f"{config_key}: {message}"
        raise CacheDirError(message) from None
    memo[memo_key] = resolved
    return resolved.path


def _config_key(node: Node, args: tuple[Any, ...]) -> str:
    """The config key of a ``${cache_dir:}``, refused when it, or a node it hashes by name,
    is named by credentials: the name would become the entry's namespace and folder, and be
    written in clear wherever the entry is named. The error names it by its fingerprint."""
    config_key = _omegaconf.full_key(node) or RESOLVER_NAME
    for name in (config_key, *args):
        if holds_credentials(name):
            raise CacheDirError(
                f"{scrub(config_key)}: {scrub(name)} names a config key whose name holds "
                "credentials, which would become the entry's folder name and be written in "
                "clear; fix: rename that node"
            )
    return config_key


def _failed_entry(message: str) -> str:
    """An upstream's failure without the stages between it and the entry asked for: a chain of
    a hundred stages fails in one line, not in a hundred prefixes."""
    head, upstream, rest = message.partition(": upstream ")
    return rest if upstream and ": " not in head else message


def resolve_all(cfg: Container) -> list[ResolvedCacheDir]:
    """Every ``${cache_dir:...}`` in ``cfg`` (outside ``hydra``), resolved, in config order.

    Also checks what only the whole config can tell: two config keys must not share one
    entry path.
    """
    found: list[ResolvedCacheDir] = []
    for node in _cache_dir_nodes(cfg):
        config_key = _omegaconf.full_key(node) or RESOLVER_NAME
        try:
            path = _omegaconf.value(_omegaconf.dereference(node))
        except CacheDirError:
            raise
        except OmegaConfBaseException as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise CacheDirError(
                f"{config_key}: {_omegaconf.raw_value(node)!r} is not a valid interpolation "
                f"({first}); fix: write ${{cache_dir:}} or ${{cache_dir:a.b,c}}"
            ) from None
        memo = _memo_of(cfg)
        for resolved in reversed(memo.values()):
            if resolved.path == path:
                found.append(dataclasses.replace(resolved, config_key=config_key))
                break
    by_path: dict[str, str] = {}
    for item in found:
        other = by_path.setdefault(item.path, item.config_key)
        if other != item.config_key:
            raise CacheDirError(
                f"{item.config_key}: resolves to the same entry as {other} ({item.path}), so "
                f"both would read and write one folder; fix: give one of them its own node, "
                f"e.g. ${{cache_dir:{item.identity[0] or '.'},.}} hashing a node that differs"
            )
    return found


def _cache_dir_nodes(cfg: Container) -> list[Node]:
    pattern = re.compile(r"\$\{\s*" + RESOLVER_NAME + r"\s*:")
    nodes: list[Node] = []

    def visit(container: Container, top: bool) -> None:
        content = _omegaconf.content(container)
        if not isinstance(content, (dict, list)):
            return
        items = content.items() if isinstance(content, dict) else enumerate(content)
        for key, child in items:
            if top and key == "hydra":
                continue
            if _omegaconf.is_interpolation(child):
                if pattern.search(_omegaconf.raw_value(child)):
                    nodes.append(child)
            elif isinstance(child, Container):
                visit(child, False)

    visit(cfg, True)
    return nodes


def _memo_of(root: Container) -> dict[tuple[int, tuple[Any, ...]], Any]:
    return _omegaconf.stash(root, _MEMO_ATTRIBUTE, _Memo)  # type: ignore[no-any-return]


def _environment() -> tuple[str | None, ...]:
    return (
        os.environ.get(ENV_ROOT),
        os.environ.get("XDG_CACHE_HOME"),
        os.environ.get("HOME"),
        os.environ.get(ENV_PINNED_ROOT),
    )


def _launch_dir() -> str:
    """Relative roots are relative to where the app was launched, not to Hydra's job dir."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


def _default_project() -> str | None:
    """The project of the app's config dir (``my-project/configs`` gives ``my-project``: see
    :func:`_project_of`), or the top package of a packaged config dir; None for an app
    without one (ConfigStore only, or the Compose API outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.instance().cfg
    if not isinstance(hydra_cfg, Container):
        return None
    sources = OmegaConf.select(hydra_cfg, "hydra.runtime.config_sources", default=None) or []
    # The app's own config dir, else one given with --config-dir (provider "command-line").
    for provider in ("main", "command-line"):
        for source in sources:
            if source.get("provider") != provider or not source.get("path"):
                continue
            if source.get("schema") == "file":
                return _project_of(str(source.path))
            if source.get("schema") == "pkg":
                return str(source.path).split(".")[0] or None
    return None


#: Files that mark a project's top folder.
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


@functools.lru_cache(maxsize=64)
def _project_of(config_dir: str) -> str | None:
    """The name of the nearest folder at or above ``config_dir`` that holds a project marker
    (``pyproject.toml``, ``setup.py``, ``setup.cfg``, ``.git``), else of the folder that
    holds the config dir: two apps whose config dirs share a parent folder but not a
    checkout are two projects."""
    start = Path(config_dir).resolve()
    for folder in (start, *list(start.parents)[:8]):
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return folder.name or None
    return start.parent.name or None


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
    args: tuple[Any, ...], parent: Container, root: Container, config_key: str
) -> ResolvedCacheDir:
    settings_value, settings_snapshot, secret_settings = read_node(root, "hydra_cache")
    settings = parse_settings(settings_value)
    environment = _environment()
    holder = _omegaconf.full_key(parent)
    nodes = _hashed_nodes(args, holder)
    rules = _exclude_rules(settings.exclude)
    _check_exclude(root, rules)
    here = _launch_dir()
    watch, inputs_outside = _inputs_outside(root, nodes, settings)
    context = Context(
        exclude=rules,
        salt=settings.salt,
        secret_salt=any(key.startswith("hydra_cache.salt") for key in secret_settings),
        known=registry.KNOWN,
        relative_to=settings.relative_to,
        machine=_machine_paths(environment[2], here),
        watch=watch,
        cache_dir_of=resolve_cache_dir_leaf,
    )
    derived = derive(root, [(holder, parent)] if not args else nodes, context=context)
    namespace = sanitise_namespace(nodes[0] or config_key)
    configured = settings.root or environment[0] or environment[1]
    relative = bool(configured) and not os.path.isabs(os.path.expanduser(str(configured)))
    used = [
        key
        for key in settings.inputs
        if _inside(key, nodes) or inputs_outside.get(key) in derived.watched
    ]
    derived, shown_inputs = _with_inputs_and_code(
        root, derived, used, settings, namespace, base=here
    )
    cache_root = select_root(settings.root, base_dir=here)
    if str(cache_root.path) not in _checked_roots:
        check_root(cache_root, shared=settings.shared)
        _checked_roots.add(str(cache_root.path))
    path = str(cache_root.path / namespace / derived.key)
    _announce(config_key, cache_root, derived)
    upstreams = _upstream_records(derived.upstreams)
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
                *derived.derived_from_cache_dir,
                *_upstream_coverage(derived.upstreams),
                "hydra",
                "hydra_cache",
            ),
            excluded=settings.exclude,
            inputs=shown_inputs,
            upstreams=tuple(upstreams),
            nodes=nodes,
            project=settings.project or _default_project(),
            remote=settings.remote,
        ),
    )
    registry.KNOWN.add(
        path, nodes, Upstream(config_key, derived.digest, path, nodes), str(cache_root.path), root
    )
    if settings.inputs:
        _check_inputs_used(root, settings, inputs_outside)
    registry.remember_config(path, root)
    return ResolvedCacheDir(
        path,
        config_key,
        namespace,
        nodes,
        derived,
        cache_root,
        settings,
        settings_snapshot,
        environment,
        here if relative else None,
        tuple(used),
        tuple(
            (key, OmegaConf.select(root, key, throw_on_missing=False), settings.input_mode, here)
            for key in used
        ),
    )


def resolve_cache_dir_leaf(node: Node) -> str:
    """A ``${cache_dir:}`` leaf's path, resolved as OmegaConf would call the resolver (the key
    walk's fast path for references to an upstream's cache dir)."""
    holder = _omegaconf.parent(node)
    assert holder is not None
    return cache_dir(_parent_=holder, _node_=node, _root_=_omegaconf.root_of(node))


def _upstream_records(upstreams: tuple[Upstream, ...]) -> list[dict[str, Any]]:
    """Each upstream (and, transitively, theirs): config key, namespace, key, digest and
    redacted payload, so ``why`` and ``diff`` can name what changed at a chain's root."""
    records: dict[str, dict[str, Any]] = {}
    for up in upstreams:
        info = registry.lookup(up.path)
        if info is None:
            continue
        records.setdefault(
            up.digest,
            {
                "config_key": up.config_key,
                "namespace": info.namespace,
                "key": info.key,
                "digest": up.digest,
                "payload": info.payload,
            },
        )
        for record in info.upstreams:
            records.setdefault(record["digest"], record)
    return list(records.values())


def _upstream_coverage(upstreams: tuple[Upstream, ...]) -> list[str]:
    """What an upstream's key covers, a downstream build may read: its hashed nodes and,
    through its digest, everything its own upstreams cover."""
    covered: list[str] = []
    for up in upstreams:
        info = registry.lookup(up.path)
        covered += info.covered if info else up.nodes
    return covered


@functools.lru_cache(maxsize=256)
def _exclude_rules(patterns: tuple[str, ...]) -> ExcludeRules:
    return ExcludeRules(patterns)


_CHECKED_EXCLUDES = "_hydra_cache_checked_excludes"


def _check_exclude(root: Container, rules: ExcludeRules) -> None:
    """Each exclude pattern must match a key of the composed config (once per config)."""
    if not rules:
        return
    checked: set[tuple[str, ...]] = _omegaconf.stash(root, _CHECKED_EXCLUDES, set)
    if rules.patterns in checked:
        return
    for pattern, close in rules.unmatched(all_keys(root)):
        hint = f"did you mean {close}?" if close else "name a key of the composed config"
        shown = repr(pattern)
        if holds_credentials(pattern):  # a key named by its credentials: not in the output
            shown = scrub(pattern)
            hint = "a key whose name holds credentials is matched by a wildcard (a.*)"
        raise ConfigError(
            f"hydra_cache.exclude: {shown} matches no key of the config, so nothing is "
            f"excluded; fix: {hint} (patterns: a.b, a.0.b or a[0].b, * for one key, ** for any)"
        )
    checked.add(rules.patterns)


def _machine_paths(home: str | None, launch_dir: str) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for given, why in (
        (launch_dir, "it is under the launch directory"),
        ((home or "").strip(), "it is under $HOME"),
    ):
        path = os.path.normpath(given) if given else ""
        if path and path != os.sep and os.path.isabs(path):
            found.append((path, why))
    return tuple(found)


def _inputs_outside(
    root: Container, nodes: tuple[str, ...], settings: Settings
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Input keys outside the hashed nodes, by their path value: they join this key when a
    hashed value holds that path (directly, through interpolations, or resolved)."""
    by_key: dict[str, str] = {}
    for key in settings.inputs:
        if holds_credentials(key):  # (it would be written as the input's name)
            raise ConfigError(
                f"hydra_cache.inputs: {scrub(key)} names a key whose name holds credentials, "
                "which would be written in clear as the input's name; fix: rename that node"
            )
        try:
            found = OmegaConf.select(root, key, throw_on_missing=True)
        except Exception as error:
            raise ConfigError(
                f"hydra_cache.inputs: {key} cannot be read ({str(error).splitlines()[0]}); fix: "
                "name an input key that has a value"
            ) from None
        if found is None and not _exists(root, key):
            raise ConfigError(
                f"hydra_cache.inputs: {key} is not a key of the config; fix: name the key "
                "that holds the input's path, e.g. hydra_cache.inputs=[data.path]"
            )
        if not _inside(key, nodes) and isinstance(found, str) and found:
            by_key[key] = found
    return tuple(sorted(set(by_key.values()))), by_key


_CHECKED_INPUTS = "_hydra_cache_checked_inputs"
_ARGUMENTS = re.compile(r"\$\{\s*" + RESOLVER_NAME + r"\s*:([^}]*)\}")


def _check_inputs_used(root: Container, settings: Settings, values: dict[str, str]) -> None:
    """Every ``hydra_cache.inputs`` key must join some cache dir's key (once per config): an
    input no hashed value holds would be silently ignored, in any app, with or without the
    manifest callback."""
    checked: set[tuple[str, ...]] = _omegaconf.stash(root, _CHECKED_INPUTS, set)
    if settings.inputs in checked:
        return
    hashed: set[str] = set()
    for node in _cache_dir_nodes(root):
        holder = _omegaconf.parent(node)
        holder_key = _omegaconf.full_key(holder) if holder is not None else ""
        for match in _ARGUMENTS.finditer(str(_omegaconf.raw_value(node))):
            args = tuple(a.strip() for a in match.group(1).split(",") if a.strip())
            try:
                hashed.update(_hashed_nodes(args, holder_key))
            except ConfigError:
                continue
    texts = string_values(root, sorted(hashed))
    for key in settings.inputs:
        if any(_inside(key, (node,)) for node in hashed):
            continue
        path = values.get(key)
        if path is None or not any(holds_path(text, path) for text in texts):
            raise ConfigError(
                f"hydra_cache.inputs: {key} joins no cache dir's key (no hashed value holds "
                f"its path); fix: drop {key} from hydra_cache.inputs, or reference it from the "
                "node a cache dir hashes"
            )
    checked.add(settings.inputs)


def _exists(root: Container, key: str) -> bool:
    node: Any = root
    for part in _omegaconf.split_key(key):
        if not isinstance(node, Container):
            return False
        node = _omegaconf.child(node, int(part) if part.isdigit() else part)
        if node is None:
            return False
    return True


def _inside(key: str, nodes: tuple[str, ...]) -> bool:
    return any(node in ("", key) or key.startswith((node + ".", node + "[")) for node in nodes)


def _with_inputs_and_code(
    root: Container,
    derived: DerivedKey,
    used: list[str],
    settings: Settings,
    namespace: str,
    *,
    base: str,
) -> tuple[DerivedKey, dict[str, dict[str, Any]] | None]:
    """Join input-file and code fingerprints to the key (they need the disk and imports,
    so they are taken here, not in the pure key module)."""
    extra: dict[str, Any] = {}
    shown: dict[str, dict[str, Any]] = {}
    if not used and settings.code_mode(namespace) == "off" and not settings.code_modules:
        return derived, None
    from hydra_cache import codeprint, inputs  # only when configured: plugin import stays light

    if used:
        digests = {}
        for key in used:
            found = OmegaConf.select(root, key, throw_on_missing=False)
            digests[key], shown[key] = inputs.fingerprint(key, found, settings.input_mode, base)
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
    base = _omegaconf.split_key(holder) if holder else []
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
    for path, why in derived.machine_specific:
        if ("machine", config_key, path) not in _announced:
            _announced.add(("machine", config_key, path))
            log.warning(
                "%s: %s holds a path only this machine has (%s), so other machines and other "
                "clones get another key and never share this entry; fix: set "
                "hydra_cache.relative_to to the base it is under (e.g. ${paths.root_dir}), "
                "or add %s to hydra_cache.exclude",
                config_key,
                path,
                why,
                path,
            )
