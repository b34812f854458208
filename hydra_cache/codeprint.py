"""Code fingerprints: the source of the code that builds an entry joins its key.

With ``hydra_cache.code: function`` (or ``module``, per namespace), the normalised source of
every ``_target_`` callable inside the hashed nodes, and of each module in
``hydra_cache.code_modules``, joins the key. Source is normalised through Python's AST with
docstrings removed, so comments, docstrings, blank lines and formatting never change a key
(joblib.Memory's most common complaint); a changed body does, and ``why`` names the function.

Source is found without importing anything: the module's file is located through the import
system's path finder (``importlib.machinery.PathFinder``, which runs no package code) and parsed,
so a ``_target_`` in a module that imports torch costs a file read, not torch's import. Only a
name the file does not define itself (a re-export) falls back to importing it.

``code_modules`` may also name a function or a method (``pkg.data.DataModule.prepare_data``):
with ``code: off`` for that namespace, that names exactly the code that builds the entry, where
``code: function`` on a class would cover the whole class (its loader settings included).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib
import importlib.machinery
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
        found = _find_source(name)
        if found is None:
            obj, module = _load(name)
            source_of = module if mode == "module" else obj
            label = module.__name__ if mode == "module" else name
            out[label] = _digest(source_of, name)
            continue
        module_name, tree, node = found
        if mode == "module":
            out[module_name] = _digest_tree(tree)
        else:
            out[name] = _digest_tree(node)
    for name in modules:
        found = _find_source(name, whole=True)
        if found is not None:
            out[name] = _digest_tree(found[2])
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"hydra_cache.code_modules: cannot import {name} ({error}); fix: "
                "list importable module, function or method names"
            ) from None
        out[name] = _digest(module, name)
    return out


def _find_source(dotted: str, *, whole: bool = False) -> tuple[str, ast.Module, ast.AST] | None:
    """(module name, its parsed source, the node ``dotted`` names) without importing anything;
    None when the source cannot be found that way (then the caller imports).

    With ``whole``, ``dotted`` may be the module itself (its whole tree is the node).
    """
    parts = dotted.split(".")
    for cut in range(len(parts) if whole else len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        origin = _module_file(module_name)
        if origin is None:
            continue
        try:
            with open(origin, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), filename=origin)
        except (OSError, SyntaxError, ValueError):
            return None
        node: ast.AST = tree
        for attribute in parts[cut:]:
            inner = _defined_in(node, attribute)
            if inner is None:
                return None  # defined elsewhere (a re-export): import it instead
            node = inner
        return module_name, tree, node
    return None


def _module_file(module_name: str) -> str | None:
    """The ``.py`` file of a module, found by the path finder: no package code runs."""
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        return origin if isinstance(origin, str) and origin.endswith(".py") else None
    names = module_name.split(".")
    search: list[str] | None = None
    spec = None
    for depth in range(1, len(names) + 1):
        name = ".".join(names[:depth])
        parent = sys.modules.get(name)
        if parent is not None and depth < len(names):
            search = list(getattr(parent, "__path__", []) or [])
            continue
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
        if depth < len(names) and not search:
            return None
    origin = spec.origin if spec is not None else None
    return origin if isinstance(origin, str) and origin.endswith(".py") else None


def _defined_in(scope: ast.AST, name: str) -> ast.AST | None:
    """The function or class ``name`` defined directly in a module or class body."""
    for statement in getattr(scope, "body", []):
        if (
            isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and statement.name == name
        ):
            return statement
    return None


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
    return _digest_tree(ast.parse(textwrap.dedent(source)))


def _digest_tree(tree: ast.AST) -> str:
    """Digest of a normalised tree: docstrings out, positions out (so formatting, comments
    and blank lines never count). The same for a node parsed alone or inside its module."""
    tree = copy.deepcopy(tree)
    if not isinstance(tree, ast.Module):
        tree = ast.Module(body=[tree], type_ignores=[])  # type: ignore[list-item]
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
