"""Tasks: which user messages ask for something, and what became of each request.

A user message is split into sentences: statements of fact, reactions to the last result,
questions, greetings and requests. Only requests start a task; a reaction judges the task
before it (even one already written: the learner then rewrites its entry). Titles are the
request without its lead-in. Key Decisions and Learnings are the agent's own reasons
("because …", "instead …", "next time …", "should …"), never boilerplate; with none, none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ..view import Msg
from . import outcomes
from .facts import Fact, facts_from_sentence
from .text import cap, first_sentences, is_english, one_line, sentences, strip_lead, words

_GREETING = frozenset("hi hello hey there good morning afternoon evening again all folks team "
                      "thanks thank you so much a lot bye cheers".split())
# what a title, summary or reason must stop before: a credential given with its value
_SECRETISH = re.compile(r"\b(password|passphrase|passwd|secret|token|api[ -]?key|credentials?|"
                        r"private key|bearer)\b(?:[^.;:=]{0,24}?\b(?:is|was|are)\b|\s*[:=]|"
                        r"\s+\S*\d)", re.I)
# an instruction about memory itself ("never store my password") is no task and no fact
_ABOUT_MEMORY = re.compile(r"^(?:please )?(?:never|don'?t|do not)\s+(?:ever\s+)?(?:store|save|"
                           r"remember|keep|record|write down|log)\b", re.I)
# a message that only speaks of the user ("I'm on call today") asks for nothing
_ABOUT_ME = re.compile(r"^(?:i|i'm|i am|i've|we|we're|my|our)\b", re.I)
_REQUEST_LEAD = re.compile(
    r"^(?:(?:please|kindly|can you|could you|would you|will you|i need you to|i want you to|"
    r"i'?d like you to|go ahead and|now|then|next|also|and)\b[\s,]*)+", re.I)
_DECISION = re.compile(r"\b(because|instead|rather than|so that|chose|decided|went with|opted|"
                       r"in order to|since the)\b", re.I)
_LEARNING = re.compile(r"\b(next time|should|fail\w* because|lesson|to avoid|make sure|"
                       r"remember to|root cause|the cause was|turned out|the problem was|"
                       r"the issue was|caused by)\b", re.I)
MAX_REASONS = 2


@dataclass
class UserTurn:
    """A user message split into what it asks, what it states and how it reacts."""

    seq: int
    request: list[str] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    # (sentence, "success" | "failed") said before any request in the message: about the
    # task before it
    reactions: list[tuple[str, str]] = field(default_factory=list)


def _greeting(sentence: str) -> bool:
    ws = words(sentence)
    return bool(ws) and all(w in _GREETING for w in ws)


def classify_user(msg: Msg) -> UserTurn:
    turn = UserTurn(msg.seq)
    if not is_english(msg.text):
        return turn  # the rules cannot tell what it asks or states: nothing, not nonsense
    for s in sentences(msg.text):
        facts = facts_from_sentence(s, msg.seq)
        if facts:
            turn.facts.extend(facts)
            # "Always use blue-green deployments" is a standing rule, not a task
            continue
        verdict = outcomes.reaction(s)
        if verdict is not None and turn.request:
            # after the request it is politeness ("… Thanks!") or part of the problem
            if verdict == "failed":
                turn.request.append(s)
        elif verdict is not None:
            said, asked = _split_reaction(s)
            turn.reactions.append((said, verdict))
            if asked:
                turn.request.append(asked)
        elif (_greeting(s) or outcomes.is_question(s) or not is_english(s)
              or _ABOUT_MEMORY.match(strip_lead(s))):
            continue  # asks for nothing the rules can name
        elif words(s):
            turn.request.append(s)
    if turn.request and all(_ABOUT_ME.match(strip_lead(s)) and not outcomes.is_imperative(s)
                            for s in turn.request):
        turn.request = []
    return turn


_CLAUSE = re.compile(r",\s*|;\s*|\s+(?:so|and|but|then)\s+", re.I)


def _split_reaction(sentence: str) -> tuple[str, str]:
    """"That broke the build, revert it": the reaction, and the request that follows it."""
    parts = _CLAUSE.split(sentence)
    for i in range(1, len(parts)):
        if outcomes.is_imperative(parts[i]) and not outcomes.reaction(parts[i]):
            return ", ".join(parts[:i]), " ".join(parts[i:])
    return sentence, ""


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
    # the entry was written before: a later reaction changed it, so it is rewritten
    updated: bool = False

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed")


def describe(request: list[str], limit: int = 120) -> str:
    """The request as a title: its imperative sentences, without lead-ins or credentials."""
    asks = [s for s in request if outcomes.is_imperative(s)] or request
    text = one_line(" ".join(_REQUEST_LEAD.sub("", strip_lead(s)) for s in asks))
    secret = _SECRETISH.search(text)
    if secret:
        text = re.split(r"[,;:(]\s*[^,;:(]*$", text[:secret.start()])[0]
        text = re.sub(r"(?:\s*\b(?:with|and|using|the|my|our|a|an|is|to|for|via)\b)+\s*$", "",
                      text.strip(" ,;:"), flags=re.I)
    text = text.strip().rstrip("?.!,;: ")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "…"
    return cap(text) or "Request"


def _clean_sentences(text: str) -> list[str]:
    return [s for s in sentences(text) if not _SECRETISH.search(s) and is_english(s)]


def _reasons(replies: list[Msg]) -> tuple[list[str], list[str]]:
    decisions: list[str] = []
    learnings: list[str] = []
    for m in replies:
        for s in _clean_sentences(m.text):
            if s.endswith("?") or len(s) > 300:
                continue
            if _LEARNING.search(s) and s not in learnings:
                learnings.append(s)
            elif _DECISION.search(s) and s not in decisions:
                decisions.append(s)
    return decisions[-MAX_REASONS:], learnings[-MAX_REASONS:]


def judge(task: RuleTask, after: list[Msg], reactions: list[tuple[str, str]]) -> None:
    """Set the task's outcome and entry text from every signal in `after` and `reactions`."""
    verdict, why = None, None
    diagnosis = outcomes.is_diagnosis(task.description)
    for m in after:  # in order: the latest signal wins
        if m.role == "tool":
            verdict, why = outcomes.tool_verdict(m, diagnosis)
        elif m.role == "assistant" and m.text.strip():
            said, reason = outcomes.reply_verdict(m.text, diagnosis)
            if said:
                verdict, why = said, reason
    replies = [m for m in after if m.role == "assistant" and m.text.strip()]
    final_reply = " ".join(_clean_sentences(replies[-1].text)) if replies else ""
    task.summary = first_sentences(final_reply) or (
        one_line(why) if verdict == "failed" and why and not _SECRETISH.search(why)
        else "No reply was recorded.")
    if reactions:
        said, verdict = reactions[-1]
        if verdict == "failed" and not _SECRETISH.search(said):
            task.summary = one_line(f"{task.summary} The user then said: \"{said}\"")
    task.status = verdict or "success"
    task.decisions, task.learnings = _reasons(replies)


def analyze(msgs: list[Msg], final: bool, idle: bool = False) -> tuple[list[RuleTask], list[Fact]]:
    """Tasks and facts found in `msgs` (in seq order).

    A task is finished when a later request follows it, when the user reacted to it, when
    `final` is set (the session ended or someone asked to flush), or when `idle` is set and
    the agent's last reply closes it; otherwise it is running.
    """
    turns = {m.seq: classify_user(m) for m in msgs if m.role == "user"}
    _reports_are_requests(msgs, turns)
    facts = [f for t in turns.values() for f in t.facts]
    starts = [i for i, m in enumerate(msgs) if m.role == "user" and turns[m.seq].request]
    tasks: list[RuleTask] = []
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(msgs)
        req, after = msgs[i], msgs[i + 1:end]
        turn = turns[req.seq]
        task = RuleTask(req.seq, describe(turn.request), "running", req.seq,
                        after[-1].seq if after else req.seq)
        task.preferences = [f.text for f in turn.facts if f.text]
        reactions = [r for m in after if m.role == "user" for r in turns[m.seq].reactions]
        if n + 1 < len(starts):
            # "Thanks! Now roll back staging": the thanks is about this task
            reactions += turns[msgs[starts[n + 1]].seq].reactions
        judge(task, after, reactions)
        closed = bool(reactions) or n + 1 < len(starts) or final or (idle and answered(after))
        if closed:
            task.finished_at = (after[-1] if after else req).at
        else:
            task.status = "running"
        tasks.append(task)
    return tasks, facts


def _reports_are_requests(msgs: list[Msg], turns: dict[int, UserTurn]) -> None:
    """"My tests fail on CI" before any task reacts to nothing: it reports a problem to fix."""
    for m in msgs:
        turn = turns.get(m.seq) if m.role == "user" else None
        if turn is None:
            continue
        if turn.request:
            return
        failed = [s for s, verdict in turn.reactions if verdict == "failed"]
        if failed and not outcomes.resigned(" ".join(failed)):
            turn.request, turn.reactions = failed, []
            return


def answered(after: list[Msg]) -> bool:
    """The agent answered last, in words, with no tool call left open: a session idle after
    that looks finished."""
    return bool(after) and after[-1].role == "assistant" and bool(after[-1].text.strip()) \
        and not after[-1].tool_calls
