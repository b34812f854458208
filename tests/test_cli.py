"""``hydra-cache keys`` and ``ls``, output formats and errors (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import clean_env, run, write_config
from test_explain import build, cli

CONF = {
    "config.yaml": """
    data: {resize: 8, cache_dir: "${cache_dir:}"}
    features: {dim: 16, cache_dir: "${cache_dir:}"}
"""
}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONF)


def test_keys_lists_every_cache_dir_with_its_status(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    build(conf, tmp_path, cache_root)  # the probe builds data.cache_dir only
    done = cli(tmp_path, "keys", "-cd", str(conf), root=cache_root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["config", "key", "namespace", "key", "status", "upstreams", "path"]
    assert lines[1].split()[:2] == ["data.cache_dir", "data"]
    assert lines[1].split()[3] == "hit" and lines[2].split()[3] == "miss"
    as_json = json.loads(
        cli(tmp_path, "keys", "-cd", str(conf), "--format", "json", root=cache_root).stdout
    )
    assert [r["config_key"] for r in as_json] == ["data.cache_dir", "features.cache_dir"]
    assert as_json[0]["path"] == f"{cache_root}/data/{as_json[0]['key']}"
    assert as_json[0]["root_source"] == "$HYDRA_CACHE_ROOT"


def test_python_dash_m_is_the_same_command(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    script = run(
        [
            "-c",
            "import sys; from hydra_cache.cli import main; sys.exit(main())",
            "keys",
            "-cd",
            str(conf),
        ],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)),
    )
    module = cli(tmp_path, "keys", "-cd", str(conf), root=cache_root)
    assert script.stdout == module.stdout and module.returncode == 0


def test_ls_lists_entries_with_size_times_and_run(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    run_dir = build(conf, tmp_path, cache_root)
    build(conf, tmp_path, cache_root, "data.resize=4", run_dir="second")
    done = cli(tmp_path, "ls", root=cache_root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "namespace",
        "key",
        "size",
        "created",
        "last",
        "used",
        "built",
        "by",
        "run",
    ]
    assert len(lines) == 3 and lines[1].split()[0] == "data" and "2 B" in lines[1]
    assert lines[1].endswith(str(run_dir)) and lines[2].endswith(str(tmp_path / "second"))
    rows = json.loads(cli(tmp_path, "ls", "--format", "json", "--root", str(cache_root)).stdout)
    assert {r["run_dir"] for r in rows} == {str(run_dir), str(tmp_path / "second")}
    assert all(r["size_bytes"] == 2 and r["created"] for r in rows)
    assert (
        json.loads(
            cli(tmp_path, "ls", "--namespace", "nope", "--format", "json", root=cache_root).stdout
        )
        == []
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "-cd", "/no/such/dir"], "--config-dir /no/such/dir: no such directory; fix: "),
        (["keys", "-cd", "{conf}", "data.nope=1"], "cannot compose 'config' from "),
        (["keys", "-cd", "{conf}", "-cn", "missing"], "cannot compose 'missing' from "),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["gc"], "gc needs --max-size and/or --older-than; fix: "),
        (["gc", "--max-size", "lots"], "--max-size 'lots' is not a size; fix: "),
        (["gc", "--older-than", "7 days"], "--older-than '7 days' is not an age; fix: "),
        (["keys", "-cd", "{conf}", "data.resize=???"], "data.resize is '???' (missing)"),
    ],
)
def test_errors_exit_2_with_one_line(
    args: list[str], message: str, conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    done = cli(tmp_path, *[a.format(conf=conf) for a in args], root=cache_root)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hydra-cache: error: "), done.stderr
    assert message in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = cli(tmp_path, "--debug", "keys", "-cd", "/no/such/dir")
    assert done.returncode != 0 and "Traceback (most recent call last)" in done.stderr
