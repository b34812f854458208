"""ManifestCallback: the run manifest, the sweep summary, on_miss, and no secret in the clear."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import clean_env, run_probe, write_config
from test_explain import cli

CONF = {
    "config.yaml": """
    data:
      resize: 8
      password: ${oc.env:HC_DB_PASSWORD,pw-default}
      cache_dir: ${cache_dir:}
    model: {C: 1.0}
"""
}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONF)


def load(path: Path) -> dict:  # type: ignore[type-arg]
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(loaded, dict)
    return loaded


def probe(conf: Path, cwd: Path, root: Path, *overrides: str, **env: str):  # type: ignore[no-untyped-def]
    flags = [o for o in overrides if o == "-m"]  # Hydra wants flags before the overrides
    rest = [o for o in overrides if o != "-m"]
    return run_probe(
        conf,
        cwd,
        *flags,
        "hydra/callbacks=cache_manifest",
        *rest,
        root=root,
        env=clean_env(PROBE_BUILD="1", **env),
    )


def test_run_manifest_records_start_and_end(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    first = probe(conf, tmp_path, cache_root, "hydra.run.dir=one")
    assert first.returncode == 0, first.stderr
    manifest = load(tmp_path / "one" / ".hydra" / "cache.yaml")
    assert manifest["job"]["output_dir"] == str(tmp_path / "one")
    assert manifest["started"] and manifest["finished"] and manifest["job_status"] == "COMPLETED"
    (record,) = manifest["entries"]
    assert record["config_key"] == "data.cache_dir" and record["namespace"] == "data"
    assert record["path"] == f"{cache_root}/data/{record['key']}"
    assert record["digest"].startswith(record["key"]) and len(record["digest"]) == 64
    assert record["root"] == str(cache_root) and record["root_source"] == "$HYDRA_CACHE_ROOT"
    assert record["payload"]["nodes"]["data"]["resize"] == 8
    assert record["payload"]["nodes"]["data"]["password"].startswith("<redacted:")
    assert record["status_at_start"] == "miss"
    assert record["explanation"]["kind"] == "never-built"
    assert record["status_at_end"] == "built"
    assert record["build_seconds"] >= 0 and record["size_bytes"] == 2

    second = probe(conf, tmp_path, cache_root, "hydra.run.dir=two", "model.C=2")
    assert second.returncode == 0, second.stderr
    (record,) = load(tmp_path / "two" / ".hydra" / "cache.yaml")["entries"]
    assert record["status_at_start"] == "hit" and record["status_at_end"] == "hit"
    assert record["explanation"]["kind"] == "hit"


def test_without_output_subdir_the_manifest_goes_beside_the_run(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    done = probe(conf, tmp_path, cache_root, "hydra.run.dir=run", "hydra.output_subdir=null")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "run" / ".hydra").exists()
    (record,) = load(tmp_path / "run" / "cache.yaml")["entries"]
    assert record["status_at_end"] == "built"


def test_joblib_sweep_of_four_jobs_shares_one_entry(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    done = probe(
        conf,
        tmp_path,
        cache_root,
        "-m",
        "hydra/launcher=joblib",
        "model.C=0.1,1,10,100",
        "hydra.sweep.dir=sweep",
    )
    assert done.returncode == 0, done.stderr
    manifests = [load(p) for p in sorted((tmp_path / "sweep").glob("*/.hydra/cache.yaml"))]
    assert len(manifests) == 4
    paths = {m["entries"][0]["path"] for m in manifests}
    assert len(paths) == 1
    ends = sorted(m["entries"][0]["status_at_end"] for m in manifests)
    assert ends.count("built") == 1 and set(ends) <= {"built", "hit", "waited"}
    assert sorted(m["job"]["num"] for m in manifests) == [0, 1, 2, 3]
    summary = load(tmp_path / "sweep" / "cache_summary.yaml")
    assert summary["jobs"] == 4 and summary["builds"] == 1
    (entry,) = summary["entries"]
    assert entry["path"] == paths.pop() and sorted(entry["jobs"]) == ["0", "1", "2", "3"]
    assert len(entry["built_by"]) == 1 and entry["builds"] == 1
    assert len(entry["hit_by"]) + len(entry["waited"]) == 3
    assert (
        "hydra-cache: 4 jobs shared 1 cache entry and built 1 of them" in done.stdout + done.stderr
    )


def test_on_miss_error_stops_before_the_task_with_the_explanation(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    done = probe(conf, tmp_path, cache_root, "hydra.run.dir=run", "+hydra_cache.on_miss=error")
    assert done.returncode == 1
    assert "ENTRY" not in done.stdout and not (tmp_path / "run" / "probe.json").exists()
    log = (tmp_path / "run" / "probe.log").read_text()
    assert re.search(
        r"\[ERROR\] - cache miss for data.cache_dir: never built: no entry of "
        r"namespace data exists under ",
        log,
    )
    assert (
        "hydra_cache.on_miss=error: stopping before the task; 1 cache dir(s) not ready: "
        "data.cache_dir" in log
    )
    assert not cache_root.exists() or not any(cache_root.rglob(".hydra-cache.json"))


def test_on_miss_warn_logs_a_warning_and_runs(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    done = probe(conf, tmp_path, cache_root, "hydra.run.dir=run", "+hydra_cache.on_miss=warn")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "probe.log").read_text()
    assert "[WARNING] - cache miss for data.cache_dir: never built" in log
    assert "ENTRY built" in done.stdout


def test_on_miss_build_logs_the_miss_at_info(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    done = probe(conf, tmp_path, cache_root, "hydra.run.dir=run")
    assert done.returncode == 0, done.stderr
    assert (
        "[INFO] - cache miss for data.cache_dir: never built"
        in (tmp_path / "run" / "probe.log").read_text()
    )


def test_canary_secrets_never_reach_manifest_journal_metadata_or_logs(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    canaries = {"HC_DB_PASSWORD": "canary-env-7f3a91", "HC_API_TOKEN": "canary-token-c0ffee"}
    secret_conf = write_config(
        tmp_path / "secret-conf",
        {
            "config.yaml": """
        data:
          resize: 8
          password: ${oc.env:HC_DB_PASSWORD}
          remote: "https://u:${oc.env:HC_API_TOKEN}@example.invalid/x"
          db: {password: canary-literal-9b2e}
          cache_dir: ${cache_dir:}
    """
        },
    )
    outputs = []
    for overrides in (
        ["hydra.run.dir=one"],
        ["hydra.run.dir=two", "data.resize=4"],
        ["-m", "hydra/launcher=joblib", "data.resize=4,8", "hydra.sweep.dir=sw"],
        ["hydra.run.dir=three", "+hydra_cache.on_miss=error", "data.resize=5"],
    ):
        done = probe(secret_conf, tmp_path, cache_root, *overrides, **canaries)
        assert done.returncode == (1 if "+hydra_cache.on_miss=error" in overrides else 0)
        outputs.append(done.stdout + done.stderr)
    for args in (
        ["why", "-cd", str(secret_conf), "data.resize=6"],
        ["keys", "-cd", str(secret_conf)],
        ["ls"],
    ):
        result = cli(tmp_path, *args, root=cache_root, **canaries)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for name in (
        "journal.jsonl",
        "cache.yaml",
        "cache_summary.yaml",
        ".hydra-cache.json",
        "probe.log",
        "roots.json",
    ):
        assert any(p.name == name for p in written), name
    secrets = [*canaries.values(), "canary-literal-9b2e"]
    for path in written:
        # The user's own config, and the copies of it Hydra itself saves, hold the literal.
        if (
            path.parent.name == "secret-conf"
            or path.name == "multirun.yaml"
            or (path.parent.name == ".hydra" and path.name != "cache.yaml")
        ):
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in text, f"{secret} leaked into {path}"
    for output in outputs:
        for secret in secrets:
            assert secret not in output
