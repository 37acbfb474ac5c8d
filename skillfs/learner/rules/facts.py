"""Facts the user states about themselves, filed by subject and kept current.

Only explicit first-person statements count ("my name is …", "I prefer …", "I use …",
"always/never …", "call me …"). A statement that changes an earlier one ("I switched to …",
"I no longer use …", "actually, I prefer …") replaces the old line; a denial ("I never said I
like …") removes it and adds nothing; a restatement in other words replaces its near-duplicate.
Nothing is inferred, and text the rules cannot read (another language) gives no facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .text import cap, is_english, strip_fillers, strip_lead, words

# subject -> file stem and heading; the first subject whose words a fact mentions wins
TOPIC_TITLES = {
    "identity": "Identity",
    "deploy-preferences": "Deploy Preferences",
    "coding-preferences": "Coding Preferences",
    "communication": "Communication",
    "tools": "Tools",
    "general": "General",
}
_SUBJECT_WORDS = {
    "deploy-preferences": (
        "deploy deploys deploying deployment deployments staging production prod release "
        "releases rollback rollbacks migration migrations traffic blue-green canary kubernetes "
        "k8s helm terraform pipeline pipelines docker container containers server servers "
        "fridays friday downtime hotfix hotfixes"),
    "coding-preferences": (
        "python typescript javascript rust golang java code coding type hints tests test pytest "
        "unittest tabs spaces indentation lint linter linting black ruff flake8 mypy formatter "
        "functions function variables commits commit git branch branches pr prs refactor "
        "snake_case camelcase comments docstrings library libraries dependencies poetry pip "
        "npm yarn pnpm uv react django flask fastapi sql orm"),
    "communication": (
        "answer answers reply replies explain explanations concise brief short verbose emoji "
        "emojis english german french spanish language tone summary summaries bullet bullets "
        "messages email slack jargon"),
    "tools": (
        "editor vim neovim nvim emacs vscode tmux terminal shell zsh bash fish macos mac linux "
        "windows laptop browser ide jetbrains pycharm intellij keyboard tool tools app apps"),
}
_SUBJECTS = {topic: frozenset(ws.split()) for topic, ws in _SUBJECT_WORDS.items()}
# tools of one kind: a new one replaces the old ("Uses ruff" replaces "Uses black")
_ALTERNATIVES = [frozenset(g.split()) for g in (
    "tabs spaces", "vim neovim nvim emacs vscode nano helix zed pycharm intellij",
    "black ruff yapf autopep8", "npm yarn pnpm bun", "pip poetry uv pipenv conda pdm",
    "bash zsh fish", "pytest unittest nose", "macos linux windows", "mysql postgres "
    "postgresql sqlite mariadb", "github gitlab bitbucket", "slack teams discord",
    "docker podman", "terraform pulumi", "blue-green canary rolling")]
# what a fact must not hold: a note about the memory itself or a credential
_NOT_A_FACT = re.compile(r"\b(password|passphrase|passwd|secret|token|api[ -]?key|credentials?|"
                         r"remember|memory|store|save)\b", re.I)

_PRONOUNS = {
    "i": "they", "me": "them", "my": "their", "mine": "theirs", "myself": "themselves",
    "i'm": "they're", "i've": "they've", "i'd": "they'd", "i'll": "they'll",
}
_PRONOUN_RE = re.compile(r"\b(i'm|i've|i'd|i'll|i|me|my|mine|myself)\b", re.I)
_IRREGULAR = {"be": "is", "am": "is", "have": "has", "do": "does", "go": "goes"}


@dataclass(frozen=True)
class Fact:
    topic: str  # file stem, see TOPIC_TITLES
    text: str  # third person, e.g. "Prefers Python 3.11+ with type hints"; "" drops only
    seq: int = -1
    # phrases whose lines this statement makes wrong, in any topic file
    drops: tuple[str, ...] = field(default_factory=tuple)
    # a later statement of the same kind replaces the earlier one ("switch to", "now use")
    update: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "drops", tuple(self.drops))

    @property
    def key(self) -> str:
        return fact_key(self.text)


def third_person(text: str) -> str:
    """Swap first-person pronouns for third-person ones ("my laptop" -> "their laptop")."""
    return _PRONOUN_RE.sub(lambda m: _PRONOUNS[m.group(1).lower()], text)


def conjugate(verb: str) -> str:
    """First person to third person singular: use -> uses, push -> pushes, try -> tries."""
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if re.search(r"(s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


def _clean(v: str) -> str:
    v = strip_fillers(v.strip().strip(" \t\"'`"))
    v = re.sub(r"[.!,;:]+$", "", v).strip()
    # "I use ruff now": when it changed is not part of the fact
    return re.sub(r"[\s,]+(?:now|these days|nowadays|any ?more|instead)$", "", v, flags=re.I)


def _value(m: re.Match) -> str:
    return third_person(_clean(m["v"]))


def _name(m: re.Match) -> str:
    # "My name is Gus and I deploy on Fridays": the name is the first clause
    return re.split(r"\s+(?:and|but)\s+|,", _clean(m["v"]))[0].strip()


def _habit(m: re.Match) -> str:
    rest = third_person(_clean(m["rest"]))
    return f"{cap(m['adv'].lower())} {conjugate(m['verb'])} {rest}".strip()


_UPDATE = r"(?:actually,? |now,? |these days,? |from now on,? |nowadays,? )?"
_ADVERB = r"(?:really |strongly |generally |usually |mostly |mainly |only |always |now |also )?"
# (pattern on the sentence without lead-ins and fillers, builder)
_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"^my name is (?P<v>.+)$", re.I), lambda m: f"Name is {_name(m)}"),
    (re.compile(r"^(?:i am|i'm) called (?P<v>.+)$", re.I), lambda m: f"Name is {_name(m)}"),
    (re.compile(r"^(?:you can |please )?call me (?P<v>.+)$", re.I),
     lambda m: f"Prefers to be called {_name(m)}"),
    (re.compile(r"^my (?P<k>role|job|title|timezone|time zone|team|company|pronouns) is (?P<v>.+)$",
                re.I), lambda m: f"{cap(m['k'].lower())} is {_value(m)}"),
    (re.compile(r"^i work (?P<v>(?:as|at|for|on|in) .+)$", re.I), lambda m: f"Works {_value(m)}"),
    (re.compile(r"^i live (?P<v>in .+)$", re.I), lambda m: f"Lives {_value(m)}"),
    (re.compile(r"^(?:i|we) (?P<adv>always|never) (?P<verb>[a-z]+)\b(?P<rest>.*)$", re.I), _habit),
    (re.compile(r"^(?P<adv>always|never) (?P<v>.+)$", re.I),
     lambda m: f"{cap(m['adv'].lower())} {_value(m)}"),
    (re.compile(rf"^{_UPDATE}(?:i|we)(?:'d| would)? {_ADVERB}prefer (?P<v>.+)$", re.I),
     lambda m: f"Prefers {_value(m)}"),
    (re.compile(rf"^{_UPDATE}(?:i|we) {_ADVERB}(?:like|love|enjoy) (?P<v>.+)$", re.I),
     lambda m: f"Likes {_value(m)}"),
    (re.compile(rf"^{_UPDATE}(?:i|we) {_ADVERB}use (?P<v>.+)$", re.I),
     lambda m: f"Uses {_value(m)}"),
    (re.compile(rf"^{_UPDATE}(?:i am|i'm|we are|we're) (?:now )?using (?P<v>.+)$", re.I),
     lambda m: f"Uses {_value(m)}"),
    (re.compile(r"^(?:i|we)(?:'ve| have)? (?:just )?(?:switched|moved|migrated|changed)"
                r"(?: over)?(?: from (?P<old>.+?))? to (?P<v>.+)$", re.I),
     lambda m: f"Uses {_value(m)}"),
]
_UPDATE_MARK = re.compile(r"\b(actually|now|switch(?:ed)?|moved|migrated|changed|these days|"
                          r"from now on|nowadays|no longer|any ?more)\b", re.I)
_NO_LONGER = re.compile(r"^(?:i|we) (?:no longer|don'?t|do not) (?:use|like|prefer) (?P<v>.+?)"
                        r"(?: any ?more)?$", re.I)
_DENIAL = re.compile(r"^(?:i )?(?:never|didn'?t|did not) (?:said|say|tell you|told you|"
                     r"mention(?:ed)?)(?: that)? (?P<v>.+)$", re.I)
# a value that only negates or points ("not really", "it") states nothing
_EMPTY_VALUE = re.compile(r"^(?:not|no|none|hardly|it|that|this|them|those|these|one|so)\b", re.I)
# clauses of one sentence that each state something: "I no longer use X, I use Y now"
_CLAUSES = re.compile(r"\s*[,;]\s*(?:and |but )?(?=(?:i|we|my|now i|actually i)\b)"
                      r"|\s+(?:and|but) (?=(?:now )?(?:i|we) )", re.I)


def topic_of(text: str) -> str:
    low = text.lower()
    if re.match(r"(name|role|job|title|timezone|time zone|team|company|pronouns) is |works |"
                r"lives |prefers to be called ", low):
        return "identity"
    ws = set(words(low)) | {w.strip("'") for w in low.split()}
    for topic, subject in _SUBJECTS.items():
        if ws & subject or ("type hints" in low and topic == "coding-preferences"):
            return topic
    return "general"


def _object_phrase(text: str) -> str:
    """What a denied or dropped statement is about: "I like dark mode" -> "dark mode"."""
    text = strip_lead(_clean(text))
    text = re.sub(r"^(?:i|we) (?:really |always |ever )?(?:like|love|prefer|use|want|am|'m)\s+",
                  "", text, flags=re.I)
    return text.strip()


def facts_from_sentence(sentence: str, seq: int = -1) -> list[Fact]:
    s = strip_fillers(strip_lead(sentence))
    if not s or s.endswith("?") or not is_english(s) or _NOT_A_FACT.search(s):
        return []
    out: list[Fact] = []
    for clause in _CLAUSES.split(s):
        fact = _fact_from_clause(strip_lead(clause), seq)
        if fact is not None:
            out.append(fact)
    return out


def fact_from_sentence(sentence: str, seq: int = -1) -> Fact | None:
    found = [f for f in facts_from_sentence(sentence, seq) if f.text]
    return found[0] if found else None


def _fact_from_clause(s: str, seq: int) -> Fact | None:
    s = s.strip().rstrip(".!")
    m = _DENIAL.match(s) or _NO_LONGER.match(s)
    if m:
        phrase = _object_phrase(m["v"])
        return Fact(topic_of(phrase), "", seq, drops=(phrase,)) if phrase else None
    for pattern, build in _RULES:
        m = pattern.match(s)
        if not m:
            continue
        text = _clean(build(m))
        old = m.groupdict().get("old")
        value = (m.groupdict().get("v") or m.groupdict().get("rest") or "").strip()
        if _EMPTY_VALUE.match(value) or len(text.split()) < 2 or len(text.split()) > 16:
            return None
        drops = (_object_phrase(old),) if old else ()
        return Fact(topic_of(text), cap(text), seq, drops=drops,
                    update=bool(_UPDATE_MARK.search(s)))
    return None


def fact_key(text: str) -> str:
    """What makes two facts the same: a later one with the same key replaces the earlier."""
    low = text.lower().strip()
    m = re.match(r"(name|role|job|title|timezone|time zone|team|company|pronouns) is |"
                 r"(prefers to be called) ", low)
    if m:
        return m.group(1) or "call-me"
    return " ".join(words(low))


_STOP = frozenset("the a an and with their they for to of in on uses prefers likes is".split())
# a restatement shares most of its words with the old line, and has enough of them to tell
NEAR_DUPLICATE = 0.6
NEAR_DUPLICATE_WORDS = 4


def _content(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP}


def _same_slot(old: str, new: str, update: bool) -> bool:
    """Whether the line `old` says what `new` now says differently."""
    if fact_key(old) == fact_key(new):
        return True
    verb_old, verb_new = old.split(" ", 1)[0].lower(), new.split(" ", 1)[0].lower()
    if verb_old != verb_new:
        return False
    a, b = _content(old), _content(new)
    if len(a | b) >= NEAR_DUPLICATE_WORDS and len(a & b) / len(a | b) >= NEAR_DUPLICATE:
        return True  # a near-duplicate said in other words
    low_old, low_new = set(words(old)), set(words(new))
    return any((low_old & g) and (low_new & g) and (low_old & g) != (low_new & g)
               for g in _ALTERNATIVES) or (update and bool(a & b))


def drop_lines(text: str, phrases: tuple[str, ...]) -> str | None:
    """`text` without the bullets that mention one of `phrases`; None when none does."""
    if not phrases:
        return None
    pats = [re.compile(r"\b" + re.escape(p.lower()) + r"\b") for p in phrases if p]
    lines = text.splitlines()
    kept = [ln for ln in lines if not (ln.startswith("- ") and any(p.search(ln.lower())
                                                                   for p in pats))]
    return None if len(kept) == len(lines) else "\n".join(kept).rstrip("\n") + "\n"


def merge_facts(existing: str | None, topic: str, facts: list[Fact]) -> str | None:
    """The topic file with `facts` added; None when nothing changes.

    A fact already there (same words) is left alone; one that says the same thing differently
    or changes it (same key, near-duplicate, another tool of the same kind) replaces the old
    line; others are appended to the bullet list.
    """
    if existing is None and not any(f.text for f in facts):
        return None
    title = TOPIC_TITLES.get(topic, topic.replace("-", " ").title())
    text = existing if existing is not None else f"# {title}\n"
    for fact in facts:
        text = drop_lines(text, fact.drops) or text
    lines = text.splitlines()
    for fact in (f for f in facts if f.text):
        bullets = [i for i, line in enumerate(lines) if line.startswith("- ")]
        norm = " ".join(words(fact.text))
        if any(" ".join(words(lines[i][2:])) == norm for i in bullets):
            continue
        same = [i for i in bullets if _same_slot(lines[i][2:], fact.text, fact.update)]
        if same:
            lines[same[-1]] = f"- {fact.text}"
            for i in reversed(same[:-1]):
                del lines[i]
        elif bullets:
            lines.insert(bullets[-1] + 1, f"- {fact.text}")
        else:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += ["", f"- {fact.text}"]
    new = "\n".join(lines).rstrip("\n") + "\n"
    return None if new == existing else new
