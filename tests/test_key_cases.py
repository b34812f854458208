"""Issue 10's cases beyond chains: inputs, exclude patterns, structured configs, machine and
per-run values, resolver results, clashes and ``assert_key_covers``, each through a real Hydra
app or the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_env, probe_results, run_probe, write_config
from test_explain import cli


def keys_of(conf: Path, cwd: Path, root: Path, *overrides: str, **env: str) -> dict[str, Any]:
    done = cli(cwd, "keys", "-cd", str(conf), "--format", "json", *overrides, root=root, **env)
    assert done.returncode == 0, done.stderr
    return {row["config_key"]: row for row in json.loads(done.stdout)}


def cli_error(conf: Path, cwd: Path, root: Path, *overrides: str) -> str:
    done = cli(cwd, "keys", "-cd", str(conf), *overrides, root=root)
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ----------------------------------------------------------------------------- inputs

LHT = {
    "config.yaml": """
    paths: {root_dir: "${oc.env:PROJECT_ROOT}", data_dir: "${paths.root_dir}/data"}
    data: {dir: "${paths.data_dir}", batch: 3, cache_dir: "${cache_dir:}"}
    hydra_cache: {inputs: [paths.data_dir], input_mode: sha256, relative_to: "${paths.root_dir}"}
    """
}


@pytest.mark.parametrize("mode", ["sha256", "stat"])
def test_a_symlinked_input_folder_changes_the_key(
    mode: str, tmp_path: Path, cache_root: Path
) -> None:
    scratch = tmp_path / "scratch" / "datasets"
    scratch.mkdir(parents=True)
    (scratch / "a.csv").write_text("1,2\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "data").symlink_to(scratch, target_is_directory=True)
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": f"""
            data: {{dir: {project / "data"}, cache_dir: "${{cache_dir:}}"}}
            hydra_cache: {{inputs: [data.dir], input_mode: {mode}}}
            """
        },
    )
    before = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"]
    (scratch / "a.csv").write_text("1,2\n3,4\n")  # the content behind the link changes
    assert keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"] != before
    (scratch / "nested").mkdir()
    (scratch / "nested" / "b.csv").write_text("x")
    third = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"]
    (scratch / "nested" / "b.csv").write_text("y")
    assert keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"] != third


def test_a_symlinked_input_file_counts_by_its_target(tmp_path: Path, cache_root: Path) -> None:
    target = tmp_path / "real.bin"
    target.write_bytes(b"a")
    (tmp_path / "link.bin").symlink_to(target)
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": f"""
            data: {{f: {tmp_path / "link.bin"}, cache_dir: "${{cache_dir:}}"}}
            hydra_cache: {{inputs: [data.f], input_mode: sha256}}
            """
        },
    )
    before = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"]
    target.write_bytes(b"b")
    assert keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"] != before


def test_an_input_outside_the_hashed_node_joins_the_keys_that_reference_it(
    tmp_path: Path, cache_root: Path
) -> None:
    """The lightning-hydra-template layout: paths.data_dir, read by data.dir."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "mnist.csv").write_text("0\n")
    conf = write_config(tmp_path / "conf", LHT)
    env = {"PROJECT_ROOT": str(project)}
    before = keys_of(conf, tmp_path, cache_root, **env)["data.cache_dir"]["key"]
    (project / "data" / "mnist.csv").write_text("1\n")
    assert keys_of(conf, tmp_path, cache_root, **env)["data.cache_dir"]["key"] != before


def test_input_keys_that_do_not_exist_or_join_nothing_are_errors(
    tmp_path: Path, cache_root: Path
) -> None:
    (tmp_path / "d").mkdir()
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": f"""
            other: {{dir: {tmp_path / "d"}}}
            data: {{a: 1, cache_dir: "${{cache_dir:}}"}}
            hydra_cache: {{inputs: [nope.x]}}
            """
        },
    )
    assert re.search(
        r"hydra_cache\.inputs: nope\.x is not a key.*fix:", cli_error(conf, tmp_path, cache_root)
    )
    line = cli_error(conf, tmp_path, cache_root, "hydra_cache.inputs=[other.dir]")
    assert re.search(r"hydra_cache\.inputs: other\.dir joins no cache dir's key.*fix:", line)


# ----------------------------------------------------------------------------- exclude

TRAINER = {
    "config.yaml": """
    trainer: {max_epochs: 3, devices: 1, ckpt_cache: "${cache_dir:}"}
    data:
      size: 3
      loaders: [{num_workers: 2, shuffle: true}, {num_workers: 4, shuffle: false}]
      io: {threads: 2, prefetch: {depth: 1}}
      cache_dir: ${cache_dir:}
    """
}


def test_excluding_the_hashed_node_or_an_ancestor_is_an_error(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", TRAINER)
    line = cli_error(conf, tmp_path, cache_root, "+hydra_cache.exclude=[trainer]")
    assert "trainer.ckpt_cache" in line and "'trainer' excludes trainer" in line and "fix:" in line


@pytest.mark.parametrize(
    ("pattern", "ignored", "kept"),
    [
        (
            "data.loaders.0.num_workers",
            "data.loaders.0.num_workers=9",
            "data.loaders.1.num_workers=9",
        ),
        (
            "data.loaders[0].num_workers",
            "data.loaders.0.num_workers=9",
            "data.loaders.0.shuffle=false",
        ),
        (
            "data.loaders.*.num_workers",
            "data.loaders.1.num_workers=9",
            "data.loaders.1.shuffle=true",
        ),
        ("data.**.depth", "data.io.prefetch.depth=5", "data.io.threads=5"),
        ("**.threads", "data.io.threads=5", "data.size=4"),
        ("data.io.*", "data.io.threads=5", "data.size=4"),
    ],
)
def test_exclude_patterns_match_what_they_say(
    pattern: str, ignored: str, kept: str, tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", TRAINER)
    setting = f"+hydra_cache.exclude=[{pattern!r}]"
    base = keys_of(conf, tmp_path, cache_root, setting)["data.cache_dir"]["key"]
    assert keys_of(conf, tmp_path, cache_root, setting, ignored)["data.cache_dir"]["key"] == base
    assert keys_of(conf, tmp_path, cache_root, setting, kept)["data.cache_dir"]["key"] != base


@pytest.mark.parametrize(
    ("pattern", "suggestion"),
    [("data.loader.0.num_workers", "data.loaders.0.num_workers"), ("data.thredas", None)],
)
def test_a_misspelt_exclude_is_an_error_with_did_you_mean(
    pattern: str, suggestion: str | None, tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", TRAINER)
    line = cli_error(conf, tmp_path, cache_root, f"+hydra_cache.exclude=[{pattern}]")
    assert f"'{pattern}' matches no key" in line and "fix:" in line
    if suggestion:
        assert f"did you mean {suggestion}?" in line


# ----------------------------------------------------------------------------- structured

STRUCTURED_APP = """
from dataclasses import dataclass, field
from typing import Any
import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@dataclass
class MNISTConf:
    size: int = 28
    cache_dir: str = "${cache_dir:}"


@dataclass
class FashionConf:
    size: int = 28
    cache_dir: str = "${cache_dir:}"


@dataclass
class Config:
    defaults: list = field(default_factory=lambda: [{"data": "mnist"}, "_self_"])
    data: Any = MISSING


cs = ConfigStore.instance()
cs.store(name="config", node=Config)
cs.store(group="data", name="mnist", node=MNISTConf)
cs.store(group="data", name="fashion", node=FashionConf)


@hydra.main(config_path=None, config_name="config", **VERSION_BASE)
def main(cfg):
    print("PATH " + cfg.data.cache_dir)


if __name__ == "__main__":
    main()
"""


def test_structured_configs_with_equal_fields_but_other_classes_get_other_keys(
    tmp_path: Path, cache_root: Path
) -> None:
    from conftest import run

    app = tmp_path / "app.py"
    app.write_text(STRUCTURED_APP)
    paths = {}
    for choice in ("mnist", "fashion"):
        done = run(
            [str(app), f"data={choice}", "hydra.run.dir=run"],
            cwd=tmp_path,
            env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)),
        )
        assert done.returncode == 0, done.stderr
        paths[choice] = re.findall(r"^PATH (\S+)$", done.stdout, re.M)[0]
    assert paths["mnist"] != paths["fashion"]


# ----------------------------------------------------------------------------- machine, per-run


def test_machine_specific_paths_warn_before_the_miss_and_relative_to_shares_keys(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            paths: {root_dir: "${oc.env:PROJECT_ROOT}", data_dir: "${paths.root_dir}/data"}
            data: {data_dir: "${paths.data_dir}", cache_dir: "${cache_dir:}"}
            """
        },
    )
    found = {}
    for clone in ("alice/proj", "bob/work/proj"):
        (tmp_path / clone).mkdir(parents=True)
        done = run_probe(
            conf,
            tmp_path,
            f"hydra.run.dir={clone}-run",
            root=cache_root,
            env=clean_env(PROJECT_ROOT=str(tmp_path / clone)),
        )
        assert done.returncode == 0, done.stderr
        assert re.search(
            r"WARNING.*data\.cache_dir: data\.data_dir holds a path only this machine has "
            r"\(it is (?:under the launch directory|read from \$\{oc\.env:\.\.\.\})\)"
            r".*fix: set hydra_cache\.relative_to",
            done.stderr + done.stdout,
        ), done.stderr
        assert str(tmp_path / clone) not in done.stderr  # an environment value is never shown
        found[clone] = probe_results(tmp_path / f"{clone}-run")[0]["values"]["data.cache_dir"]
    assert found["alice/proj"] != found["bob/work/proj"]
    shared = set()
    for clone in ("alice/proj", "bob/work/proj"):
        done = run_probe(
            conf,
            tmp_path,
            f"hydra.run.dir={clone}-rel",
            "+hydra_cache.relative_to=${paths.root_dir}",
            root=cache_root,
            env=clean_env(PROJECT_ROOT=str(tmp_path / clone)),
        )
        assert done.returncode == 0, done.stderr
        assert "only this machine has" not in done.stderr + done.stdout
        shared.add(probe_results(tmp_path / f"{clone}-rel")[0]["values"]["data.cache_dir"])
    assert len(shared) == 1


def test_a_path_under_the_launch_directory_warns(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {"config.yaml": 'data: {src: "${hydra:runtime.cwd}/raw", cache_dir: "${cache_dir:}"}\n'},
    )
    done = run_probe(conf, tmp_path, root=cache_root)
    assert done.returncode == 0, done.stderr
    assert "data.src holds a path only this machine has (it is under the launch directory)" in (
        done.stderr + done.stdout
    )


def test_a_per_run_value_reached_through_a_chain_warns_and_the_cli_never_prints_its_key(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            paths: {output_dir: "${hydra:runtime.output_dir}", log_dir: "${paths.output_dir}"}
            data: {out: "${paths.log_dir}", a: 1, cache_dir: "${cache_dir:}"}
            """
        },
    )
    done = run_probe(conf, tmp_path, root=cache_root)
    assert done.returncode == 0, done.stderr
    assert re.search(r"WARNING.*data\.out holds a per-run value", done.stderr + done.stdout)
    row = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]
    assert row["key"] is None and row["path"] is None and row["status"] == "per-run"
    text = cli(tmp_path, "keys", "-cd", str(conf), root=cache_root).stdout
    assert "(per-run)" in text and "data.out is per-run" in text
    assert not re.search(r"\b[0-9a-f]{16}\b", text)


# ----------------------------------------------------------------------------- resolver results


def test_lists_and_dicts_returned_by_resolvers_are_hashed(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            data:
              sizes: "${oc.decode:'[1, 2]'}"
              opts: "${oc.decode:'{a: 1}'}"
              cache_dir: ${cache_dir:}
            """
        },
    )
    base = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"]
    assert base
    changed = (conf / "config.yaml").read_text().replace("[1, 2]", "[1, 3]")
    (conf / "config.yaml").write_text(changed)
    assert keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"] != base


# ----------------------------------------------------------------------------- clashes


def test_two_config_keys_on_one_entry_path_are_an_error_naming_both(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            data: {a: 1, cache_dir: "${cache_dir:}"}
            other: {cache_dir: "${cache_dir:data}"}
            """
        },
    )
    line = cli_error(conf, tmp_path, cache_root)
    assert "other.cache_dir" in line and "data.cache_dir" in line and "fix:" in line


def test_every_cache_dir_appears_in_keys_even_two_in_one_node(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            data: {a: 1, cache_dir: "${cache_dir:}", scratch: "${cache_dir:.a}"}
            """
        },
    )
    rows = keys_of(conf, tmp_path, cache_root)
    assert set(rows) == {"data.cache_dir", "data.scratch"}
    assert rows["data.cache_dir"]["path"] != rows["data.scratch"]["path"]


# ----------------------------------------------------------------------------- assert_key_covers

CODE_PKG = """
def preprocess(size):
    return size * 2
"""


def test_assert_key_covers_works_with_code_fingerprints_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_cache.testing import assert_key_covers

    (tmp_path / "hc_case_pkg.py").write_text(CODE_PKG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            data: {_target_: hc_case_pkg.preprocess, size: 3, cache_dir: "${cache_dir:}"}
            hydra_cache: {code: function}
            """
        },
    )
    assert_key_covers(conf, cache="data.cache_dir")


def test_assert_key_covers_fails_when_the_build_reads_an_excluded_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_cache.testing import assert_key_covers

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            data: {size: 3, workers: 2, cache_dir: "${cache_dir:}"}
            hydra_cache: {exclude: [data.workers]}
            """
        },
    )

    def build(cfg: Any, staging: Path) -> None:
        (staging / "x").write_text(str(cfg.data.size * cfg.data.workers))

    with pytest.raises(AssertionError, match=r"read data\.workers, which hydra_cache\.exclude"):
        assert_key_covers(conf, cache="data.cache_dir", build=build)
    assert_key_covers(conf, cache="data.cache_dir", build=lambda cfg, s: cfg.data.size)


# ----------------------------------------------------------------------------- diff and code


def test_diff_reports_a_code_only_commit_as_invalidating(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "mypipe").mkdir(parents=True)
    (repo / "mypipe" / "__init__.py").write_text("")
    (repo / "mypipe" / "prep.py").write_text("def run(size):\n    return size\n")
    conf = write_config(
        repo / "conf",
        {
            "config.yaml": """
            data: {_target_: mypipe.prep.run, size: 3, cache_dir: "${cache_dir:}"}
            hydra_cache: {code: function}
            """
        },
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (repo / "mypipe" / "prep.py").write_text("def run(size):\n    return size * 2\n")
    subprocess.run([*git, "commit", "-qam", "code only"], check=True)
    (repo / "mypipe" / "prep.py").write_text("def run(size):\n    return size * 3\n")  # dirty
    done = cli(
        tmp_path, "diff", "-cd", str(conf), "--base", "HEAD~1", "--head", "HEAD",
        root=tmp_path / "root",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 cache invalidated" in done.stdout, done.stdout
    assert "the source of mypipe.prep.run changed" in done.stdout or "code of" in done.stdout
    same = cli(
        tmp_path, "diff", "-cd", str(conf), "--base", "HEAD", "--head", "HEAD",
        root=tmp_path / "root",
    )  # fmt: skip
    assert "no cache invalidated" in same.stdout, same.stdout


def test_the_memo_re_checks_input_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    data = tmp_path / "train.csv"
    data.write_text("a\n")
    cfg = OmegaConf.create(
        {
            "data": {"path": str(data), "cache_dir": "${cache_dir:}"},
            "hydra_cache": {"inputs": ["data.path"], "input_mode": "sha256"},
        }
    )
    before = cfg.data.cache_dir
    data.write_text("a\nb\n")
    assert cfg.data.cache_dir != before


def test_an_unused_input_is_an_error_in_a_plain_app_without_the_callback(
    tmp_path: Path, cache_root: Path
) -> None:
    (tmp_path / "proj" / "data").mkdir(parents=True)
    (tmp_path / "proj" / "data" / "train.csv").write_text("x")
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": f"""
            paths:
              root_dir: {tmp_path / "proj"}
              train_csv: "${{paths.root_dir}}/data/train.csv"
            data: {{batch: 4, cache_dir: "${{cache_dir:}}"}}
            hydra_cache: {{inputs: [paths.train_csv]}}
            """
        },
    )
    done = run_probe(conf, tmp_path, root=cache_root)
    assert done.returncode != 0
    assert "hydra_cache.inputs: paths.train_csv joins no cache dir's key" in done.stderr


@pytest.mark.parametrize("pattern", ["data.*", "data.?*", "*.*"])
def test_a_wildcard_exclude_cannot_empty_a_key(
    pattern: str, tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {"config.yaml": 'data: {resize: 8, normalize: std, cache_dir: "${cache_dir:}"}\n'},
    )
    line = cli_error(conf, tmp_path, cache_root, f"+hydra_cache.exclude=['{pattern}']")
    assert "leave nothing of data in its key" in line and "fix:" in line


def test_hashing_the_settings_nodes_is_an_error(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {"config.yaml": 'x: {q: "${cache_dir:hydra_cache}"}\nhydra_cache: {salt: s}\n'},
    )
    line = cli_error(conf, tmp_path, cache_root)
    assert "never joins a key" in line and "fix:" in line


def test_relative_to_leaves_keys_without_paths_alone(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf", {"config.yaml": 'data: {resize: 8, cache_dir: "${cache_dir:}"}\n'}
    )
    plain = keys_of(conf, tmp_path, cache_root)["data.cache_dir"]["key"]
    rel = keys_of(conf, tmp_path, cache_root, f"+hydra_cache.relative_to={tmp_path}")
    assert rel["data.cache_dir"]["key"] == plain


def test_override_dirname_is_not_per_run_but_oc_select_of_output_dir_is(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            paths: {output_dir: "${hydra:runtime.output_dir}"}
            hop: ${paths.output_dir}
            data: {tag: "${hydra:job.override_dirname}", cache_dir: "${cache_dir:}"}
            c: {out: "${oc.select:hop,/x}", cache_dir: "${cache_dir:}"}
            """
        },
    )
    rows = keys_of(conf, tmp_path, cache_root)
    assert rows["data.cache_dir"]["status"] != "per-run"
    assert rows["c.cache_dir"]["status"] == "per-run"


def test_why_says_when_the_key_schema_changed(tmp_path: Path, cache_root: Path) -> None:
    """An entry built by an older hydra-cache: why names the schema, not a diff of nothing."""
    from test_explain import build

    conf = write_config(
        tmp_path / "conf", {"config.yaml": 'data: {resize: 8, cache_dir: "${cache_dir:}"}\n'}
    )
    build(conf, tmp_path, cache_root, "data.resize=7")  # stands for the old schema's entry
    meta_path = next(cache_root.rglob(".hydra-cache.json"))
    meta = json.loads(meta_path.read_text())
    meta["payload"]["schema"] = 1
    meta["payload"]["nodes"]["data"]["resize"] = 8
    meta_path.write_text(json.dumps(meta))
    done = cli(tmp_path, "why", "-cd", str(conf), root=cache_root)
    assert done.returncode == 0, done.stderr
    assert "hydra-cache's key schema changed (1 -> 2)" in done.stdout, done.stdout
