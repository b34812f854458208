"""The CLI composes exactly like the app: the same overrides give the same cache dir in the real
app (run on its own, on joblib workers and on submitit_local workers), through the Compose API,
and in ``hydra-cache keys``.

The app takes a config group only from its ConfigStore, reads ``${hydra:job.name}``, and an
environment variable that only its ``hydra.job.env_set`` sets: each is something the CLI used to
get wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from conftest import clean_env, run, write_config
from hydra_cache.composing import compose_config, expand_sweep, load_app, version_base

APP = """
import json
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig


@dataclass
class Small:
    width: int = 3


ConfigStore.instance().store(group="model", name="small", node=Small)


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir) / "key.json"
    out.write_text(json.dumps({"overrides": list(HydraConfig.get().overrides.task),
                               "path": str(cfg.data.cache_dir)}))


if __name__ == "__main__":
    main()
"""

TRAIN = """
defaults:
  - model: small
  - _self_
data:
  resize: 8
  job: ${hydra:job.name}
  region: ${oc.env:DATA_REGION}
  width: ${model.width}
  cache_dir: ${cache_dir:}
hydra:
  job:
    env_set:
      DATA_REGION: eu-west
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    write_config(project / "conf", {"train.yaml": TRAIN})
    (project / "app.py").write_text(APP)
    return project / "app.py"


def _app_keys(app: Path, cwd: Path, root: Path, *args: str) -> dict[str, str]:
    """Run the real app; each job's overrides -> the cache dir it resolved."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = run([str(app), *args], cwd=cwd, env=clean_env(HYDRA_CACHE_ROOT=str(root)), timeout=300)
    assert done.returncode == 0, done.stderr
    found = {}
    for path in cwd.rglob("key.json"):
        record = json.loads(path.read_text())
        found[" ".join(o for o in record["overrides"] if not o.startswith("hydra"))] = record[
            "path"
        ]
    return found


def _cli_keys(app: Path, cwd: Path, root: Path, *overrides: str) -> dict[str, str]:
    done = run(
        ["-m", "hydra_cache", "keys", "--app", str(app), *overrides, "--format", "json"],
        cwd=cwd,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    if len(rows) == 1 and "overrides" not in rows[0]:
        return {" ".join(overrides): rows[0]["path"]}
    return {" ".join(row["overrides"]): row["path"] for row in rows}


def test_app_launchers_compose_api_and_cli_give_the_same_keys(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    plain = _app_keys(app, tmp_path / "plain", root, "data.resize=4", "hydra.run.dir=run")
    sweep = ["data.resize=4,8", "hydra.sweep.dir=sweep"]
    joblib = _app_keys(app, tmp_path / "joblib", root, "-m", "hydra/launcher=joblib", *sweep)
    submitit = _app_keys(
        app, tmp_path / "submitit", root, "-m", "hydra/launcher=submitit_local", *sweep
    )
    cli = _cli_keys(app, tmp_path, root, "data.resize=4,8")
    assert set(joblib) == set(submitit) == set(cli) == {"data.resize=4", "data.resize=8"}
    assert joblib == submitit == cli
    assert plain["data.resize=4"] == cli["data.resize=4"]
    assert cli["data.resize=4"] != cli["data.resize=8"]

    # The Compose API, as a notebook or a test would use it: the app module imported (for its
    # ConfigStore), the app's job name, the environment its env_set gives, and the Hydra config
    # set (as Hydra does in a job), for ${hydra:...}.
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(root))
    monkeypatch.setenv("DATA_REGION", "eu-west")
    monkeypatch.chdir(tmp_path)
    load_app(str(app))
    with initialize_config_dir(
        config_dir=str(app.parent / "conf"), job_name="app", **version_base()
    ):
        cfg = compose(config_name="train", overrides=["data.resize=4"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves only with it set
    assert str(cfg.data.cache_dir) == cli["data.resize=4"]
    # ... and hydra-cache's own door, which needs none of that set up by hand.
    monkeypatch.delenv("DATA_REGION")
    ours = compose_config(None, None, ["data.resize=4"], app=str(app))
    assert str(ours.data.cache_dir) == cli["data.resize=4"]


def test_without_the_app_the_job_name_and_env_set_differ(app: Path, tmp_path: Path) -> None:
    """What the CLI printed before: a key no run of the app ever has."""
    root = tmp_path / "root"
    with_app = _cli_keys(app, tmp_path, root, "data.resize=4")
    done = run(
        [
            *("-m", "hydra_cache", "keys", "-cd", str(app.parent / "conf"), "-cn", "train"),
            *("+model.width=3", "data.resize=4", "--format", "json"),
        ],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(root), DATA_REGION="eu-west"),
    )
    # Without --app the ConfigStore group is unknown: the compose fails, naming it.
    assert done.returncode == 2 and "model" in done.stderr, done.stderr
    assert with_app["data.resize=4"].startswith(str(root / "data"))


def test_app_as_a_module_and_its_defaults(app: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(APP.replace('config_path="conf"', 'config_path="../conf"'))
    write_config(tmp_path / "conf", {"train.yaml": TRAIN})
    sys.path.insert(0, str(tmp_path))
    try:
        loaded = load_app("pkg.train")
    finally:
        sys.path.remove(str(tmp_path))
    assert loaded.config_name == "train" and loaded.job_name == "train"
    assert loaded.config_path == str(tmp_path / "conf")
    from_file = load_app(str(app))
    assert from_file.job_name == "app" and from_file.config_path == str(app.parent / "conf")


def test_sweeps_expand_as_multirun_does() -> None:
    assert expand_sweep(["a=1,2", "b=x", "+c=range(0,2)"]) == [
        ["a=1", "b=x", "+c=0"],
        ["a=1", "b=x", "+c=1"],
        ["a=2", "b=x", "+c=0"],
        ["a=2", "b=x", "+c=1"],
    ]
    assert expand_sweep(["~a", "b=[1,2]"]) == [["~a", "b=[1,2]"]]
