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
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # Found by a stranger's attack: token formats of other providers.
    "gh_fine": "github_pat_11CANARY68abcdefghijkl_mnopqrstuvwxyz",
    "gitlab_pat": "glpat-CANARY69abcdefghijkl",
    "pypi_upload": "pypi-AgEICANARY70abcdefghijklmnop",
    "google": "AIzaCANARY71abcdefghijklmnopqrstuvwxyz",
    "npm_publish": "npm_CANARY72abcdefghijklmnopqrstuvwxyz",
    "slack_app": "xapp-1-CANARY73-0123456789-abcdef",
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
    sweep = ["data.size=3,4", "+data.mirrors.ghp_CANARY80abcdefghijklmnopqrstuv=1"]
    sweep.append("data.password=CANARY81")  # the CLI prints a sweep's jobs by their overrides
    for form in ("json", "text"):
        keys = cli(tmp_path, "keys", "-cd", str(conf), "--format", form, root=root, **ENV)
        assert keys.returncode == 0, keys.stderr
        outputs += [keys.stdout, keys.stderr]
        swept = cli(tmp_path, "keys", "-cd", str(conf), "--format", form, *sweep, root=root, **ENV)
        assert swept.returncode == 0 and "job 1" in swept.stdout.replace('"job": 1', "job 1")
        outputs += [swept.stdout, swept.stderr]
    why = cli(tmp_path, "why", "-cd", str(conf), *sweep, root=root, **ENV)
    assert why.returncode == 0, why.stderr
    outputs += [why.stdout, why.stderr]

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
    override_set = "data.password=CANARY82 +data.ghp_CANARY83abcdefghijklmnopq=1"
    diff = cli(
        repo, "diff", "-cd", str(conf), "--base", "HEAD~1", "--head", "HEAD", "--format",
        "markdown", "--override-set", override_set, root=root, **ENV,
    )  # fmt: skip
    assert diff.returncode == 0 and "Overrides" in diff.stdout, diff.stderr
    outputs += [diff.stdout, diff.stderr]

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


def _needs_a_trigger(items: Any, triggers: tuple[str, ...]) -> bool:
    """Whether matching the parsed pattern ``items`` needs the (lowercased, ASCII) text to
    hold one of ``triggers``: some run of literal text the match must contain (with small
    character classes and alternations of words expanded) holds a trigger in every form."""
    runs = {""}

    def extend(suffixes: Any) -> None:
        grown = {run + suffix for run in runs for suffix in suffixes}
        runs.clear()
        runs.update(grown)

    def settle() -> bool:
        done = runs != {""} and all(any(t in run for t in triggers) for run in runs)
        runs.clear()
        runs.add("")
        return done

    def spelled(sequence: Any) -> set[str] | None:
        """Every text a sequence of literals, small classes and alternations of such can
        match (else None: it can match more than a few fixed texts)."""
        found = {""}
        for op, arg in sequence:
            kind = str(op)
            if kind == "LITERAL":
                options: set[str] | None = {chr(arg).lower()}
            elif kind == "IN" and all(str(o) == "LITERAL" for o, _ in arg) and len(arg) <= 8:
                options = {chr(code).lower() for _, code in arg}
            elif kind == "BRANCH":
                options = words(arg[1])
            else:
                return None
            if options is None:
                return None
            found = {text + option for text in found for option in options}
        return found

    def words(sub: Any) -> set[str] | None:
        """The texts an alternation can match, when each alternative is spelled out."""
        found: set[str] = set()
        for alternative in sub:
            texts = spelled(alternative)
            if texts is None:
                return None
            found |= texts
        return found

    for op, arg in items:
        kind = str(op)
        if kind == "LITERAL":
            extend([chr(arg).lower()])
        elif kind == "AT":
            continue  # \b and ^ take no text
        elif kind == "IN" and all(str(o) == "LITERAL" for o, _ in arg) and len(arg) <= 8:
            extend({chr(code).lower() for _, code in arg})
        elif kind == "SUBPATTERN":
            inner = list(arg[-1])
            branch = inner[0][1][1] if len(inner) == 1 and str(inner[0][0]) == "BRANCH" else None
            options = words(branch) if branch is not None else None
            if options is not None:
                extend(options)
                continue
            if settle():
                return True
            if branch is not None and all(_needs_a_trigger(alt, triggers) for alt in branch):
                return True
            if branch is None and _needs_a_trigger(inner, triggers):
                return True
        elif kind in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
            low, _high, sub = arg
            if settle():
                return True
            if low >= 1 and _needs_a_trigger(list(sub), triggers):
                return True
        elif kind == "BRANCH":
            options = words(arg[1])
            if options is not None:
                extend(options)
                continue
            if settle():
                return True
            if all(_needs_a_trigger(alt, triggers) for alt in arg[1]):
                return True
        elif settle():
            return True
    return settle()


def test_every_credential_shape_needs_a_trigger_the_screen_looks_for() -> None:
    """The screen before the pattern (``rules._TRIGGERS``) may only skip text that cannot
    match: derived from the parsed pattern, each alternative needs a trigger; and the screened
    search agrees with the bare pattern on generated text built from the pattern's pieces."""
    import importlib

    from hydra_cache.key import rules

    parser = getattr(re, "_parser", None) or importlib.import_module("sre_parse")
    parsed = list(parser.parse(rules._SECRET_VALUE.pattern, rules._SECRET_VALUE.flags))
    assert len(parsed) == 1 and str(parsed[0][0]) == "BRANCH"
    alternatives = parsed[0][1][1]
    assert len(alternatives) >= 17
    for alternative in alternatives:
        assert _needs_a_trigger(list(alternative), rules._TRIGGERS), alternative
    # The derivation itself can fail: without ':' and '=' the password shapes need none.
    assert not all(
        _needs_a_trigger(list(alternative), tuple(t for t in rules._TRIGGERS if t not in ":="))
        for alternative in alternatives
    )


pieces = st.sampled_from(
    ["://", "@", ":", "=", "?", "&", " ", "\n", "-u ", "--user ", "Bearer ", "BASIC ", "token",
     "TOKEN", "digest ", "Authorization", "password", "PassWord", "api_key", "x-api-key",
     "-----BEGIN PRIVATE KEY-----", "sk-", "sk_live_", "PK_", "ghp_", "GHO_", "hf_", "xoxb-",
     "AKIA", "eyJ", "hooks.slack.com/services/", "X-Goog-Api-Key", "cookie", "session", "sig",
     "abcdefghijklmnopqrstuvwxyz0123", "ABCDEFGHIJKLMNOP", "user", "host.example", "/", ".",
     "\u212a", "\u017f"]  # the Kelvin sign and long s: non-ASCII letters the pattern folds
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(pieces, st.text(max_size=4)), max_size=12))
def test_property_the_screened_search_agrees_with_the_pattern(parts: list[str]) -> None:
    from hydra_cache.key import rules

    text = "".join(parts)
    assert rules._search(text) == (rules._SECRET_VALUE.search(text) is not None), text


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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["pass", "word", "secret", "api", "key", "cred", "s", "x", "_"])))
def test_property_one_scan_finds_a_credential_fragment_as_each_test_would(
    parts: list[str],
) -> None:
    from hydra_cache.key import rules

    squashed = "".join(parts)
    found = rules._ANY_FRAGMENT.search(squashed) is not None
    assert found == any(fragment in squashed for fragment in rules._SECRET_FRAGMENTS)


def test_a_key_named_by_its_credentials_is_excluded_by_a_wildcard_never_echoed(
    tmp_path: Path,
) -> None:
    """``exclude`` matches the name as it is shown (its fingerprint), so a wildcard takes it;
    a pattern that spells the credentials out is an error that does not repeat them."""
    body = (
        "data:\n  cache_dir: ${cache_dir:}\n  size: 2\n"
        "  mirrors: {'https://u:CANARY67pw@m.example/d': 3, plain: 1}\n"
    )
    keys = {}
    for name, exclude in (("all", "[]"), ("wild", "[data.mirrors.*]"), ("other", "[data.size]")):
        conf = write_config(
            tmp_path / name, {"config.yaml": f"hydra_cache: {{exclude: {exclude}}}\n{body}"}
        )
        done = cli(tmp_path, "keys", "-cd", str(conf), "--format", "json", root=tmp_path / "r")
        assert done.returncode == 0, done.stderr
        assert not canaries(done.stdout + done.stderr)
        keys[name] = json.loads(done.stdout)[0]["key"]
    spelled = write_config(
        tmp_path / "spelled",
        {
            "config.yaml": "hydra_cache: {exclude: ['data.mirrors.https://u:CANARY67pw@m.example/d']}\n"
            + body
        },
    )
    done = cli(tmp_path, "keys", "-cd", str(spelled), root=tmp_path / "r")
    assert done.returncode != 0 and "matches no key" in done.stderr, done.stderr
    assert "matched by a wildcard" in done.stderr and not canaries(done.stderr), done.stderr
    assert len(set(keys.values())) == 3, keys  # the wildcard excluded the mirrors, not nothing


def test_credentials_in_resolver_results_and_named_nodes_are_hidden_without_path_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by an attack: with no path worth a look (HOME=/ and launched from /, as in a
    container), a resolver's list result was never scanned; and a node named in the
    resolver's arguments (`${cache_dir:.,creds.password}`) was not a secret by its name."""
    from omegaconf import OmegaConf

    from hydra_cache.key import derive
    from hydra_cache.key.walk import Context

    url = "https://alice:CANARY74pw@mirror.example.com/x"
    cfg = OmegaConf.create(
        {
            "src": {url: 1},
            "creds": {"password": "CANARY75", "api_key": "CANARY76"},
            "data": {
                "keys": "${oc.dict.keys:src}",
                "decoded": "${oc.decode:'[\"" + url + "\"]'}",
                "n": 1,
            },
        }
    )
    derived = derive(cfg, ["data", "creds.password", "creds"], context=Context(known=None))
    shown = json.dumps(derived.redacted_payload())
    assert not canaries(shown), shown
    assert {"data.keys[0]", "data.decoded[0]", "creds.password"} <= derived.redacted_paths


@pytest.mark.parametrize(
    "config",
    [  # found by a stranger's attack: each put the token in folder names, metadata and logs
        "mirrors:\n  ghp_CANARY77abcdefghijklmnopqrstuv: {a: 1, cache_dir: '${cache_dir:}'}\n",
        "data:\n  ghp_CANARY78abcdefghijklmnopqrstuv: {a: 1}\n"
        "  cache_dir: '${cache_dir:.,data.ghp_CANARY78abcdefghijklmnopqrstuv}'\n",
        "hydra_cache: {inputs: [data.ghp_CANARY79abcdefghijklmnopqrstuv]}\n"
        "data:\n  ghp_CANARY79abcdefghijklmnopqrstuv: /tmp\n  cache_dir: '${cache_dir:}'\n",
    ],
    ids=["holder", "argument", "input"],
)
def test_a_node_whose_name_holds_credentials_cannot_name_an_entry(
    tmp_path: Path, config: str
) -> None:
    conf = write_config(tmp_path / "conf", {"config.yaml": config})
    done = cli(tmp_path, "keys", "-cd", str(conf), root=tmp_path / "root")
    assert done.returncode != 0, done.stdout
    assert "whose name holds credentials" in done.stderr and "<redacted:" in done.stderr
    assert done.stderr.count("\n") == 1 and not canaries(done.stdout + done.stderr), done.stderr


def test_a_salt_read_from_the_environment_or_holding_credentials_is_never_written(
    tmp_path: Path,
) -> None:
    """Found by a stranger's attack: the payload's salt was written as it is."""
    hashed = "data: {n: 1, cache_dir: '${cache_dir:}'}\n"
    for name, salt in (("env", "${oc.env:HC_T}"), ("url", "https://u:CANARY85pw@h.example/")):
        work = tmp_path / name
        conf = write_config(
            work / "conf", {"config.yaml": f"hydra_cache: {{salt: '{salt}'}}\n{hashed}"}
        )
        done = run_probe(
            conf, work, "hydra/callbacks=cache_manifest", "hydra.run.dir=run",
            root=work / "root", env=clean_env(PROBE_BUILD="1", **ENV),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        meta = json.loads(next((work / "root").rglob(".hydra-cache.json")).read_text())
        assert str(meta["payload"]["salt"]).startswith("<redacted:"), meta["payload"]
        texts = [p.read_text() for p in written_by_us(work)]
        assert not canaries("\n".join([*texts, done.stdout, done.stderr]))
