"""What the store hands out (rows, events) and how Python values map to DuckDB rows."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import duckdb

from .tree import FileNode, Skill, Space

AUTHORS = ("fuse", "api", "spool", "learner", "cli")
DEFAULT_MAX_FILE_SIZE = 1 << 20
SKILL_MD = "SKILL.md"


def now_ns() -> int:
    return time.time_ns()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@overload
def _json(obj: None) -> None: ...
@overload
def _json(obj: object) -> str: ...


def _json(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _unjson(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


@dataclass(frozen=True)
class FileRow:
    """A committed file as it is now (a file the mount reserved but has not written yet is
    not one)."""

    id: int
    skill_id: str
    path: str
    version: int
    size: int
    sha256: str
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, node: FileNode) -> FileRow:
        return cls(node.id, node.skill_id, node.path, node.version, node.size, node.sha256,
                   node.mtime_ns, node.ctime_ns)


@dataclass(frozen=True)
class SkillRow:
    """A skill as it is now: its committed files by path, the ids of the spaces that
    include it."""

    id: str
    name: str
    description: str
    meta: dict
    user: str | None
    created_ns: int
    updated_ns: int
    files: dict[str, FileRow]
    spaces: frozenset[str]

    @classmethod
    def of(cls, skill: Skill) -> SkillRow:
        return cls(skill.id, skill.name, skill.description, dict(skill.meta), skill.user,
                   skill.created_ns, skill.updated_ns,
                   {p: FileRow.of(n) for p, n in sorted(skill.files.items()) if n.version},
                   frozenset(skill.spaces))


@dataclass(frozen=True)
class SpaceRow:
    """A space as it is now: its skills' ids by name."""

    id: str
    name: str
    user: str | None
    meta: dict
    created_ns: int
    updated_ns: int
    skills: dict[str, str]

    @classmethod
    def of(cls, space: Space) -> SpaceRow:
        return cls(space.id, space.name, space.user, dict(space.meta), space.created_ns,
                   space.updated_ns, {name: k.id for name, k in space.skills.items()})


@dataclass
class FileContent:
    content: bytes
    version: int
    sha256: str
    path: str


@dataclass
class VersionRow:
    version: int
    path: str
    sha256: str
    size: int
    author: str
    reason: str | None
    session_id: str | None
    task_id: str | None
    at_ns: int
    deleted: bool
    purged_by: str | None = None
    purged_at_ns: int | None = None
    purge_reason: str | None = None


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did: the versions whose content it replaced by a tombstone, the version
    it wrote with the matches taken out of the current content (None if none), and whether
    the database file was compacted afterwards (the purged bytes are gone from it)."""

    path: str
    purged: list[int]
    rewritten: int | None
    compacted: bool


@dataclass
class SessionRow:
    id: str
    name: str | None
    user: str | None
    space_id: str | None
    configs: dict
    ended: bool
    created_ns: int
    updated_ns: int


@dataclass
class StoredMessage:
    session_id: str
    seq: int
    role: str
    format: str
    body: dict
    original: Any
    task_id: str | None
    created_ns: int
    meta: dict = field(default_factory=dict)

    def to_message(self):
        from ..messages import Message
        return Message.model_validate({**self.body, "original": self.original})


@dataclass
class TaskRow:
    id: str
    session_id: str
    ord: int
    description: str
    status: str
    progress: list = field(default_factory=list)
    preferences: list = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    learned: bool = False
    created_ns: int = 0
    updated_ns: int = 0


@dataclass
class LearningRow:
    session_id: str
    space_id: str
    status: str
    error: str | None
    learned_seq: int
    created_ns: int
    updated_ns: int


LESSON_STATUSES = ("queued", "written", "failed")


@dataclass
class LessonRow:
    """A distilled lesson kept until its space's skill writer has written it. `task_id` is
    None for facts stated outside any task; `payload` is the lesson itself (the learner's)."""

    id: str
    session_id: str
    space_id: str
    task_id: str | None
    payload: dict
    status: str = "queued"  # queued | written | failed
    error: str | None = None
    ord: int = 0
    created_ns: int = 0
    updated_ns: int = 0


@dataclass
class IngestResult:
    space_id: str
    session_id: str
    messages: int
    events: Sequence[str]


_TASK_COLS = ("id, session_id, ord, description, status, progress, preferences, first_seq, "
              "last_seq, learned, created_ns, updated_ns")
_LEARNING_COLS = "session_id, space_id, status, error, learned_seq, created_ns, updated_ns"
_LESSON_COLS = ("id, session_id, space_id, task_id, ord, payload, status, error, created_ns, "
                "updated_ns")
_SESSION_COLS = 'id, name, "user", space_id, configs, ended, created_ns, updated_ns'
# session_id, seq, role, format, body, original, task_id, source, created_ns, meta


def _task(row) -> TaskRow:
    return TaskRow(row[0], row[1], row[2], row[3], row[4], _unjson(row[5], []),
                   _unjson(row[6], []), row[7], row[8], row[9], row[10], row[11])


def _lesson(row) -> LessonRow:
    return LessonRow(row[0], row[1], row[2], row[3], json.loads(row[5]), row[6], row[7],
                     row[4], row[8], row[9])


def _session(row) -> SessionRow:
    return SessionRow(row[0], row[1], row[2], row[3], _unjson(row[4], {}), row[5], row[6],
                      row[7])


def where(**columns: Any) -> tuple[str, list]:
    """`" WHERE a = ? AND b IN (?,?)"` and its arguments, for the columns whose value is not
    None (a list or tuple means any of its values)."""
    clauses: list[str] = []
    args: list[Any] = []
    for col, value in columns.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            clauses.append(f'"{col}" IN ({",".join("?" * len(value))})')
            args.extend(value)
        else:
            clauses.append(f'"{col}" = ?')
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


@dataclass
class _MessageBatch:
    """Messages to insert, a list per column. DuckDB builds each stored body (the normalised
    message as JSON) itself: encoding it in Python was the largest cost per message."""

    session_id: str
    source: str | None
    t: int
    seqs: list[int]
    roles: list[str]
    formats: list[str]
    texts: list[str]
    tool_calls: list[str]
    tool_call_ids: list[str | None]
    names: list[str | None]
    originals: list[str]
    metas: list[str | None]

    _SQL = (
        "INSERT INTO messages (session_id, seq, role, format, body, original, task_id, "
        "source, created_ns, meta) "
        "SELECT ?, s, r, f, CASE WHEN b IS NULL THEN json_object('role', r, 'text', x, "
        "'tool_calls', CAST(c AS JSON), 'tool_call_id', i, 'name', n, 'format', f)::VARCHAR "
        "ELSE b END, o, NULL, ?, ?, m FROM ("
        "SELECT unnest(?::BIGINT[]) s, unnest(?::VARCHAR[]) r, unnest(?::VARCHAR[]) f, "
        "unnest(?::VARCHAR[]) x, unnest(?::VARCHAR[]) c, unnest(?::VARCHAR[]) i, "
        "unnest(?::VARCHAR[]) n, unnest(?::VARCHAR[]) o, unnest(?::VARCHAR[]) m, "
        "unnest(?::VARCHAR[]) b) batch")
    # DuckDB's json_object needs about ten times its text in one allocation: a 3 MiB message
    # did not fit its 32 MB buffer pool. Bodies of long texts are built here instead.
    _LONG_TEXT = 256 << 10

    def _long_bodies(self) -> list[str | None]:
        return [_json({"role": r, "text": x, "tool_calls": json.loads(c), "tool_call_id": i,
                       "name": n, "format": f}) if len(x) > self._LONG_TEXT else None
                for r, x, c, i, n, f in zip(self.roles, self.texts, self.tool_calls,
                                             self.tool_call_ids, self.names, self.formats,
                                             strict=True)]

    def insert(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.seqs:
            con.execute(self._SQL, [self.session_id, self.source, self.t, self.seqs,
                                    self.roles, self.formats, self.texts, self.tool_calls,
                                    self.tool_call_ids, self.names, self.originals,
                                    self.metas, self._long_bodies()])


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


__all__ = ["AUTHORS", "DEFAULT_MAX_FILE_SIZE", "SKILL_MD", "LESSON_STATUSES", "FileRow",
           "SkillRow", "SpaceRow", "FileContent",
           "VersionRow", "PurgeResult", "SessionRow", "StoredMessage", "TaskRow",
           "LearningRow", "LessonRow", "IngestResult", "now_ns", "sha256"]
