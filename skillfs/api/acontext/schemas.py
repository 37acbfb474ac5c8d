"""What the routes take and give: request bodies as pydantic models, and skillfs's rows in
the JSON shapes of Acontext's models (the SDK validates every response against them)."""

from __future__ import annotations

import mimetypes
import posixpath
import uuid
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from ...store import FileRow, LearningRow, SkillRow, StoredMessage, Store, TaskRow
from .wire import derived, iso, message_id, project_id, user_id

# skillfs's learning states, in the words the SDK knows (it polls until completed/failed).
STATUS = {"pending": "pending", "extracting": "pending", "distilling": "distilling",
          "queued": "queued", "writing": "skill_writing", "completed": "completed",
          "failed": "failed"}
_TERMINAL = ("completed", "failed")

_MIME = {".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain",
         ".yaml": "text/yaml", ".yml": "text/yaml", ".json": "application/json",
         ".csv": "text/csv", ".py": "text/x-python", ".sh": "text/x-shellscript",
         ".toml": "text/x-toml", ".html": "text/html", ".xml": "text/xml"}


# -- request bodies ------------------------------------------------------------------------

class SpaceIn(BaseModel):
    user: str | None = None
    meta: dict[str, Any] | None = None


class SpaceUpdate(BaseModel):
    meta: dict[str, Any]


class LearnIn(BaseModel):
    session_id: uuid.UUID


class IncludeIn(BaseModel):
    skill_id: uuid.UUID


class SessionIn(BaseModel):
    user: str | None = None
    disable_task_tracking: bool | None = None
    configs: dict[str, Any] | None = None
    use_uuid: uuid.UUID | None = None


class ConfigsIn(BaseModel):
    configs: dict[str, Any]


class MessageIn(BaseModel):
    format: str = "openai"
    blob: dict[str, Any]
    meta: dict[str, Any] | None = None


# Acontext's cap on a message's meta, as JSON
MAX_META = 64 << 10


class MetaIn(BaseModel):
    meta: dict[str, Any]


# -- JSON shapes ---------------------------------------------------------------------------

def mime(path: str) -> str:
    ext = posixpath.splitext(path)[1].lower()
    return _MIME.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def skill_files(skill: SkillRow) -> list[FileRow]:
    return [n for _, n in sorted(skill.files.items())]


def space_json(space) -> dict:
    return {"id": space.id, "user_id": user_id(space.user), "meta": space.meta or None,
            # not in Acontext's model (the SDK ignores it): the space's folder in the mount
            "name": space.name,
            "created_at": iso(space.created_ns), "updated_at": iso(space.updated_ns)}


def skill_disk_id(skill_id: str) -> str:
    return derived("disk", skill_id)


def skill_json(skill: SkillRow, index: bool = True) -> dict:
    out: dict[str, Any] = {
        "id": skill.id, "user_id": user_id(skill.user), "name": skill.name,
        "description": skill.description, "disk_id": skill_disk_id(skill.id),
        "meta": skill.meta or None,
        "created_at": iso(skill.created_ns), "updated_at": iso(skill.updated_ns)}
    if index:
        out["file_index"] = [{"path": n.path, "mime": mime(n.path)}
                             for n in skill_files(skill)]
    return out


def session_json(store: Store, row) -> dict:
    return {"id": row.id, "project_id": project_id(store), "user_id": user_id(row.user),
            "disable_task_tracking": False, "configs": row.configs,
            "created_at": iso(row.created_ns), "updated_at": iso(row.updated_ns)}


def _status(request: Request, row: LearningRow) -> str:
    """The SDK's status for a session: the store's, unless the learner already knows the
    session has new work (never report done while something is left to learn)."""
    status = row.status
    learner = request.app.state.daemon.learner
    live = getattr(learner, "status", None)
    if callable(live):
        now = live(row.session_id)
        if now is not None and now not in _TERMINAL:
            status = now
    return STATUS.get(status, "pending")


def record_json(request: Request, row: LearningRow) -> dict:
    return {"id": derived("learning", row.session_id, row.space_id, row.created_ns),
            "learning_space_id": row.space_id, "session_id": row.session_id,
            "status": _status(request, row),
            "created_at": iso(row.created_ns), "updated_at": iso(row.updated_ns)}


def task_json(store: Store, row: TaskRow) -> dict:
    data: dict[str, Any] = {"task_description": row.description}
    # as Acontext's Go model: an empty list is left out
    if row.progress:
        data["progresses"] = [str(p) for p in row.progress]
    if row.preferences:
        data["user_preferences"] = [str(p) for p in row.preferences]
    return {"id": row.id, "session_id": row.session_id, "project_id": project_id(store),
            "order": row.ord, "data": data, "status": row.status, "is_planning": False,
            "created_at": iso(row.created_ns), "updated_at": iso(row.updated_ns)}


def user_json(store: Store, identifier: str, created_ns: int, updated_ns: int) -> dict:
    return {"id": user_id(identifier), "project_id": project_id(store),
            "identifier": identifier, "created_at": iso(created_ns),
            "updated_at": iso(updated_ns)}


def message_json(sm: StoredMessage, learned_seq: int = -1) -> dict:
    m = sm.to_message()
    return {"id": message_id(sm.session_id, sm.seq), "session_id": sm.session_id,
            "parent_id": message_id(sm.session_id, sm.seq - 1) if sm.seq > 0 else None,
            "role": "user" if m.role == "tool" else m.role, "meta": sm.meta or {},
            "parts": m.to_acontext_parts(), "task_id": sm.task_id,
            "session_task_process_status": "completed" if sm.seq <= learned_seq else "pending",
            "created_at": iso(sm.created_ns), "updated_at": iso(sm.created_ns)}


def in_format(sm: StoredMessage, fmt: str, learned_seq: int) -> list[dict]:
    """One stored message as items of the requested form (OpenAI may need several)."""
    if fmt == "acontext":
        return [message_json(sm, learned_seq=learned_seq)]
    return sm.to_message().render(fmt)
