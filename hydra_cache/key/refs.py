"""Resolve simple node-reference interpolations without OmegaConf's grammar parser.

OmegaConf parses every interpolation with an ANTLR grammar, which costs about 100 us each in
Python; a config with thousands of ``${model.dim}``-style references spends nearly all of its
key derivation there. Most interpolations in real configs are plain references to another
value (``${a.b}``, ``${.x}``, ``${..x}``, or such references inside a string). These are
resolved here by walking the config's containers, with exactly OmegaConf's semantics: a whole
reference yields the value itself, references inside a string are joined with ``str()``.
Anything else (resolvers, escapes, typed nodes, references to containers, lists or to other
interpolations) returns :data:`NOT_SIMPLE` and is left to OmegaConf.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from omegaconf import AnyNode, Container, DictConfig, ListConfig, Node

from hydra_cache._omegaconf import child, content, parent, raw_value
from hydra_cache.key.rules import PLAIN, SELECTED, Origin, is_secret_name, origin_of

NOT_SIMPLE: Any = object()
_PLAIN = frozenset({str, int, float, bool, type(None)})
_REF = r"\$\{(\.*)([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}"
_WHOLE = re.compile(f"^{_REF}$")
_PART = re.compile(_REF)


#: Text before a reference, the reference's leading dots, and its dotted parts ((): no reference).
Piece = tuple[str, int, tuple[str, ...]]


@functools.lru_cache(maxsize=16384)
def _plan(raw: str) -> tuple[bool, tuple[Piece, ...]] | None:
    """How to resolve ``raw``: (is one whole reference, pieces), or None when not simple."""
    if "\\" in raw:
        return None
    whole = _WHOLE.match(raw)
    if whole:
        return True, (("", len(whole[1]), tuple(whole[2].split("."))),)
    pieces: list[Piece] = []
    last = 0
    for match in _PART.finditer(raw):
        text = raw[last : match.start()]
        if "${" in text:
            return None
        pieces.append((text, len(match[1]), tuple(match[2].split("."))))
        last = match.end()
    if not pieces or "${" in raw[last:]:
        return None
    pieces.append((raw[last:], 0, ()))
    return False, tuple(pieces)


#: Resolves a ``${cache_dir:}`` leaf (the node holding it) to its path; set by the resolver
#: so that a reference to an upstream's cache dir skips OmegaConf's grammar too.
CacheDirHook = Callable[[Node], Any]
CACHE_DIR = "${cache_dir:}"


def resolve_simple(node: Node, raw: str, hook: CacheDirHook | None = None) -> Any:
    """The value of the interpolation ``raw`` held by ``node``, or :data:`NOT_SIMPLE`."""
    if type(node) is not AnyNode:
        return NOT_SIMPLE
    plan = _plan(raw)
    if plan is None:
        return NOT_SIMPLE
    whole, pieces = plan
    if whole:
        _text, dots, parts = pieces[0]
        return _target(node, dots, parts, hook)
    joined: list[str] = []
    for text, dots, parts in pieces:
        joined.append(text)
        if parts:
            value = _target(node, dots, parts, hook)
            if value is NOT_SIMPLE:
                return NOT_SIMPLE
            joined.append(str(value))
    return "".join(joined)


def _start(node: Node, dots: int) -> Any:
    """Where a reference held by ``node`` starts: ``dots`` levels up, or the root (None when
    the dots climb above the root)."""
    base: Any = node
    if dots:
        for _ in range(dots):
            base = parent(base)
            if base is None:
                return None
    else:
        while parent(base) is not None:
            base = parent(base)
    return base


def _target(node: Node, dots: int, parts: tuple[str, ...], hook: CacheDirHook | None) -> Any:
    base = _start(node, dots)
    if base is None:
        return NOT_SIMPLE
    for part in parts:
        if type(base) is not DictConfig:
            return NOT_SIMPLE
        children = content(base)
        if type(children) is not dict:
            return NOT_SIMPLE
        base = children.get(part)
        if base is None:
            return NOT_SIMPLE
    if type(base) in (DictConfig, ListConfig):
        return NOT_SIMPLE
    value = raw_value(base)
    if hook is not None and value == CACHE_DIR and type(base) is AnyNode:
        return hook(base)
    if type(value) not in _PLAIN or (type(value) is str and ("${" in value or value == "???")):
        return NOT_SIMPLE
    return value


#: Any node reference inside an interpolation, also one nested in a resolver's arguments.
_ANY_REF = re.compile(r"\$\{(\.*)([A-Za-z_]\w*(?:(?:\.\w+)|(?:\[\d+\]))*)\}")
#: How far a chain of interpolations is followed, and how many leaves of a referenced
#: container are looked at: a bound, so a pathological config cannot make a key slow.
_MAX_DEPTH = 32
_MAX_LEAVES = 2000


def locate(node: Node, dots: int, dotted: str) -> Node | None:
    """The node ``${<dots><dotted>}`` held by ``node`` refers to, or None."""
    base = _start(node, dots)
    if base is None:
        return None
    for part in re.split(r"\.|\[|\]", dotted):
        if part == "":
            continue
        if not isinstance(base, Container):
            return None
        step: str | int = int(part) if isinstance(base, ListConfig) and part.isdigit() else part
        base = child(base, step)
        if base is None:
            return None
    return base  # type: ignore[no-any-return]


def chain_origin(node: Node, raw: str) -> Origin:
    """The origin of an interpolated value, following every reference it makes, transitively.

    ``data.out: ${paths.output_dir}`` with ``paths.output_dir: ${hydra:runtime.output_dir}``
    is per-run; ``x: ${a}`` with ``a: ${oc.env:TOKEN}`` comes from the environment; a
    reference to ``wandb_key`` makes a secret. Plain references to plain values never get
    here (the key walk knows their origin from their text alone).
    """
    return _chain(node, raw, 0, set())


def _chain(node: Node, raw: str, depth: int, seen: set[int]) -> Origin:
    found = origin_of(raw)
    if depth >= _MAX_DEPTH:
        return found
    for dots, dotted in [*_ANY_REF.findall(raw), *SELECTED.findall(raw)]:
        target = locate(node, len(dots), dotted)
        if target is None or id(target) in seen:
            continue
        seen.add(id(target))
        found = found | _of_target(target, depth + 1, seen)
    return found


def _of_target(target: Node, depth: int, seen: set[int]) -> Origin:
    if isinstance(target, Container):
        found = PLAIN
        stack: list[Node] = [target]
        budget = _MAX_LEAVES
        while stack and budget > 0:
            current = stack.pop()
            budget -= 1
            if isinstance(current, Container):
                children = content(current)
                if isinstance(children, str):
                    found = found | _chain(current, children, depth, seen)
                elif isinstance(children, dict):
                    for name, item in children.items():
                        if isinstance(name, str) and is_secret_name(name):
                            found = found | Origin(secret=True)
                        stack.append(item)
                elif isinstance(children, list):
                    stack.extend(children)
            else:
                raw = raw_value(current)
                if isinstance(raw, str) and "${" in raw:
                    found = found | _chain(current, raw, depth, seen)
        return found
    raw = raw_value(target)
    if isinstance(raw, str) and "${" in raw:
        return _chain(target, raw, depth, seen)
    return PLAIN
