"""Outcomes: what each message says about whether a task worked.

Every signal counts, in the order it came: a tool result flagged as an error (`is_error`), a
non-zero exit status or an error in tool output, a run that worked after earlier failures, the
agent's report (its last sentence that says either way wins, so "the first try failed; now the
tests pass" is a success) and, above all, the user's reaction.
"""

from __future__ import annotations

import re

from ..view import Msg
from .text import sentences, strip_lead, words

# ---------------------------------------------------------------------------------------
# the agent and its tools

_FAIL = re.compile(
    r"\b(errors?|failed|failure|fails?|failing|exception|traceback|timed out|"
    r"could ?n[o']t|unable to|can ?n[o']t|cannot|did ?n[o']t work|not working|crash(?:ed|es)?|"
    r"denied|refused|aborted|unsuccessful|panic(?:ked)?|segfault|fatal|killed|oomkilled|"
    r"command not found|no such file|not found|still broken|is down|went down|"
    r"not (?:passing|deployed|fixed|resolved|done))\b", re.I)
_NOT_FAIL = re.compile(
    r"\b(no|zero|0|without(?: any)?|free of|never) (errors?|failures?|exceptions?|issues?|"
    r"problems?|warnings?)\b|\berror[- ]free\b|\b(did ?n[o']t|did not|never|won't|will not|"
    r"does ?n[o']t|does not) (fail|crash|time out)\b|\bno longer fail\w*\b|\bif (it|this) fails\b|"
    r"\bin case of (errors?|failure)\b|\bfixed the (errors?|failure|exception|crash)\b|"
    r"\b0 failed\b|\bexit (?:code|status)[:= ]*0\b|\berror handling\b",
    re.I)
_EXIT = re.compile(r"\b(?:exit(?:ed)?(?: with)?(?: code| status)?|return ?code)[:= ]*"
                   r"(?P<code>-?\d+)\b", re.I)
_SUCCESS = re.compile(
    r"\b(done|completed?|succeeded|successful(?:ly)?|pass(?:es|ed|ing)?|fixed|works|"
    r"working(?: now)?|deployed|is up|green|healthy|resolved|merged|created|added|updated|"
    r"installed|finished|all good|ready|live|rolled back|restored|cleaned up)\b", re.I)


def _reply_signal(sentence: str) -> str | None:
    cleaned = _NOT_FAIL.sub(" ", sentence)
    if _FAIL.search(cleaned):
        return "failed"
    if _SUCCESS.search(sentence):
        return "success"
    return None


# what a diagnosis finds is often a failure; only not finding out fails it
_INABILITY = re.compile(r"\b(could ?n[o']t|unable to|can ?n[o']t|cannot|failed to|did ?n[o']t "
                        r"find|no idea)\b", re.I)
_DIAGNOSIS = re.compile(r"^(?:check|investigate|find out|figure out|diagnose|look into|see|"
                        r"explain|tell me|work out|determine)\b.*\b(?:why|what|whether|if|how|"
                        r"cause)\b", re.I)


def is_diagnosis(title: str) -> bool:
    """"Check why the ETL job failed": the failure it names is the subject, not the outcome."""
    return bool(_DIAGNOSIS.match(title))


def reply_verdict(text: str, diagnosis: bool = False) -> tuple[str | None, str | None]:
    """The agent's own report: the last sentence that says it worked or failed decides."""
    verdict, why = None, None
    for s in sentences(text):
        signal = _reply_signal(s)
        if diagnosis and signal == "failed" and not _INABILITY.search(s):
            signal = "success"
        if signal:
            verdict, why = signal, s
    return verdict, why


def tool_verdict(msg: Msg, diagnosis: bool = False) -> tuple[str, str | None]:
    """A tool result: failed when flagged, a non-zero exit status or an error line; else it
    worked (a run that follows earlier failures and works is a success signal). For a
    diagnosis only a flagged result counts: errors in logs are what it looks for."""
    text = msg.text or ""
    if diagnosis:
        return ("failed", _error_line(text)) if msg.error else ("success", None)
    for m in _EXIT.finditer(text):
        if int(m["code"]) != 0:
            return "failed", _line_with(text, m.start())
    if msg.error:
        return "failed", _error_line(text) or "the tool reported an error"
    line = _error_line(text)
    return ("failed", line) if line else ("success", None)


def _line_with(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start:end if end >= 0 else len(text)].strip()[:200]


def _error_line(text: str) -> str | None:
    # errors sit at the end of tool output: the last line that reports one
    for line in reversed([ln.strip() for ln in text.splitlines() if ln.strip()]):
        if _FAIL.search(_NOT_FAIL.sub(" ", line)):
            return line[:200]
    return None


# ---------------------------------------------------------------------------------------
# the user's reaction

_REACTION_LEAD = re.compile(r"^(?:(?:actually|perfect|great|awesome|nice|wonderful|brilliant|"
                            r"fantastic|ok|okay|hmm+|well|so|yeah|yes|oh|ugh|wow|thanks|"
                            r"thank you|cool|sure|alright|fine|no|nope)\b[\s,.!:;-]*)+", re.I)
_RESIGNED = re.compile(r"\b(leave it|never ?mind|drop it|skip it|don'?t bother|forget about it|"
                       r"give up|let'?s stop|stop here|not worth it|let it be|leave it be|"
                       r"i'?ll do it myself|i'?ll handle it myself)\b", re.I)
_NEG = re.compile(
    r"\b(does ?n[o']t work|does not work|did ?n[o']t work|did not work|is ?n[o']t working|"
    r"not working|still (?:fails|failing|broken|down|crashing|erroring|the same|there|happening)|"
    r"(?:is|are|went|'s) (?:down|broken|gone|dead|offline)|broke|broken|wrong|fail|fails|failed|"
    r"failing|crash(?:es|ed|ing)?|errors?|outage|no luck|that'?s not it|not fixed|made it worse|"
    r"worse|500|502|503|404)\b", re.I)
_POS = re.compile(
    r"\b(thanks?|thank you|thx|great|perfect|awesome|nice|works|worked|working now|lgtm|"
    r"looks good|excellent|well done|good job|that did it|all good|brilliant|fantastic|"
    r"exactly|correct|spot on|ship it|wonderful|it'?s fixed|fixed it)\b", re.I)
_ACK = re.compile(r"^(?:ok|okay|yes|yep|yeah|sure|cool|fine|good|got it|done|right)$", re.I)
# a reaction's state words are not a request ("now the login page is down")
_IMPERATIVE = frozenset("""
add fix deploy roll run create make write update delete remove rename move install set
configure build check test refactor migrate upgrade bump revert merge push pull clone open close
find search show list generate implement change replace convert debug investigate look clean
restart start stop kill scale rotate back backup restore send email draft review summarize
translate format lint document schedule book order compute calculate analyze analyse profile
optimize speed increase reduce enable disable turn try help get put port split tag release ship
publish downgrade pin patch setup go use switch drop copy paste print plot draw explain describe
tell give let do redo undo retry rerun reinstall uninstall rebuild redeploy rollback provision
fetch download upload import export sync archive compress extract parse validate verify audit
monitor alert notify post reply answer prepare plan organize sort filter rewrite edit improve
polish simplify extend wire hook connect disconnect mount unmount bind map grant revoke invite
assign close rebase squash cherry-pick stash commit annotate label triage benchmark measure
""".split())
_QUESTION_OPEN = re.compile(r"^(?:what|why|how|when|where|which|who|whose|is|are|was|were|"
                            r"does|do|did|should|shall|have|has|am|isn'?t|aren'?t|doesn'?t)\b",
                            re.I)
# a longer sentence describes a situation (context for a request), not a reaction
_REACTION_WORDS = 14
_ASKS = re.compile(r"^(?:can|could|would|will) you\b|\bplease\b", re.I)


def is_imperative(sentence: str) -> bool:
    s = strip_lead(_REACTION_LEAD.sub("", sentence.strip()))
    if _ASKS.search(s) or re.match(r"(?:let'?s|i need|i want|i'?d like|i would like|we need|"
                                    r"we want|help me|go ahead and)\b", s, re.I):
        return True
    ws = words(s)
    return bool(ws) and ws[0] in _IMPERATIVE


def is_question(sentence: str) -> bool:
    """A question to the agent, not a request ("what's the difference …?")."""
    s = strip_lead(sentence)
    return s.rstrip().endswith("?") and not _ASKS.search(s) and bool(_QUESTION_OPEN.match(s)
                                                                      or not is_imperative(s))


def resigned(text: str) -> bool:
    return bool(_RESIGNED.search(text))


def reaction(sentence: str) -> str | None:
    """"failed" or "success" when `sentence` reacts to the last result rather than asks for
    something; None otherwise. Sarcasm ("perfect, now the API is down") is a failure."""
    s = sentence.strip()
    if not words(s):
        return None
    if _RESIGNED.search(s):
        return "failed"
    if is_imperative(s) or len(words(s)) > _REACTION_WORDS:
        return None
    if _NEG.search(_NOT_FAIL.sub(" ", s)):
        return "failed"
    if _POS.search(s) or _ACK.match(s.strip(" .!")):
        return "success"
    return None
