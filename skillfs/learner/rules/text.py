"""Sentences, words and the small talk around them: what every rule looks at first."""

from __future__ import annotations

import re

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")

# words that open a message without adding meaning ("Hey, so, …", "Some context first: …")
_LEAD = re.compile(
    r"^(?:(?:hi|hello|hey|ok|okay|alright|so|also|and|btw|by the way|oh|fyi|note|please|"
    r"just|well|now|then|next|cool|great|thanks|thank you|quick question|one more thing|"
    r"(?:some|a bit of|a little) (?:context|background)(?: (?:before we start|first|for you))?|"
    r"before we start|for context|for the record|heads up|here'?s (?:the thing|what i need))"
    r"\b[\s,:;!.]*)+", re.I)
# a context clause that ends in a colon: "Some context before we start: …"
_LEAD_CLAUSE = re.compile(r"^[^:]{0,60}\b(?:context|background|start|note|first|question)\s*:\s*",
                          re.I)
# asides that add nothing to a fact: "…, if that matters", "…, I guess"
_FILLER = re.compile(
    r"[\s,;(-]*\b(?:if (?:that|it) (?:matters|helps)|for what it'?s worth|i guess|i think|"
    r"just so you know|fwiw|in case you (?:care|wonder(?:ed)?)|if you care|by the way|btw|"
    r"as you (?:may )?know|you know|to be honest|honestly|basically|anyway)\b[\s,.)]*",
    re.I)

# common words of English and of languages the rules do not read
_ENGLISH = frozenset(
    "the a an to of and in on for with is are was be it this that my i you we please can "
    "could would should do does not no at by from as or but if then now all our your me "
    "what how why when where which there here have has had will just".split())
_FOREIGN = frozenset(
    "der die das und ist nicht ich bitte ein eine mit auf für den dem zu es sie wir immer "
    "auch noch schon nur wie was wenn dann mein meine "
    "le la les et est je pas une des du pour avec sur que qui ce il elle nous vous "
    "el los las y es por para con una que del al se lo como pero muy "
    "il lo gli è non di che per una sono della "
    "não com uma os em do da que por para "
    "het een en van ik niet met op voor zijn".split())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text or "") if s and s.strip()]


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower().replace("’", "'"))


def strip_lead(sentence: str) -> str:
    s = sentence.strip()
    s = _LEAD_CLAUSE.sub("", s, count=1)
    return _LEAD.sub("", s).strip()


def strip_fillers(text: str) -> str:
    return _FILLER.sub(" ", text).strip(" ,;")


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def is_english(text: str) -> bool:
    """Whether the rules can read `text`: mostly Latin letters and no more words of the other
    languages they know of than of English. Short texts without either pass."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) < 0.85:
        return False
    ws = words(text)
    english = sum(w in _ENGLISH for w in ws)
    foreign = sum(w in _FOREIGN and w not in _ENGLISH for w in ws)
    return foreign < 2 or foreign <= english


def first_sentences(text: str, limit: int = 220) -> str:
    out = ""
    for s in sentences(text):
        if out and len(out) + len(s) + 1 > limit:
            break
        out = f"{out} {s}".strip()
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + "…"
    return out
