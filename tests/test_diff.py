"""``hydra-cache diff`` on a real git repository built commit by commit in a temp folder."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import TESTS, clean_env, run, run_probe

GOLDEN = TESTS / "golden" / "diff_markdown.md"
FILES = {
    "conf/config.yaml": """
        defaults:
          - data: digits
          - model: logreg
          - _self_
    """,
    "conf/data/digits.yaml": """
        name: digits
        resize: 8
        normalize: standard
        cache_dir: ${cache_dir:}
    """,
    "conf/model/logreg.yaml": """
        C: 1.0
        max_iter: 100
    """,
}


def git_env(root: Path) -> dict[str, str]:
    """Fixed identities and dates, so commit ids (shown in reports) are the same every run."""
    return clean_env(
        HYDRA_CACHE_ROOT=str(root),
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        GIT_AUTHOR_DATE="2026-01-01T00:00:00+00:00",
        GIT_COMMITTER_DATE="2026-01-01T00:00:00+00:00",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )


class Repo:
    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root, self.env = path, root, git_env(root)
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def write(self, name: str, text: str) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())

    def commit(self, tag: str, **files: str) -> None:
        for name, text in files.items():
            self.write(name.replace("__", "/").replace("_yaml", ".yaml"), text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", tag)
        self.git("tag", tag)

    def diff(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["-m", "hydra_cache", "diff", *args], cwd=self.path, env=self.env)

    def diff_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        done = self.diff(*args, "--format", "json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "project", tmp_path / "cache-root")
    for name, text in FILES.items():
        repo.write(name, text)
    repo.commit("c0-init")
    repo.commit(
        "c1-preprocessing",
        conf__data__digits_yaml=FILES["conf/data/digits.yaml"].replace("resize: 8", "resize: 4"),
    )
    repo.commit(
        "c2-model",
        conf__model__logreg_yaml=FILES["conf/model/logreg.yaml"].replace("C: 1.0", "C: 0.5"),
    )
    repo.commit(
        "c3-restructure",
        conf__data__common_yaml="normalize: standard\n",
        conf__data__digits_yaml="""
                    defaults:
                      - common
                      - _self_
                    name: digits
                    resize: 4
                    cache_dir: ${cache_dir:}
                """,
    )
    repo.commit(
        "c4-new-cache",
        conf__config_yaml=FILES["conf/config.yaml"]
        + textwrap.dedent("""
        features:
          dim: 16
          cache_dir: ${cache_dir:}
    """),
    )
    return repo


def caches(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    (only,) = report["sets"]
    return {c["config_key"]: c for c in only["caches"]}


def test_a_preprocessing_change_invalidates_with_the_leaf_named(repo: Repo) -> None:
    report = repo.diff_json("--base", "c0-init", "--head", "c1-preprocessing")
    data = caches(report)["data.cache_dir"]
    assert data["status"] == "invalidated"
    assert data["changes"] == [{"key": "data.resize", "old": 8, "new": 4, "kind": "changed"}]
    assert data["base"]["key"] != data["head"]["key"]
    assert report["summary"] == "1 cache invalidated, size and rebuild time unknown"
    text = repo.diff("--base", "c0-init", "--head", "c1-preprocessing").stdout
    assert "    data.resize: 8 -> 4" in text.splitlines()


def test_a_model_change_leaves_the_cache_and_is_listed_apart(repo: Repo) -> None:
    report = repo.diff_json("--base", "c1-preprocessing", "--head", "c2-model")
    assert caches(report)["data.cache_dir"]["status"] == "unchanged"
    assert report["sets"][0]["unrelated"] == [
        {"key": "model.C", "old": 1.0, "new": 0.5, "kind": "changed"}
    ]
    assert report["summary"] == "no cache invalidated"


def test_moving_a_key_between_files_changes_nothing(repo: Repo) -> None:
    report = repo.diff_json("--base", "c2-model", "--head", "c3-restructure")
    assert caches(report)["data.cache_dir"]["status"] == "unchanged"
    assert report["sets"][0]["unrelated"] == []


def test_a_new_cached_node_is_added_and_a_dropped_one_removed(repo: Repo) -> None:
    added = caches(repo.diff_json("--base", "c3-restructure", "--head", "c4-new-cache"))
    assert added["features.cache_dir"]["status"] == "added"
    assert added["data.cache_dir"]["status"] == "unchanged"
    removed = caches(repo.diff_json("--base", "c4-new-cache", "--head", "c3-restructure"))
    assert removed["features.cache_dir"]["status"] == "removed"


@pytest.mark.parametrize(
    "args", [["--base", "no-such-rev"], ["--base", "c0-init", "--head", "nope~3"], ["--base", "-x"]]
)
def test_a_bad_revision_exits_2_with_one_line(repo: Repo, args: list[str]) -> None:
    done = repo.diff(*args)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("hydra-cache: error: ")
    assert ("--base" in line or "--head" in line) and "fix: " in line


def test_a_bad_config_at_a_revision_exits_2(repo: Repo) -> None:
    repo.commit("c5-broken", conf__data__digits_yaml="resize: [unclosed\n")
    done = repo.diff("--base", "c5-broken", "--head", "c4-new-cache")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("hydra-cache: error: at c5-broken: cannot compose 'config' from conf")


def test_head_defaults_to_the_working_tree_which_is_left_untouched(repo: Repo) -> None:
    repo.write(
        "conf/data/digits.yaml",
        (repo.path / "conf/data/digits.yaml")
        .read_text()
        .replace("name: digits", "name: digits-v2"),
    )
    status_before = repo.git("status", "--porcelain")
    report = repo.diff_json("--base", "c4-new-cache")
    assert caches(report)["data.cache_dir"]["changes"][0]["key"] == "data.name"
    assert repo.git("status", "--porcelain") == status_before
    assert len(repo.git("worktree", "list").splitlines()) == 1
    assert repo.git("stash", "list") == ""


def test_fail_on_invalidate_is_for_a_required_check(repo: Repo) -> None:
    assert (
        repo.diff(
            "--base", "c0-init", "--head", "c1-preprocessing", "--fail-on-invalidate"
        ).returncode
        == 1
    )
    assert (
        repo.diff(
            "--base", "c1-preprocessing", "--head", "c2-model", "--fail-on-invalidate"
        ).returncode
        == 0
    )


def test_sweeps_and_override_sets_check_several_experiments(repo: Repo) -> None:
    report = repo.diff_json(
        "--base",
        "c0-init",
        "--head",
        "c1-preprocessing",
        "--sweep",
        "data.resize=4,8",
        "--override-set",
        "model.C=3",
    )
    sets = {
        tuple(s["overrides"]): {c["config_key"]: c["status"] for c in s["caches"]}
        for s in report["sets"]
    }
    assert sets == {
        ("data.resize=4",): {"data.cache_dir": "unchanged"},
        ("data.resize=8",): {"data.cache_dir": "unchanged"},
        ("model.C=3",): {"data.cache_dir": "invalidated"},
    }


def test_the_cost_comes_from_the_base_entry_metadata(repo: Repo, tmp_path: Path) -> None:
    repo.git("checkout", "-q", "c0-init")
    built = run_probe(
        repo.path / "conf",
        tmp_path,
        "hydra.run.dir=built",
        root=repo.root,
        env={**repo.env, "PROBE_BUILD": "1"},
    )
    assert built.returncode == 0, built.stderr
    repo.git("checkout", "-q", "c1-preprocessing")
    report = repo.diff_json("--base", "c0-init")
    data = caches(report)["data.cache_dir"]
    assert data["size_bytes"] == 2 and data["build_seconds"] >= 0
    assert report["summary"] == "1 cache invalidated, ~2 B / <0.1 s to rebuild"


def test_markdown_matches_the_golden_file(repo: Repo) -> None:
    done = repo.diff("--base", "c0-init", "--head", "c4-new-cache", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    if os.environ.get("HYDRA_CACHE_UPDATE_GOLDEN"):
        GOLDEN.write_text(done.stdout)
    assert done.stdout == GOLDEN.read_text()


def test_the_ci_example_runs_the_documented_command() -> None:
    import yaml

    workflow = yaml.safe_load(
        (TESTS.parent / "examples" / "ci" / "hydra-cache-diff.yml").read_text()
    )
    steps = workflow["jobs"]["cache-diff"]["steps"]
    commands = " ".join(str(step.get("run", "")) for step in steps)
    assert 'hydra-cache diff --base "origin/${{ github.base_ref }}"' in commands
    assert "--format markdown > cache-diff.md" in commands
    script = next(str(s["with"]["script"]) for s in steps if "github-script" in str(s.get("uses")))
    assert "<!-- hydra-cache-diff -->" in script and "updateComment" in script
    assert steps[0]["with"]["fetch-depth"] == 0
