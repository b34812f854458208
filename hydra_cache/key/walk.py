"""Config node -> canonical payload -> digest: the walk that decides what joins a key.

This module is pure: it reads an OmegaConf tree and returns data. It never touches a disk and
never imports Hydra, so a key can be derived (and tested) anywhere, and what is or is not in a
key is decided in exactly one place.

What joins, besides the plain values of the hashed nodes:

- a value that is, or is derived from, *another* entry's cache dir joins as that entry's full
  digest (``<upstream:...>``), with any literal text around it, so a downstream key changes
  with its upstream and never depends on the root or the machine. This holds for an
  interpolation (``${data.cache_dir}/arrays.npz``) and for a plain string that already holds
  such a path (after ``OmegaConf.resolve`` or ``instantiate``): :class:`KnownEntries` knows
  every path this process derived. Only the entry's *own* cache dir stays out;
- the class of a structured (dataclass or attrs) node;
- an absolute path under a ``relative_to`` base joins relative to it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import operator
import re
import sys
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from itertools import chain
from pathlib import PurePath
from typing import Any, Union, cast

from omegaconf import Container, DictConfig, ListConfig, Node
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from hydra_cache._omegaconf import (
    NOT_A_LEAF,
    child,
    content,
    contents_of,
    dereference,
    is_missing,
    is_none,
    object_type,
    plain_group_contents,
    plain_leaf_values,
    raw_value,
    raw_values,
    slot_values,
    split_key,
    value,
    value_slots,
)
from hydra_cache.errors import ConfigError, EntryError
from hydra_cache.key.patterns import ExcludeRules
from hydra_cache.key.payload import (
    KEY_LENGTH,
    RELATIVE_MARKER,
    SCHEMA_VERSION,
    UNRESOLVED_PER_RUN,
    UPSTREAM_MARKER,
    digest_of,
)
from hydra_cache.key.refs import (
    CACHE_DIR,
    NOT_SIMPLE,
    CacheDirHook,
    chain_origin,
    resolve_simple,
)
from hydra_cache.key.rules import (
    MIN_CREDENTIAL_LENGTH,
    Origin,
    hides_value,
    holds_credentials,
    joined_holds_credentials,
    origin_of,
    redact,
    shown_name,
)

#: How a secret salt is listed among a key's redacted paths: the config key it is read from.
SALT_PATH = "hydra_cache.salt"
#: Nodes that never join a key (the ``hydra_cache`` node joins through its ``salt`` only).
ALWAYS_EXCLUDED = frozenset({"hydra", "hydra_cache"})
#: How ``hydra.utils.instantiate`` calls a target, not what it builds: ``instantiate(node,
#: _partial_=True)`` merges these into the node, and the key must not move with them.
INSTANTIATE_CONTROLS = frozenset({"_partial_", "_recursive_", "_convert_"})

PathStep = Union[str, int]
#: Which entry a derivation is for: the absolute dotted keys of its hashed nodes.
Identity = tuple[str, ...]
#: Stands for "no cache dir may be resolved here" (settings, the whole-config listing).
NO_ENTRY: Identity = ("\x00",)

_deriving: contextvars.ContextVar[tuple[Identity, ...]] = contextvars.ContextVar(
    "hydra_cache_deriving", default=()
)


class SelfReferenceError(InterpolationResolutionError):
    """Raised by ``${cache_dir:}`` for the entry being derived.

    An entry's own cache dir must not join its own key: the path is a function of the key,
    so hashing it would recurse forever. The walker catches this and leaves the value out.
    """


class CycleError(InterpolationResolutionError):
    """Two entries each derive from the other's cache dir: neither key can exist."""


def enter_entry(identity: Identity, config_key: str) -> None:
    """Called first by the resolver: may the cache dir of ``identity`` be derived here?

    Outside a derivation, always. Inside one, the entry being derived is the caller's own
    cache dir (left out of the key), an entry further up the chain is a cycle, and any other
    entry is an upstream, derived in turn (its path is recognised and hashed as its digest).
    """
    stack = _deriving.get()
    if not stack:
        return
    if NO_ENTRY in stack or stack[-1] == identity:
        raise SelfReferenceError("a cache dir never joins its own key")
    if identity in stack:  # (only the cycle: the stages that led to it are not part of it)
        cycle = (*stack[stack.index(identity) :], identity)
        chain = " -> ".join(", ".join(item) or "." for item in cycle)
        raise CycleError(
            f"{config_key}: cache dirs derive from each other in a cycle ({chain}); fix: "
            "make one stage read the other's output, not both"
        )


def is_deriving() -> bool:
    """Whether a key is being derived in this context (the resolver's cheap first check)."""
    return bool(_deriving.get())


@contextmanager
def deriving(identity: Identity) -> Iterator[None]:
    token = _deriving.set((*_deriving.get(), identity))
    try:
        yield
    finally:
        _deriving.reset(token)


def child_path(parent: str, step: PathStep) -> str:
    """The dotted key of a child, spelled as OmegaConf spells full keys, but for a name that
    holds credentials itself: that is spelled as its fingerprint (see :func:`shown_name`), so
    no recorded, matched or printed key ever carries it."""
    if isinstance(step, int):
        return f"{parent}[{step}]"
    if type(step) is not str:
        step = str(step)
    name = step if len(step) < MIN_CREDENTIAL_LENGTH else shown_name(step)
    return f"{parent}.{name}" if parent else name


@dataclass(frozen=True)
class Upstream:
    """An entry whose cache dir a hashed value is derived from."""

    config_key: str
    digest: str
    path: str
    #: The upstream's hashed nodes (what its key covers).
    nodes: tuple[str, ...] = ()


class KnownEntries:
    """Every cache path this process derived, so a plain string holding one is recognised.

    After ``OmegaConf.resolve`` or ``instantiate`` a value such as ``${data.cache_dir}/x.npz``
    is already the string ``/root/data/3f2a.../x.npz``. Hashed as a path, it would make the
    key depend on the root; here it is found and replaced by the entry's digest.
    """

    _NAME = r"[A-Za-z0-9_.-]"

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[Identity, Upstream, list[weakref.ref[Any]]]] = {}
        self._roots: dict[str, re.Pattern[str]] = {}
        self.roots: tuple[str, ...] = ()

    def add(
        self, path: str, identity: Identity, upstream: Upstream, root: str, config: Any = None
    ) -> None:
        """Remember ``path``; ``config`` is a config object it was derived from (only a path
        derived from the *same* config can be that config's own cache dir)."""
        known = self._by_path.get(path)
        configs = [ref for ref in known[2] if ref() is not None] if known else []
        if config is not None and not any(ref() is config for ref in configs):
            configs.append(weakref.ref(config))
        self._by_path[path] = (identity, upstream, configs)
        if root not in self._roots:
            self._roots[root] = re.compile(
                re.escape(root.rstrip("/")) + rf"/{self._NAME}+/[0-9a-f]{{{KEY_LENGTH}}}"
                r"(?![0-9A-Za-z])"  # "<key>.tar", "<key>-v2" and "<key>_old" still name it
            )
            self.roots = tuple(self._roots)

    def find(self, text: str) -> Iterator[tuple[int, int, Identity, Upstream, list[Any]]]:
        """Each known entry path inside ``text``: (start, end, identity, upstream, configs
        that derived it)."""
        for root, pattern in self._roots.items():
            if root in text:
                for match in pattern.finditer(text):
                    known = self._by_path.get(match.group(0))
                    if known is not None:
                        configs = [ref() for ref in known[2]]
                        yield match.start(), match.end(), known[0], known[1], configs


#: Every cache path this process derived (the resolver adds each one it resolves).
KNOWN = KnownEntries()


_STR_ONLY = frozenset({str})


@dataclass
class Snapshot:
    """Identity of every node a derivation read, to tell cheaply whether it still holds.

    Re-deriving a key resolves every leaf; checking a snapshot only compares object
    identities (of each container's children and each leaf's raw value) and re-resolves the
    interpolated leaves, so a memoized path stays exact when the config is changed after the
    first access. Leaves left out (excluded, or the entry's own cache dir) are recorded too:
    replacing one with a plain value must re-derive.
    """

    containers: list[Container] = field(default_factory=list)
    contents: list[Any] = field(default_factory=list)
    #: Every child node of every container, flat and in order, and each container's size:
    #: checked in two C-level comparisons instead of a Python loop per container.
    children: list[Any] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    dicts: list[dict[Any, Any]] = field(default_factory=list)
    #: Every key of every dict container, flat and in order.
    keys: list[Any] = field(default_factory=list)
    lists: list[list[Any]] = field(default_factory=list)
    list_children: list[Any] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    raws: list[Any] = field(default_factory=list)
    interpolations: list[tuple[Node, Any]] = field(default_factory=list)
    exact: bool = True
    hook: CacheDirHook | None = None
    _slots: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: Whether every key is a plain str (None: not looked at yet).
    _str_keys: bool | None = field(default=None, repr=False)

    def add_container(self, container: Container, children: Any) -> None:
        self.containers.append(container)
        self.contents.append(children)
        self.sizes.append(len(children))
        if type(children) is dict:
            self.dicts.append(children)
            self.children.extend(children.values())
            self.keys.extend(children)
        else:
            self.lists.append(children)
            self.list_children.extend(children)

    def add_plain_groups(
        self, groups: list[Container], contents: list[Any], nodes: list[Node], raws: list[Any]
    ) -> None:
        """Sibling containers of plain leaves, read at once: what :meth:`add_container` per
        group and one leaf per node would record, in the same order."""
        self.containers.extend(groups)
        self.contents.extend(contents)
        self.sizes.extend(map(len, contents))
        self.dicts.extend(contents)
        self.children.extend(nodes)
        self.keys.extend(chain.from_iterable(contents))
        self.nodes.extend(nodes)
        self.raws.extend(raws)

    def add_leaf(self, node: Node, raw: Any) -> None:
        if isinstance(node, Container):  # an interpolated container left out of the key
            self.add_container(node, content(node))
            return
        self.nodes.append(node)
        self.raws.append(raw)

    def _aligned(self) -> bool:
        """Whether the flat lists pair up as the passes below pair them: each pass stops at
        the shorter list, so a recorder that added a container's dict without its children
        would leave nodes unchecked. Such a snapshot is never trusted."""
        return (
            len(self.children) == len(self.keys) == sum(map(len, self.dicts))
            and len(self.list_children) == sum(map(len, self.lists))
            and len(self.nodes) == len(self.raws)
            and len(self.containers) == len(self.contents) == len(self.sizes)
        )

    def is_current(self, identity: Identity) -> bool:
        """Whether every node read is still the same object holding the same raw value (each
        pass is one C-level comparison over a flat list), and every interpolation still
        resolves to what it did."""
        if not self.exact:
            return False
        if not all(map(operator.is_, contents_of(self.containers), self.contents)):
            return False
        if list(map(len, self.contents)) != self.sizes:  # keeps the flat lists aligned
            return False
        if self._slots is None and not self._aligned():  # (once: the recorders' bookkeeping)
            self.exact = False
            return False
        if not all(
            map(operator.is_, chain.from_iterable(map(dict.values, self.dicts)), self.children)
        ):
            return False
        # Keys by equality (one C-level pass): a node moved to another name (possible where
        # nodes are set without a copy, as OmegaConf.unsafe_merge does) is a change too.
        # Equal keys of other types (1, 1.0, True) would not tell apart: those by identity.
        keys = list(chain.from_iterable(self.dicts))
        if self._str_keys is None:
            self._str_keys = _STR_ONLY.issuperset(map(type, self.keys))
        if keys != self.keys or (
            not self._str_keys and not all(map(operator.is_, keys, self.keys))
        ):
            return False
        if self.lists and not all(
            map(operator.is_, chain.from_iterable(self.lists), self.list_children)
        ):
            return False
        if self._slots is None or len(self._slots) != len(self.nodes):
            self._slots = value_slots(self.nodes)  # once: later checks skip the lookup
        if not all(map(operator.is_, slot_values(self._slots), self.raws)):
            return False
        if not self.interpolations:
            return True
        token = _deriving.set((*_deriving.get(), identity))
        try:
            for node, expected in self.interpolations:
                try:
                    found, _simple = _resolve_leaf(node, raw_value(node), self.hook)
                except RecursionError:  # a chain past Python's limit: an error, not a retry
                    raise  # (re-deriving would hit it again, once per stage: exponential)
                except Exception:
                    return False
                if type(found) is not type(expected) or found != expected:
                    return False
        finally:
            _deriving.reset(token)
        return True


@dataclass(frozen=True)
class DerivedKey:
    """The result of one derivation: the key and everything needed to explain it."""

    key: str
    digest: str
    payload: dict[str, Any]
    #: Dotted keys whose values must never be shown (credentials, environment values).
    redacted_paths: frozenset[str]
    #: Dotted keys whose values change on every run (the key then misses on every run).
    volatile: tuple[str, ...]
    #: Dotted keys left out because they are (or derive from) the entry's own cache dir.
    derived_from_cache_dir: tuple[str, ...]
    snapshot: Snapshot
    #: Entries whose cache dirs hashed values derive from, in the order first met.
    upstreams: tuple[Upstream, ...] = ()
    #: (dotted key, why) for hashed values that hold a path only this machine has.
    machine_specific: tuple[tuple[str, str], ...] = ()
    #: Dotted keys of string values that hold each watched path (see ``derive(watch=...)``).
    watched: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def redacted_payload(self) -> dict[str, Any]:
        """The payload with every secret value replaced, safe for manifests, journals, logs."""
        if not self.redacted_paths:
            return self.payload
        redacted = dict(self.payload)
        if SALT_PATH in self.redacted_paths:
            redacted["salt"] = redact(self.payload.get("salt"))
        redacted["nodes"] = {
            name: _redact(item, name if name != "." else "", self.redacted_paths)
            for name, item in self.payload["nodes"].items()
        }
        return redacted


def _redact(item: Any, path: str, paths: frozenset[str]) -> Any:
    if path in paths:
        return redact(item)
    if isinstance(item, dict):
        return {
            shown_name(k) if type(k) is str else k: _redact(v, child_path(path, k), paths)
            for k, v in item.items()
        }
    if isinstance(item, list):
        return [_redact(v, child_path(path, i), paths) for i, v in enumerate(item)]
    return item


@dataclass(frozen=True)
class Context:
    """What the world tells one derivation: settings and what this process knows.

    ``relative_to``: absolute base paths (``hydra_cache.relative_to``); ``machine``: paths
    only this machine has (``$HOME``, the launch directory), which earn a warning.
    """

    exclude: ExcludeRules = field(default_factory=lambda: ExcludeRules(()))
    salt: Any = None
    #: The salt is a secret (read from the environment, or holding credentials).
    secret_salt: bool = False
    known: KnownEntries | None = field(default_factory=lambda: KNOWN)
    relative_to: tuple[str, ...] = ()
    machine: tuple[tuple[str, str], ...] = ()
    watch: tuple[str, ...] = ()
    #: Resolves a plain ``${cache_dir:}`` leaf without OmegaConf's grammar (the resolver's).
    cache_dir_of: CacheDirHook | None = None


def derive(
    root: Container,
    nodes: Sequence[str | tuple[str, Node]],
    *,
    exclude: Iterable[str] | ExcludeRules = (),
    salt: Any = None,
    context: Context | None = None,
    identity: Identity | None = None,
) -> DerivedKey:
    """Derive the key of the entry made of ``nodes``.

    Each node is an absolute dotted key (``""`` is the root), or a ``(name, node)`` pair when
    the caller already holds the node (the resolver does, and a key such as ``..`` cannot be
    spelled as a dotted path).
    """
    if context is None:
        rules = exclude if isinstance(exclude, ExcludeRules) else ExcludeRules(exclude)
        context = Context(exclude=rules, salt=salt)
    names = [item[0] if isinstance(item, tuple) else item for item in nodes]
    for name in names:
        if name.split(".")[0].split("[")[0] in ALWAYS_EXCLUDED:
            raise ConfigError(
                f"${{cache_dir:{name}}} hashes {name}, which never joins a key (Hydra's and "
                "hydra-cache's own settings), so every config would share one entry; fix: "
                "hash the node that describes the data"
            )
        pattern = context.exclude.covering(name) if name else None
        if pattern is not None:
            raise ConfigError(
                f"hydra_cache.exclude: {pattern!r} excludes {name}, the node this cache dir "
                f"hashes, so its key would ignore every value in it; fix: exclude only the "
                f"keys inside {name} that do not change the entry"
            )
    walker, hashed = _walk_nodes(root, nodes, context, identity or tuple(names))
    known = context.known
    if known is not None and known.roots is not walker.roots_at_start:
        # An upstream met on the way made a new root known: strings walked before that were
        # not looked at for its paths. Walk again, with every root known from the start, so
        # the key never depends on which entry a process happened to derive first.
        walker, hashed = _walk_nodes(root, nodes, context, identity or tuple(names))
    payload: dict[str, Any] = {"schema": SCHEMA_VERSION, "salt": context.salt, "nodes": hashed}
    if walker.types:
        payload["types"] = walker.types
    try:
        digest = digest_of(payload)
    except RecursionError:  # json's encoder has a depth limit of its own
        raise _too_deep(names[0] if len(names) == 1 else "") from None
    return DerivedKey(
        key=digest[:KEY_LENGTH],
        digest=digest,
        payload=payload,
        redacted_paths=frozenset(walker.redacted)
        | ({SALT_PATH} if context.secret_salt else frozenset()),
        volatile=tuple(walker.volatile),
        derived_from_cache_dir=tuple(walker.derived),
        snapshot=walker.snapshot,
        upstreams=tuple(walker.upstreams.values()),
        machine_specific=tuple(walker.machine_specific),
        watched={k: tuple(v) for k, v in walker.watched.items()},
    )


def _walk_nodes(
    root: Container,
    nodes: Sequence[str | tuple[str, Node]],
    context: Context,
    own: Identity,
) -> tuple[_Walker, dict[str, Any]]:
    """One walk of the hashed nodes: the walker (what it noticed) and their payloads."""
    walker = _Walker(context, own=own)
    walker.root = root
    hashed: dict[str, Any] = {}
    with deriving(walker.own):
        for item in nodes:
            name, node = item if isinstance(item, tuple) else (item, walker.locate(root, item))
            # A node named in ${cache_dir:...}'s arguments is a secret by its own name too.
            secret = any(hides_value(part) for part in split_key(name)) if name else False
            try:
                walked = walker.walk(node, name, secret=secret)
            except RecursionError:
                raise _too_deep(name) from None
            hashed[name or "."] = None if walked is _SKIP else walked
            if walked in ({}, []) and walker.excluded_any:
                raise ConfigError(
                    f"hydra_cache.exclude: {', '.join(map(repr, context.exclude.patterns))} "
                    f"leave nothing of {name or 'the config'} in its key, so every value there "
                    f"would share one entry; fix: exclude only the keys inside {name or '.'} "
                    "that do not change the entry"
                )
    return walker, hashed


def _too_deep(name: str) -> ConfigError:
    return ConfigError(
        f"{name or 'the config'} is too deep to hash (Python's recursion limit, "
        f"{sys.getrecursionlimit()}, was reached: by a config nested hundreds of levels deep, or "
        "by a chain of a hundred or more stages, each reading the one before); fix: flatten it "
        "or shorten the chain, add its deep part to hydra_cache.exclude, or raise the limit "
        "(sys.setrecursionlimit) before the first access"
    )


def with_extra(derived: DerivedKey, extra: dict[str, Any]) -> DerivedKey:
    """The same derivation with more joined to its payload (input and code fingerprints)."""
    payload = {**derived.payload, **extra}
    digest = digest_of(payload)
    return dataclasses.replace(derived, payload=payload, digest=digest, key=digest[:KEY_LENGTH])


def read_node(root: Container, name: str) -> tuple[Any, Snapshot, frozenset[str]]:
    """The resolved plain value of a top-level node (``None`` when absent), with its snapshot
    and the dotted keys of its secret values.

    Used for the ``hydra_cache`` settings node, so that a memoized path also notices a
    changed setting, and a salt read from the environment is never written down.
    """
    walker = _Walker(Context(), own=NO_ENTRY, reserved=frozenset())
    children = content(root)
    walker.snapshot.add_container(root, children)
    if name not in children:
        return None, walker.snapshot, frozenset()
    with deriving(NO_ENTRY):
        found = walker.walk(walker.locate(root, name), name)
    return (None if found is _SKIP else found), walker.snapshot, frozenset(walker.redacted)


def config_values(root: Container) -> dict[str, Any]:
    """The whole config (but ``hydra`` and cache-dir values) resolved as far as it goes.

    Unlike :func:`derive` it never fails: a ``???`` stays ``"???"`` and a value that cannot be
    resolved becomes ``"<unresolvable>"``. Used to list config changes that touch no cache.
    """
    walker = _Walker(Context(), own=NO_ENTRY, tolerant=True, reserved=frozenset({"hydra"}))
    with deriving(NO_ENTRY):
        found = walker.walk(root, "")
    if not isinstance(found, dict):
        return {}
    redacted = frozenset(walker.redacted)
    return {"nodes": {".": _redact(found, "", redacted)}, "redacted": sorted(redacted)}


def string_values(root: Container, names: Iterable[str]) -> list[str]:
    """Every string value under the nodes ``names``, resolved as far as it goes (cache dirs
    left out): what a ``hydra_cache.inputs`` path may be found in."""
    found: list[str] = []

    def collect(item: Any) -> None:
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            for sub in item.values():
                collect(sub)
        elif isinstance(item, list):
            for sub in item:
                collect(sub)

    with deriving(NO_ENTRY):
        for name in names:
            walker = _Walker(Context(known=None), own=NO_ENTRY, tolerant=True)
            try:
                collect(walker.walk(walker.locate(root, name), name))
            except ConfigError:
                continue
    return found


def holds_path(text: str, base: str) -> bool:
    """Whether ``text`` holds the path ``base`` (or a path under it), on path boundaries."""
    return _holds_path(text, base)


def all_keys(root: Container) -> list[str]:
    """Every dotted key of the config's structure (but ``hydra``), without resolving values."""
    keys: list[str] = []
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, Container):
            continue
        children = content(node)
        if isinstance(children, dict):
            for name, item in children.items():
                if not path and name == "hydra":
                    continue
                key = child_path(path, _key_name(name))
                keys.append(key)
                stack.append((key, item))
        elif isinstance(children, list):
            for index, item in enumerate(children):
                key = child_path(path, index)
                keys.append(key)
                stack.append((key, item))
    return keys


class _Skip:
    """Marks a value that does not join the payload."""


_SKIP = _Skip()


def _key_name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, Enum):
        return key.name
    return f"{type(key).__name__}:{key!r}"


def _plain(item: Any, path: str) -> Any:
    """A Python value as it joins the payload (resolver results may be lists or dicts)."""
    if item is None or isinstance(item, (bool, int, float, str)):
        return item
    if isinstance(item, Enum):
        return item.name
    if isinstance(item, PurePath):
        return str(item)
    if isinstance(item, bytes):
        return {"__bytes__": item.hex()}
    if isinstance(item, (list, tuple)):
        return [_plain(v, child_path(path, i)) for i, v in enumerate(item)]
    if isinstance(item, dict):
        return {_key_name(k): _plain(v, child_path(path, _key_name(k))) for k, v in item.items()}
    raise ConfigError(
        f"{path}: a value of type {type(item).__name__} cannot join a cache key; "
        f"fix: use a plain YAML value there, or add '{path}' to hydra_cache.exclude"
    )


def _path_holds_credentials(text: str) -> bool:
    """A Path's text, where pathlib turned ``https://user:pw@host`` into ``https:/user:pw@host``:
    scanned with the URL's slashes put back too."""
    return holds_credentials(text) or (
        ":/" in text and holds_credentials(text.replace(":/", "://"))
    )


def _resolved_as_plain(found: Any, path: str) -> tuple[Any, bool]:
    """A resolved value that is not a plain one (a Path field's interpolation, a resolver's
    bytes or enum) as it joins the payload, and whether its text carries credentials."""
    if isinstance(found, PurePath):  # as its text, under the string rules
        text = str(found)
        return text, _path_holds_credentials(text)
    return _plain(found, path), _holds_credentials_as(type(found), found)


def _hex_holds_credentials(text: str) -> bool:
    try:
        return _holds_credentials_as(bytes, bytes.fromhex(text))
    except ValueError:  # not bytes after all, but a dict of the user's: its text then
        return holds_credentials(text)


def _holds_credentials_as(kind: type, value: Any) -> bool:
    """Whether a string, or the text of bytes (YAML ``!!binary``), carries credentials."""
    if kind is str:
        return holds_credentials(value)
    if kind is bytes:
        return holds_credentials(value.decode("latin-1"))
    return False


def _check_names(children: dict[Any, Node], path: str) -> None:
    """Two keys of one container that join a payload under one name (``Split.TRAIN`` and
    ``"TRAIN"``) would leave one value out of the key: refuse, naming both."""
    seen: dict[str, Any] = {}
    for key in children:
        name = _key_name(key)
        if name in seen:
            raise ConfigError(
                f"{path or 'the config'}: the keys {seen[name]!r} and {key!r} both join the "
                f"cache key as {name!r}, so one of their values would be left out of it; fix: "
                "rename one of them"
            )
        seen[name] = key


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _unresolvable(path: str, raw: str, error: BaseException) -> ConfigError:
    """The one-line error for an interpolation that cannot be resolved. It quotes the text and
    OmegaConf's reason, unless either holds credentials: an error reaches terminals and CI
    logs, so then the text shows as its fingerprint."""
    shown, reason = repr(raw), _first_line(error)
    if holds_credentials(raw) or holds_credentials(reason):
        shown, reason = redact(raw), "its text holds credentials, so it is not shown"
    return ConfigError(
        f"{path}: cannot resolve {shown} ({reason}); fix: make the interpolation resolvable, "
        f"or add '{path}' to hydra_cache.exclude"
    )


def _resolve_leaf(node: Node, raw: str, hook: CacheDirHook | None = None) -> tuple[Any, bool]:
    """An interpolated leaf's value, and whether it was plain references to plain values
    (the fast path, which skips OmegaConf's grammar), else OmegaConf resolves it."""
    found = resolve_simple(node, raw, hook)
    if found is not NOT_SIMPLE:
        return found, True
    target = dereference(node)
    if is_missing(target):
        raise _MissingTarget
    if isinstance(target, Container):
        raise _ContainerTarget(target)
    found = value(target)
    if isinstance(found, (list, tuple, dict)):
        return _plain(found, ""), False
    return found, False


class _MissingTarget(Exception):
    pass


class _ContainerTarget(Exception):
    def __init__(self, target: Container) -> None:
        super().__init__()
        self.target = target


#: Whether the walk takes its shortcuts: a container of plain leaves decided at once, and a
#: child container walked without a walk() call. Off, every value goes through the general
#: path one by one; tests switch it off to check that both decide exactly alike.
SHORTCUTS = True

_CONTAINERS = (DictConfig, ListConfig)
#: Value types that join a payload as they are (the fast path takes no other).
_PLAIN = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _plain_keys(keys: tuple[Any, ...] | frozenset[Any]) -> bool:
    """Whether a container's keys are all plain strings, with no credential-like name and no
    instantiate control (remembered: real configs repeat their shapes)."""
    return all(
        type(key) is str and key not in INSTANTIATE_CONTROLS and not hides_value(key)
        for key in keys
    )


class _Walker:
    """One derivation's walk: the payload plus what it noticed on the way.

    The walk reads OmegaConf's containers and raw values directly instead of going through
    ``cfg[key]`` (which validates, wraps and resolves on every access): that is what keeps a
    5,000-leaf key cheaper than ``OmegaConf.to_container``.
    """

    def __init__(
        self,
        context: Context,
        *,
        own: Identity,
        tolerant: bool = False,
        reserved: frozenset[str] = ALWAYS_EXCLUDED,
    ) -> None:
        self.context = context
        self.reserved = reserved
        #: The config being derived from (its own earlier paths are its own cache dir).
        self.root: Any = None
        #: Whether an exclude pattern left anything out (an emptied node is then an error).
        self.excluded_any = False
        self.exclude = context.exclude
        self.excluding = bool(context.exclude)
        self.own = own
        self.tolerant = tolerant
        self.redacted: list[str] = []
        self.volatile: list[str] = []
        self.derived: list[str] = []
        self.types: dict[str, str] = {}
        self.upstreams: dict[str, Upstream] = {}
        self.machine_specific: list[tuple[str, str]] = []
        self.watched: dict[str, list[str]] = {}
        self.snapshot = Snapshot(hook=context.cache_dir_of)
        self._refresh_prefixes()
        #: The roots known when this walk began (a new one met on the way: walk again).
        self.roots_at_start = self._roots_seen

    def _refresh_prefixes(self) -> None:
        """Prefixes that make a string leaf worth a closer look; none: the fast path stays.

        Known roots can grow during a walk (an upstream met on the way registers its path).
        """
        known = self.context.known
        self._roots_seen = known.roots if known else ()
        self.prefixes = _shortest(
            (
                *self._roots_seen,
                *self.context.relative_to,
                *(path for path, _why in self.context.machine),
                *self.context.watch,
            )
        )

    def locate(self, root: Container, name: str) -> Node:
        """The raw node at an absolute dotted key, recording each step for the snapshot."""
        node: Node = root
        for part in split_key(name) if name else ():
            if not isinstance(node, Container) or is_none(node) or is_missing(node):
                break
            children = content(node)
            if not isinstance(children, (dict, list)):
                break
            step: PathStep = int(part) if isinstance(node, ListConfig) and part.isdigit() else part
            found = child(node, step)
            if found is None:
                break
            self.snapshot.add_container(node, children)
            node = found
        else:
            return node
        raise ConfigError(
            f"node '{name}' does not exist in the config; fix: name an existing node "
            f"(absolute dotted key, or '.x' relative to the node holding the interpolation)"
        )

    def walk(self, node: Node, path: str, *, secret: bool = False) -> Any:
        if path in self.reserved:
            self._record_skipped(node)
            return _SKIP
        if self.excluding and self.exclude.excludes(path):
            self.excluded_any = True
            self._record_skipped(node)
            return _SKIP
        if type(node) in _CONTAINERS or isinstance(node, Container):
            container = cast(Container, node)
            children = content(container)
            if type(children) is str:
                return self._special(container, children, path, secret)
            return self._walk_container(container, children, path, secret)
        raw = raw_value(node)
        kind = type(raw)
        if kind is str and ("${" in raw or raw == "???"):
            return self._special(node, raw, path, secret)
        self.snapshot.add_leaf(node, raw)
        if isinstance(raw, PurePath):  # a Path field joins as its text, under the same rules
            raw, kind = str(raw), str
            secret = secret or _path_holds_credentials(raw)
        if kind is str and self.prefixes:
            return self._string(raw, path, secret)
        if secret or _holds_credentials_as(kind, raw):
            self.redacted.append(path)
        return raw if kind in _PLAIN else _plain(raw, path)

    def _record_skipped(self, node: Node) -> None:
        if isinstance(node, Container):
            self.snapshot.add_container(node, content(node))
        else:
            self.snapshot.add_leaf(node, raw_value(node))

    def _walk_container(  # noqa: PLR0915  (the hot loop, inlined: a call per leaf is its cost)
        self, node: Container, children: Any, path: str, secret: bool, values: Any = None
    ) -> Any:
        """A container's payload. ``values``: its children's raw values when the caller has
        already found them all plain leaves and tried the fast path on them.

        A child container is walked by a direct call to this method (one stack frame per
        level of nesting, so a deep config or a long chain of stages stays hashable), and one
        of plain leaves without even that (most containers of a real config are like this).
        """
        if children is None:
            return None
        self.snapshot.add_container(node, children)
        cls = object_type(node)
        if cls is not None:
            self.types[path or "."] = f"{cls.__module__}.{cls.__qualname__}"
        # Child by child: where an exclude pattern may apply, and at the root, whose children
        # may be reserved (`hydra`, `hydra_cache`).
        check = (self.excluding and self.exclude.may_exclude_below(path)) or (
            not path and bool(self.reserved)
        )
        if type(children) is not dict:
            items: list[Any] = []
            for index, item in enumerate(children):
                found = self.walk(item, child_path(path, index), secret=secret)
                if found is not _SKIP:
                    items.append(found)
            return items
        groups: dict[str, Any] | None = None
        if values is None:
            values = plain_leaf_values(children)
            if values is None:
                values = raw_values(children)
                if SHORTCUTS and not (secret or check):
                    groups = self._plain_groups(children, values)
            elif SHORTCUTS and not (secret or check):
                leaves = self._plain_leaves(children, values)
                if leaves is not None:
                    return leaves
        out: dict[str, Any] = {}
        nodes_append, raws_append = self.snapshot.nodes.append, self.snapshot.raws.append
        plain, prefixes = _PLAIN, self.prefixes
        renamed = False
        for (key, item), raw in zip(children.items(), values):
            if type(key) is str:
                name = key
            else:
                name, renamed = _key_name(key), True
            kind = type(raw)
            if name in INSTANTIATE_CONTROLS:
                continue
            if (
                raw is NOT_A_LEAF
                and type(item) is DictConfig
                and SHORTCUTS
                and not (secret or check)
            ):
                if groups is not None:  # (decided with its siblings)
                    out[name] = groups[name]
                    continue
                sub = content(item)
                if type(sub) is dict:  # (not None, "???" or an interpolation: walk() below)
                    hidden = hides_value(name)
                    sub_values = None
                    if not hidden and object_type(item) is None:
                        sub_values = plain_leaf_values(sub)
                        if sub_values is not None:
                            leaves = self._plain_leaves(sub, sub_values)
                            if leaves is not None:
                                self.snapshot.add_container(item, sub)
                                out[name] = leaves
                                continue
                    sub_path = child_path(path, name)
                    if hidden:
                        self._note_hidden_name(name, sub_path)
                    out[name] = self._walk_container(item, sub, sub_path, hidden, values=sub_values)
                    continue
            if secret or check or raw is NOT_A_LEAF or hides_value(name):
                slow = True
            else:  # the common case, inlined: a plain value of an untouched leaf
                if kind is str:
                    if "${" in raw:
                        found = self._special(item, raw, child_path(path, name), False)
                        if found is not _SKIP:
                            out[name] = found
                        continue
                    slow = raw == "???" or (
                        len(raw) >= MIN_CREDENTIAL_LENGTH and holds_credentials(raw)
                    )
                    if prefixes and not slow:
                        for prefix in prefixes:
                            if prefix in raw:
                                slow = True
                                break
                else:
                    slow = kind not in plain
                if not slow:
                    nodes_append(item)
                    raws_append(raw)
                    out[name] = raw
                    continue
            hidden = secret or hides_value(name)
            item_path = child_path(path, name)
            if hidden:
                self._note_hidden_name(name, item_path)
            found = self.walk(item, item_path, secret=hidden)
            if found is not _SKIP:
                out[name] = found
        if renamed:
            _check_names(children, path)
        return out

    def _plain_leaves(self, children: dict[Any, Node], values: list[Any]) -> dict[str, Any] | None:
        """A dict container whose children are all plain leaves (``values``: their raw values)
        that need no closer look, as one payload dict; else None (the per-child loop decides).

        Most containers of a real config are like this, and deciding it once per container
        with a few C-level passes, instead of once per leaf, is most of what keeps a large key
        cheap. The checks are the per-leaf ones, run on all of the container's strings at
        once: a hit anywhere (an interpolation, ``???``, credentials, a path worth a look)
        sends the whole container to the loop, so this never decides differently from it.
        """
        if not self._clean(values) or not _plain_keys(tuple(children)):
            return None
        self.snapshot.nodes.extend(children.values())
        self.snapshot.raws.extend(values)
        return dict(zip(children, values))

    def _plain_groups(self, children: dict[Any, Node], values: list[Any]) -> dict[str, Any] | None:
        """Every child container of ``children`` at once, when each is a plain dict of plain
        leaves that needs no closer look: their payloads by name; else None (each is then
        decided on its own, by :meth:`_plain_leaves` or the loop).

        The same checks as :meth:`_plain_leaves`, run once over all the groups' leaves: a
        ``data`` node of a hundred small sections costs a few C-level passes instead of a
        hundred rounds of them.
        """
        names = [  # (a list among them goes its own way, in the loop)
            name
            for (name, item), raw in zip(children.items(), values)
            if raw is NOT_A_LEAF and type(item) is DictConfig
        ]
        if len(names) < 2:
            return None
        # A cheap probe first: where one group needs the loop, others likely do too.
        groups = cast("list[Container]", list(map(children.__getitem__, names)))
        probe = plain_group_contents(groups[:1])
        first = None if probe is None else plain_leaf_values(probe[0])
        if first is None or not self._clean(first) or not _plain_keys(tuple(names)):
            return None
        contents = plain_group_contents(groups)
        if contents is None:
            return None
        nodes = list(chain.from_iterable(map(dict.values, contents)))
        leaves = plain_leaf_values(nodes)
        if leaves is None or not self._clean(leaves):
            return None
        if not _plain_keys(frozenset(chain.from_iterable(contents))):
            return None
        self.snapshot.add_plain_groups(groups, contents, nodes, leaves)
        remaining = iter(leaves)  # (zip takes from a group first: each gets its own leaves)
        return {name: dict(zip(group, remaining)) for name, group in zip(names, contents)}

    def _clean(self, values: list[Any]) -> bool:
        """Whether plain leaf values join the payload as they are: plain types, and no string
        that needs a closer look (an interpolation, ``???``, a path worth one, credentials)."""
        strings = [item for item in values if type(item) is str]
        if strings:  # first: an interpolation sends a container to the loop most often
            text = "\n".join(strings)
            if "${" in text or "???" in text:
                return False
        if not _PLAIN.issuperset(map(type, values)):
            return False
        if strings:  # the cheap prefix test before the pattern: a hit here is common
            for prefix in self.prefixes:
                if prefix in text:
                    return False
            if joined_holds_credentials(text):
                return False
        return True

    def _string(self, text: str, path: str, secret: bool, origin: Origin | None = None) -> Any:
        """A string value that may hold a cache path, a relative_to base or a machine path."""
        known = self.context.known
        if known is not None and known.roots:
            pieces: list[str] = []
            last = 0
            for start, end, identity, upstream, configs in known.find(text):
                if identity == self.own and any(config is self.root for config in configs):
                    self.derived.append(path)
                    return _SKIP
                pieces += [text[last:start], UPSTREAM_MARKER.format(digest=upstream.digest)]
                self.upstreams.setdefault(upstream.digest, upstream)
                last = end
            if pieces:
                text = "".join([*pieces, text[last:]])
        for watched in self.context.watch:
            if _holds_path(text, watched):
                self.watched.setdefault(watched, []).append(path)
        relative = False
        for index, base in enumerate(self.context.relative_to):
            if _holds_path(text, base):
                text = _replace_path(text, base, RELATIVE_MARKER.format(index=index))
                relative = True
        if not relative:
            for machine_path, why in self.context.machine:
                if _holds_path(text, machine_path):
                    self.machine_specific.append((path, why))
                    break
            else:
                if origin is not None and origin.from_env and text.startswith(("/", "~")):
                    self.machine_specific.append((path, "it is read from ${oc.env:...}"))
        if secret or holds_credentials(text):
            self.redacted.append(path)
        return text

    def _special(self, node: Node, raw: str, path: str, secret: bool) -> Any:
        """A missing value or an interpolation (of a leaf or of a whole container)."""
        if raw == "???":
            if self.tolerant:
                return "???"
            raise ConfigError(
                f"{path} is '???' (missing) but is part of a cache key; fix: give it a value "
                f"(e.g. override {path}=...), or add '{path}' to hydra_cache.exclude"
            )
        if raw == CACHE_DIR and self.own == (_parent_path(path),):
            # The entry's own ${cache_dir:}: known without asking OmegaConf to resolve it.
            self.derived.append(path)
            self.snapshot.add_leaf(node, raw)
            return _SKIP
        origin = origin_of(raw)
        try:
            found, simple = _resolve_leaf(node, raw, self.context.cache_dir_of)
        except _ContainerTarget as target:
            origin = origin | chain_origin(node, raw)
            self._note_origin(origin, path)
            self.snapshot.exact = False
            container = target.target
            return self._walk_container(
                container, content(container), path, secret or origin.hidden
            )
        except _MissingTarget:
            if self.tolerant:
                return "???"
            raise ConfigError(
                f"{path} resolves to a '???' (missing) value but is part of a cache key; "
                f"fix: give it a value, or add '{path}' to hydra_cache.exclude"
            ) from None
        except (OmegaConfBaseException, ConfigError) as error:
            if _caused_by(error, SelfReferenceError) is not None:
                self.derived.append(path)
                self.snapshot.add_leaf(node, raw)
                return _SKIP
            cause = _caused_by(error, CycleError) or _caused_by(error, ConfigError)
            if cause is not None and not self.tolerant:  # (an upstream's failure stays one)
                kind = EntryError if isinstance(cause, EntryError) else ConfigError
                raise kind(_first_line(cause)) from None
            origin = origin | chain_origin(node, raw)
            if origin.per_run:
                self.volatile.append(path)
                return UNRESOLVED_PER_RUN
            if self.tolerant:
                return "<unresolvable>"
            raise _unresolvable(path, raw, error) from None
        if not simple:  # not plain references to plain values: follow the whole chain
            origin = origin | chain_origin(node, raw)
        self._note_origin(origin, path)
        self.snapshot.interpolations.append((node, found))
        hidden = secret or origin.hidden
        if type(found) not in _PLAIN and not isinstance(found, (list, dict)):
            found, shows_credentials = _resolved_as_plain(found, path)
            hidden = hidden or shows_credentials
        known = self.context.known
        if known is not None and known.roots is not self._roots_seen:
            self._refresh_prefixes()
        if type(found) is str:
            if self.prefixes or origin.from_env:
                return self._string(found, path, hidden, origin)
        elif isinstance(found, (list, dict)):
            found = self._containers_in(found, path, hidden)
        if hidden or (type(found) is str and holds_credentials(found)):
            self.redacted.append(path)
        return found

    def _containers_in(self, found: Any, path: str, hidden: bool) -> Any:
        """A resolver's list or dict result: its strings get the same treatment as leaves."""
        if isinstance(found, dict):
            if len(found) == 1 and type(found.get("__bytes__")) is str:  # bytes, as _plain has it
                if _hex_holds_credentials(found["__bytes__"]):
                    self.redacted.append(path)
                return found
            out: dict[Any, Any] = {}
            for k, v in found.items():
                item_path = child_path(path, k)
                name_hidden = type(k) is str and hides_value(k)
                if name_hidden:
                    self._note_hidden_name(k, item_path)
                out[k] = self._containers_in(v, item_path, hidden or name_hidden)
            return out
        if isinstance(found, list):
            return [
                self._containers_in(v, child_path(path, i), hidden) for i, v in enumerate(found)
            ]
        if isinstance(found, str):  # (with no prefixes, _string only looks for credentials)
            return self._string(found, path, hidden)
        return found

    def _note_hidden_name(self, name: str, path: str) -> None:
        """A key whose name holds credentials is shown as its fingerprint, its value hidden
        whole (even an empty one: the shown payload must not keep the name)."""
        if shown_name(name) != name:
            self.redacted.append(path)

    def _note_origin(self, origin: Origin, path: str) -> None:
        if origin.per_run:
            self.volatile.append(path)


@functools.lru_cache(maxsize=64)
def _shortest(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The prefixes no other one is part of: a string that holds ``/root/.cache`` holds
    ``/root``, so only ``/root`` needs looking for (the question is "any of them?")."""
    unique = sorted(set(prefixes), key=len)
    kept: list[str] = []
    for prefix in unique:
        if not any(shorter in prefix for shorter in kept):
            kept.append(prefix)
    return tuple(kept)


def _parent_path(path: str) -> str | None:
    """The dotted key of a dict child's container (None for a list item)."""
    if path.endswith("]"):
        return None
    return path.rpartition(".")[0]


def _holds_path(text: str, base: str) -> bool:
    """Whether ``text`` holds the path ``base`` (or a path under it), on path boundaries."""
    if not base or base not in text:
        return False
    return _path_pattern(base).search(text) is not None


def _replace_path(text: str, base: str, marker: str) -> str:
    return _path_pattern(base).sub(lambda _match: marker, text)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _path_pattern(base: str) -> re.Pattern[str]:
    found = _PATTERNS.get(base)
    if found is None:
        stem = base.rstrip("/") or "/"
        found = _PATTERNS[base] = re.compile(r"(?<![\w.-])" + re.escape(stem) + r"(?=/|$|[^\w.-])")
    return found


def _caused_by(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
