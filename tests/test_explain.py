"""Every miss explained, each produced by the real situation and read back through the CLI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import BUILDER, clean_env, run, run_probe, spawn, write_config
from hydra_cache.store import journal

CONF = {
    "config.yaml": """
    data:
      resize: 8
      normalize: standard
      cache_dir: ${cache_dir:}
"""
}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONF)


def build(conf: Path, cwd: Path, root: Path, *overrides: str, run_dir: str = "built") -> Path:
    """Run the real app once with the manifest callback so it builds its entry."""
    done = run_probe(
        conf,
        cwd,
        "hydra/callbacks=cache_manifest",
        f"hydra.run.dir={run_dir}",
        *overrides,
        root=root,
        env=clean_env(PROBE_BUILD="1"),
    )
    assert done.returncode == 0, done.stderr
    return cwd / run_dir


def cli(
    cwd: Path, *args: str, root: Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = clean_env(**({"HYDRA_CACHE_ROOT": str(root)} if root else {}), **extra_env)
    return run(["-m", "hydra_cache", *args], cwd=cwd, env=env)


def why(conf: Path, cwd: Path, root: Path, *overrides: str) -> dict[str, Any]:
    done = cli(cwd, "why", "-cd", str(conf), "--format", "json", *overrides, root=root)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 1
    return dict(rows[0])


def keys(conf: Path, cwd: Path, root: Path, *overrides: str) -> dict[str, Any]:
    done = cli(cwd, "keys", "-cd", str(conf), "--format", "json", *overrides, root=root)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout)[0])


def test_a_root_moved(conf: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old-root", tmp_path / "new-root"
    run_dir = build(conf, tmp_path, old, f"+hydra_cache.root={old}")
    found = why(conf, tmp_path, new, f"+hydra_cache.root={new}")
    assert found["kind"] == "root-moved"
    assert f"ready under {old}" in found["summary"] and f"root is now {new}" in found["summary"]
    assert f"fix: point back with hydra_cache.root={old}" in found["details"]
    assert any(f"(run {run_dir})" in line for line in found["details"])
    (copy,) = [line for line in found["details"] if "or copy the entry: " in line]
    command = copy.split("or copy the entry: ", 1)[1]
    assert command.startswith(
        f"mkdir -p -m 700 {new} {new}/.hydra-cache && mkdir -p {new}/data && cp -a {old}/data/"
    )
    assert not new.exists()  # the printed fix must work when the new root does not exist yet
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert why(conf, tmp_path, new, f"+hydra_cache.root={new}")["kind"] == "hit"
    assert new.stat().st_mode & 0o777 == 0o700
    for command in ("ls", "verify"):  # a root as hydra-cache makes one: maintenance works
        assert cli(tmp_path, command, "--root", str(new)).returncode == 0


def test_b_key_changed_shows_the_leaf_diff_and_the_run(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    run_dir = build(conf, tmp_path, cache_root)
    (published,) = journal.records(cache_root)
    assert published["event"] == "publish" and published["run_dir"] == str(run_dir)
    assert published["time"] and published["host"] and published["pid"] > 0
    found = why(conf, tmp_path, cache_root, "data.resize=4", "data.normalize=minmax")
    assert found["kind"] == "key-changed"
    assert found["summary"].startswith("key changed: 2 hashed values differ from the nearest")
    assert 'data.normalize: "standard" -> "minmax"' in found["details"]
    assert "data.resize: 8 -> 4" in found["details"]
    assert any(f"by run {run_dir}" in line for line in found["details"])


def test_c_deleted_outside_hydra_cache(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    run_dir = build(conf, tmp_path, cache_root)
    shutil.rmtree(keys(conf, tmp_path, cache_root)["path"])
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "deleted"
    assert found["summary"].startswith("deleted outside hydra-cache: ")
    assert any(f"(run {run_dir})" in line for line in found["details"])


def test_d_evicted_by_gc(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    build(conf, tmp_path, cache_root)
    done = cli(tmp_path, "gc", "--max-size", "0", "--min-idle", "0s", root=cache_root)
    assert done.returncode == 0, done.stderr
    assert "removed 1 entry," in done.stdout
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "evicted"
    assert found["summary"].startswith("evicted by hydra-cache gc: ")
    assert "max size 0" in found["summary"]


def test_e_torn_after_a_sigkill(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    path = keys(conf, tmp_path, cache_root)["path"]
    killed = spawn(BUILDER, path, tmp_path / "log", "--kill-at", "build")
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "torn"
    assert f":{killed.pid} was killed" in found["summary"]
    assert keys(conf, tmp_path, cache_root)["status"] == "torn"


def test_f_building_now(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    path = keys(conf, tmp_path, cache_root)["path"]
    log = tmp_path / "log"
    slow = spawn(BUILDER, path, log, "--files", "3", "--sleep", "3")
    try:
        deadline = time.time() + 30
        while not (log.exists() and log.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        found = why(conf, tmp_path, cache_root)
        status = keys(conf, tmp_path, cache_root)["status"]
    finally:
        slow.communicate(timeout=60)
    assert found["kind"] == "building"
    assert f":{slow.pid} has been building {path} for " in found["summary"]
    assert status == "building"


def test_g_volatile_key(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        data:
          resize: 8
          stamp: ${now:%H%M%S%f}
          cache_dir: ${cache_dir:}
    """
        },
    )
    build(conf, tmp_path, cache_root)
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "volatile"
    assert found["summary"].startswith("volatile key: data.stamp holds a per-run value")


def test_h_never_built(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "never-built"
    assert found["summary"] == f"never built: no entry of namespace data exists under {cache_root}"


def test_why_text_format_and_all_ready(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    build(conf, tmp_path, cache_root)
    ready = cli(tmp_path, "why", "-cd", str(conf), root=cache_root)
    assert ready.stdout.strip() == "the 1 cache dir is ready"
    changed = cli(tmp_path, "why", "-cd", str(conf), "data.resize=4", root=cache_root)
    lines = changed.stdout.splitlines()
    assert lines[0].startswith("data.cache_dir: key changed: 1 hashed value differs")
    assert lines[1] == "    data.resize: 8 -> 4"


def test_a_miss_is_explained_only_by_entries_of_the_same_project(
    tmp_path: Path, cache_root: Path
) -> None:
    """Issue 12, friction 6: a new project's first miss was explained against another
    project's ``data`` entry. The project is the folder holding the config dir (or
    ``hydra_cache.project``); entries stay shared, explanations do not mix."""
    demo = write_config(tmp_path / "demo" / "conf", CONF)
    lht = write_config(tmp_path / "lht" / "configs", CONF)
    run_dir = build(demo, tmp_path, cache_root, "data.resize=4")
    (published,) = journal.records(cache_root)
    meta = json.loads((Path(published["path"]) / ".hydra-cache.json").read_text())
    assert meta["project"] == "demo"
    found = why(lht, tmp_path, cache_root)
    assert found["kind"] == "never-built"
    assert found["summary"] == (
        f"never built: no entry of namespace data of project lht exists under {cache_root} "
        "(1 other project uses namespace data: demo)"
    )
    # Within one project, the same miss is explained by the nearest entry.
    assert why(demo, tmp_path, cache_root)["kind"] == "key-changed"
    # Naming the project joins the two; it never changes a key, so the entry is shared.
    same = why(lht, tmp_path, cache_root, "+hydra_cache.project=demo", "data.resize=4")
    assert same["kind"] == "hit"
    joined = why(lht, tmp_path, cache_root, "+hydra_cache.project=demo")
    assert joined["kind"] == "key-changed" and "data.resize: 4 -> 8" in joined["details"]
    assert any(f"by run {run_dir}" in line for line in joined["details"])


def test_a_path_derived_elsewhere_is_never_called_never_built(tmp_path: Path) -> None:
    """explain() of a path this process did not derive cannot diff values, but it must not
    claim that nothing of the namespace was built when other entries are there."""
    from hydra_cache import CacheEntry
    from hydra_cache.explain import explain

    root = tmp_path / "root"
    CacheEntry(root / "ns" / ("a" * 16)).get_or_build(lambda s: (s / "f").write_text("x"))
    found = explain(root / "ns" / ("b" * 16))
    assert (found.kind, found.summary) == (
        "key-changed",
        f"not built: 1 other entry of namespace ns exists under {root}, but how "
        f"{'b' * 16} was derived is unknown here, so no values can be compared",
    )
    assert explain(root / "other" / ("b" * 16)).kind == "never-built"


def test_the_default_project_is_the_checkout_not_a_shared_parent(
    tmp_path: Path, cache_root: Path
) -> None:
    """Found by a stranger's attack: apps with config_path="." in ws/p1 and ws/p2 were both
    project "ws". The nearest folder with a project marker names the project."""
    for name in ("p1", "p2"):
        write_config(tmp_path / "ws" / name, CONF)
        (tmp_path / "ws" / name / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    build(tmp_path / "ws" / "p1", tmp_path, cache_root, "data.resize=4")
    (published,) = journal.records(cache_root)
    meta = json.loads((Path(published["path"]) / ".hydra-cache.json").read_text())
    assert meta["project"] == "p1"
    found = why(tmp_path / "ws" / "p2", tmp_path, cache_root)
    assert (
        found["kind"] == "never-built"
        and "(1 other project uses namespace data: p1)" in (found["summary"])
    )


def test_entries_that_recorded_no_parameters_are_not_a_schema_change(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    """Found by a stranger's attack: an entry published by a ddp_spawn worker (which never
    derived its path) has no payload, and why then said the key schema changed (None -> 2)."""
    from hydra_cache import CacheEntry

    CacheEntry(cache_root / "data" / ("c" * 16)).get_or_build(lambda s: (s / "f").write_text("x"))
    found = why(conf, tmp_path, cache_root)
    assert found["kind"] == "key-changed" and "schema" not in found["summary"]
    assert found["summary"].startswith("not built: 1 entry of namespace data under ")
    assert "recorded no parameters to compare with" in found["summary"]
