"""Config node -> canonical payload -> digest.

This module is pure: it reads an OmegaConf tree and returns data. It never touches a disk and
never imports Hydra, so a key can be derived (and tested) anywhere, and what is or is not in a
key is decided in exactly one place.

The payload is JSON with sorted keys, so a key does not depend on YAML key order, flow or block
style, ``PYTHONHASHSEED`` or the process. JSON keeps ``1``, ``1.0``, ``true``, ``"1"`` and
``null`` distinct, and writes floats by their shortest round-tripping ``repr``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import json
import operator
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePath
from typing import Any, Union, cast

from omegaconf import Container, DictConfig, ListConfig, Node
from omegaconf._utils import split_key
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from hydra_cache.errors import ConfigError
from hydra_cache.references import NOT_SIMPLE, resolve_simple

#: Bump whenever the payload layout or the conversion of any value changes: every key changes.
SCHEMA_VERSION = 1
#: Length of the key used in paths; the full SHA-256 is kept in the entry's metadata.
KEY_LENGTH = 16
#: Nodes that never join a key (the ``hydra_cache`` node joins through its ``salt`` only).
ALWAYS_EXCLUDED = frozenset({"hydra", "hydra_cache"})
REDACTED = "<redacted>"
#: Stands for a per-run value that cannot be resolved outside a job (e.g. in the CLI).
UNRESOLVED_PER_RUN = "<per-run value>"

_VOLATILE = re.compile(
    r"\$\{\s*(?:now\s*:|hydra\s*:\s*(?:runtime\.output_dir|job\.num|job\.id|run\.dir"
    r"|sweep\.dir|sweep\.subdir))"
)
_FROM_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "privatekey",
        "accesskey",
        "secretkey",
    }
)
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_WORDS = re.compile(r"\w+")
_SECRET_PAIRS = ("api_key", "api-key", "access_key", "private_key", "secret_key")

_deriving: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "hydra_cache_deriving", default=False
)

PathStep = Union[str, int]


class SelfReferenceError(InterpolationResolutionError):
    """Raised by ``${cache_dir:}`` while a key is being derived.

    A value that is (or is derived from) a cache dir must not join any key: the path is a
    function of the key, so hashing it would recurse forever. The walker catches this and
    leaves the value out.
    """


def raise_if_deriving() -> None:
    """Called first by the resolver: inside a derivation, a cache dir is never hashed."""
    if _deriving.get():
        raise SelfReferenceError("a cache_dir value is never part of a key")


@contextmanager
def _derivation() -> Iterator[None]:
    token = _deriving.set(True)
    try:
        yield
    finally:
        _deriving.reset(token)


@functools.lru_cache(maxsize=16384)
def _analyse(raw: str) -> tuple[bool, bool]:
    """Whether an interpolation is per-run, and whether its value must be redacted."""
    secret = bool(_FROM_ENV.search(raw)) or any(is_secret_name(w) for w in _WORDS.findall(raw))
    return bool(_VOLATILE.search(raw)), secret


@functools.lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """Whether a config key looks like it holds a credential (its value is never shown)."""
    lowered = name.lower()
    if any(pair in lowered for pair in _SECRET_PAIRS):
        return True
    return any(word in _SECRET_WORDS for word in _WORD_SPLIT.split(lowered))


def child_path(parent: str, step: PathStep) -> str:
    """The dotted key of a child, spelled as OmegaConf spells full keys."""
    if isinstance(step, int):
        return f"{parent}[{step}]"
    return f"{parent}.{step}" if parent else str(step)


@dataclass
class Snapshot:
    """Identity of every node a derivation read, to tell cheaply whether it still holds.

    Re-deriving a key resolves every leaf; checking a snapshot only compares object
    identities (of each container's children and each leaf's raw value) and re-resolves the
    interpolated leaves, so a memoized path stays exact when the config is changed after the
    first access.
    """

    containers: list[tuple[Container, Any, tuple[Any, ...]]] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    raws: list[Any] = field(default_factory=list)
    interpolations: list[tuple[Node, Any]] = field(default_factory=list)
    exact: bool = True

    def add_container(self, container: Container, content: Any) -> None:
        children = tuple(content.values() if type(content) is dict else content)
        self.containers.append((container, content, children))

    def is_current(self) -> bool:
        if not self.exact:
            return False
        for container, content, children in self.containers:
            if container.__dict__["_content"] is not content or len(content) != len(children):
                return False
            now = content.values() if type(content) is dict else content
            if not all(map(operator.is_, now, children)):
                return False
        if not all(map(operator.is_, [n.__dict__["_val"] for n in self.nodes], self.raws)):
            return False
        with _derivation():
            for node, expected in self.interpolations:
                try:
                    value = _resolve_leaf(node, node.__dict__["_val"])
                except Exception:
                    return False
                if type(value) is not type(expected) or value != expected:
                    return False
        return True


@dataclass(frozen=True)
class DerivedKey:
    """The result of one derivation: the key and everything needed to explain it."""

    key: str
    digest: str
    payload: dict[str, Any]
    #: Dotted keys whose values must never be shown (secret-looking names, environment values).
    redacted_paths: frozenset[str]
    #: Dotted keys whose values change on every run (the key then misses on every run).
    volatile: tuple[str, ...]
    #: Dotted keys left out because they are (or derive from) a cache dir.
    derived_from_cache_dir: tuple[str, ...]
    snapshot: Snapshot

    def redacted_payload(self) -> dict[str, Any]:
        """The payload with every secret value replaced, safe for manifests, journals, logs."""
        if not self.redacted_paths:
            return self.payload
        redacted = dict(self.payload)
        redacted["nodes"] = {
            name: _redact(value, name, self.redacted_paths)
            for name, value in self.payload["nodes"].items()
        }
        return redacted


def _redact(value: Any, path: str, paths: frozenset[str]) -> Any:
    if path in paths:
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(v, child_path(path, k), paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, child_path(path, i), paths) for i, v in enumerate(value)]
    return value


def canonical_json(payload: Any) -> str:
    """The one serialisation every digest is taken over."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    )


def digest_of(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def derive(
    root: Container,
    nodes: Sequence[str | tuple[str, Node]],
    *,
    exclude: Iterable[str] = (),
    salt: Any = None,
) -> DerivedKey:
    """Derive the key of the entry made of ``nodes``.

    Each node is an absolute dotted key (``""`` is the root), or a ``(name, node)`` pair when
    the caller already holds the node (the resolver does, and a key such as ``..`` cannot be
    spelled as a dotted path).
    """
    walker = _Walker(frozenset(exclude) | ALWAYS_EXCLUDED)
    hashed: dict[str, Any] = {}
    with _derivation():
        for item in nodes:
            name, node = item if isinstance(item, tuple) else (item, walker.locate(root, item))
            try:
                value = walker.walk(node, name, secret=False)
            except RecursionError:
                raise ConfigError(
                    f"{name or 'the config'} is nested too deeply to hash (over "
                    f"{sys.getrecursionlimit() // 4} levels); fix: flatten it, or add its deep "
                    "part to hydra_cache.exclude"
                ) from None
            hashed[name or "."] = None if value is _SKIP else value
    payload = {"schema": SCHEMA_VERSION, "salt": salt, "nodes": hashed}
    digest = digest_of(payload)
    return DerivedKey(
        key=digest[:KEY_LENGTH],
        digest=digest,
        payload=payload,
        redacted_paths=frozenset(walker.redacted),
        volatile=tuple(walker.volatile),
        derived_from_cache_dir=tuple(walker.derived),
        snapshot=walker.snapshot,
    )


def with_extra(derived: DerivedKey, extra: dict[str, Any]) -> DerivedKey:
    """The same derivation with more joined to its payload (input and code fingerprints)."""
    payload = {**derived.payload, **extra}
    digest = digest_of(payload)
    return dataclasses.replace(derived, payload=payload, digest=digest, key=digest[:KEY_LENGTH])


def read_node(root: Container, name: str) -> tuple[Any, Snapshot]:
    """The resolved plain value of a top-level node (``None`` when absent), with its snapshot.

    Used for the ``hydra_cache`` settings node, so that a memoized path also notices a
    changed setting.
    """
    walker = _Walker(frozenset())
    content = root.__dict__["_content"]
    walker.snapshot.add_container(root, content)
    if name not in content:
        return None, walker.snapshot
    with _derivation():
        value = walker.walk(walker.locate(root, name), name, secret=False)
    return (None if value is _SKIP else value), walker.snapshot


def config_values(root: Container) -> dict[str, Any]:
    """The whole config (but ``hydra`` and cache-dir values) resolved as far as it goes.

    Unlike :func:`derive` it never fails: a ``???`` stays ``"???"`` and a value that cannot be
    resolved becomes ``"<unresolvable>"``. Used to list config changes that touch no cache.
    """
    walker = _Walker(frozenset({"hydra"}), tolerant=True)
    with _derivation():
        value = walker.walk(root, "", secret=False)
    if not isinstance(value, dict):
        return {}
    return {"nodes": {".": value}, "redacted": sorted(walker.redacted)}


class _Skip:
    """Marks a value that does not join the payload."""


_SKIP = _Skip()


def _key_name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, Enum):
        return key.name
    return f"{type(key).__name__}:{key!r}"


def _leaf(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    raise ConfigError(
        f"{path}: a value of type {type(value).__name__} cannot join a cache key; "
        f"fix: use a plain YAML value there, or add '{path}' to hydra_cache.exclude"
    )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _resolve_leaf(node: Node, raw: str) -> Any:
    """An interpolated leaf's value: the fast path for plain references, else OmegaConf."""
    value = resolve_simple(node, raw)
    if value is NOT_SIMPLE:
        target = node._dereference_node()
        if target._is_missing():
            raise _MissingTarget
        if isinstance(target, Container):
            raise _ContainerTarget(target)
        value = target._value()
    return _leaf(value, "")


class _MissingTarget(Exception):
    pass


class _ContainerTarget(Exception):
    def __init__(self, target: Container) -> None:
        super().__init__()
        self.target = target


_CONTAINERS = (DictConfig, ListConfig)
_PLAIN = frozenset({str, int, float, bool, type(None)})


class _Walker:
    """One derivation's walk: the payload plus what it noticed on the way.

    The walk reads OmegaConf's containers and raw values directly instead of going through
    ``cfg[key]`` (which validates, wraps and resolves on every access): that is what keeps a
    5,000-leaf key cheaper than ``OmegaConf.to_container``.
    """

    def __init__(self, exclude: frozenset[str], *, tolerant: bool = False) -> None:
        self.exclude = exclude
        # Containers some of whose children are excluded (their children's paths are needed).
        self.exclude_parents = {e.rsplit(".", 1)[0] if "." in e else "" for e in exclude}
        self.tolerant = tolerant
        self.redacted: list[str] = []
        self.volatile: list[str] = []
        self.derived: list[str] = []
        self.snapshot = Snapshot()

    def locate(self, root: Container, name: str) -> Node:
        """The raw node at an absolute dotted key, recording each step for the snapshot."""
        node: Node = root
        for part in split_key(name) if name else ():
            if not isinstance(node, Container) or node._is_none() or node._is_missing():
                break
            content = node.__dict__["_content"]
            if not isinstance(content, (dict, list)):
                break
            step: PathStep = int(part) if isinstance(node, ListConfig) and part.isdigit() else part
            try:
                child = node._get_node(step, validate_access=False)
            except (OmegaConfBaseException, KeyError, IndexError, TypeError):
                child = None
            if child is None:
                break
            assert isinstance(child, Node)
            self.snapshot.add_container(node, content)
            node = child
        else:
            return node
        raise ConfigError(
            f"node '{name}' does not exist in the config; fix: name an existing node "
            f"(absolute dotted key, or '.x' relative to the node holding the interpolation)"
        )

    def walk(self, node: Node, path: str, *, secret: bool) -> Any:
        if path in self.exclude:
            return _SKIP
        if type(node) in _CONTAINERS or isinstance(node, Container):
            content = node.__dict__["_content"]
            if type(content) is str:
                return self._special(node, content, path, secret)
            return self._walk_container(cast(Container, node), content, path, secret)
        raw = node.__dict__["_val"]
        kind = type(raw)
        if kind is str and ("${" in raw or raw == "???"):
            return self._special(node, raw, path, secret)
        self.snapshot.nodes.append(node)
        self.snapshot.raws.append(raw)
        if secret:
            self.redacted.append(path)
        return raw if kind in _PLAIN else _leaf(raw, path)

    def _walk_container(self, node: Container, content: Any, path: str, secret: bool) -> Any:
        if content is None:
            return None
        self.snapshot.add_container(node, content)
        nodes, raws = self.snapshot.nodes, self.snapshot.raws
        check = path in self.exclude_parents
        if type(content) is dict:
            out: dict[str, Any] = {}
            nodes_append, raws_append, plain = nodes.append, raws.append, _PLAIN
            for key, child in content.items():
                name = key if type(key) is str else _key_name(key)
                if secret or check or type(child) in _CONTAINERS or is_secret_name(name):
                    slow = True
                else:  # the common case, inlined: a plain value of an untouched leaf
                    raw = child.__dict__["_val"]
                    kind = type(raw)
                    if kind is str:
                        if "${" in raw:
                            value = self._special(child, raw, child_path(path, name), False)
                            if value is not _SKIP:
                                out[name] = value
                            continue
                        slow = raw == "???"
                    else:
                        slow = kind not in plain
                    if not slow:
                        nodes_append(child)
                        raws_append(raw)
                        out[name] = raw
                        continue
                value = self.walk(
                    child, child_path(path, name), secret=secret or is_secret_name(name)
                )
                if value is not _SKIP:
                    out[name] = value
            return out
        items: list[Any] = []
        for index, child in enumerate(content):
            value = self.walk(child, child_path(path, index), secret=secret)
            if value is not _SKIP:
                items.append(value)
        return items

    def _special(self, node: Node, raw: str, path: str, secret: bool) -> Any:
        """A missing value or an interpolation (of a leaf or of a whole container)."""
        if raw == "???":
            if self.tolerant:
                return "???"
            raise ConfigError(
                f"{path} is '???' (missing) but is part of a cache key; fix: give it a value "
                f"(e.g. override {path}=...), or add '{path}' to hydra_cache.exclude"
            )
        volatile, secretish = _analyse(raw)
        if volatile:
            self.volatile.append(path)
        secret = secret or secretish
        try:
            value = _resolve_leaf(node, raw)
        except _ContainerTarget as found:
            self.snapshot.exact = False
            target = found.target
            return self._walk_container(target, target.__dict__["_content"], path, secret)
        except _MissingTarget:
            if self.tolerant:
                return "???"
            raise ConfigError(
                f"{path} resolves to a '???' (missing) value but is part of a cache key; "
                f"fix: give it a value, or add '{path}' to hydra_cache.exclude"
            ) from None
        except OmegaConfBaseException as error:
            if _is_self_reference(error):
                self.derived.append(path)
                return _SKIP
            if self.volatile and self.volatile[-1] == path:
                return UNRESOLVED_PER_RUN
            if self.tolerant:
                return "<unresolvable>"
            raise ConfigError(
                f"{path}: cannot resolve {raw!r} ({_first_line(error)}); fix: make the "
                f"interpolation resolvable, or add '{path}' to hydra_cache.exclude"
            ) from None
        self.snapshot.interpolations.append((node, value))
        if secret:
            self.redacted.append(path)
        return value


def _is_self_reference(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SelfReferenceError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
