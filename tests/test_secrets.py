"""No secret in the open: a canary catalogue through a real app, a key change, why, keys and
diff, and then every file hydra-cache wrote and every line it printed is searched.

Each shape below once leaked (issue 11) or is a common way to hold a credential: by the key's
name in any casing or compound, inside the value (URL userinfo, signed query strings,
``Authorization`` headers, provider token formats), or by provenance (a value computed from
``${oc.env:...}`` through a chain of interpolations).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, run_probe, write_config
from test_explain import cli

ENV = {"HC_T": "CANARY40envtoken", "HC_T2": "CANARY41envsecret"}
# key -> YAML value; every canary is "CANARY<nn>..." so a search finds any leak.
SHAPES: dict[str, str] = {
    "password": "CANARY01",
    "passwd": "CANARY02",
    "db_password": "CANARY03",
    "ssh_pass": "CANARY04",
    "api_key": "CANARY05",
    "apiKey": "CANARY06",
    "wandb_key": "CANARY07",
    "token": "CANARY08",
    "access_token": "CANARY09",
    "HF_TOKEN": "CANARY10",
    "auth": "CANARY11",
    "bearer": "CANARY12",
    "cookie": "CANARY13",
    "session_id": "CANARY14",
    "client_secret": "CANARY15",
    "credentials": "CANARY16",
    "private_key": "CANARY17",
    "signature": "CANARY18",
    "aws_secret_access_key": "CANARY19",
    "githubtoken": "CANARY20",
    "db_url": "postgres://user:CANARY21pw@db.example/prod",
    "redis": "redis://:CANARY22pw@cache.example:6379/0",
    "signed": "https://bucket.example/obj?X-Amz-Signature=CANARY23sig&X-Amz-Date=1",
    "with_query": "https://api.example/v1?access_token=CANARY24tok",
    "header": "Authorization: Bearer CANARY25headertoken",
    "plain_bearer": "Bearer CANARY26bearertoken",
    "github": "ghp_CANARY27abcdefghijklmnopqrstuv",
    "openai_style": "sk-CANARY28abcdefghijklmnopqrstu",
    "aws_id": "AKIACANARY29ABCDEFGH",
    "jwt": "eyJCANARY30aaaaaa.eyJbbbbbbbbbbbb.cccccc",
    "pem": "-----BEGIN PRIVATE KEY----- CANARY31",
    "userinfo_token": "https://CANARY32tokentokentoken@git.example/repo.git",
    "sig_query": "https://cdn.example/x?sig=CANARY33",
    "from_env": "${oc.env:HC_T}",
    "through_one": "${secrets_root.a}",
    "through_two": "${secrets_root.b}",
    "mixed_env": "pre-${oc.env:HC_T2}-post",
    "hub": "${oc.select:secrets_root.a}",
    "hf": "hf_CANARY45abcdefghijklmnopqrstu",
    "slack": "https://hooks.slack.com/services/T0/B0/CANARY46",
    "gitlab": "PRIVATE-TOKEN: CANARY47",
    "goog": "X-Goog-Api-Key CANARY48",
    "pat": "CANARY49",
    "mdp": "CANARY50",
    # Found by a stranger's attack: plurals, other names, credentials inside command lines.
    "hf_tokens": "CANARY51",
    "accessTokens": "CANARY52",
    "API_TOKENS": "CANARY53",
    "jwt_value": "CANARY54",
    "keyfile_content": "CANARY55",
    "curl_cmd": "curl -u bob:CANARY56pw https://x.example",
    "connect": "password=CANARY57",
    "dsn_text": "host=db secret_key: CANARY58",
}


def config_text() -> str:
    lines = [
        "secrets_root: {a: '${oc.env:HC_T}', b: '${secrets_root.a}'}",
        "openai: {key: CANARY34}",
        "decode_src: '{ghp_CANARY63abcdefghijklmnopqrstuv: 1}'",
    ]
    lines.append("data:")
    lines.append("  size: 3")
    lines.append("  cache_dir: ${cache_dir:}")
    lines.append("  openai_key: ${openai.key}")
    lines.append("  headers: ['Authorization: Bearer CANARY35listtoken']")
    lines.append("  nested: {Authorization: CANARY36}")
    lines += [f"  {name}: '{value}'" for name, value in SHAPES.items()]
    # Names that hold credentials themselves: a dict keyed by mirror URLs or tokens, with a
    # value, a node and nothing under them, and a resolver's dict result keyed the same way.
    lines += [
        "  mirrors:",
        "    'https://alice:CANARY60pw@mirror.example/data': 3",
        "    ghp_CANARY61abcdefghijklmnopqrstuv: {region: eu}",
        "    'https://bob:CANARY62pw@m2.example/x': {}",
        "    plain_mirror: 1",
        "  decoded: ${oc.decode:${decode_src}}",
    ]
    lines.append("other: {session_token: CANARY37, plain: visible}")
    return "\n".join(lines) + "\n"


def canaries(text: str) -> list[str]:
    return sorted(set(re.findall(r"CANARY\d\d", text)))


def written_by_us(tmp_path: Path) -> list[Path]:
    """Every file under the test folder but the user's own config, git's objects and the
    files Hydra itself writes (.hydra/config.yaml etc. hold the config as given)."""
    found = []
    for path in tmp_path.rglob("*"):
        if not path.is_file() or "conf" in path.relative_to(tmp_path).parts[:2]:
            continue
        parts = path.parts
        if ".git" in parts or (".hydra" in parts and path.name != "cache.yaml"):
            continue
        found.append(path)
    return found


def test_no_secret_shape_reaches_any_file_log_or_output(tmp_path: Path) -> None:
    assert len(SHAPES) + 4 >= 30
    repo = tmp_path / "repo"
    conf = write_config(repo / "conf", {"config.yaml": config_text()})
    root = tmp_path / "root"
    outputs: list[str] = []

    done = run_probe(
        conf,
        tmp_path,
        "hydra/callbacks=cache_manifest",
        "hydra.run.dir=run1",
        root=root,
        env=clean_env(PROBE_BUILD="1", **ENV),
    )
    assert done.returncode == 0, done.stderr
    outputs += [done.stdout, done.stderr]
    # A changed secret: the key changes, and the change is shown without the values.
    changed = run_probe(
        conf,
        tmp_path,
        "hydra/callbacks=cache_manifest",
        "hydra.run.dir=run2",
        "data.password=CANARY38",
        "+data.mirrors.ghp_CANARY64abcdefghijklmnopqrstuv=1",
        root=root,
        env=clean_env(PROBE_BUILD="1", **ENV),
    )
    assert changed.returncode == 0, changed.stderr
    outputs += [changed.stdout, changed.stderr]
    why = cli(tmp_path, "why", "-cd", str(conf), "data.password=CANARY39", root=root, **ENV)
    assert why.returncode == 0, why.stderr
    assert "data.password: changed (secret)" in why.stdout, why.stdout
    outputs += [why.stdout, why.stderr]
    for form in ("json", "text"):
        keys = cli(tmp_path, "keys", "-cd", str(conf), "--format", form, root=root, **ENV)
        assert keys.returncode == 0, keys.stderr
        outputs += [keys.stdout, keys.stderr]

    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    text = (conf / "config.yaml").read_text()
    text = text.replace("CANARY01", "CANARY42").replace("CANARY37", "CANARY43")
    text = text.replace("CANARY60pw", "CANARY65pw")
    (conf / "config.yaml").write_text(text.replace("CANARY21pw", "CANARY44pw"))
    subprocess.run([*git, "commit", "-qam", "rotate"], check=True)
    for form in ("markdown", "json", "text"):
        diff = cli(
            repo, "diff", "-cd", str(conf), "--base", "HEAD~1", "--head", "HEAD",
            "--format", form, root=root, **ENV,
        )  # fmt: skip
        assert diff.returncode == 0, diff.stderr
        outputs += [diff.stdout, diff.stderr]
    assert "changed (secret)" in outputs[-6]  # the markdown comment says it, without values

    leaks = {str(p): canaries(p.read_text(errors="replace")) for p in written_by_us(tmp_path)}
    leaks = {path: found for path, found in leaks.items() if found}
    printed = canaries("\n".join(outputs))
    assert not leaks and not printed, (leaks, printed)
    # ... and it looked where secrets would be: metadata, journal, manifests, job logs.
    names = {p.name for p in written_by_us(tmp_path)}
    assert {".hydra-cache.json", "cache.yaml"} <= names
    assert any(n.endswith(".log") for n in names)
    assert any("journal" in str(p) for p in written_by_us(tmp_path))
    meta = json.loads(next(root.rglob(".hydra-cache.json")).read_text())
    assert meta["payload"]["nodes"]["data"]["size"] == 3  # not everything is hidden


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("hf_tokens", True),
        ("api_keys", True),
        ("ssh_pass", True),
        ("jwt", True),
        ("token_count", False),
        ("max_tokens", False),
        ("num_tokens", False),
        ("pad_token", False),
        ("eos_token_id", False),
        ("access", False),
        ("status", False),
        ("tokenizer", False),
        ("tokens", False),  # a stage of tokenized text (tokens.cache_dir), not credentials
        ("accessTokens", True),
    ],
)
def test_names_that_count_tokens_are_shown_and_plurals_of_credentials_are_not(
    name: str, secret: bool
) -> None:
    from hydra_cache.key.rules import is_secret_name

    assert is_secret_name(name) is secret


def test_the_length_shortcut_never_skips_a_credential_shape() -> None:
    """``holds_credentials`` skips strings shorter than MIN_CREDENTIAL_LENGTH without running
    the pattern: that bound must be at most the shortest text the pattern can match (it was
    7 while ``pwd=x``, ``-u a:b`` and ``?key=x`` matched, so those were shown in clear)."""
    import importlib

    from hydra_cache.key import rules

    parser = getattr(re, "_parser", None) or importlib.import_module("sre_parse")
    shortest = parser.parse(rules._SECRET_VALUE.pattern, rules._SECRET_VALUE.flags).getwidth()[0]
    assert shortest >= rules.MIN_CREDENTIAL_LENGTH
    for text in ("pwd=x", "-u a:b", "?key=x"):
        assert rules.holds_credentials(text), text


def test_an_error_about_a_value_that_holds_credentials_does_not_print_them(
    tmp_path: Path,
) -> None:
    """An unresolvable interpolation is named in a one-line error; its text is shown unless it
    holds credentials, which an error printed to a terminal or a CI log must not carry."""
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": "data:\n  cache_dir: ${cache_dir:}\n"
            """  mirror: '${oc.decode:''{"https://u:CANARY66pw@h.example/": 1}''}'\n"""
        },
    )
    keys = cli(tmp_path, "keys", "-cd", str(conf), root=tmp_path / "root")
    assert keys.returncode != 0
    assert "data.mirror: cannot resolve <redacted:" in keys.stderr, keys.stderr
    assert not canaries(keys.stdout + keys.stderr), keys.stderr
