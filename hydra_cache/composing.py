"""Compose a config the way the Hydra app itself would, for the command line and for tests.

This is the CLI's one door into Hydra. The promise is that the same overrides give the same
composed config, and so the same cache dirs, as the app: so it takes the app's primary config
(``config_path``/``config_name`` of its ``@hydra.main``), the ConfigStore entries its module
registers, its job name (``${hydra:job.name}``) and its ``hydra.job.env_set``. An app is named
by a file (``examples/train.py``) or a module (``pkg.train``); it is imported, never run: its
``@hydra.main`` arguments are recorded by standing in for ``hydra.main`` while it imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_cache.errors import ConfigError
from hydra_cache.resolver import register

log = logging.getLogger(__name__)

#: The job name when no app is named (an app's is the stem of its file, as Hydra takes it).
DEFAULT_JOB_NAME = "hydra-cache"
_UNSET: Any = object()


@dataclass(frozen=True)
class App:
    """What composing needs from a Hydra app, read from its module without running it."""

    module: ModuleType
    #: The file that defines the task function (Hydra resolves ``config_path`` against it).
    file: Path
    #: Absolute config folder, ``pkg://...``, or None (ConfigStore only).
    config_path: str | None
    config_name: str | None
    version_base: str | None
    job_name: str


_apps: dict[str, App] = {}
_import_lock = threading.Lock()


def load_app(spec: str, base_dir: str | None = None) -> App:
    """Import the app named by a file path or a dotted module name, once per process."""
    base = Path(base_dir or os.getcwd())
    as_file = spec.endswith(".py") or os.sep in spec or (base / spec).is_file()
    key = str((base / spec).resolve()) if as_file else spec
    if key in _apps:
        return _apps[key]
    with _import_lock:
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        module = _import_recording(spec, base, as_file, calls)
    if not calls:
        raise ConfigError(
            f"--app {spec}",
            "has no @hydra.main function",
            "name the module that defines your app's @hydra.main",
        )
    args, kwargs = calls[-1]
    config_path, config_name, version_base = _main_arguments(args, kwargs)
    file = Path(inspect.getfile(module)).resolve()
    if config_path is not None and not config_path.startswith("pkg://"):
        config_path = os.path.normpath(os.path.join(file.parent, config_path))
    app = App(module, file, config_path, config_name, version_base, file.stem)
    _apps[key] = app
    return app


def _import_recording(
    spec: str, base: Path, as_file: bool, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
) -> ModuleType:
    """Import the app with ``hydra.main`` replaced by a recorder of its arguments."""
    import hydra

    real_main = hydra.main

    def recording_main(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        calls.append((args, kwargs))
        with warnings.catch_warnings():
            # The app's own decorator arguments (a version_base that hydra-core 1.4
            # deprecates) are the app's business; the CLI only reads them, silently.
            warnings.simplefilter("ignore")
            return real_main(*args, **kwargs)

    hydra.main = recording_main
    try:
        if not as_file:
            try:
                return importlib.import_module(spec)
            except ImportError as error:
                raise ConfigError(
                    f"--app {spec}",
                    f"cannot import it ({error})",
                    "give a path to the app's file, or run from the folder its package is in",
                ) from None
        path = (base / spec).resolve()
        if not path.is_file():
            raise ConfigError(
                f"--app {spec}", "no such file", "give the path of the file with @hydra.main"
            )
        # Hydra runs an app as a script, whose folder is first on sys.path: so do we, for its
        # sibling imports.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = f"_hydra_cache_app_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"--app {spec}", "is not a Python file", "name a .py file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            raise ConfigError(
                f"--app {spec}",
                f"importing it failed: {type(error).__name__}: {error}",
                "make the module importable without running it (keep the call of main() "
                "under if __name__ == '__main__')",
            ) from None
        return module
    finally:
        hydra.main = real_main


def _main_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """``config_path``, ``config_name`` and ``version_base`` as ``hydra.main`` reads them."""
    names = ("config_path", "config_name", "version_base")
    given = dict(zip(names, args))
    given.update({k: v for k, v in kwargs.items() if k in names})
    version_base = given.get("version_base", _UNSET)
    config_path = given.get("config_path", _UNSET)
    if config_path is _UNSET:
        # Hydra's own default: "." under the 1.1 behaviour (version_base unset or < 1.2).
        legacy = version_base is _UNSET or (
            version_base is not None and tuple(map(int, str(version_base).split(".")[:2])) < (1, 2)
        )
        config_path = "." if legacy else None
    return (
        config_path,
        given.get("config_name"),
        "1.1" if version_base is _UNSET else version_base,
    )


def compose_config(
    config_dir: str | None,
    config_name: str | None,
    overrides: list[str],
    *,
    app: str | App | None = None,
    job_name: str | None = None,
) -> DictConfig:
    """The composed config (with its ``hydra`` node, so ``${hydra:...}`` resolves).

    ``config_dir`` and ``config_name`` override the app's; the job name is the app's unless
    given. ``hydra.job.env_set`` is applied to this process's environment, as Hydra applies it
    around the task, so ``${oc.env:...}`` sees what the app sees.
    """
    from hydra import compose, initialize, initialize_config_dir, initialize_config_module

    register()
    loaded = load_app(app) if isinstance(app, str) else app
    name = config_name if config_name is not None else (loaded.config_name if loaded else None)
    job = job_name or (loaded.job_name if loaded else DEFAULT_JOB_NAME)
    app_version_base = loaded.version_base if loaded else None
    where = config_dir or (loaded.config_path if loaded else None)
    if config_dir is not None:
        directory = os.path.abspath(config_dir)
        if not os.path.isdir(directory):
            raise ConfigError(
                f"--config-dir {config_dir}",
                "no such directory",
                "point -cd at the folder that holds your app's configs",
            )
    elif loaded is not None and loaded.config_path and not loaded.config_path.startswith("pkg://"):
        directory = loaded.config_path
    else:
        directory = None
    try:
        if directory is not None:
            context: Any = initialize_config_dir(
                config_dir=directory, job_name=job, **version_base(app_version_base)
            )
        elif where and where.startswith("pkg://"):
            module = where[len("pkg://") :].strip("/").replace("/", ".")
            context = initialize_config_module(
                config_module=module, job_name=job, **version_base(app_version_base)
            )
        else:
            context = initialize(config_path=None, job_name=job, **version_base(app_version_base))
        with context:
            cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    except Exception as error:
        raise ConfigError(
            f"cannot compose {name!r} from {where or 'the ConfigStore'}: {_reason(error)}; "
            "fix: correct the file, key or override it names"
        ) from None
    install(cfg)
    return cfg


def version_base(value: str | None = None) -> dict[str, Any]:
    """``version_base`` for Hydra's API: 1.3 warns without it, 1.4 deprecates it (and warns
    when it is given). ``value`` is the app's own, for 1.3."""
    import hydra

    found = re.match(r"(\d+)\.(\d+)", hydra.__version__)
    if found and (int(found[1]), int(found[2])) >= (1, 4):
        return {}
    return {"version_base": value}


def install(cfg: DictConfig) -> None:
    """Make ``cfg`` the current Hydra config of this process, as it is inside the app's job:
    ``${hydra:...}`` resolves against it and ``hydra.job.env_set`` is in the environment."""
    from hydra.core.hydra_config import HydraConfig

    with read_write(cfg.hydra), open_dict(cfg.hydra):  # read-only once a Hydra config
        cfg.hydra.runtime.cwd = os.getcwd()
    HydraConfig.instance().set_config(cfg)
    env_set = OmegaConf.select(cfg, "hydra.job.env_set", default=None)
    if env_set:
        try:
            values = OmegaConf.to_container(env_set, resolve=True)
        except Exception as error:
            raise ConfigError(
                "hydra.job.env_set", f"cannot resolve it: {_reason(error)}", "correct its values"
            ) from None
        for env_name, value in (values or {}).items():  # type: ignore[union-attr]
            os.environ[str(env_name)] = str(value)


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep, as ``--multirun`` would launch them: ``a=1,2 b=x,y`` gives four.

    Read with Hydra's own override parser, so ``range(...)``, ``choice(...)`` and quoting mean
    what they mean to Hydra's basic sweeper.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    except Exception as error:
        raise ConfigError(
            f"cannot read the overrides {' '.join(overrides)!r}: {_reason(error)}; fix: write "
            "them as for the app, e.g. data.resize=4,8"
        ) from None
    choices: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(
                    key,
                    "is swept over an interval, which has no list of values",
                    f"list the values, e.g. {key}=1,2,3 or range(...)",
                )
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        elif override.is_delete():
            choices.append([override.input_line or key])
        else:
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*choices)]


def _reason(error: BaseException) -> str:
    """The first informative message along the cause chain, on one line, with its key."""
    seen: BaseException | None = error
    while seen is not None:
        lines = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
        if lines:
            key = next(
                (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")),
                "",
            )
            said = " ".join(
                line
                for line in lines[:2]
                if not line.startswith(("full_key:", "object_type=", "reference_type="))
            )
            return f"{key}: {said}" if key else said
        seen = seen.__cause__ or seen.__context__
    return type(error).__name__
