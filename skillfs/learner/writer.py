"""Skill writing: the agent that edits a space's files, and the rules learner's writer.

Every edit goes through the store as author "learner" with the session and task that caused
it. Edits are recomputed against the file's current text when the store reports that the
version changed underneath (a person saving the same file), so their change survives.

The agent's context is laid out for an endpoint's prompt cache: the fixed system prompt and
tools first, then the space's skills (they change rarely), then the lessons. No clock time
appears in it: each lesson carries its own date, the session's rather than today's. The
files the agent is likely to change by replacing lines (the user's facts) are shown with it,
so it edits without a turn spent reading; an append needs no read at all.

What the learner adds passes the secret scanner first (the rest of the file is the people's
own and stays as they wrote it); the version's reason names what was redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

from .. import skillmd
from ..errors import (
    Exists,
    Forbidden,
    Invalid,
    NotFound,
    SkillfsError,
    StaleVersion,
    TooBig,
)
from ..names import check_rel_path
from ..redact import note, redact
from . import rules
from .distill import Lesson
from .extract import prompt
from .llm import LLM, Tool, ToolError, run_tools
from .usage import Usage

log = logging.getLogger("skillfs.learner.writer")

AUTHOR = "learner"
SKILL_MD = "SKILL.md"
# how often one edit is recomputed when the file keeps changing underneath
EDIT_ATTEMPTS = 5
MAX_READ = 60_000
# text of the facts files shown to the agent up front, at most (characters)
SHOWN_FACTS = 6000


def _separator(old: str, text: str) -> str:
    """What goes between a file and appended text: nothing after a blank line, a line break
    when a list goes on (a fact added to a facts file), else a blank line (a new entry)."""
    if not old or old.endswith("\n\n"):
        return ""
    last = old.rstrip("\n").rsplit("\n", 1)[-1].lstrip()
    bullet = ("- ", "* ")
    if old.endswith("\n") and last.startswith(bullet) and text.lstrip().startswith(bullet):
        return ""
    return "\n" if old.endswith("\n") else "\n\n"


def _check_skill_md(old: str | None, new: str, skill_name: str) -> None:
    """The learner never makes a SKILL.md break the Agent Skills format; one that a person
    gave keys of their own (Claude Code's) it only keeps valid."""
    check = skillmd.parse_agent_skill
    if old is not None:
        try:
            skillmd.parse_agent_skill(old, skill_name)
        except Invalid:
            check = skillmd.parse
    try:
        check(new, skill_name)
    except Invalid as e:
        raise ToolError(f"SKILL.md would become invalid: {e.message}") from None


class ClaimLost(SkillfsError):
    """The daemon no longer holds the space's claim: another daemon may be writing it."""


class Edits:
    """Store edits for one space on behalf of a batch of lessons, each made only while
    `still_held()` says the space is still this daemon's to write."""

    def __init__(self, store: Any, space_id: str, lessons: list[Lesson],
                 still_held: Callable[[], bool] = lambda: True):
        self.store = store
        self.space_id = space_id
        self.lessons = lessons
        self.still_held = still_held
        # (skill, path) -> version the agent last read; used to refuse blind deletes
        self.seen: dict[tuple[str, str], int] = {}
        self.edits = 0

    # -- lookups -------------------------------------------------------------------------
    def skills(self) -> dict[str, Any]:
        return {s.name: s for s in self.store.list_space_skills(self.space_id)}

    def skill(self, name: str) -> Any:
        s = self.skills().get(name)
        if s is None:
            raise ToolError(f"there is no skill {name!r} in this space; skills: "
                            f"{', '.join(sorted(self.skills())) or '(none)'}")
        return s

    def attribution(self, result: int | None) -> dict[str, Any]:
        if result is None:
            if len(self.lessons) != 1:
                raise ToolError(f"pass result (1-{len(self.lessons)}): "
                                "which lesson this edit records")
            lesson = self.lessons[0]
        elif not 1 <= result <= len(self.lessons):
            raise ToolError(f"result must be between 1 and {len(self.lessons)}")
        else:
            lesson = self.lessons[result - 1]
        return {"author": AUTHOR, "session_id": lesson.session_id, "task_id": lesson.task_id}

    @staticmethod
    def path(path: str) -> str:
        try:
            return check_rel_path(path.strip())
        except Invalid as e:
            raise ToolError(e.message) from None

    # -- reads ---------------------------------------------------------------------------
    async def read(self, skill: Any, path: str) -> tuple[str, int]:
        try:
            fc = await self.store.read_file(skill.id, path)
        except NotFound:
            raise ToolError(f"{skill.name}/{path} does not exist") from None
        text = fc.content.decode("utf-8", "replace")
        self.seen[(skill.name, path)] = fc.version
        return text, fc.version

    # -- edits ---------------------------------------------------------------------------
    def check_claim(self) -> None:
        if not self.still_held():
            raise ClaimLost("the space's claim was lost; its next holder writes these lessons")

    async def rewrite(self, skill: Any, path: str, change: Callable[[str | None], str | None],
                      who: dict[str, Any], reason: str) -> str:
        """Apply `change` (old text or None -> new text, None = leave) to the current file,
        writing with the version it was computed from; redo it if that version is stale."""
        for _ in range(EDIT_ATTEMPTS):
            try:
                fc = await self.store.read_file(skill.id, path)
                old, version = fc.content.decode("utf-8", "replace"), fc.version
            except NotFound:
                old, version = None, 0
            new = change(old)
            if new is None:
                return "unchanged"
            if path == SKILL_MD:
                _check_skill_md(old, new, skill.name)
            self.check_claim()
            try:
                await self.store.write_file(skill.id, path, new.encode(), reason=reason,
                                            expect_version=version, **who)
            except StaleVersion:
                log.info("%s/%s changed during an edit; redoing it", skill.name, path)
                continue
            except Exists:
                if version == 0:
                    continue  # created meanwhile: redo against its text
                raise
            except TooBig as e:
                raise ToolError(f"{e.message}: {skill.name}/{path} is full; continue in a new "
                                "file as the skill's SKILL.md says (a daily log goes on in "
                                "YYYY-MM-DD-2.md, -3.md, ...)") from None
            except (Invalid, Forbidden) as e:
                raise ToolError(e.message) from None
            self.seen.pop((skill.name, path), None)
            self.edits += 1
            return "ok"
        raise ToolError(f"{skill.name}/{path} kept changing; read it again and retry")

    async def create(self, skill: Any, path: str, content: str, who: dict[str, Any]) -> str:
        clean = redact(content)
        content = clean.text

        def change(old: str | None) -> str | None:
            if old is not None:
                raise ToolError(f"{skill.name}/{path} already exists; read it and edit it")
            return content
        return await self.rewrite(skill, path, change, who,
                                  note("learner: create file", clean.kinds))

    async def replace(self, skill: Any, path: str, old_text: str, new_text: str,
                      who: dict[str, Any]) -> str:
        clean = redact(new_text)
        new_text = clean.text

        def change(old: str | None) -> str | None:
            if old is None:
                raise ToolError(f"{skill.name}/{path} does not exist")
            n = old.count(old_text)
            if n == 0:
                raise ToolError(f"the text to replace does not occur in {skill.name}/{path} "
                                "(it may have changed; read it again)")
            if n > 1:
                raise ToolError(f"the text to replace occurs {n} times in {skill.name}/{path}; "
                                "include more surrounding text so it occurs once")
            return old.replace(old_text, new_text, 1)
        return await self.rewrite(skill, path, change, who,
                                  note("learner: replace text", clean.kinds))

    async def append(self, skill: Any, path: str, text: str, who: dict[str, Any]) -> str:
        clean = redact(text)
        text = clean.text

        def change(old: str | None) -> str | None:
            if old is None:
                raise ToolError(f"{skill.name}/{path} does not exist; use create_file")
            return old + _separator(old, text) + text.rstrip("\n") + "\n"
        return await self.rewrite(skill, path, change, who,
                                  note("learner: append", clean.kinds))

    async def move(self, skill: Any, old: str, new: str, who: dict[str, Any]) -> str:
        if SKILL_MD in (old, new):
            raise ToolError("SKILL.md cannot be renamed or replaced by a move")
        self.check_claim()
        try:
            await self.store.move_file(skill.id, old, new, reason=f"learner: move {old} -> {new}",
                                       replace=False, **who)
        except (NotFound, Exists, Invalid, Forbidden) as e:
            raise ToolError(e.message) from None
        self.edits += 1
        return "ok"

    async def delete(self, skill: Any, path: str, who: dict[str, Any]) -> str:
        if path == SKILL_MD:
            raise ToolError("SKILL.md cannot be deleted")
        seen = self.seen.get((skill.name, path))
        if seen is None:
            raise ToolError(f"read {skill.name}/{path} before deleting it")
        self.check_claim()
        try:
            await self.store.delete_file(skill.id, path, reason="learner: delete",
                                         expect_version=seen, **who)
        except StaleVersion:
            self.seen.pop((skill.name, path), None)
            raise ToolError(f"{skill.name}/{path} changed since you read it; read it again "
                            "and decide again") from None
        except (NotFound, Forbidden) as e:
            raise ToolError(e.message) from None
        self.edits += 1
        return "ok"

    async def create_skill(self, content: str, who: dict[str, Any]) -> str:
        clean = redact(content)
        content = clean.text
        try:
            parsed = skillmd.parse_agent_skill(content)
        except Invalid as e:
            raise ToolError(f"invalid SKILL.md: {e.message}") from None
        self.check_claim()
        try:
            await self.store.create_skill(content, space_id=self.space_id,
                                          reason=note("learner: create skill", clean.kinds),
                                          **who)
        except (Exists, Invalid, TooBig) as e:
            raise ToolError(e.message) from None
        self.edits += 1
        return f"created skill {parsed.name}"


# ---------------------------------------------------------------------------------------
# the agent's tools

class SkillArg(BaseModel):
    skill: str = Field(description="skill name (its folder)")


class PathArg(SkillArg):
    path: str = Field(description="path relative to the skill folder, e.g. 2026-11-21.md")


class Attributed(BaseModel):
    result: int | None = Field(None, description="number of the lesson this edit records (R1 -> 1)")


class CreateFile(PathArg, Attributed):
    content: str


class ReplaceInFile(PathArg, Attributed):
    old_text: str = Field(min_length=1, description="text that occurs exactly once in the file")
    new_text: str


class AppendToFile(PathArg, Attributed):
    text: str = Field(min_length=1)


class MoveFile(SkillArg, Attributed):
    old_path: str
    new_path: str


class DeleteFile(PathArg, Attributed):
    pass


class CreateSkill(Attributed):
    skill_md: str = Field(
        description="the full SKILL.md: front matter (name: lowercase letters, digits and "
                    "hyphens, at most 64; description: what it holds and when to use it, at "
                    "most 1024 characters, no '<' or '>'; no other keys) and body")


class Finish(BaseModel):
    summary: str = ""


def skills_overview(edits: Edits, bodies: dict[str, str]) -> str:
    out = []
    for name, skill in sorted(edits.skills().items()):
        files = ", ".join(sorted(p for p in skill.files if p != SKILL_MD)) or "(no other files)"
        out.append(f"=== skill {name} ===\nfiles: {files}\n{bodies.get(name, '')}".rstrip())
    return "\n\n".join(out) or "(this space has no skills)"


async def shown_files(store: Any, skill: Any, limit: int = SHOWN_FACTS) -> str:
    """The text of a skill's files (SKILL.md aside), within `limit` characters in all."""
    out: list[str] = []
    left = limit
    for path in sorted(p for p in skill.files if p != SKILL_MD):
        try:
            text = (await store.read_file(skill.id, path)).content.decode("utf-8", "replace")
        except NotFound:
            continue
        if len(text) > left:
            break
        left -= len(text)
        out.append(f"--- {skill.name}/{path} ---\n{text.rstrip()}")
    return "\n\n".join(out)


async def write_with_agent(llm: LLM, store: Any, space_id: str, lessons: list[Lesson], *,
                           take_more: Callable[[], list[Lesson]] | None = None,
                           still_held: Callable[[], bool] = lambda: True,
                           max_turns: int = 40, usage: Usage | None = None) -> Edits:
    """Run the skill-writing agent over `lessons`; lessons that arrive while it works are
    handed to it (via `take_more`) before it may finish."""
    edits = Edits(store, space_id, lessons, still_held)

    async def get_skill(a: SkillArg) -> str:
        skill = edits.skill(a.skill)
        text, _ = await edits.read(skill, SKILL_MD)
        files = [f"  {p} ({n.size} bytes)" for p, n in sorted(skill.files.items())]
        return f"{text}\n\nfiles:\n" + "\n".join(files)

    async def read_file(a: PathArg) -> str:
        skill = edits.skill(a.skill)
        text, version = await edits.read(skill, edits.path(a.path))
        if len(text) > MAX_READ:
            text = text[:MAX_READ] + "\n…[cut]"
        return f"(version {version})\n{text}"

    async def create_file(a: CreateFile) -> str:
        return await edits.create(edits.skill(a.skill), edits.path(a.path), a.content,
                                  edits.attribution(a.result))

    async def replace_in_file(a: ReplaceInFile) -> str:
        return await edits.replace(edits.skill(a.skill), edits.path(a.path), a.old_text,
                                   a.new_text, edits.attribution(a.result))

    async def append_to_file(a: AppendToFile) -> str:
        return await edits.append(edits.skill(a.skill), edits.path(a.path), a.text,
                                  edits.attribution(a.result))

    async def move_file(a: MoveFile) -> str:
        return await edits.move(edits.skill(a.skill), edits.path(a.old_path),
                                edits.path(a.new_path), edits.attribution(a.result))

    async def delete_file(a: DeleteFile) -> str:
        return await edits.delete(edits.skill(a.skill), edits.path(a.path),
                                  edits.attribution(a.result))

    async def create_skill(a: CreateSkill) -> str:
        return await edits.create_skill(a.skill_md, edits.attribution(a.result))

    async def finish(_a: Finish) -> str | None:
        more = take_more() if take_more else []
        if not more:
            return None
        first = len(edits.lessons) + 1
        edits.lessons.extend(more)
        text = "\n\n".join(lesson.describe(first + i) for i, lesson in enumerate(more))
        return f"Not finished yet: more lessons arrived. Record these too, then finish.\n\n{text}"

    tools = [
        Tool("get_skill", "A skill's SKILL.md and its list of files.", SkillArg, get_skill),
        Tool("read_file", "Read a file of a skill.", PathArg, read_file),
        Tool("create_file", "Create a new file (fails if it exists).", CreateFile, create_file),
        Tool("replace_in_file", "Replace text that occurs exactly once in a file.",
             ReplaceInFile, replace_in_file),
        Tool("append_to_file", "Append text to the end of an existing file.", AppendToFile,
             append_to_file),
        Tool("move_file", "Rename or move a file within a skill.", MoveFile, move_file),
        Tool("delete_file", "Delete a file (read it first).", DeleteFile, delete_file),
        Tool("create_skill", "Create a new skill in this space from SKILL.md text.",
             CreateSkill, create_skill),
        Tool("finish", "Every lesson is recorded.", Finish, finish, final=True),
    ]
    messages = [{"role": "system", "content": prompt("write")},
                {"role": "user", "content": await _writer_input(edits, lessons)}]
    await run_tools(llm, messages, tools, max_turns=max_turns, usage=usage)
    return edits


async def _writer_input(edits: Edits, lessons: list[Lesson]) -> str:
    bodies = {}
    skills = edits.skills()
    for name, skill in skills.items():
        try:
            fc = await edits.store.read_file(skill.id, SKILL_MD)
            bodies[name] = fc.content.decode("utf-8", "replace")
        except NotFound:
            bodies[name] = ""
    parts = [f"Skills in this space:\n\n{skills_overview(edits, bodies)}"]
    facts = skills.get(FACTS)
    if facts is not None and any(lesson.kind in ("facts", "preferences") or lesson.preferences
                                 for lesson in lessons):
        shown = await shown_files(edits.store, facts)
        if shown:
            parts.append(f"Current text of the {FACTS} files:\n\n{shown}")
    parts.append("Lessons to record (each with its own date):\n\n"
                 + "\n\n".join(lesson.describe(i + 1) for i, lesson in enumerate(lessons)))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------
# the rules learner's writer

DAILY = "daily-logs"
FACTS = "user-general-facts"


async def write_with_rules(store: Any, space_id: str, lessons: list[Lesson], *,
                           still_held: Callable[[], bool] = lambda: True) -> Edits:
    """Deterministic edits: a daily-logs entry per task (a task judged again by a later
    reaction rewrites its entry), facts into files by subject."""
    edits = Edits(store, space_id, lessons, still_held)
    skills = edits.skills()
    for i, lesson in enumerate(lessons, 1):
        who = edits.attribution(i)
        daily = skills.get(DAILY)
        if lesson.rule_task is not None and daily is not None:
            clean = redact(rules.daily_entry(lesson.rule_task, lesson.at))
            entry, day = clean.text, f"{lesson.at:%Y-%m-%d}"
            if not (lesson.rule_task.updated and await _replace_daily_entry(
                    edits, daily, day, entry, who, clean.kinds)):
                await _add_daily_entry(edits, daily, day, entry, who, clean.kinds)
        facts_skill = skills.get(FACTS)
        if lesson.facts and facts_skill is not None:
            await _write_facts(edits, facts_skill, lesson.facts, who)
    return edits


async def _write_facts(edits: Edits, skill: Any, facts: list[rules.Fact],
                       who: dict[str, Any]) -> None:
    """Lines a statement makes wrong go from every topic file; then each fact is merged into
    its subject's file."""
    drops = tuple(p for f in facts for p in f.drops)
    if drops:
        for path in sorted(p for p in skill.files if p.endswith(".md") and p != SKILL_MD):
            await _rules_edit(edits, skill, path,
                              lambda old: rules.drop_lines(old, drops) if old else None, who)
    by_topic: dict[str, list[rules.Fact]] = {}
    kinds: dict[str, list[str]] = {}
    for f in facts:
        if f.text:
            clean = redact(f.text)
            by_topic.setdefault(f.topic, []).append(replace(f, text=clean.text))
            found = kinds.setdefault(f.topic, [])
            found += [k for k in clean.kinds if k not in found]
    for topic, group in by_topic.items():
        await _rules_edit(edits, skill, f"{topic}.md",
                          partial(rules.merge_facts, topic=topic, facts=group), who,
                          kinds[topic])


async def _replace_daily_entry(edits: Edits, skill: Any, day: str, entry: str,
                               who: dict[str, Any], kinds: Sequence[str] = ()) -> bool:
    """Rewrite the entry with `entry`'s heading in whichever part of the day holds it (a new
    version of that file); False when no part does."""
    part = 1
    while True:
        path = rules.daily_log_name(day, part)
        try:
            fc = await edits.store.read_file(skill.id, path)
        except NotFound:
            return False
        if rules.replace_daily_entry(fc.content.decode("utf-8", "replace"), entry) is not None:
            await _rules_edit(edits, skill, path,
                              lambda old: rules.replace_daily_entry(old, entry), who, kinds)
            return True
        part += 1


async def _add_daily_entry(edits: Edits, skill: Any, day: str, entry: str,
                           who: dict[str, Any], kinds: Sequence[str] = ()) -> None:
    """Append `entry` to the day's last part, or start the next part when the entry would
    take that part past the file size cap (a busy day must not stop learning)."""
    part = 1
    while True:
        try:
            fc = await edits.store.read_file(skill.id, rules.daily_log_name(day, part))
        except NotFound:
            break
        if rules.add_daily_entry(fc.content.decode("utf-8", "replace"), day, entry) is None:
            return  # already written (a run repeated after a crash)
        part += 1
    if part > 1:
        full = False

        def append_if_fits(old: str | None) -> str | None:
            nonlocal full
            new = rules.add_daily_entry(old, day, entry)
            full = new is not None and len(new.encode()) > edits.store.max_file_size
            return None if full else new
        await _rules_edit(edits, skill, rules.daily_log_name(day, part - 1), append_if_fits, who,
                          kinds)
        if not full:
            return
    await _rules_edit(edits, skill, rules.daily_log_name(day, part),
                      lambda old: rules.add_daily_entry(old, day, entry, part=part), who, kinds)


async def _rules_edit(edits: Edits, skill: Any, path: str,
                      change: Callable[[str | None], str | None], who: dict[str, Any],
                      kinds: Sequence[str] = ()) -> None:
    try:
        await edits.rewrite(skill, path, change, who, note("learner (rules)", tuple(kinds)))
    except ToolError as e:
        # no model to tell: the session fails with the reason and can be retried
        raise SkillfsError(f"cannot write {skill.name}/{path}: {e}") from None
