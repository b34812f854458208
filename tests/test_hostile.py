"""A catalogue of hostile and malformed input: each gives exit status 2 and one line that
names the key (or option) at fault, and nothing is written anywhere.

The CLI runs in this process (``hydra_cache.cli.main``) so the 50-odd cases stay fast;
``test_cli.py`` runs the same errors through real ``python -m hydra_cache`` processes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import report, unwritable, write_config
from hydra_cache.cli import main

BASE = "data:\n  resize: 8\n  cache_dir: ${cache_dir:}\n"


def with_data(line: str) -> str:
    return BASE.replace("${cache_dir:}", line)


def deep(levels: int) -> str:
    return (
        "data:\n  resize: 8\n  cache_dir: ${cache_dir:}\n  deep: "
        + "{a: " * levels
        + "1"
        + "}" * levels
        + "\n"
    )


Setup = Callable[[Path], list[str]]


def root_at(make: Callable[[Path], Path]) -> Setup:
    """A case whose bad part is the root: ``make`` builds it and returns its path."""

    def setup(tmp: Path) -> list[str]:
        return [f"+hydra_cache.root={make(tmp)}"]

    return setup


def a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def world_writable(tmp: Path) -> Path:
    (tmp / "open").mkdir()
    (tmp / "open").chmod(0o777)
    return tmp / "open"


def foreign(tmp: Path) -> Path:
    (tmp / "theirs").mkdir()
    os.chown(tmp / "theirs", 65534, 65534)
    return tmp / "theirs"


def planted(tmp: Path) -> Path:
    shared = tmp / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (tmp / "elsewhere").mkdir()
    (shared / "cache").symlink_to(tmp / "elsewhere")
    os.lchown(shared / "cache", 65534, 65534)
    return shared / "cache"


def dangling(tmp: Path) -> Path:
    (tmp / "gone").symlink_to(tmp / "nowhere")
    return tmp / "gone" / "cache"


YAML_CASES: list[tuple[str, str, Setup | None, str]] = [
    ("arg is a number", with_data("${cache_dir:1}"), None, r"data\.cache_dir: .*got 1; fix"),
    ("arg is a bool", with_data("${cache_dir:true}"), None, r"data\.cache_dir: .*got True"),
    ("arg is empty", with_data("${cache_dir:''}"), None, r"data\.cache_dir: .*got ''"),
    ("arg is a list", with_data("${cache_dir:[a]}"), None, r"data\.cache_dir: .*got \['a'\]"),
    (
        "arg names no node",
        with_data("${cache_dir:nope}"),
        None,
        r"data\.cache_dir: node 'nope' does not exist",
    ),
    (
        "second arg names no node",
        with_data("${cache_dir:data,nope}"),
        None,
        r"data\.cache_dir: node 'nope' does not exist",
    ),
    (
        "arg is an absolute path",
        with_data("'${cache_dir:/etc/passwd}'"),
        None,
        r"data\.cache_dir: ",
    ),
    ("arg climbs with ../", with_data("'${cache_dir:../../etc}'"), None, r"data\.cache_dir: "),
    (
        "arg climbs above the root",
        with_data("${cache_dir:....x}"),
        None,
        r"data\.cache_dir: '\.\.\.\.x' climbs above the config root",
    ),
    (
        "unclosed interpolation",
        with_data("'${cache_dir:'"),
        None,
        r"cannot compose 'config' from .*: data\.cache_dir: ",
    ),
    ("nested interpolation fails", with_data("${cache_dir:${nope}}"), None, r"data\.cache_dir: "),
    (
        "missing value",
        BASE.replace("resize: 8", "resize: ???"),
        None,
        r"data\.resize is '\?\?\?' \(missing\)",
    ),
    (
        "missing behind interpolation",
        BASE.replace("resize: 8", "resize: ${other}") + "other: ???\n",
        None,
        r"data\.resize: cannot resolve",
    ),
    (
        "interpolation to no key",
        BASE.replace("resize: 8", "resize: ${nowhere}"),
        None,
        r"data\.resize: cannot resolve '\$\{nowhere\}'",
    ),
    ("nested too deeply", deep(700), None, r"(data is too deep to hash|cannot compose)"),
    ("settings not a mapping", BASE + "hydra_cache: 5\n", None, r"hydra_cache must be a mapping"),
    (
        "unknown setting",
        BASE + "hydra_cache: {rooot: /x}\n",
        None,
        r"hydra_cache\.rooot is not a setting; fix: did you mean hydra_cache\.root\?",
    ),
    ("bad on_miss", BASE + "hydra_cache: {on_miss: maybe}\n", None, r"hydra_cache\.on_miss"),
    (
        "bad lock mode",
        BASE + "hydra_cache: {lock: nfs}\n",
        None,
        r"hydra_cache\.lock must be one of auto, flock, soft",
    ),
    (
        "shared not a bool",
        BASE + "hydra_cache: {shared: 'yes'}\n",
        None,
        r"hydra_cache\.shared must be true or false",
    ),
    ("salt is a list", BASE + "hydra_cache: {salt: [1]}\n", None, r"hydra_cache\.salt"),
    ("salt is a float", BASE + "hydra_cache: {salt: 1.5}\n", None, r"hydra_cache\.salt"),
    ("salt is a bool", BASE + "hydra_cache: {salt: true}\n", None, r"hydra_cache\.salt"),
    (
        "exclude is a string",
        BASE + "hydra_cache: {exclude: data.x}\n",
        None,
        r"hydra_cache\.exclude must be a list",
    ),
    (
        "exclude holds a number",
        BASE + "hydra_cache: {exclude: [1]}\n",
        None,
        r"hydra_cache\.exclude entry 1 ",
    ),
    (
        "exclude holds ''",
        BASE + "hydra_cache: {exclude: ['']}\n",
        None,
        r"hydra_cache\.exclude entry '' ",
    ),
    (
        "exclude is relative",
        BASE + "hydra_cache: {exclude: ['.x']}\n",
        None,
        r"hydra_cache\.exclude entry '\.x' ",
    ),
    (
        "exclude has ..",
        BASE + "hydra_cache: {exclude: ['a..b']}\n",
        None,
        r"hydra_cache\.exclude entry 'a\.\.b' ",
    ),
    (
        "exclude holds null",
        BASE + "hydra_cache: {exclude: [null]}\n",
        None,
        r"hydra_cache\.exclude entry None ",
    ),
    (
        "exclude ends in a dot",
        BASE + "hydra_cache: {exclude: ['x.']}\n",
        None,
        r"hydra_cache\.exclude entry 'x\.' ",
    ),
    (
        "exclude has spaces",
        BASE + "hydra_cache: {exclude: [' data.x']}\n",
        None,
        r"hydra_cache\.exclude entry ' data\.x' ",
    ),
    (
        "root is empty",
        BASE + "hydra_cache: {root: ''}\n",
        None,
        r"hydra_cache\.root must be a non-empty path string",
    ),
    (
        "root is a list",
        BASE + "hydra_cache: {root: [1]}\n",
        None,
        r"hydra_cache\.root must be a non-empty path string",
    ),
    (
        "root holds NUL",
        BASE + 'hydra_cache: {root: "a\\0b"}\n',
        None,
        r"hydra_cache\.root contains a NUL byte",
    ),
    ("root is a file", BASE, root_at(a_file), r"hydra_cache\.root: cache root .* is a file"),
    (
        "root under a file",
        BASE,
        root_at(lambda t: a_file(t) / "sub"),
        r"hydra_cache\.root: .* lies under .*afile, which is a file",
    ),
    (
        "root world-writable",
        BASE,
        root_at(world_writable),
        r"hydra_cache\.root: .* is world-writable without the sticky bit",
    ),
    (
        "root owned by another user",
        BASE,
        root_at(foreign),
        r"hydra_cache\.root: .* is owned by another user \(uid 65534\)",
    ),
    (
        "root through a planted symlink",
        BASE,
        root_at(planted),
        r"hydra_cache\.root: .* is reached through the symlink .*shared-tmp/cache, owned by uid "
        r"65534",
    ),
    (
        "root through a dangling symlink",
        BASE,
        root_at(dangling),
        r"hydra_cache\.root: .*gone is a dangling symlink",
    ),
    (
        "root normalises to /",
        BASE,
        lambda t: ["+hydra_cache.root=" + "../" * (len(t.parts) + 2) + "etc/.."],
        r"hydra_cache\.root: cache root / is a system or home folder",
    ),
    (
        "root is a system folder",
        BASE,
        lambda t: ["+hydra_cache.root=/etc/hydra"],
        r"hydra_cache\.root: cache root /etc/hydra is a system or home folder",
    ),
    (
        "root is blank",
        BASE,
        lambda t: ["+hydra_cache.root='  '"],
        r"hydra_cache\.root must be a non-empty path string, not '  '",
    ),
    (
        "override of an unknown key",
        BASE,
        lambda t: ["data.nope=1"],
        r"cannot compose 'config' from .*Could not override 'data\.nope'",
    ),
]

NON_UTF8 = b"data:\n  name: \xff\xfe\n  cache_dir: ${cache_dir:}\n"

CLI_CASES: list[tuple[str, list[str], str]] = [
    ("gc size is a word", ["gc", "--max-size", "lots"], r"--max-size 'lots' is not a size"),
    ("gc size is negative", ["gc", "--max-size", "-5"], r"--max-size '-5' is not a size"),
    ("gc size has a bad unit", ["gc", "--max-size", "10XB"], r"--max-size '10XB' is not a size"),
    ("gc age is prose", ["gc", "--older-than", "7days"], r"--older-than '7days' is not an age"),
    ("gc age is negative", ["gc", "--older-than", "-1d"], r"argument --older-than: expected"),
    (
        "gc grace is a word",
        ["gc", "--older-than", "1d", "--grace", "soon"],
        r"--grace 'soon' is not an age",
    ),
    ("gc without criteria", ["gc"], r"gc needs --max-size and/or --older-than"),
    ("ls root is a file", ["ls", "--root", "{file}"], r"--root: cache root .*afile is a file"),
    ("verify root is a file", ["verify", "--root", "{file}"], r"--root: cache root .* is a file"),
    (
        "gc root world-writable",
        ["gc", "--older-than", "1d", "--root", "{open}"],
        r"--root: cache root .*open is world-writable",
    ),
    (
        "diff sweep without =",
        ["diff", "--base", "HEAD", "--sweep", "data.resize"],
        r"(--sweep 'data\.resize' is not KEY=A,B|not inside a git repository)",
    ),
    (
        "config dir missing",
        ["keys", "-cd", "{tmp}/no-such-dir"],
        r"--config-dir .*no-such-dir: no such directory",
    ),
    ("unknown command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    (
        "gc root is not a hydra-cache root",
        ["gc", "--max-size", "0", "--root", "{tmp}"],
        r"--root .* is not a hydra-cache root \(it has no \.hydra-cache/ folder\)",
    ),
    (
        "verify root is not a hydra-cache root",
        ["verify", "--repair", "--root", "{tmp}"],
        r"--root .* is not a hydra-cache root",
    ),
    (
        "ls root is not a hydra-cache root",
        ["ls", "--root", "{tmp}"],
        r"--root .* is not a hydra-cache root",
    ),
    ("gc root normalises to /", ["gc", "--max-size", "0", "--root", "/usr/.."], r"is a system"),
]


def everything(tmp: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(tmp)): (p.lstat().st_mode, p.lstat().st_size)
        for p in tmp.rglob("*")
        if "conf" not in p.relative_to(tmp).parts
    }


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, out: str, err: str, pattern: str) -> None:
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hydra-cache: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "fix: " in lines[0] or "invalid choice" in lines[0] or "expected one" in lines[0]


@pytest.mark.parametrize(
    ("name", "yaml", "setup", "pattern"), YAML_CASES, ids=[c[0] for c in YAML_CASES]
)
def test_bad_config(
    name: str,
    yaml: str,
    setup: Setup | None,
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    conf = write_config(tmp_path / "conf", {"config.yaml": yaml})
    extra = setup(tmp_path) if setup else []
    before = everything(tmp_path)
    code, out, err = run_cli(["keys", "-cd", str(conf), *extra], capsys)
    assert_one_line(code, out, err, pattern)
    assert everything(tmp_path) == before, "something was written"


def test_non_utf8_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_bytes(NON_UTF8)
    before = everything(tmp_path)
    code, out, err = run_cli(["keys", "-cd", str(tmp_path / "conf")], capsys)
    assert_one_line(code, out, err, r"cannot compose 'config' from .*(utf-8|decode)")
    assert everything(tmp_path) == before


def test_unwritable_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    with unwritable(locked):
        monkeypatch.setenv("HYDRA_CACHE_ROOT", str(locked / "cache"))
        conf = write_config(tmp_path / "conf", {"config.yaml": BASE})
        code, out, err = run_cli(["keys", "-cd", str(conf)], capsys)
    assert_one_line(code, out, err, r"\$HYDRA_CACHE_ROOT: cache root .* is not writable")


@pytest.mark.parametrize(("name", "args", "pattern"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line(
    name: str,
    args: list[str],
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    filled = [
        a.format(file=a_file(tmp_path), open=world_writable(tmp_path), tmp=tmp_path)
        if "{" in a
        else a
        for a in args
    ]
    before = everything(tmp_path)
    code, out, err = run_cli(filled, capsys)
    assert_one_line(code, out, err, pattern)
    assert everything(tmp_path) == before


def test_the_catalogue_is_big_enough() -> None:
    count = len(YAML_CASES) + len(CLI_CASES) + 2
    assert count >= 40
    report("hostile input", cases=count, exit_2_one_line=count, written_outside_root=0)


def test_strange_but_valid_input_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not errors: odd names stay inside the root, and huge values and odd bytes hash."""
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("HC_ODD_BYTES", os.fsdecode(b"caf\xe9\xff"))
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": (
                '"..": {v: 1, cache_dir: "${cache_dir:}"}\n'
                '"/abs/../x": {v: 1, cache_dir: "${cache_dir:}"}\n'
                'big: {blob: "' + "x" * 200_000 + '", cache_dir: "${cache_dir:}"}\n'
                "wide:\n"
                # OmegaConf 2.4 caps a YAML file at 10,000 nodes (keys and values count)
                 + "".join(f"  k{n}: {n}\n" for n in range(3_000)) + "  cache_dir: ${cache_dir:}\n"
                'odd: {raw: "${oc.env:HC_ODD_BYTES}", cache_dir: "${cache_dir:}"}\n'
            )
        },
    )
    code, out, err = run_cli(["keys", "-cd", str(conf), "--format", "json"], capsys)
    assert code == 0, err
    import json

    rows = json.loads(out)
    assert len(rows) == 5
    for row in rows:
        assert Path(row["path"]).parent.parent == tmp_path / "root"
        assert Path(row["path"]).parent.name not in (".", "..")
