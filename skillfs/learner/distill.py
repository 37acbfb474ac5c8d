"""Distillation: one model call turns a finished task into a lesson for the skill writer."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from . import rules
from .extract import Task, prompt
from .llm import LLM, Tool, run_tools
from .view import Msg, render


@dataclass
class Lesson:
    """What the skill writer gets: one finished task (or a session's stated facts)."""

    session_id: str
    task_id: str | None
    kind: str  # success | failure | facts | preferences | skip
    task: str  # the request, or "" for facts stated outside a task
    outcome: str | None  # success | failed | None
    at: datetime  # when the task finished
    fields: dict[str, Any] = field(default_factory=dict)
    preferences: list[str] = field(default_factory=list)
    # the rules learner passes what it derived itself (RuleTask, facts)
    rule_task: Any = None
    facts: list[Any] = field(default_factory=list)
    # its row in the store's lessons table
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def payload(self) -> dict[str, Any]:
        """Everything the writer needs, as JSON-ready data (kept in the store)."""
        rule_task = None
        if self.rule_task is not None:
            rule_task = asdict(self.rule_task)
            at = rule_task["finished_at"]
            rule_task["finished_at"] = at.isoformat() if at is not None else None
        return {"kind": self.kind, "task": self.task, "outcome": self.outcome,
                "at": self.at.isoformat(), "fields": self.fields,
                "preferences": self.preferences, "rule_task": rule_task,
                "facts": [asdict(f) for f in self.facts]}

    @classmethod
    def from_payload(cls, id: str, session_id: str, task_id: str | None,
                     payload: dict[str, Any]) -> "Lesson":
        rule_task = payload.get("rule_task")
        if rule_task is not None:
            at = rule_task.get("finished_at")
            rule_task = rules.RuleTask(**{
                **rule_task, "finished_at": datetime.fromisoformat(at) if at else None})
        return cls(session_id, task_id, payload["kind"], payload["task"], payload["outcome"],
                   datetime.fromisoformat(payload["at"]), dict(payload.get("fields") or {}),
                   list(payload.get("preferences") or []), rule_task,
                   [rules.Fact(**f) for f in payload.get("facts") or []], id=id)

    def describe(self, n: int) -> str:
        head = f"R{n}"
        if self.task:
            head += f" — task: {self.task} — outcome: {self.outcome} — finished {self.at:%Y-%m-%d %H:%M}"
        else:
            head += f" — stated by the user, {self.at:%Y-%m-%d %H:%M}"
        lines = [head, f"  kind: {self.kind}"]
        for k, v in self.fields.items():
            if isinstance(v, list):
                v = "; ".join(str(x) for x in v)
            if v:
                lines.append(f"  {k.replace('_', ' ')}: {v}")
        if self.preferences:
            lines.append("  user preferences: " + "; ".join(self.preferences))
        return "\n".join(lines)


class ReportSuccess(BaseModel):
    goal: str = Field(min_length=1)
    approach: str = Field(min_length=1, description="what was done that worked")
    key_decisions: list[str] = Field(default_factory=list)
    pattern: str = Field("", description="the general lesson, reusable elsewhere")
    applies_when: str = ""


class ReportFailure(BaseModel):
    goal: str = Field(min_length=1)
    failure_point: str = Field(min_length=1, description="where it went wrong")
    flawed_reasoning: str = ""
    should_have_done: str = ""
    prevention: str = Field("", description="a principle that prevents it next time")
    applies_when: str = ""


class ReportFacts(BaseModel):
    facts: list[str] = Field(min_length=1)


class Skip(BaseModel):
    reason: str = Field(min_length=1)


async def distill_task(llm: LLM, session_id: str, task: Task, msgs: list[Msg],
                       at: datetime, max_turns: int = 4) -> Lesson:
    lesson = Lesson(session_id, task.id, "skip", task.description, task.status, at,
                    preferences=list(task.preferences))

    def reporter(kind: str):
        async def run(a: BaseModel) -> None:
            lesson.kind = kind
            lesson.fields = a.model_dump()
            return None
        return run

    tools = [
        Tool("report_success", "The task succeeded; record what worked.", ReportSuccess,
             reporter("success"), final=True),
        Tool("report_failure", "The task failed; record why and how to avoid it.",
             ReportFailure, reporter("failure"), final=True),
        Tool("report_facts", "The task holds plain facts worth remembering.", ReportFacts,
             reporter("facts"), final=True),
        Tool("skip", "Nothing in this task is worth keeping.", Skip, reporter("skip"),
             final=True),
    ]
    info = [f"Task: {task.description}", f"Outcome: {task.status}"]
    info += [f"Progress: {p}" for p in task.progress]
    info += [f"User preference: {p}" for p in task.preferences]
    messages = [{"role": "system", "content": prompt("distill")},
                {"role": "user", "content": "\n".join(info) + "\n\nMessages:\n" + render(msgs)}]
    await run_tools(llm, messages, tools, max_turns=max_turns)
    return lesson
