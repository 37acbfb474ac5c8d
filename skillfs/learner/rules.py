"""The offline learner: plain rules, no model, same results every time.

It understands little on purpose. A user message that asks for something is a task; what
follows it (the assistant's final reply, tool output, the user's feedback) decides success or
failure by looking for words of failure. Explicit first-person statements ("my name is …",
"I prefer …", "I use …", "always/never …", "call me …") become third-person facts. Everything
here is a pure function of the messages and the files' current text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from .view import Msg

# ------------------------------------------------------------------------------------------
# sentences and words

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")
_LEAD = re.compile(
    r"^(?:(?:hi|hello|hey|ok|okay|so|also|and|btw|by the way|oh|fyi|note|please|just)\b[\s,:;!-]*)+",
    re.I)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text or "") if s and s.strip()]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


# ------------------------------------------------------------------------------------------
# facts

@dataclass(frozen=True)
class Fact:
    topic: str  # file stem: identity | preferences | tools | rules
    text: str  # third person, e.g. "Prefers Python 3.11+ with type hints"
    seq: int = -1

    @property
    def key(self) -> str:
        return fact_key(self.text)


TOPIC_TITLES = {
    "identity": "Identity",
    "preferences": "Preferences",
    "tools": "Tools",
    "rules": "Rules",
}

_PRONOUNS = {
    "i": "they", "me": "them", "my": "their", "mine": "theirs", "myself": "themselves",
    "i'm": "they're", "i've": "they've", "i'd": "they'd", "i'll": "they'll", "am": "are",
}
_PRONOUN_RE = re.compile(r"\b(i'm|i've|i'd|i'll|i|me|my|mine|myself)\b", re.I)


def third_person(text: str) -> str:
    """Swap first-person pronouns for third-person ones ("my laptop" -> "their laptop")."""
    return _PRONOUN_RE.sub(lambda m: _PRONOUNS[m.group(1).lower()], text)


_IRREGULAR = {"be": "is", "am": "is", "have": "has", "do": "does", "go": "goes"}


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


def _clean_value(v: str) -> str:
    v = v.strip().strip(" \t\"'`")
    return re.sub(r"[.!,;:]+$", "", v).strip()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# (pattern on the sentence without its lead-in words, topic, builder)
_FACT_RULES: list[tuple[re.Pattern, str, object]] = [
    (re.compile(r"^my name is (?P<v>.+)$", re.I), "identity", lambda m: f"Name is {_name(m)}"),
    (re.compile(r"^(?:i am|i'm) called (?P<v>.+)$", re.I), "identity",
     lambda m: f"Name is {_name(m)}"),
    (re.compile(r"^(?:you can |please )?call me (?P<v>.+)$", re.I), "identity",
     lambda m: f"Prefers to be called {_name(m)}"),
    (re.compile(r"^my role is (?P<v>.+)$", re.I), "identity",
     lambda m: f"Role is {third_person(_clean_value(m['v']))}"),
    (re.compile(r"^i work (?P<v>(?:as|at|for|on|in) .+)$", re.I), "identity",
     lambda m: f"Works {third_person(_clean_value(m['v']))}"),
    (re.compile(r"^(?:i|we) (?P<adv>always|never) (?P<verb>[a-z]+)\b(?P<rest>.*)$", re.I), "rules",
     lambda m: _habit(m)),
    (re.compile(r"^(?P<adv>always|never) (?P<v>.+)$", re.I), "rules",
     lambda m: f"{_cap(m['adv'].lower())} {third_person(_clean_value(m['v']))}"),
    (re.compile(r"^i(?:'d| would)? (?:really |strongly |generally |usually )?prefer (?P<v>.+)$", re.I),
     "preferences", lambda m: f"Prefers {third_person(_clean_value(m['v']))}"),
    (re.compile(r"^(?:i|we) (?:mostly |usually |mainly |only )?use (?P<v>.+)$", re.I), "tools",
     lambda m: f"Uses {third_person(_clean_value(m['v']))}"),
    (re.compile(r"^(?:i am|i'm) using (?P<v>.+)$", re.I), "tools",
     lambda m: f"Uses {third_person(_clean_value(m['v']))}"),
]


def _habit(m: re.Match) -> str:
    # "I always use tabs" -> "Always uses tabs"
    rest = third_person(_clean_value(m["rest"]))
    return f"{_cap(m['adv'].lower())} {conjugate(m['verb'])} {rest}".strip()


def _name(m: re.Match) -> str:
    v = _clean_value(m["v"])
    # "My name is Gus and I deploy on Fridays": the name is the first clause
    v = re.split(r"\s+(?:and|but)\s+|,", v)[0].strip()
    return v


def fact_from_sentence(sentence: str, seq: int = -1) -> Fact | None:
    s = _LEAD.sub("", sentence.strip()).strip()
    if s.endswith("?"):
        return None  # "Do I always use tabs?" is a question, not a statement
    for pattern, topic, build in _FACT_RULES:
        m = pattern.match(s)
        if m:
            text = _clean_value(build(m))  # type: ignore[operator]
            if len(text.split()) < 2 or len(text) > 300:
                return None
            return Fact(topic, _cap(text), seq)
    return None


def fact_key(text: str) -> str:
    """What makes two facts the same: a later one with the same key replaces the earlier."""
    low = text.lower().strip()
    for prefix, key in (("name is ", "name"), ("prefers to be called ", "call-me"),
                        ("role is ", "role")):
        if low.startswith(prefix):
            return key
    return " ".join(_words(low))


def merge_facts(existing: str | None, topic: str, facts: list[Fact]) -> str | None:
    """The topic file with `facts` added; None when nothing changes.

    A fact already there (same words) is left alone; one with the same key (a new name) replaces
    the old line; others are appended to the bullet list.
    """
    title = TOPIC_TITLES.get(topic, topic.replace("-", " ").title())
    lines = (existing or f"# {title}\n").splitlines()
    changed = existing is None
    for fact in facts:
        bullet = f"- {fact.text}"
        keys = {i: fact_key(line[2:]) for i, line in enumerate(lines) if line.startswith("- ")}
        norm = " ".join(_words(fact.text))
        if any(" ".join(_words(lines[i][2:])) == norm for i in keys):
            continue
        same = [i for i, k in keys.items() if k == fact.key]
        if same:
            lines[same[-1]] = bullet
        else:
            last = max(keys) if keys else None
            if last is None:
                # after the heading and one blank line
                while lines and not lines[-1].strip():
                    lines.pop()
                lines += ["", bullet]
            else:
                lines.insert(last + 1, bullet)
        changed = True
    if not changed:
        return None
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------
# tasks and outcomes

_FEEDBACK_POS = {
    "thanks", "thank", "ty", "great", "perfect", "awesome", "nice", "cool", "ok", "okay",
    "works", "worked", "good", "fine", "lgtm", "yes", "yep", "yeah", "done", "excellent",
    "correct", "right", "exactly", "success", "succeeded", "brilliant", "ship",
}
_FEEDBACK_NEG = {
    "failed", "fails", "fail", "failing", "error", "errors", "broken", "broke", "wrong", "no",
    "nope", "didn't", "doesn't", "isn't", "wasn't", "not", "unfortunately", "sadly", "crashed",
}
_FILLER = {
    "that", "that's", "it", "it's", "this", "the", "was", "is", "so", "much", "very", "all",
    "now", "really", "you", "a", "again", "still", "work", "working", "job", "looks", "look",
    "hmm", "well", "luck", "for", "me", "to", "with", "of", "up", "out", "seems", "there",
    "an", "just", "totally", "finally", "indeed", "sure", "got", "at", "and", "but", "too",
}
_NEG_PHRASE = re.compile(
    r"\b(fail(?:ed|s|ing|ure)?|error|errors|broken|broke|wrong|crash(?:ed)?|"
    r"did ?n[o']t work|does ?n[o']t work|is ?n[o']t working|not working|no luck|"
    r"did not work|does not work|still failing)\b", re.I)
_POS_PHRASE = re.compile(
    r"\b(thanks?|thank you|great|perfect|awesome|nice|works|worked|lgtm|looks good|"
    r"excellent|success|succeeded|well done|good job|correct)\b", re.I)

# what marks a reply as reporting a failure; the negated forms are removed first
_FAIL = re.compile(
    r"\b(errors?|failed|failure|fails?|failing|exception|traceback|timed out|timeout|"
    r"could ?n[o']t|unable to|can ?n[o']t|cannot|did ?n[o']t work|not working|crash(?:ed|es)?|"
    r"denied|refused|aborted|unsuccessful|panic(?:ked)?|segfault|fatal)\b", re.I)
_NOT_FAIL = re.compile(
    r"\b(no|zero|0|without(?: any)?|free of|never) (errors?|failures?|exceptions?|issues?|"
    r"problems?|warnings?)\b|\berror[- ]free\b|\b(did ?n[o']t|did not|never|won't|will not|"
    r"does ?n[o']t|does not) (fail|crash|time out)\b|\bno longer fail\w*\b|\bif (it|this) fails\b|"
    r"\bin case of (errors?|failure)\b|\bfixed the (errors?|failure|exception)\b",
    re.I)


def is_feedback(sentence: str) -> bool:
    """A short reaction ("thanks, that worked", "it still fails") rather than a new request."""
    words = _words(sentence)
    if not words or "?" in sentence:
        return False
    feedback = _FEEDBACK_POS | _FEEDBACK_NEG
    if not any(w in feedback for w in words):
        return False
    return all(w in feedback or w in _FILLER for w in words)


def feedback_polarity(text: str) -> str | None:
    if _NEG_PHRASE.search(text):
        return "failed"
    if _POS_PHRASE.search(text) or re.search(r"\b(ok|okay|yes|yep|done)\b", text, re.I):
        return "success"
    return None


def _greeting(sentence: str) -> bool:
    words = _words(sentence)
    return bool(words) and all(w in {"hi", "hello", "hey", "there", "good", "morning",
                                     "afternoon", "evening", "again"} for w in words)


@dataclass
class UserTurn:
    """A user message split into what it asks, what it states and how it reacts."""

    seq: int
    request: list[str] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)


def classify_user(msg: Msg) -> UserTurn:
    turn = UserTurn(msg.seq)
    for s in sentences(msg.text):
        fact = fact_from_sentence(s, msg.seq)
        if fact is not None:
            turn.facts.append(fact)
            # "Always use blue-green deployments" is both a standing rule and an instruction,
            # but on its own it is not a task with an outcome
        elif is_feedback(s):
            turn.feedback.append(s)
        elif not _greeting(s):
            turn.request.append(s)
    return turn


def failure_text(text: str) -> str | None:
    """The sentence of `text` that reports a failure, if one does."""
    for s in sentences(text):
        if _FAIL.search(_NOT_FAIL.sub(" ", s)):
            return s
    return None


@dataclass
class RuleTask:
    seq: int  # the request message: a task's identity across runs
    description: str
    status: str  # running | success | failed
    first_seq: int
    last_seq: int
    summary: str = ""
    decisions: list[str] = field(default_factory=list)
    learnings: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed")


def describe(request: list[str], limit: int = 120) -> str:
    text = " ".join(request).strip()
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"^(?:(?:please|can you|could you|would you|kindly|now|then|next|also|and)"
                  r"[\s,]+)+", "", text, flags=re.I)
    text = text.rstrip("?.! ")
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0]
        text = cut + "…"
    return _cap(text) or "Request"


def _first_sentences(text: str, limit: int = 220) -> str:
    out = ""
    for s in sentences(text):
        if out and len(out) + len(s) + 1 > limit:
            break
        out = f"{out} {s}".strip()
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + "…"
    return out


def analyze(msgs: list[Msg], final: bool) -> tuple[list[RuleTask], list[Fact]]:
    """Tasks and facts found in `msgs` (in seq order).

    A task is finished when a later request follows it, when the user reacted to it, or when
    `final` is set (the session ended or someone asked to flush); otherwise it is running.
    """
    turns: dict[int, UserTurn] = {m.seq: classify_user(m) for m in msgs if m.role == "user"}
    facts = [f for t in turns.values() for f in t.facts]
    starts = [i for i, m in enumerate(msgs) if m.role == "user" and turns[m.seq].request]
    tasks: list[RuleTask] = []
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(msgs)
        req = msgs[i]
        after = msgs[i + 1:end]
        turn = turns[req.seq]
        task = RuleTask(req.seq, describe(turn.request), "running", req.seq,
                        after[-1].seq if after else req.seq)
        task.preferences = [f.text for f in turn.facts]
        reactions = [fb for m in after if m.role == "user" for fb in turns[m.seq].feedback]
        if n + 1 < len(starts):
            # "Thanks! Now roll back staging": the thanks is about this task
            reactions += turns[msgs[starts[n + 1]].seq].feedback
        _judge(task, after, reactions)
        reacted = bool(reactions)
        if n + 1 < len(starts) or final or reacted:
            if task.status == "running":
                task.status = "success"
            last = after[-1] if after else req
            task.finished_at = last.at
        else:
            task.status = "running"
        tasks.append(task)
    return tasks, facts


def _judge(task: RuleTask, after: list[Msg], feedback: list[str]) -> None:
    replies = [m for m in after if m.role == "assistant" and m.text.strip()]
    tools_used: list[str] = []
    for m in after:
        for name, _args in m.tool_calls:
            if name not in tools_used:
                tools_used.append(name)
    final_reply = replies[-1].text if replies else ""
    verdict, reason = None, None
    # the user's own reaction counts most; the last one wins
    for fb in feedback:
        pol = feedback_polarity(fb)
        if pol:
            verdict, reason = pol, fb
    if verdict is None and final_reply:
        why = failure_text(final_reply)
        verdict, reason = ("failed", why) if why else ("success", None)
    if verdict is None:
        tool_out = [m for m in after if m.role == "tool"]
        why = next((w for w in (failure_text(m.text) for m in tool_out) if w), None)
        verdict, reason = ("failed", why) if why else ("success", None)
    task.status = verdict
    task.summary = _first_sentences(final_reply) if final_reply else "No reply was recorded."
    if tools_used:
        task.decisions.append("Used " + ", ".join(tools_used))
    if verdict == "failed":
        if reason:
            task.learnings.append(f"Failed because: {_first_sentences(reason, 200)}")
        if not final_reply and reason:
            task.summary = _first_sentences(reason)
    elif feedback and reason:
        task.learnings.append(f"The user confirmed the result (\"{_first_sentences(reason, 120)}\")")


# ------------------------------------------------------------------------------------------
# daily logs

def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def daily_entry(task: RuleTask, at: datetime) -> str:
    decisions = "; ".join(task.decisions + [f"User said: {p}" for p in task.preferences])
    learnings = "; ".join(task.learnings) or (
        "Worked as done; repeat the approach for similar requests"
        if task.status == "success" else "Find the cause before retrying")
    return (
        f"## [{at:%H:%M}] Task: {_one_line(task.description)}\n"
        f"- **Outcome**: {task.status}\n"
        f"- **Summary**: {_one_line(task.summary)}\n"
        f"- **Key Decisions**: {_one_line(decisions) or 'None recorded'}\n"
        f"- **Learnings**: {_one_line(learnings)}\n"
    )


def daily_log_name(day: str, part: int = 1) -> str:
    """`2026-11-22.md`, then `2026-11-22-2.md`, ... once a part reaches the size cap."""
    return f"{day}.md" if part == 1 else f"{day}-{part}.md"


def add_daily_entry(existing: str | None, day: str, entry: str, part: int = 1) -> str | None:
    """The day's file with `entry` appended; None if an entry with that heading is there."""
    heading = entry.splitlines()[0]
    if existing is None or not existing.strip():
        title = day if part == 1 else f"{day} (part {part})"
        return f"# {title}\n\n{entry}"
    if any(line.strip() == heading for line in existing.splitlines()):
        return None
    return existing.rstrip("\n") + "\n\n" + entry
