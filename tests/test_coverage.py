"""Catch the stale cache before it happens: the audit, input and code fingerprints, and the
pytest helper, each shown with real Hydra runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TESTS, clean_env, run, run_probe, write_config
from hydra_cache.testing import assert_key_covers
from test_codeprint import keys
from test_explain import cli

AUDITED = TESTS / "apps" / "audited.py"
CONF = {
    "config.yaml": """
    data: {resize: 8, normalize: standard, cache_dir: "${cache_dir:}"}
    train: {seed: 3, epochs: 2}
    hydra_cache: {audit: true}
"""
}


def audited(
    conf: Path, cwd: Path, root: Path, *overrides: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            str(AUDITED),
            "--config-dir",
            str(conf),
            "hydra.run.dir=run",
            "hydra/callbacks=cache_manifest",
            *overrides,
        ],
        cwd=cwd,
        env=clean_env(HYDRA_CACHE_ROOT=str(root), **env),
    )


# ----------------------------------------------------------------------------------- audit


def test_the_audit_catches_a_build_that_reads_train_seed(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(tmp_path / "conf", CONF)
    done = audited(conf, tmp_path, cache_root, READ_SEED="1")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "audited.log").read_text()
    assert (
        "[WARNING] - build of data.cache_dir read train.seed, which is not part of its key: "
        "runs that differ only in train.seed will share this entry"
    ) in log
    (meta,) = [json.loads(p.read_text()) for p in cache_root.rglob(".hydra-cache.json")]
    assert meta["audit"] == {"uncovered": ["train.seed"]}
    manifest = (tmp_path / "run" / ".hydra" / "cache.yaml").read_text()
    assert "audit_uncovered:\n  - train.seed" in manifest
    keys = cli(tmp_path, "keys", "-cd", str(conf), root=cache_root)
    assert "hit (uncovered: train.seed)" in keys.stdout
    why = cli(tmp_path, "why", "-cd", str(conf), root=cache_root)
    assert "its build read train.seed, which is not part of its key" in why.stdout
    # Issue 12, friction 8: the next run with another seed hits that entry; it must say so at
    # job start, not only in keys, why and the manifest.
    again = audited(conf, tmp_path, cache_root, "train.seed=1", "hydra.run.dir=run2")
    assert again.returncode == 0, again.stderr
    (path,) = [p.parent for p in cache_root.rglob(".hydra-cache.json")]
    assert (
        f"[WARNING] - data.cache_dir reuses {path}, whose build read train.seed outside its "
        "key: runs that differ only there share this entry; fix: hash it too, e.g. "
        "data.cache_dir: ${cache_dir:.,train.seed} (and take it out of hydra_cache.exclude if "
        "listed there), or stop the build from reading it"
    ) in (tmp_path / "run2" / "audited.log").read_text()


def test_a_job_that_waited_for_an_under_keyed_build_warns_too(
    tmp_path: Path, cache_root: Path
) -> None:
    """Found by a stranger's attack: in a joblib sweep over train.seed, the job that waited
    for the other's build reused an entry built with another seed, without a word."""
    conf = write_config(tmp_path / "conf", CONF)
    done = run(
        [
            str(AUDITED),
            "--config-dir",
            str(conf),
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweep.dir=sweep",
            "train.seed=1,2",
        ],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root), READ_SEED="1", BUILD_SECONDS="3"),
    )
    assert done.returncode == 0, done.stderr
    logs = [p.read_text() for p in sorted((tmp_path / "sweep").glob("*/audited.log"))]
    assert sorted(re.findall(r"ENTRY (\w+)", done.stdout)) == ["built", "waited"], done.stdout
    waited = [log for log in logs if "whose build read train.seed outside its key" in log]
    assert len(waited) == 1, logs  # the waiter says so; the builder already warned as it built


@pytest.mark.parametrize("env", [{}, {"READ_AFTER": "1"}], ids=["hashed-only", "read-after"])
def test_the_audit_is_silent_for_covered_reads_and_reads_outside_the_build(
    env: dict[str, str], tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", CONF)
    done = audited(conf, tmp_path, cache_root, **env)
    assert done.returncode == 0, done.stderr
    assert "not part of its key" not in (tmp_path / "run" / "audited.log").read_text()
    (meta,) = [json.loads(p.read_text()) for p in cache_root.rglob(".hydra-cache.json")]
    assert meta["audit"] == {"uncovered": []}
    if env:
        assert "SEED 3" in done.stdout


def test_the_audit_sees_whole_subtree_reads_and_is_off_by_default(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", CONF)
    done = audited(conf, tmp_path, cache_root, TO_CONTAINER="1")
    assert (
        "build of data.cache_dir read train, which is not part of its key"
        in (tmp_path / "run" / "audited.log").read_text()
    )
    plain = write_config(
        tmp_path / "plain",
        {"config.yaml": CONF["config.yaml"].replace("hydra_cache: {audit: true}", "")},
    )
    done = audited(plain, tmp_path, tmp_path / "root2", READ_SEED="1")
    assert done.returncode == 0
    (meta,) = [json.loads(p.read_text()) for p in (tmp_path / "root2").rglob(".hydra-cache.json")]
    assert meta["audit"] is None


# ---------------------------------------------------------------------------------- inputs


def input_conf(tmp_path: Path, mode: str) -> Path:
    return write_config(
        tmp_path / f"conf-{mode}",
        {
            "config.yaml": f"""
        data:
          path: {tmp_path / "raw.csv"}
          resize: 8
          cache_dir: ${{cache_dir:}}
        hydra_cache: {{inputs: [data.path], input_mode: {mode}}}
    """
        },
    )


def key_of(conf: Path, cwd: Path, root: Path) -> str:
    done = cli(cwd, "keys", "-cd", str(conf), "--format", "json", root=root)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)[0]["key"])


def test_input_changes_change_the_key_in_both_modes(tmp_path: Path, cache_root: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_text("a,b\n1,2\n")
    stat_conf, strict_conf = input_conf(tmp_path, "stat"), input_conf(tmp_path, "sha256")
    first = {c: key_of(c, tmp_path, cache_root) for c in (stat_conf, strict_conf)}
    assert {c: key_of(c, tmp_path, cache_root) for c in first} == first, "unchanged: same key"
    later = time.time() + 5
    os.utime(raw, (later, later))  # touched: same content, new mtime
    touched = {c: key_of(c, tmp_path, cache_root) for c in first}
    assert touched[stat_conf] != first[stat_conf]
    assert touched[strict_conf] == first[strict_conf], "sha256 mode keys content only"
    raw.write_text("a,b\n1,3\n")  # rewritten with new content
    os.utime(raw, (later, later))
    rewritten = {c: key_of(c, tmp_path, cache_root) for c in first}
    assert rewritten[stat_conf] != first[stat_conf]
    assert rewritten[strict_conf] != first[strict_conf]


def test_a_folder_input_is_walked_and_a_new_file_changes_the_key(
    tmp_path: Path, cache_root: Path
) -> None:
    folder = tmp_path / "raw.csv"  # the config names this path; make it a folder here
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("1")
    (folder / "b" / "c.txt").write_text("2")
    conf = input_conf(tmp_path, "sha256")
    before = key_of(conf, tmp_path, cache_root)
    (folder / "b" / "d.txt").write_text("3")
    assert key_of(conf, tmp_path, cache_root) != before


def test_a_missing_input_is_a_one_line_error(tmp_path: Path, cache_root: Path) -> None:
    done = cli(tmp_path, "keys", "-cd", str(input_conf(tmp_path, "stat")), root=cache_root)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert re.search(r"data\.path: input .*raw\.csv does not exist.*; fix: ", line), line


def test_why_names_the_input_that_changed_on_disk(tmp_path: Path, cache_root: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_text("a,b\n1,2\n")
    conf = input_conf(tmp_path, "stat")
    built = run_probe(
        conf, tmp_path, "hydra.run.dir=built", root=cache_root, env=clean_env(PROBE_BUILD="1")
    )
    assert built.returncode == 0, built.stderr
    raw.write_text("a,b\n1,2\n3,4\n")
    why = cli(tmp_path, "why", "-cd", str(conf), root=cache_root)
    assert re.search(
        r"input data\.path changed on disk since the entry was built \(size 8 B -> "
        r"12 B, modified \S+ -> \S+\)",
        why.stdout,
    ), why.stdout


# ------------------------------------------------------------------------------------ code

FUNCTIONS = """
def normalize(x):
    return x * 2


def other(x):
    return x + 1
"""


def code_conf(tmp_path: Path, mode: str) -> Path:
    return write_config(
        tmp_path / f"conf-{mode}",
        {
            "config.yaml": f"""
        data:
          transform: {{_target_: prep_fns.normalize}}
          cache_dir: ${{cache_dir:}}
        hydra_cache: {{code: {mode}}}
    """
        },
    )


code_key = keys  # the key `hydra-cache keys` prints, with the project's code importable


def test_a_body_change_changes_the_key_and_a_comment_does_not(
    tmp_path: Path, cache_root: Path
) -> None:
    module = tmp_path / "code" / "prep_fns.py"
    module.parent.mkdir()
    module.write_text(FUNCTIONS)
    function, whole = code_conf(tmp_path, "function"), code_conf(tmp_path, "module")
    first = {c: code_key(c, tmp_path, cache_root) for c in (function, whole)}
    module.write_text(
        FUNCTIONS.replace(
            "def normalize(x):\n", 'def normalize(x):\n    """Doc."""\n\n    # a comment\n'
        )
    )
    assert {c: code_key(c, tmp_path, cache_root) for c in first} == first
    module.write_text(FUNCTIONS.replace("x + 1", "x + 2"))  # another function's body
    changed_other = {c: code_key(c, tmp_path, cache_root) for c in first}
    assert changed_other[function] == first[function]
    assert changed_other[whole] != first[whole]
    module.write_text(FUNCTIONS.replace("x * 2", "x * 3"))  # the target's own body
    assert code_key(function, tmp_path, cache_root) != first[function]


def test_why_names_the_function_whose_source_changed(tmp_path: Path, cache_root: Path) -> None:
    module = tmp_path / "code" / "prep_fns.py"
    module.parent.mkdir()
    module.write_text(FUNCTIONS)
    conf = code_conf(tmp_path, "function")
    env = clean_env(PROBE_BUILD="1", PYTHONPATH=str(tmp_path / "code"))
    assert run_probe(conf, tmp_path, "hydra.run.dir=r", root=cache_root, env=env).returncode == 0
    module.write_text(FUNCTIONS.replace("x * 2", "x * 3"))
    why = run(
        ["-m", "hydra_cache", "why", "-cd", str(conf)],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root), PYTHONPATH=str(tmp_path / "code")),
    )
    assert "the source of prep_fns.normalize changed since the entry was built" in why.stdout


# --------------------------------------------------------------------------- pytest helper


def test_the_helper_passes_on_this_projects_own_config(cache_root: Path) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from train import preprocess
    finally:
        sys.path.remove(str(REPO / "examples"))
    assert_key_covers(
        REPO / "conf",
        "config",
        cache="data.cache_dir",
        build=lambda cfg, staging: preprocess(cfg.data, staging),
    )


def test_the_helper_fails_readably_on_an_under_keyed_example(cache_root: Path) -> None:
    example = REPO / "examples" / "underkeyed"
    sys.path.insert(0, str(example))
    try:
        from preprocess import build
    finally:
        sys.path.remove(str(example))
    assert_key_covers(example / "conf", cache="data.cache_dir")  # every hashed leaf counts
    with pytest.raises(AssertionError) as failure:
        assert_key_covers(example / "conf", cache="data.cache_dir", build=build)
    assert str(failure.value) == (
        "the key of data.cache_dir does not cover what its entry depends on (1 problem):\n"
        "  - the build read train.seed, which is not part of the key: runs that differ only in "
        "train.seed would share the entry"
    )


def test_the_helper_checks_exclusions_and_names_a_missing_cache(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        data: {resize: 8, io: {workers: 4, prefetch: 2}, cache_dir: "${cache_dir:}"}
        hydra_cache: {exclude: [data.io]}
    """
        },
    )
    assert_key_covers(conf, cache="data.cache_dir")  # varying data.io.* keeps the key
    with pytest.raises(
        AssertionError,
        match=r"no \$\{cache_dir:\.\.\.\} at nope in .*; "
        r"found: data\.cache_dir",
    ):
        assert_key_covers(conf, cache="nope")


def test_the_helper_reports_an_exclusion_that_still_changes_the_key(
    tmp_path: Path, cache_root: Path
) -> None:
    """An excluded key that another hashed value interpolates still reaches the key."""
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        data: {resize: 8, workers: 4, shards: "${.workers}", cache_dir: "${cache_dir:}"}
        hydra_cache: {exclude: [data.workers]}
    """
        },
    )
    with pytest.raises(AssertionError) as failure:
        assert_key_covers(conf, cache="data.cache_dir")
    assert "  - data.workers is in hydra_cache.exclude but changing it changes the key" in str(
        failure.value
    )


def test_the_plugin_gives_users_a_cache_root_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "import os\n"
        "def test_root(cache_root):\n"
        "    assert os.environ['HYDRA_CACHE_ROOT'] == str(cache_root)\n"
        "    assert cache_root.name == 'hydra-cache'\n"
    )
    done = run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_list_item_hashed_as_a_dot_1_covers_a_read_of_a_bracket_1() -> None:
    """${cache_dir:.,train.layers.1} hashes what a build reads as train.layers[1]."""
    from hydra_cache.audit import _is_covered

    assert _is_covered("train.layers[1]", ("train.layers.1",))
    assert _is_covered("train.layers[1].width", ("train.layers[1]",))
    assert not _is_covered("train.layers[10]", ("train.layers.1",))


def test_the_audit_names_a_key_whose_name_holds_credentials_by_its_fingerprint(
    tmp_path: Path, cache_root: Path
) -> None:
    """Found by a stranger's attack: the audit recorded OmegaConf's full key as it is, so a
    build reading `train.ghp_...` wrote the token into the log, metadata and manifest."""
    token = "ghp_CANARY84abcdefghijklmnopqrstuv"
    conf = write_config(
        tmp_path / "conf",
        {"config.yaml": CONF["config.yaml"].replace("epochs: 2}", f"epochs: 2, {token}: 1}}")},
    )
    done = audited(conf, tmp_path, cache_root, READ_SEED="1", READ_KEY=token)
    assert done.returncode == 0, done.stderr
    (meta,) = [json.loads(p.read_text()) for p in cache_root.rglob(".hydra-cache.json")]
    uncovered = meta["audit"]["uncovered"]
    assert "train.seed" in uncovered and any(k.startswith("train.<redacted:") for k in uncovered)
    written = [
        p.read_text() for p in [*cache_root.rglob("*"), *tmp_path.rglob("*.log")] if p.is_file()
    ]
    written.append((tmp_path / "run" / ".hydra" / "cache.yaml").read_text())
    assert not any(token in text for text in [*written, done.stdout, done.stderr])
