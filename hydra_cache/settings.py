"""The optional top-level ``hydra_cache`` node, read and checked in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hydra_cache.errors import ConfigError
from hydra_cache.store.remote.config import RemoteSpec, parse_remote

ON_MISS_CHOICES = ("build", "warn", "error")
LOCK_CHOICES = ("auto", "flock", "soft")
INPUT_MODES = ("stat", "sha256")
CODE_MODES = ("off", "module", "function")
KNOWN_SETTINGS = (
    "root",
    "exclude",
    "salt",
    "on_miss",
    "lock",
    "shared",
    "audit",
    "inputs",
    "input_mode",
    "code",
    "code_modules",
    "relative_to",
    "builders",
    "project",
    "remote",
)


@dataclass(frozen=True)
class Settings:
    """What the user configured under ``hydra_cache`` (all optional)."""

    root: str | None = None
    exclude: tuple[str, ...] = ()
    salt: str | int | None = None
    on_miss: str = "build"
    lock: Literal["auto", "flock", "soft"] = "auto"
    #: A root shared by a group: created setgid and group-writable, owned by anyone in it.
    shared: bool = False
    #: Record the config values each build reads, and report those outside its key.
    audit: bool = False
    #: Dotted keys whose values are files or folders: their content joins the keys.
    inputs: tuple[str, ...] = ()
    input_mode: Literal["stat", "sha256"] = "stat"
    #: Code fingerprint mode per namespace ("*" for every namespace).
    code: tuple[tuple[str, str], ...] = ()
    code_modules: tuple[str, ...] = ()
    #: Absolute base paths (e.g. the project folder): paths under them join keys relative to
    #: them, so two clones of a project, on two machines, share keys.
    relative_to: tuple[str, ...] = ()
    #: namespace -> dotted name of the build function ``hydra-cache build`` calls with
    #: (the node holding the cache dir, the staging folder).
    builders: tuple[tuple[str, str], ...] = ()
    #: Which project the entries belong to (default: the folder holding the config dir). Not
    #: in any key: it only keeps one project's misses from being explained by another's entries.
    project: str | None = None
    #: The team's remote cache (``hydra_cache.remote`` or ``$HYDRA_CACHE_REMOTE``); never hashed.
    remote: RemoteSpec | None = None

    def code_mode(self, namespace: str) -> str:
        modes = dict(self.code)
        return modes.get(namespace, modes.get("*", "off"))


def parse_settings(node: Mapping[str, Any] | None) -> Settings:
    """Check the resolved ``hydra_cache`` mapping and turn it into :class:`Settings`."""
    if node is None:
        return Settings(remote=parse_remote(None))
    if not isinstance(node, Mapping):
        raise ConfigError(
            "hydra_cache must be a mapping (root, exclude, salt, on_miss); "
            f"fix: replace the value {node!r} with e.g. 'hydra_cache: {{root: /data/cache}}'"
        )
    for name in node:
        if name not in KNOWN_SETTINGS:
            import difflib

            close = difflib.get_close_matches(str(name), KNOWN_SETTINGS, n=1)
            hint = (
                f"did you mean hydra_cache.{close[0]}?"
                if close
                else f"known settings are {', '.join(KNOWN_SETTINGS)}"
            )
            raise ConfigError(f"hydra_cache.{name} is not a setting; fix: {hint}")
    return Settings(
        root=_root(node.get("root")),
        exclude=_exclude(node.get("exclude")),
        salt=_salt(node.get("salt")),
        on_miss=_choice("on_miss", node.get("on_miss", "build"), ON_MISS_CHOICES, "warn"),
        lock=_choice("lock", node.get("lock", "auto"), LOCK_CHOICES, "soft"),  # type: ignore[arg-type]
        shared=_flag("shared", node.get("shared", False)),
        audit=_flag("audit", node.get("audit", False)),
        inputs=_keys("inputs", node.get("inputs"), "hydra_cache.inputs=[data.path]"),
        input_mode=_choice(
            "input_mode",
            node.get("input_mode", "stat"),
            INPUT_MODES,  # type: ignore[arg-type]
            "sha256",
        ),
        code=_code(node.get("code", "off")),
        code_modules=_modules(node.get("code_modules")),
        relative_to=_bases(node.get("relative_to")),
        builders=_builders(node.get("builders")),
        project=_project(node.get("project")),
        remote=parse_remote(node.get("remote")),
    )


def _project(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"hydra_cache.project must be a non-empty name, not {value!r}; "
            "fix: set e.g. hydra_cache.project=my-project, or remove it to use the name of the "
            "folder that holds the config dir"
        )
    return value.strip()


def _root(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"hydra_cache.root must be a non-empty path string, not {value!r}; "
            "fix: set hydra_cache.root=/path/to/cache or remove it to use the default"
        )
    if "\x00" in value:
        raise ConfigError("hydra_cache.root contains a NUL byte; fix: set a plain path")
    return value


def _exclude(value: Any) -> tuple[str, ...]:
    return _keys("exclude", value, "hydra_cache.exclude=[data.num_workers]")


def _keys(name: str, value: Any, example: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"hydra_cache.{name} must be a list of dotted keys, not {value!r}; "
            f"fix: write e.g. {example}"
        )
    keys: list[str] = []
    for item in value:
        if (
            not isinstance(item, str)
            or not item.strip()
            or item != item.strip()
            or item.startswith(".")
            or item.endswith(".")
            or ".." in item
        ):
            raise ConfigError(
                f"hydra_cache.{name} entry {item!r} is not an absolute dotted key; "
                "fix: write it like data.num_workers"
            )
        keys.append(item)
    return tuple(keys)


def _salt(value: Any) -> str | int | None:
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    raise ConfigError(  # (a salt may be a secret: its type is named, not its value)
        f"hydra_cache.salt must be a string or an integer, not a {type(value).__name__}; "
        "fix: write e.g. hydra_cache.salt=v2"
    )


def _choice(name: str, value: Any, choices: tuple[str, ...], example: str) -> str:
    if value not in choices:
        raise ConfigError(
            f"hydra_cache.{name} must be one of {', '.join(choices)}, not {value!r}; "
            f"fix: e.g. hydra_cache.{name}={example}"
        )
    return str(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"hydra_cache.{name} must be true or false, not {value!r}; "
            f"fix: e.g. hydra_cache.{name}=true"
        )
    return value


def _code(value: Any) -> tuple[tuple[str, str], ...]:
    """``off|module|function`` for every namespace, or a mapping namespace -> mode."""
    pairs = list(value.items()) if isinstance(value, Mapping) else [("*", value)]
    for namespace, mode in pairs:
        where = "hydra_cache.code" if namespace == "*" else f"hydra_cache.code.{namespace}"
        if mode not in CODE_MODES:
            raise ConfigError(
                f"{where} must be one of {', '.join(CODE_MODES)}, not {mode!r}; "
                "fix: e.g. hydra_cache.code=function or hydra_cache.code={data: module}"
            )
    return tuple((str(namespace), str(mode)) for namespace, mode in pairs)


def _modules(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not all(
            isinstance(v, str) and v and all(p.isidentifier() for p in v.split(".")) for v in value
        )
    ):
        raise ConfigError(
            f"hydra_cache.code_modules must be a list of module, function or method names, "
            f"not {value!r}; fix: write e.g. hydra_cache.code_modules=[mypkg.preprocess]"
        )
    return tuple(value)


def _bases(value: Any) -> tuple[str, ...]:
    """``relative_to``: one absolute path or a list of them, normalised, longest first (so a
    path under two nested bases is made relative to the closer one)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(
            f"hydra_cache.relative_to must be a path or a list of paths, not {value!r}; "
            "fix: write e.g. hydra_cache.relative_to=${paths.root_dir}"
        )
    bases: list[str] = []
    for item in items:
        if not isinstance(item, str) or not os.path.isabs(os.path.expanduser(item.strip())):
            raise ConfigError(
                f"hydra_cache.relative_to entry {item!r} is not an absolute path; fix: use "
                "an absolute base such as ${paths.root_dir} or ${hydra:runtime.cwd}"
            )
        base = os.path.normpath(os.path.expanduser(item.strip()))
        if base == os.sep:
            raise ConfigError(
                "hydra_cache.relative_to entry '/' would make every path relative; fix: "
                "name the project's folder, e.g. ${paths.root_dir}"
            )
        bases.append(base)
    return tuple(sorted(set(bases), key=len, reverse=True))


def _builders(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not all(
        isinstance(v, str) and v and all(p.isidentifier() for p in v.replace(":", ".").split("."))
        for v in value.values()
    ):
        raise ConfigError(
            f"hydra_cache.builders must map namespaces to dotted function names, not {value!r}; "
            "fix: write e.g. hydra_cache.builders={data: mypkg.prepare.build}"
        )
    return tuple((str(namespace), str(name)) for namespace, name in value.items())
