"""The main job (examples/train.py on the bundled digits data) as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO, clean_env, entries, run

TRAIN = str(REPO / "examples" / "train.py")


def test_second_run_hits_and_a_preprocessing_change_builds_anew(
    tmp_path: Path, cache_root: Path
) -> None:
    env = clean_env(HYDRA_CACHE_ROOT=str(cache_root))
    first = run([TRAIN, "hydra.run.dir=r1"], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    log = (tmp_path / "r1" / "train.log").read_text()
    assert re.search(r"cache built: .*/data/[0-9a-f]{16}", log)
    accuracy = float(re.findall(r"accuracy (\d\.\d+)", log)[0])
    assert accuracy > 0.9

    second = run([TRAIN, "hydra.run.dir=r2", "model.C=0.5"], cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "cache hit: " in (tmp_path / "r2" / "train.log").read_text()

    third = run(
        [TRAIN, "hydra.run.dir=r3", "data.resize=4", "data.num_workers=8"], cwd=tmp_path, env=env
    )
    assert third.returncode == 0, third.stderr
    assert "cache built: " in (tmp_path / "r3" / "train.log").read_text()
    assert len(entries(cache_root)) == 4  # data and, through its upstream, features anew

    fourth = run([TRAIN, "hydra.run.dir=r4", "features.components=16"], cwd=tmp_path, env=env)
    assert fourth.returncode == 0, fourth.stderr
    log = (tmp_path / "r4" / "train.log").read_text()
    assert re.search(r"data cache hit: ", log) and re.search(r"features cache built: ", log)
    assert len(entries(cache_root)) == 5


def test_joblib_sweep_over_the_model_builds_the_cache_once(
    tmp_path: Path, cache_root: Path
) -> None:
    done = run(
        [TRAIN, "-m", "hydra/launcher=joblib", "model.C=0.1,1,10,100", "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)),
    )
    assert done.returncode == 0, done.stderr
    logs = [p.read_text() for p in sorted((tmp_path / "sweep").glob("*/train.log"))]
    assert len(logs) == 4
    outcomes = [re.findall(r"data cache (built|hit|waited): ", log)[0] for log in logs]
    assert outcomes.count("built") == 1, outcomes
    assert len(entries(cache_root)) == 2
