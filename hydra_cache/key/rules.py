"""What a value's name, text and origin say about it: secret, per-run, machine-specific.

A value joins the key either way; these rules only decide what may be *shown* (a secret never
is), and what deserves a warning before it causes a miss (a per-run value misses on every
run; a machine-specific path keeps two machines from sharing an entry). They are decided by
provenance, not only by name: a value is secret when any interpolation it is computed from is
an environment variable or names a credential.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REDACTED = "<redacted>"
#: Fixed salt of the redaction fingerprint: the same secret gives the same fingerprint on
#: every machine, so a changed secret shows as "changed (secret)" without being shown.
_FINGERPRINT_SALT = b"hydra-cache redaction v1"
_FINGERPRINT_ROUNDS = 20_000


def redact(value: Any) -> str:
    """A secret as it may be shown: ``<redacted:1a2b3c4d>``.

    The fingerprint is 32 bits of a salted, deliberately slow PBKDF2 of the value: enough to
    tell that a secret changed, too short and too slow to recover a secret from.
    """
    return _fingerprint(json.dumps(value, sort_keys=True))


@functools.lru_cache(maxsize=1024)
def _fingerprint(text: str) -> str:
    data = text.encode("utf-8", "surrogateescape")
    derived = hashlib.pbkdf2_hmac("sha256", data, _FINGERPRINT_SALT, _FINGERPRINT_ROUNDS)
    return f"<redacted:{derived.hex()[:8]}>"


def is_redacted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<redacted")


#: Whole words (after splitting snake, kebab, dotted and camel case) that name a credential.
_SECRET_WORDS = frozenset(
    {
        "key",
        "keys",
        "pass",
        "pwd",
        "pw",
        "auth",
        "session",
        "sid",
        "sig",
        "otp",
        "dsn",
        "token",
        "pat",
        "mdp",
        "jwt",
    }
)
#: Tokenizer settings (``pad_token``, ``eos_token``) name vocabulary, and ``max_tokens`` or
#: ``token_count`` name amounts of tokens: neither holds a credential.
_VOCABULARY = frozenset(
    {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end"}
    | {"count", "num", "max", "min", "len", "length", "limit", "budget", "per", "total", "n"}
)
#: Fragments that name a credential wherever they stand in a name (``dbpassword``, ``apiKey``).
_SECRET_FRAGMENTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "credential",
    "creds",
    "bearer",
    "cookie",
    "authoriz",
    "authentic",
    "privatekey",
    "accesskey",
    "signature",
    "session",
    "webhook",
    "keyfile",
    "jwt",
)
#: Any of them, in one scan (a new process asks this of every key name it hashes once).
_ANY_FRAGMENT = re.compile("|".join(map(re.escape, _SECRET_FRAGMENTS)))
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")

#: Credentials inside a value: URL userinfo, credential-like query parameters, auth headers.
_SECRET_VALUE = re.compile(
    r"""(?ix)
    [a-z][a-z0-9+.-]{0,30}://[^/\s:@]{0,256}:[^/\s@]{1,256}@   # scheme://user:password@host
    | [a-z][a-z0-9+.-]{0,30}://[^/\s:@]{16,256}@               # scheme://token@host
    | [?&;#][\w.-]{0,64}?(?:token|key|secret|sig|signature|pass|pwd|auth|credential|session
                    |code|jwt)[\w.-]{0,64}=[^&\s]              # ?access_token=...
    | \b(?:bearer|basic|token|digest)\s{1,8}[\w.~+/=-]{8,}       # Authorization: Bearer ...
    | \bauthorization\s{0,8}[:=]
    | \b(?:password|passwd|passphrase|pwd|secret|client_secret|api_?key|access_?key
         |secret_?key|private_?key)\s{0,4}[:=]\s{0,4}[^\s&]            # password=... in a string
    | (?:^|\s)(?:-u|--user)\s{1,4}[^\s:]{1,64}:[^\s@]{1,256}         # curl -u user:password
    | \b(?:x-api-key|api-key|cookie|set-cookie)\s{0,8}[:=]
    | -----BEGIN[ A-Z]{0,40}PRIVATE\ KEY-----
    | \b(?:sk|pk|rk)[-_](?:live|test|proj)?[-_]?[A-Za-z0-9]{16,}  # provider API keys
    | \bgh[pousr]_[A-Za-z0-9]{20,}
    | \bgithub_pat_[A-Za-z0-9_]{20,}                               # fine-grained GitHub
    | \bglpat-[A-Za-z0-9_-]{20,}                                   # GitLab
    | \bpypi-[A-Za-z0-9_-]{20,}
    | \bAIza[0-9A-Za-z_-]{30,}                                     # Google API keys
    | \bnpm_[A-Za-z0-9]{30,}
    | \bxapp-[A-Za-z0-9-]{10,}                                     # Slack app tokens
    | \bhf_[A-Za-z0-9]{20,}
    | hooks\.slack\.com/services/
    | \b(?:private-token|x-goog-api-key|x-auth-token|x-access-token|proxy-authorization)\b
    | \bxox[abpr]-[A-Za-z0-9-]{10,}
    | \bAKIA[0-9A-Z]{16}\b
    | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.                # a JWT
    """
)
#: Every repetition above that precedes a required literal is bounded, so a long value (a
#: 200 kB string) is scanned in linear time, never with quadratic backtracking.

#: Interpolations whose value changes on every run.
_PER_RUN = re.compile(
    r"\$\{\s*(?:now\s*:|hydra\s*:\s*(?:runtime\.output_dir|job\.num|job\.id|run\.dir"
    r"|sweep\.dir|sweep\.subdir))"
)
_FROM_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
#: Interpolations that read the machine: where the app was launched.
_FROM_MACHINE = re.compile(r"\$\{\s*hydra\s*:\s*runtime\.cwd\s*\}")
_REFERENCE_NAMES = re.compile(r"\$\{\.*([A-Za-z_][\w.\[\]]*)\}")
#: Keys named bare in a resolver's arguments: ``${oc.select:auth.token,default}``.
SELECTED = re.compile(r"\$\{\s*oc\.select\s*:\s*(\.*)([A-Za-z_][\w.\[\]]*)")


#: Words that make ``tokens`` credentials (``hf_tokens``, ``accessTokens``); alone, ``tokens``
#: is as often a pipeline stage of tokenized text, whose values must stay visible.
_TOKEN_OWNERS = frozenset(
    {"hf", "api", "access", "auth", "refresh", "bearer", "oauth", "github", "gh", "gitlab"}
    | {"personal", "secret", "session", "id", "slack", "wandb", "openai", "aws", "jwt"}
)


@functools.lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """Whether a config key's name looks like it holds a credential."""
    spaced = _CAMEL.sub("_", name).lower()
    words = _WORD_SPLIT.split(spaced)
    if "tokens" in words and not _TOKEN_OWNERS.isdisjoint(words):
        return True
    if ("token" in words or "tokens" in words) and not _VOCABULARY.isdisjoint(words):
        return False
    if not _SECRET_WORDS.isdisjoint(words):
        return True
    squashed = "".join(words)
    return squashed.endswith("token") or _ANY_FRAGMENT.search(squashed) is not None


#: The shortest text any credential shape below can match (``pwd=x``; pinned by a test that
#: measures the pattern, so a new shape can never fall under this shortcut).
MIN_CREDENTIAL_LENGTH = 5


def holds_credentials(value: str) -> bool:
    """Whether a string carries credentials in its text (URL userinfo, signed query, header).

    Every credential shape is at least MIN_CREDENTIAL_LENGTH characters long; many config
    strings are shorter, and skipping the regular expression for them keeps the walk fast.
    """
    if len(value) < MIN_CREDENTIAL_LENGTH:
        return False
    if len(value) > _REMEMBERED_LENGTH:
        return _search(value)
    return _holds_credentials(value)


def joined_holds_credentials(text: str) -> bool:
    """:func:`holds_credentials` for the joined strings of one container, or of many sibling
    ones (the key walk's fast paths), remembered apart so that these never push single strings
    out of their memo; a few long ones (a large node's strings) are remembered too."""
    if len(text) < MIN_CREDENTIAL_LENGTH:
        return False
    if len(text) > _REMEMBERED_LENGTH:
        return _search(text) if len(text) > _REMEMBERED_JOINED else _long_holds_credentials(text)
    return _joined_holds_credentials(text)


def scrub(text: str) -> str:
    """A text with every credential in it replaced by its fingerprint: a dotted key or a line
    that names a key whose name holds credentials (``mirrors.<redacted:1a2b3c4d>.cache_dir``)."""
    if not holds_credentials(text):
        return text
    return _SECRET_VALUE.sub(lambda found: redact(found.group()), text)


def shown_overrides(overrides: Iterable[str]) -> list[str]:
    """Overrides as they may be written down or printed (a manifest, a sweep's job labels, a
    pull-request comment): a secret one, by its key's name or its value, keeps its key and
    loses its value; a key that holds credentials itself loses both."""
    shown = []
    for override in overrides:
        key, equals, value = str(override).partition("=")
        if holds_credentials(key):
            shown.append(f"{scrub(key)}={redact(value)}" if equals else scrub(key))
            continue
        name = key.lstrip("+~").rsplit(".", 1)[-1]
        secret = is_secret_name(name) or holds_credentials(value) or "oc.env" in value
        shown.append(f"{key}={redact(value)}" if equals and secret else str(override))
    return shown


@functools.lru_cache(maxsize=8192)
def shown_name(name: str) -> str:
    """A config key's name as it may be shown: its redaction fingerprint when the name itself
    holds credentials (a dict keyed by mirror URLs with userinfo, or by API tokens), else the
    name. Every dotted key the walk records or prints is spelled with these."""
    return redact(name) if holds_credentials(name) else name


@functools.lru_cache(maxsize=8192)
def hides_value(name: str) -> bool:
    """Whether the value under a config key must never be shown: the name looks like a
    credential's (``api_key``), or holds one itself."""
    return is_secret_name(name) or holds_credentials(name)


#: Strings up to this length have their scan remembered: a downstream stage re-derived after
#: each change meets the same upstream paths again, and one scan costs as much as checking a
#: hundred leaves.
_REMEMBERED_LENGTH = 4096
#: Longer joined strings are remembered up to this length, a few at a time (16 MiB at most).
_REMEMBERED_JOINED = 1 << 20


#: A text that holds none of these (in any case) cannot match the pattern above: each of its
#: alternatives needs one of them (a test derives this from the parsed pattern). Looking for
#: them costs a few C-level scans; the pattern costs about 0.3 us per character of text,
#: which a large node's first derivation would pay in full.
_TRIGGERS = (
    "=",
    ":",
    "bearer",
    "basic",
    "token",
    "digest",
    "authorization",
    "-----begin",
    "sk-",
    "sk_",
    "pk-",
    "pk_",
    "rk-",
    "rk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "hf_",
    "github_pat_",
    "glpat-",
    "pypi-",
    "aiza",
    "npm_",
    "xapp-",
    "hooks.slack.com/services/",
    "x-goog-api-key",
    "xox",
    "akia",
    "eyj",
)


def _search(value: str) -> bool:
    # Only ASCII text is screened: with IGNORECASE, the pattern's ASCII letters also match a
    # few other characters ('K', the Kelvin sign, is a 'k'), which lower() would not give.
    if value.isascii():
        lowered = value.lower()
        if not any(trigger in lowered for trigger in _TRIGGERS):
            return False
    return _SECRET_VALUE.search(value) is not None


#: Two memos of one scan: a container's joined strings never push single ones out.
_holds_credentials = functools.lru_cache(maxsize=4096)(_search)
_joined_holds_credentials = functools.lru_cache(maxsize=2048)(_search)
_long_holds_credentials = functools.lru_cache(maxsize=16)(_search)


@dataclass(frozen=True)
class Origin:
    """What one interpolation's text says about its value (decided from the text alone)."""

    per_run: bool = False
    from_env: bool = False
    from_machine: bool = False
    #: It references a key whose name looks like a credential.
    secret: bool = False

    def __or__(self, other: Origin) -> Origin:
        return Origin(
            self.per_run or other.per_run,
            self.from_env or other.from_env,
            self.from_machine or other.from_machine,
            self.secret or other.secret,
        )

    @property
    def hidden(self) -> bool:
        """Never shown: a credential by name, or anything read from the environment."""
        return self.secret or self.from_env


PLAIN = Origin()


@functools.lru_cache(maxsize=16384)
def origin_of(raw: str) -> Origin:
    """The origin flags of one interpolation's text (cached: real configs repeat them)."""
    names = _REFERENCE_NAMES.findall(raw) + [name for _dots, name in SELECTED.findall(raw)]
    return Origin(
        per_run=bool(_PER_RUN.search(raw)),
        from_env=bool(_FROM_ENV.search(raw)),
        from_machine=bool(_FROM_MACHINE.search(raw)),
        secret=any(is_secret_name(part) for name in names for part in re.split(r"[.\[\]]", name)),
    )
