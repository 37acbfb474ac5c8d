"""Task extraction with a model: the model edits a task list through tools.

The system prompt and the tool list never change, and the session's fixed parts (its task
criteria, the facts already known) open the user message, so that an endpoint's prompt cache
covers them from one call to the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from pydantic import BaseModel, Field

from .llm import LLM, Tool, ToolError, run_tools
from .usage import Usage
from .view import Msg, render

Status = Literal["pending", "running", "success", "failed"]
FINISHED = ("success", "failed")


def prompt(name: str) -> str:
    return resources.files("skillfs").joinpath("prompts", f"{name}.md").read_text("utf-8")


@dataclass
class Task:
    """The learner's working copy of a task row."""

    id: str
    ord: int
    description: str
    status: str = "running"
    progress: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    learned: bool = False
    dirty: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Extraction:
    tasks: list[Task]
    # preferences stated outside any task ("My name is Gus")
    preferences: list[str] = field(default_factory=list)


class InsertTask(BaseModel):
    description: str = Field(min_length=1, max_length=500,
                             description="the request in the user's own words")
    status: Status = "running"
    first_message: int | None = Field(None, description="id of the task's first message")
    last_message: int | None = Field(None, description="id of the task's last message so far")


class UpdateTask(BaseModel):
    task: int = Field(description="task number")
    description: str | None = Field(None, min_length=1, max_length=500)
    status: Status | None = None


class AttachMessages(BaseModel):
    task: int
    first_message: int
    last_message: int


class AddProgress(BaseModel):
    task: int
    note: str = Field(min_length=1, max_length=1000)


class RecordPreference(BaseModel):
    preference: str = Field(min_length=1, max_length=500,
                            description="a short third-person fact, e.g. 'Prefers tabs'")
    task: int | None = Field(None, description="the task it came up in, if any")


class Finish(BaseModel):
    pass


def _task_line(t: Task) -> str:
    span = f" messages {t.first_seq}-{t.last_seq}" if t.first_seq is not None else ""
    notes = "".join(f"\n    progress: {p}" for p in t.progress[-5:])
    return f"  task {t.ord} [{t.status}]{span}: {t.description}{notes}"


def _plain(fact: str) -> str:
    return " ".join(fact.lower().strip(" .-*").split())


async def extract_tasks(llm: LLM, tasks: list[Task], new: list[Msg], *, final: bool,
                        context: list[Msg] | None = None, known: Sequence[str] = (),
                        criteria: str | None = None, max_turns: int = 30,
                        usage: Usage | None = None) -> Extraction:
    """Update `tasks` (in place) from the new messages; return what changed. `known` are
    facts the space has recorded already, `criteria` how the project judges a task."""
    out = Extraction(tasks)
    known_plain = {_plain(f) for f in known}
    by_ord = {t.ord: t for t in tasks}
    seqs = [m.seq for m in (context or []) + new]
    lo, hi = (min(seqs), max(seqs)) if seqs else (0, -1)

    def open_task(n: int) -> Task:
        t = by_ord.get(n)
        if t is None:
            raise ToolError(f"there is no task {n}")
        if t.learned:
            raise ToolError(f"task {n} is done and already learned; it cannot change")
        return t

    def check_range(first: int | None, last: int | None) -> None:
        for v in (first, last):
            if v is not None and not lo <= v <= hi:
                raise ToolError(f"message id {v} is outside the messages shown ({lo}-{hi})")
        if first is not None and last is not None and last < first:
            raise ToolError("last_message comes before first_message")

    async def insert(a: InsertTask) -> str:
        check_range(a.first_message, a.last_message)
        n = max(by_ord, default=0) + 1
        t = Task(str(uuid.uuid4()), n, a.description.strip(), a.status,
                 first_seq=a.first_message,
                 last_seq=a.last_message if a.last_message is not None else a.first_message,
                 dirty=True)
        tasks.append(t)
        by_ord[n] = t
        return f"created task {n}"

    async def update(a: UpdateTask) -> str:
        t = open_task(a.task)
        if a.description:
            t.description = a.description.strip()
        if a.status:
            t.status = a.status
        t.dirty = True
        return f"task {t.ord} is now [{t.status}] {t.description}"

    async def attach(a: AttachMessages) -> str:
        t = open_task(a.task)
        check_range(a.first_message, a.last_message)
        t.first_seq = a.first_message if t.first_seq is None else min(t.first_seq, a.first_message)
        t.last_seq = a.last_message if t.last_seq is None else max(t.last_seq, a.last_message)
        t.dirty = True
        return f"task {t.ord} covers messages {t.first_seq}-{t.last_seq}"

    async def progress(a: AddProgress) -> str:
        t = open_task(a.task)
        t.progress.append(a.note.strip())
        t.dirty = True
        return "noted"

    async def preference(a: RecordPreference) -> str:
        text = a.preference.strip()
        if _plain(text) in known_plain:
            return "already known; not recorded again"
        if a.task is not None:
            t = open_task(a.task)
            if text not in t.preferences:
                t.preferences.append(text)
                t.dirty = True
        elif text not in out.preferences:
            out.preferences.append(text)
        return "recorded"

    async def finish(_a: Finish) -> str | None:
        if final:
            still = [t.ord for t in tasks if not t.learned and not t.finished]
            if still:
                return (f"the conversation has ended, so tasks {still} must be marked success "
                        "or failed before you finish")
        return None

    tools = [
        Tool("insert_task", "Add a new task (one user request).", InsertTask, insert),
        Tool("update_task", "Change a task's status or description.", UpdateTask, update),
        Tool("attach_messages", "Add a range of message ids to a task.", AttachMessages, attach),
        Tool("add_progress", "Append a short progress note to a task.", AddProgress, progress),
        Tool("record_preference", "Record a fact or preference the user stated explicitly.",
             RecordPreference, preference),
        Tool("finish", "The task list is up to date.", Finish, finish, final=True),
    ]
    messages = [{"role": "system", "content": prompt("extract")},
                {"role": "user", "content": _extract_input(tasks, new, final, context,
                                                           known, criteria)}]
    await run_tools(llm, messages, tools, max_turns=max_turns, usage=usage)
    return out


def _extract_input(tasks: list[Task], new: list[Msg], final: bool, context: list[Msg] | None,
                   known: Sequence[str], criteria: str | None) -> str:
    parts = []
    if criteria:
        parts.append(f"Task criteria (how this project judges a task):\n{criteria.strip()}")
    if known:
        parts.append("Facts about the user already recorded (known):\n"
                     + "\n".join(f"- {f}" for f in known))
    done = [t for t in tasks if t.learned]
    open_ = [t for t in tasks if not t.learned]
    listing = ["Tasks already done and learned (context only):"]
    listing += [_task_line(t) for t in done[-10:]] or ["  (none)"]
    listing += ["Open tasks:"] + ([_task_line(t) for t in open_] or ["  (none)"])
    parts.append("\n".join(listing))
    if context:
        parts.append("Earlier messages (context):\n" + render(context, 1500, 400))
    parts.append("New messages:\n" + (render(new) if new else "(none)"))
    parts.append("The conversation has ended." if final else
                 "The conversation may continue; leave tasks open when their outcome is not "
                 "known yet.")
    return "\n\n".join(parts)
