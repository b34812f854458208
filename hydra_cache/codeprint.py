"""Code fingerprints: the source of the code that builds an entry joins its key.

With ``hydra_cache.code: function`` (or ``module``, per namespace), the normalised source of
every ``_target_`` callable inside the hashed nodes, and of each module in
``hydra_cache.code_modules``, joins the key. Source is normalised through Python's AST with
docstrings removed, so comments, docstrings, blank lines and formatting never change a key
(joblib.Memory's most common complaint); a changed body does, and ``why`` names the function.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

from hydra_cache.errors import ConfigError


def targets(payload_nodes: dict[str, Any]) -> list[str]:
    """Every ``_target_`` string inside the hashed values, sorted and unique."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            target = value.get("_target_")
            if isinstance(target, str):
                found.add(target)
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(payload_nodes)
    return sorted(found)


def fingerprints(names: list[str], modules: tuple[str, ...], mode: str) -> dict[str, str]:
    """Dotted name -> digest of its normalised source (``module`` mode: its whole module)."""
    out: dict[str, str] = {}
    for name in names:
        obj, module = _load(name)
        source_of = module if mode == "module" else obj
        label = module.__name__ if mode == "module" else name
        out[label] = _digest(source_of, name)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"hydra_cache.code_modules: cannot import {name} ({error}); fix: "
                "list importable module names"
            ) from None
        out[name] = _digest(module, name)
    return out


def _load(dotted: str) -> tuple[Any, Any]:
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        obj: Any = module
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        return obj, sys.modules[obj.__module__] if hasattr(
            obj, "__module__"
        ) and obj.__module__ in sys.modules else module
    raise ConfigError(
        f"_target_ {dotted} cannot be imported for its code fingerprint; fix: "
        "make it importable, or set hydra_cache.code=off for this namespace"
    )


def _digest(obj: Any, name: str) -> str:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        raise ConfigError(
            f"the source of {name} is not available for its code fingerprint; "
            "fix: set hydra_cache.code=off for this namespace"
        ) from None
    tree = ast.parse(textwrap.dedent(source))
    for node in _with_bodies(tree):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    normal = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(normal.encode()).hexdigest()[:16]


def _with_bodies(tree: ast.AST) -> Iterator[Any]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node
