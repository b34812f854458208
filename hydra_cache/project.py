"""The command line's defaults: ``[tool.hydra-cache]`` in ``pyproject.toml`` and
``HYDRA_CACHE_*`` environment variables.

A project configures once what every ``hydra-cache`` call needs (``-cd configs -cn train``,
``--app src/train.py``, ``PROJECT_ROOT=...``), so the commands run bare inside it, from any
folder of it::

    [tool.hydra-cache]
    config_dir = "configs"            # relative to this file
    config_name = "train"
    app = "src/train.py"              # or a module: "src.train"
    root = "/scratch/team-cache"      # used when neither the config nor $HYDRA_CACHE_ROOT says
    env = { PROJECT_ROOT = "{project}" }   # {project}: the folder of this pyproject.toml

The environment beats the file (``HYDRA_CACHE_CONFIG_DIR``, ``HYDRA_CACHE_CONFIG_NAME``,
``HYDRA_CACHE_APP``, ``HYDRA_CACHE_ROOT``, ``HYDRA_CACHE_ENV="A=1 B=2"``), and the command line
beats both.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache.errors import ConfigError

PYPROJECT = "pyproject.toml"
TABLE = "hydra-cache"
SETTINGS = ("config_dir", "config_name", "app", "root", "env")
_PATHS = ("config_dir", "app")


@dataclass(frozen=True)
class Defaults:
    """The CLI's defaults for one working folder, and where each came from."""

    #: The folder of the nearest ``pyproject.toml`` (None when there is none).
    project_dir: Path | None = None
    config_dir: str | None = None
    config_name: str | None = None
    app: str | None = None
    root: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: setting -> "pyproject.toml at ..." or "$HYDRA_CACHE_..."
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        """Whether a config to compose is named (so root-only commands compose it too)."""
        return any(getattr(self, name) for name in ("config_dir", "config_name", "app"))


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start``."""
    for folder in (start, *start.parents):
        candidate = folder / PYPROJECT
        if candidate.is_file():
            return candidate
    return None


def load(cwd: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Defaults:
    """The defaults that apply in ``cwd``: the pyproject's table, then the environment."""
    start = Path(cwd or os.getcwd()).resolve()
    pyproject = find_pyproject(start)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    project_dir = pyproject.parent if pyproject else None
    if pyproject is not None:
        table = _table(pyproject)
        for name, value in table.items():
            if name not in SETTINGS:
                raise ConfigError(
                    f"[tool.{TABLE}] {name} in {pyproject}",
                    "is not a setting",
                    f"use {', '.join(SETTINGS)}",
                )
            if name == "env":
                values[name] = _env_table(value, pyproject)
            elif not isinstance(value, str) or not value:
                raise ConfigError(
                    f"[tool.{TABLE}] {name} in {pyproject}",
                    f"must be a non-empty string, not {value!r}",
                    f'write e.g. {name} = "..."',
                )
            elif name in _PATHS and project_dir is not None and not _module_name(name, value):
                values[name] = str(project_dir / value)
            else:
                values[name] = value
            sources[name] = f"{PYPROJECT} at {pyproject}"
    for name in SETTINGS:
        variable = f"HYDRA_CACHE_{name.upper()}"
        raw = environ.get(variable)
        if not raw:
            continue
        if name == "env":
            values[name] = {**values.get("env", {}), **_env_words(raw, variable)}
        elif name == "root":
            continue  # $HYDRA_CACHE_ROOT is the resolver's own fallback; it needs no copy
        else:
            values[name] = raw
        sources[name] = f"${variable}"
    if project_dir is not None:
        values["env"] = {
            name: value.replace("{project}", str(project_dir))
            for name, value in values.get("env", {}).items()
        }
    return Defaults(project_dir=project_dir, sources=sources, **values)


def apply(defaults: Defaults) -> None:
    """Set up this process as the app would be set up: its environment and its imports.

    The project folder goes first on ``sys.path``, so code fingerprints and builders import the
    project's modules as the app does; a ``root`` from the pyproject becomes
    ``$HYDRA_CACHE_ROOT`` when that is unset, so the resolver's order stays the one order.
    """
    for name, value in defaults.env.items():
        os.environ[name] = value
    if defaults.root and not os.environ.get("HYDRA_CACHE_ROOT"):
        base = defaults.project_dir or Path.cwd()
        os.environ["HYDRA_CACHE_ROOT"] = str(base / os.path.expanduser(defaults.root))
    folder = str(defaults.project_dir or Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _module_name(name: str, value: str) -> bool:
    """``app = "pkg.train"`` names a module, not a file."""
    return name == "app" and not value.endswith(".py") and "/" not in value


def _table(pyproject: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        try:
            import tomli as tomllib
        except ImportError:
            return {}
    try:
        with open(pyproject, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, ValueError) as error:
        raise ConfigError(
            str(pyproject), f"cannot be read ({error})", "correct the TOML it names"
        ) from None
    table = data.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"[tool.{TABLE}] in {pyproject}", "must be a table", f"write [tool.{TABLE}]"
        )
    return table


def _env_table(value: Any, pyproject: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in value.items()
    ):
        raise ConfigError(
            f"[tool.{TABLE}] env in {pyproject}",
            f"must map variable names to values, not {value!r}",
            'write e.g. env = { PROJECT_ROOT = "{project}" }',
        )
    return {k: str(v) for k, v in value.items()}


def _env_words(raw: str, variable: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for word in shlex.split(raw):
        name, equals, value = word.partition("=")
        if not equals or not name:
            raise ConfigError(
                f"${variable}", f"holds {word!r}, not NAME=VALUE", f'set {variable}="A=1 B=2"'
            )
        found[name] = value
    return found
