"""Everyday commands (``rm``, ``show``, ``ls`` with builds in progress, parameters and a plot),
progress (builder heartbeat, waiters' estimate, bars and lines) and ``hydra-cache build``, which
pre-builds a sweep's distinct entries so the sweep itself makes no build."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import BUILDER, clean_env, entries, run, spawn, write_config
from hydra_cache.store import journal

CONF = {
    "config.yaml": """
    data: {resize: 8, mode: fast, cache_dir: "${cache_dir:}"}
    features: {dim: 16, cache_dir: "${cache_dir:}"}
    """
}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["-m", "hydra_cache", *args], cwd=cwd, env=clean_env(**env))


def prebuild(conf: Path, cwd: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    builders = "+hydra_cache.builders={data: builders.build, features: builders.build}"
    return cli(cwd, "build", "-cd", str(conf), builders, *args, HYDRA_CACHE_ROOT=str(root))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_config(tmp_path / "conf", CONF)
    # A build function named in the config; the project folder is on sys.path for it.
    (tmp_path / "pyproject.toml").write_text('[tool.hydra-cache]\nconfig_dir = "conf"\n')
    (tmp_path / "builders.py").write_text(
        "import json\n"
        "from omegaconf import OmegaConf\n"
        "def build(node, staging):\n"
        "    values = OmegaConf.to_container(node, resolve=False)\n"
        "    values.pop('cache_dir')\n"
        "    (staging / 'values.json').write_text(json.dumps(values))\n"
    )
    return tmp_path


def test_build_then_show_ls_params_and_rm(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = project / "conf"
    done = prebuild(conf, project, root, "data.resize=4,8")
    assert done.returncode == 0, done.stderr
    assert "2 jobs use 3 distinct cache entries: built 3, 0 already ready" in done.stdout
    again = prebuild(conf, project, root, "data.resize=4,8")
    assert "built 0, 3 already ready" in again.stdout
    rows = json.loads(
        cli(project, "ls", "--params", "--format", "json", HYDRA_CACHE_ROOT=str(root)).stdout
    )
    assert len(rows) == 3 and all(r["status"] == "ready" for r in rows)
    data = sorted(
        (r for r in rows if r["namespace"] == "data"), key=lambda r: r["parameters"]["data.resize"]
    )
    assert [r["parameters"] for r in data] == [
        {"data.resize": 4, "data.mode": "fast"},
        {"data.resize": 8, "data.mode": "fast"},
    ]
    # ISO 8601 times with their offset
    assert all(r["created"][10] == "T" and r["created"][-3] == ":" for r in rows)
    assert all(r["last_used"][10] == "T" for r in rows)

    shown = cli(project, "show", f"data/{data[0]['key']}", HYDRA_CACHE_ROOT=str(root))
    assert shown.returncode == 0, shown.stderr
    assert "data.resize = 4" in shown.stdout and "values.json" in shown.stdout
    assert "audit       not audited" in shown.stdout and "built " in shown.stdout
    as_json = json.loads(
        cli(project, "show", data[0]["key"], "--format", "json", HYDRA_CACHE_ROOT=str(root)).stdout
    )
    assert as_json["parameters"] == {"data.resize": 4, "data.mode": "fast"}
    assert as_json["files"]["values.json"]["size"] > 0

    removed = cli(project, "rm", data[0]["key"], HYDRA_CACHE_ROOT=str(root))
    assert removed.returncode == 0, removed.stderr
    assert "removed 1 cache entry" in removed.stdout
    assert not Path(data[0]["path"]).exists() and not Path(data[0]["path"] + ".lock").exists()
    record = [r for r in journal.records(root) if r["event"] == "delete"]
    assert record[-1]["reason"] == "rm" and record[-1]["key"] == data[0]["key"]
    why = cli(project, "why", "data.resize=4", "--format", "json", HYDRA_CACHE_ROOT=str(root))
    assert json.loads(why.stdout)[0]["summary"].startswith("deleted by hydra-cache (rm)")
    by_namespace = cli(project, "rm", "--namespace", "data", HYDRA_CACHE_ROOT=str(root))
    assert "removed 1 cache entry" in by_namespace.stdout
    assert [p.parent.name for p in entries(root)] == ["features"]
    unknown = cli(project, "rm", "0123456789abcdef", HYDRA_CACHE_ROOT=str(root))
    assert unknown.returncode == 2 and "is not an entry under" in unknown.stderr


HOLD_LOCK = """
import sys, time
from pathlib import Path
from hydra_cache.store.entry import CacheEntry
from hydra_cache.store.locking import EntryLock
entry = CacheEntry(sys.argv[1])
lock = EntryLock(entry.lock_path, "auto", str(entry.path))
assert lock.acquire(10)
print("locked", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.02)
lock.release()
"""


def test_ls_shows_builds_in_progress_and_rm_skips_them(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "data" / "0123456789abcdef"
    path.parent.mkdir(parents=True)
    assert spawn(BUILDER, str(path), str(tmp_path / "log"), "--files", "1").wait(60) == 0
    other = path.with_name("fedcba9876543210")
    builder = spawn(
        BUILDER, str(other), str(tmp_path / "log2"), "--files", "100", "--sleep", "0.05"
    )
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(go)],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        deadline = time.monotonic() + 60
        while not list(other.parent.glob(".fedcba9876543210.staging.*")):
            assert time.monotonic() < deadline, "the builder never started"
            time.sleep(0.02)
        listing = cli(project, "ls", "--format", "json", HYDRA_CACHE_ROOT=str(root))
        rows = {r["key"]: r for r in json.loads(listing.stdout)}
        assert rows["fedcba9876543210"]["status"] == "building"
        assert rows["fedcba9876543210"]["holder"]["pid"] == builder.pid
        text = cli(project, "ls", HYDRA_CACHE_ROOT=str(root)).stdout
        assert "building now by " in text and f":{builder.pid}, for " in text
        # A published entry whose lock another process holds is never removed under it.
        refused = cli(project, "rm", "data/0123456789abcdef", HYDRA_CACHE_ROOT=str(root))
        assert refused.returncode == 1
        assert "skipped data/0123456789abcdef: " in refused.stdout
        assert "lock is held" in refused.stdout
        assert (path / ".hydra-cache.json").is_file()
    finally:
        go.write_text("")
        holder.wait(60)
        builder.wait(120)
    assert cli(project, "rm", "data/0123456789abcdef", HYDRA_CACHE_ROOT=str(root)).returncode == 0


def test_ls_plot_writes_a_png_or_says_what_is_missing(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert prebuild(project / "conf", project, root, "data.resize=4,8").returncode == 0
    out = tmp_path / "plots" / "cache.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_matplotlib = False
    else:
        has_matplotlib = True
    if has_matplotlib:
        done = cli(project, "ls", "--plot", str(out), HYDRA_CACHE_ROOT=str(root))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without matplotlib: one line that says what to install.
    blocked = run(
        [
            "-c",
            "import sys; sys.modules['matplotlib'] = None; "
            "from hydra_cache.cli import main; sys.exit(main())",
            "ls",
            "--plot",
            str(tmp_path / "no.png"),
        ],
        cwd=project,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
    )
    assert blocked.returncode == 2
    assert blocked.stderr.strip().splitlines()[-1] == (
        "hydra-cache: error: --plot: needs matplotlib, which is not installed; "
        'fix: pip install "hydra-cache-dir[plot]"'
    )


def test_builder_heartbeat_and_waiter_estimate(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = root / "data" / "0123456789abcdef"
    first.parent.mkdir(parents=True)
    done = spawn(BUILDER, str(first), str(tmp_path / "log"), "--files", "2", "--sleep", "0.3")
    assert done.wait(60) == 0
    # The journal now knows how long a build of `data` takes.
    journal.append(root, "publish", namespace="data", key="0123456789abcdef", build_seconds=0.6)
    target = root / "data" / "fedcba9876543210"
    builder = spawn(
        BUILDER,
        str(target),
        str(tmp_path / "log"),
        "--files",
        "8",
        "--sleep",
        "0.25",
        "--log-interval",
        "0.2",
    )
    while not list(target.parent.glob(".fedcba9876543210.staging.*")):
        time.sleep(0.02)
    waiter = spawn(BUILDER, str(target), str(tmp_path / "log"), "--log-interval", "0.2")
    _, built_log = builder.communicate(timeout=120)
    _, waited_log = waiter.communicate(timeout=120)
    assert builder.returncode == waiter.returncode == 0, built_log + waited_log
    assert f"building {target}; the last build of data took 0.6 s" in built_log
    assert f"still building {target}: " in built_log and " elapsed; the last build of data" in (
        built_log
    )
    assert "waiting for" in waited_log and "the last build of data took 0.6 s" in waited_log


def test_long_commands_show_progress_lines_without_a_terminal(
    project: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    assert prebuild(project / "conf", project, root, "data.resize=1,2,3,4,5").returncode == 0
    done = cli(project, "verify", HYDRA_CACHE_ROOT=str(root), HYDRA_CACHE_PROGRESS_INTERVAL="0")
    assert done.returncode == 0, done.stderr
    assert "verify: 1/6 entries (17%)" in done.stderr
    assert "all 6 entries under" in done.stdout
    done = cli(
        project,
        "gc",
        "--max-size",
        "0",
        "--min-idle",
        "0s",
        HYDRA_CACHE_ROOT=str(root),
        HYDRA_CACHE_PROGRESS_INTERVAL="0",
    )
    assert done.returncode == 0, done.stderr
    assert "gc: 1/6 entries (17%)" in done.stderr and "removed 6 entries" in done.stdout


def test_a_progress_bar_on_a_terminal_when_tqdm_is_there(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    root = tmp_path / "root"
    assert prebuild(project / "conf", project, root, "data.resize=1,2,3").returncode == 0
    main, child = os.openpty()
    # A terminal of 24 rows and 80 columns (a fresh pseudo-terminal has no size at all).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    done = subprocess.run(
        [sys.executable, "-m", "hydra_cache", "verify"],
        cwd=project,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
        stdout=subprocess.PIPE,
        stderr=child,
        text=True,
        timeout=120,
        check=False,
    )
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert done.returncode == 0
    assert b"verify: 100%" in shown and b"4/4" in shown


def test_prebuilt_sweep_runs_on_joblib_workers_without_a_build(tmp_path: Path) -> None:
    """The issue's acceptance case: a 4-job, 2-key sweep, pre-built, then run on 2 joblib
    workers, makes 0 builds."""
    app = tmp_path / "app.py"
    app.write_text(
        "from pathlib import Path\n"
        "import hydra\n"
        "from hydra_cache import CacheEntry\n"
        "\n"
        "def build(data, staging):\n"
        "    (staging / 'x').write_text(str(data.key))\n"
        "\n"
        "hydra_cache_builders = {'data': build}\n"
        "\n"
        "@hydra.main(version_base=None, config_path='conf', config_name='config')\n"
        "def main(cfg):\n"
        "    entry = CacheEntry(cfg.data.cache_dir)\n"
        "    entry.get_or_build(lambda staging: build(cfg.data, staging))\n"
        "    Path(cfg.out, f'{cfg.data.key}-{cfg.job}.txt').write_text(entry.last_outcome)\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    write_config(
        tmp_path / "conf",
        {"config.yaml": "out: ???\njob: 0\ndata: {key: 0, cache_dir: '${cache_dir:}'}\n"},
    )
    out = tmp_path / "outcomes"
    out.mkdir()
    root = tmp_path / "root"
    sweep = ["data.key=0,1", "job=0,1", f"out={out}"]
    built = cli(
        tmp_path, "build", "--app", "app.py", "-m", "-j", "2", *sweep, HYDRA_CACHE_ROOT=str(root)
    )
    assert built.returncode == 0, built.stderr
    assert "4 jobs use 2 distinct cache entries: built 2" in built.stdout
    publishes = [r for r in journal.records(root) if r["event"] == "publish"]
    assert len(publishes) == 2
    swept = run(
        [
            str(app),
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweep.dir=s",
            *sweep,
        ],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
    )
    assert swept.returncode == 0, swept.stderr
    outcomes = sorted(p.read_text() for p in out.iterdir())
    assert outcomes == ["hit", "hit", "hit", "hit"]
    assert [r for r in journal.records(root) if r["event"] == "publish"] == publishes


def test_build_needs_a_build_function(project: Path, tmp_path: Path) -> None:
    done = cli(project, "build", HYDRA_CACHE_ROOT=str(tmp_path / "root"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hydra-cache: error: data.cache_dir: has no build function, so hydra-cache build "
        "cannot build it; fix: set hydra_cache.builders.data=mypkg.prepare.build, or _build_ in "
        "data, or hydra_cache_builders = {'data': build} in the app module"
    )


def test_build_takes_a_build_target_from_the_node_and_builds_upstreams_first(
    tmp_path: Path,
) -> None:
    """``_build_: module.function`` in the node, imported from the project folder; entries that
    several jobs share are built once; a chained stage is built after the entry it reads."""
    (tmp_path / "demo.py").write_text(
        "from pathlib import Path\n"
        "def build(node, staging):\n"
        "    if 'source' in node:\n"
        "        rows = (Path(node.source) / 'rows').read_text()  # the upstream entry\n"
        "        (staging / 'rows').write_text(f'{rows}x{node.dim}')\n"
        "    else:\n"
        "        (staging / 'rows').write_text(str(node.rows))\n"
    )
    write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            raw: {rows: 1, cache_dir: "${cache_dir:}", _build_: demo.build}
            features:
              dim: 16
              source: ${raw.cache_dir}
              cache_dir: ${cache_dir:}
              _build_: demo.build
            """
        },
    )
    root = tmp_path / "root"
    done = cli(
        tmp_path,
        "build",
        "-j",
        "2",
        "raw.rows=1,2",
        "features.dim=8,16",
        HYDRA_CACHE_ROOT=str(root),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 jobs use 6 distinct cache entries: built 6" in done.stdout
    built = sorted((p / "rows").read_text() for p in entries(root))
    assert built == ["1", "1x16", "1x8", "2", "2x16", "2x8"]
    # show names the upstream entry a chained stage was built from.
    feature = next(p for p in entries(root) if p.parent.name == "features")
    shown = cli(tmp_path, "show", f"features/{feature.name}", HYDRA_CACHE_ROOT=str(root))
    assert shown.returncode == 0, shown.stderr
    assert "  upstreams\n    raw.cache_dir: raw/" in shown.stdout
