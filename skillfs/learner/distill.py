"""Distillation: one model call turns a finished task into a lesson for the skill writer.

The model sees the space's skill descriptions so that it can name the skill a lesson belongs
in and scope the lesson to where it holds. A failed task must give a failure report: what
went wrong is the most useful thing to keep, so the skip tool is not offered for it. The
task's messages are shown shorter than to extraction (progress notes carry the detail).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from . import rules
from .extract import Task, prompt
from .llm import LLM, Tool, run_tools
from .usage import Usage
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
    # files (skill/path) an earlier writer run changed for it and stopped before it was done
    recorded: list[str] = field(default_factory=list)

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
                     payload: dict[str, Any]) -> Lesson:
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
            head += (f" — task: {self.task} — outcome: {self.outcome}"
                     f" — finished {self.at:%Y-%m-%d %H:%M}")
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
        if self.recorded:
            lines.append("  already recorded in part by an earlier run that stopped: "
                         + ", ".join(self.recorded)
                         + " (read them and record only what is missing)")
        return "\n".join(lines)


_SCOPE = ("where the lesson holds: the system, tool, project or kind of task it was "
          "learned on; as narrow as the evidence, never 'always'")
_SKILL = "the listed skill it belongs in, or a broad domain name (e.g. deployment) if none fits"


class ReportSuccess(BaseModel):
    goal: str = Field(min_length=1, description="what the user wanted, in one sentence")
    approach: str = Field(min_length=1, description="what was done that worked")
    key_decisions: list[str] = Field(default_factory=list)
    principle: str = Field("", description="the reusable strategy behind it")
    steps: list[str] = Field(default_factory=list, description="the procedure, if there is one")
    applies_when: str = Field(min_length=1, description=_SCOPE)
    skill: str = Field("", description=_SKILL)


class ReportFailure(BaseModel):
    goal: str = Field(min_length=1, description="what the user wanted, in one sentence")
    symptom: str = Field(min_length=1, description="what the failure looked like")
    root_cause: str = Field("", description="the wrong assumption or action behind it")
    correct_approach: str = Field("", description="what should have been done instead")
    prevention: str = Field("", description="the rule that prevents it next time")
    applies_when: str = Field(min_length=1, description=_SCOPE)
    skill: str = Field("", description=_SKILL)


class ReportFacts(BaseModel):
    facts: list[str] = Field(min_length=1)


class Skip(BaseModel):
    reason: str = Field(min_length=1)


async def distill_task(llm: LLM, session_id: str, task: Task, msgs: list[Msg],
                       at: datetime, *, skills: str = "", max_turns: int = 4,
                       usage: Usage | None = None) -> Lesson:
    """`skills` lists the space's skills, one "name: description" a line."""
    lesson = Lesson(session_id, task.id, "skip", task.description, task.status, at,
                    preferences=list(task.preferences))

    def reporter(kind: str):
        async def run(a: BaseModel) -> None:
            lesson.kind = kind
            lesson.fields = a.model_dump(exclude_defaults=True)
            return None
        return run

    if task.status == "failed":
        tools = [Tool("report_failure", "Record why the task failed and how to avoid it.",
                      ReportFailure, reporter("failure"), final=True)]
    else:
        tools = [
            Tool("report_success", "Record what worked.", ReportSuccess, reporter("success"),
                 final=True),
            Tool("report_facts", "The task taught no way of working, only plain facts.",
                 ReportFacts, reporter("facts"), final=True),
            Tool("skip", "Nothing in this task is worth keeping.", Skip, reporter("skip"),
                 final=True),
        ]
    info = [f"Skills in this space:\n{skills or '(none)'}", "",
            f"Task: {task.description}", f"Outcome: {task.status}"]
    info += [f"Progress: {p}" for p in task.progress]
    info += [f"User preference: {p}" for p in task.preferences]
    messages = [{"role": "system", "content": prompt("distill")},
                {"role": "user", "content": "\n".join(info) + "\n\nMessages:\n"
                 + render(msgs, 1500, 600)}]
    await run_tools(llm, messages, tools, max_turns=max_turns, usage=usage)
    return lesson
