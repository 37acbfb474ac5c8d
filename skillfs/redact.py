"""Secrets and forget requests: what must never reach a skill file.

Skill files are permanent (every version is kept), greppable and mounted into sandboxes, so
whatever the learner writes is scanned first and every secret in it becomes `[redacted]`.
detect-secrets (Yelp) knows the vendors' key formats; the checks here cover what it was not
built for: secrets said in prose ("the db password is hunter2"), credentials inside connection
strings, whole private-key blocks, bearer headers, longer key formats than its fixed-length
patterns, and random-looking tokens. Its entropy plugins are not used: they flag git SHAs,
UUIDs and hex digests, which work logs are full of. Hex strings are kept unless something
names them a key, token, secret or password.

Everything here is a pure function of the text and runs offline (no key is verified).
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from detect_secrets.core.scan import scan_line
from detect_secrets.settings import transient_settings

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Redaction:
    text: str
    kinds: tuple[str, ...] = ()  # what was redacted, in the order it occurs; never a value

    @property
    def changed(self) -> bool:
        return bool(self.kinds)


def note(reason: str, kinds: Sequence[str]) -> str:
    """A version's reason with what was redacted: "learner (rules); redacted: password"."""
    return f"{reason}; redacted: {', '.join(kinds)}" if kinds else reason


# ------------------------------------------------------------------------------------------
# patterns: (kind, regex); the named group `v` is what is replaced, else the whole match

_KEY_BLOCK = (r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
              r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)")

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private key", re.compile(_KEY_BLOCK, re.S)),
    # scheme://user:password@host — the password only; a password may hold "@"
    ("connection string", re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@]*:(?P<v>[^\s/]+)@(?=[^\s@/]+)", re.I)),
    ("bearer token", re.compile(
        r"\bauthorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?(?P<v>[^\s\"'`]{6,})",
        re.I)),
    ("bearer token", re.compile(r"\bbearer\s+(?P<v>(?=[^\s\"'`]*\d)[A-Za-z0-9._~+/=-]{12,})",
                                re.I)),
    ("stripe key", re.compile(r"\b[spr]k_(?:live|test)_[0-9A-Za-z]{10,}")),
    ("github token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("gitlab token", re.compile(
        r"\bgl(?:pat|dt|rt|cbt|ptt|ft|imt|oas|soat|agent)-[A-Za-z0-9_-]{20,}")),
    ("slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("aws key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")),
    ("google api key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("api key", re.compile(r"\bsk-(?:[a-z]+-)*[A-Za-z0-9_-]{20,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*")),
]

# a secret named in words or assigned: "the db password is hunter2", "pw=x", "API_KEY: x";
# within one line ("password field" then "- **Outcome**:" on the next is no password)
_PASSWORD = r"pass(?:word|wd|phrase|code)s?|pwd?"
_NAMED = (r"api[ _-]?keys?|access[ _-]?keys?|secret(?:[ _-]?(?:access[ _-]?)?keys?)?|"
          r"client[ _-]?secret|(?:auth|access|api|refresh|session|bearer)?[ _-]?tokens?|"
          r"credentials?")
_SAID = re.compile(
    rf"(?<![A-Za-z])(?P<name>{_PASSWORD}|{_NAMED})(?![A-Za-z])"
    # a few words between: "password for staging is", "password of the db was"
    r"(?P<mid>(?:[ \t]+(?!is\b|was\b|are\b)[\w.@/-]+){0,4}?)"
    r"(?:[ \t]*(?:[:=]|[ \t](?:is|was|are)"
    r"(?:[ \t]+(?:now|still|just|set[ \t]+to|always))?(?:[ \t]*:)?)[ \t]*"
    r"(?P<v>\"[^\"\n]+\"|'[^'\n]+'|`[^`\n]+`|[^\s\"'`,;]+)"
    # no separator: "my password hunter2", a value with a digit or a sign in it
    r"|[ \t]+(?P<bare>(?=[^\s\"'`,;]*[\d!@#%^&*+=~])[^\s\"'`,;]{4,}))", re.I)
# an environment variable named for a secret: PGPASSWORD=x, GITHUB_TOKEN="x"
_ENV = re.compile(r"(?<![\w$])(?P<name>[A-Z0-9_]*(?:PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_?KEY|"
                  r"ACCESS_?KEY|PRIVATE_?KEY))=(?P<v>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'`;]+)")
# what follows "password is" in prose that is no password
_NOT_VALUE = {
    "a", "an", "the", "my", "our", "your", "their", "his", "her", "its", "this", "that", "it",
    "not", "no", "none", "null", "nil", "empty", "blank", "set", "unset", "required",
    "optional", "missing", "wrong", "correct", "incorrect", "invalid", "valid", "expired",
    "stored", "saved", "kept", "in", "on", "at", "for", "of", "to", "from", "by", "with",
    "changed", "reset", "too", "being", "still", "also", "only", "and", "or", "but", "used",
    "needed", "given", "known", "secret", "hidden", "masked", "encrypted", "hashed", "rotated",
    "same", "different", "new", "old", "weak", "strong", "long", "short", "ok", "fine",
    "true", "false", "here", "there", "below", "above", REDACTED,
}

# code that reads a secret: a call, an index, or a constant of a module or object
_CODE_REF = re.compile(r"[A-Za-z_][\w.]*(?:[(\[].*|\.[A-Z][A-Z0-9_]+)")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{20,}(?![A-Za-z0-9+/=_-])")
_RUN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|\d+")
_HEX = re.compile(r"[0-9a-fA-F_-]+")


def _password_value(m: re.Match[str]) -> bool:
    """Whether what follows the name is the secret itself, not prose about it."""
    value = (m["v"] or m.groupdict().get("bare") or "").strip("\"'`").rstrip(".!?):")
    if not value or value.lower() in _NOT_VALUE or value.startswith(("$", "{", "<", "%")):
        return False  # "$DB_PASSWORD", "{{ secret }}", "<token>": a reference, not a value
    if _CODE_REF.fullmatch(value):
        return False  # "os.environ['DB_PASSWORD']", "get_token()", "settings.API_KEY"
    if re.search(_PASSWORD, m["name"], re.I):
        return True
    # a token, key or secret: a value that looks generated, not a word
    return len(value) >= 8 and bool(re.search(r"\d", value)) and bool(re.search(r"[A-Za-z]", value))


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def _random_looking(token: str) -> bool:
    """Base64/base62 that no person typed: letters of both cases and digits, high entropy,
    and short runs between case and digit changes (camelCase names change once a word).
    Hex (git SHAs, digests, UUIDs) is kept."""
    if _HEX.fullmatch(token):
        return False
    if not (re.search(r"[a-z]", token) and re.search(r"[A-Z]", token)
            and re.search(r"\d", token)):
        return False
    runs = _RUN.findall(token)
    # random text is close to the most entropy its length allows; names have runs of 3+
    return entropy(token) >= 0.85 * math.log2(len(token)) and len(token) / len(runs) < 2.5


# ------------------------------------------------------------------------------------------
# detect-secrets

_PLUGINS = [
    "ArtifactoryDetector", "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector",
    "CloudantDetector", "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector",
    "IbmCloudIamDetector", "IbmCosHmacDetector", "JwtTokenDetector", "KeywordDetector",
    "MailchimpDetector", "NpmDetector", "OpenAIDetector", "PrivateKeyDetector",
    "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SoftlayerDetector",
    "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
]
# its filters that drop false positives; none of them verifies a key over the network
_FILTERS = [
    "detect_secrets.filters.heuristic.is_sequential_string",
    "detect_secrets.filters.heuristic.is_potential_uuid",
    "detect_secrets.filters.heuristic.is_likely_id_string",
    "detect_secrets.filters.heuristic.is_templated_secret",
    "detect_secrets.filters.heuristic.is_prefixed_with_dollar_sign",
    "detect_secrets.filters.heuristic.is_indirect_reference",
    "detect_secrets.filters.heuristic.is_not_alphanumeric_string",
]
_SETTINGS = {"plugins_used": [{"name": p} for p in _PLUGINS],
             "filters_used": [{"path": f} for f in _FILTERS]}
_KINDS = {"Secret Keyword": "secret", "Basic Auth Credentials": "connection string",
          "JSON Web Token": "jwt", "AWS Access Key": "aws key", "Private Key": "private key"}


# a line worth handing to detect-secrets: a long run (its keys are 16+ characters), or a word
# for a secret given a value ("api_key = ...", "secret: ...")
_MAYBE = re.compile(r"\S{16,}|(?:pass|secret|key|token|auth|cred)\w*[\"']?\s*[:=]", re.I)


_LIBRARY = threading.Lock()


def _library_findings(text: str) -> list[tuple[str, str]]:
    """(kind, value) for each secret detect-secrets finds, line by line."""
    found: list[tuple[str, str]] = []
    # scan_line and the settings cost milliseconds: only lines that may hold a secret
    lines = [line for line in text.splitlines() if _MAYBE.search(line)]
    if not lines:
        return found
    # its settings are global: one scan at a time (a model's input is scanned off the loop)
    with _LIBRARY, transient_settings(_SETTINGS):
        for line in lines:
            for secret in scan_line(line):
                value = secret.secret_value
                if value and value != REDACTED and REDACTED not in value:
                    found.append((_KINDS.get(secret.type, secret.type.lower()), value))
    return found


# ------------------------------------------------------------------------------------------
# the scan

def _said_kind(name: str) -> str:
    if re.search(_PASSWORD, name, re.I):
        return "password"
    return "api key" if "key" in name.lower() else "token" if "token" in name.lower() else "secret"


def _findings(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of each secret, the surest checks first (they win overlaps)."""
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            group = "v" if "v" in pattern.groupindex else 0
            yield m.start(group), m.end(group), kind
    for m in _ENV.finditer(text):
        if _password_value(m):
            yield m.start("v"), m.end("v"), _said_kind(m["name"])
    for m in _SAID.finditer(text):
        if _password_value(m):
            group = "v" if m["v"] else "bare"
            # "the password is hunter2." ends the sentence with the period
            end = m.start(group) + len(m[group].rstrip(".)"))
            yield m.start(group), end, _said_kind(m["name"])
    for kind, value in _library_findings(text):
        at = text.find(value)
        while at >= 0:
            yield at, at + len(value), kind
            at = text.find(value, at + len(value))
    for m in _TOKEN.finditer(text):
        if _random_looking(m.group(0)):
            yield m.start(), m.end(), "high-entropy token"


def redact(text: str) -> Redaction:
    """`text` with every secret found replaced by `[redacted]`, and the kinds found in the
    order they occur."""
    spans: list[tuple[int, int, str]] = []
    for start, end, kind in _findings(text):
        if end > start and not any(start < e and s < end for s, e, _ in spans):
            spans.append((start, end, kind))
    spans.sort()
    out, kinds, at = [], [], 0
    for start, end, kind in spans:
        out += [text[at:start], REDACTED]
        at = end
        if kind not in kinds:
            kinds.append(kind)
    out.append(text[at:])
    return Redaction("".join(out), tuple(kinds))


# ------------------------------------------------------------------------------------------
# forget requests

_APOS = r"[’']?"
_NEG = (rf"(?:do{_APOS}n{_APOS}t|do not|never|please don{_APOS}t|"
        rf"you (?:do{_APOS}n{_APOS}t|do not|should{_APOS}n{_APOS}t|should not|"
        rf"must{_APOS}n{_APOS}t|must not) (?:need to )?|no need to)")
_OBJECT = (r"(?:this|that|these|those|any of (?:this|that))(?: (?:one|part|bit|message|info|"
           r"information|conversation|chat|session|request|detail|details|password))?")
_MEMORY = r"(?:your )?(?:memory|memories|skills?|notes?|logs?|files?)"
# the request ends there: "don't save this." but not "don't save this file to disk"
_CLAUSE_END = (r"(?=\s*(?:[.!?,;:)\-–—]|$|\b(?:please|thanks|thank you|ok|okay|and|but|though|"
               rf"either|anywhere|for now|for later|in {_MEMORY}|to {_MEMORY})\b))")
# "forget" as an order, not "don't forget that" or "I always forget that"
_LEAD_IN = (r"(?:^|[.!?;:,\n(\-–—]\s*|\b(?:and|so|but|please|pls|also|actually|oh|ok|okay|just|"
            r"wait|sorry|hmm|no)\s+)")
_FORGET = re.compile("|".join([
    rf"\b{_NEG}\s*(?:remember|memori[sz]e|learn(?: from)?|keep|save|store|record)\s+"
    rf"(?:{_OBJECT}|it(?=\s*[.!?,;]|\s*$)){_CLAUSE_END}",
    r"\boff the record\b",
    (rf"{_LEAD_IN}forget (?:(?:{_OBJECT}|it|about (?:it|this|that)){_CLAUSE_END}|"
     r"(?:what|everything|all) I (?:just )?(?:said|wrote|told you|mentioned)\b|"
     r"I (?:said|mentioned|asked|wrote) (?:it|this|that)\b)"),
    (r"\b(?:this|that|it)(?:'s| is| was) (?:strictly |totally |all )?"
     r"(?:confidential|private|between (?:us|you and me))(?=\s*(?:[.!?,;:)\-–—]|$))"),
]), re.I)
# what points back to the request before it, not to the message it is in
_BACK = re.compile(r"\b(?:that|what I (?:just )?(?:said|wrote|told you|mentioned)|"
                   r"I (?:said|mentioned|asked|wrote))\b", re.I)
_FILLER = re.compile(r"\b(?:please|pls|ok|okay|oh|actually|also|and|so|but|just|wait|sorry|hmm|"
                     r"no|thanks|thank you|again|anyway|though|either|for now)\b|[^\w]+", re.I)


def is_forget_request(text: str) -> bool:
    """The user asks that this not be remembered ("don't remember this", "off the record",
    "forget that", "this is confidential, don't keep it")."""
    return bool(_FORGET.search(text or ""))


def refers_back(text: str) -> bool:
    """A forget request about what was said before: "Forget that." or a message that says
    nothing but the request ("Please don't remember this!")."""
    matches = list(_FORGET.finditer(text or ""))
    if not matches:
        return False
    if any(_BACK.search(m.group(0)) for m in matches):
        return True
    rest = _FILLER.sub(" ", _FORGET.sub(" ", text))
    return not rest.strip()
