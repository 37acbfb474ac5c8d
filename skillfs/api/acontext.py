"""The Acontext-compatible API under /api/v1: learning spaces, sessions and messages, agent
skills, with the routes, payloads, status codes and error bodies the `acontext` SDK (0.1.x)
expects. Everything is served from the store: changes made here show up in the mount, and
files written through the mount are read back here from the in-memory tree.

Acontext has users, a project and per-row ids that skillfs does not keep (a learning record,
a space-skill link); those ids are derived (uuid5) from what skillfs does keep, so they are
stable across calls and restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import io
import json
import mimetypes
import os
import posixpath
import re
import time
import uuid
import zipfile
from datetime import datetime, UTC
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import trio
from fastapi import APIRouter, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exception_handlers import (http_exception_handler,
                                        request_validation_exception_handler)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from .. import names
from ..errors import Conflict, Exists, Invalid, NotFound, SkillfsError
from ..messages import FORMATS, Message, normalize
from ..skillzip import read_skill_zip
from ..store import LearningRow, Store, StoredMessage
from .guard import TextCheckedRoute, check_json_size, request_id

PREFIX = "/api/v1"
router = APIRouter(prefix=PREFIX, route_class=TextCheckedRoute)

# Namespace of every id skillfs derives rather than stores.
_NS = uuid.uuid5(uuid.NAMESPACE_OID, "skillfs.acontext")
DEFAULT_EXPIRE = 900
MAX_LIMIT = 200

# skillfs's learning states, in the words the SDK knows (it polls until completed/failed).
STATUS = {"pending": "pending", "extracting": "pending", "distilling": "distilling",
          "queued": "queued", "writing": "skill_writing", "completed": "completed",
          "failed": "failed"}
_TERMINAL = ("completed", "failed")

_MIME = {".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain",
         ".yaml": "text/yaml", ".yml": "text/yaml", ".json": "application/json",
         ".csv": "text/csv", ".py": "text/x-python", ".sh": "text/x-shellscript",
         ".toml": "text/x-toml", ".html": "text/html", ".xml": "text/xml"}
_CONTENT_TYPE = {"application/json": "json", "text/csv": "csv", "text/x-python": "code",
                 "text/x-shellscript": "code", "text/javascript": "code"}
_RAW_PATH = re.compile(rf"^{PREFIX}/agent_skills/[^/]+/raw$")


class BadRequest(SkillfsError):
    http_status = 400


# -- ids, times, envelopes ---------------------------------------------------------------

def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _derived(*parts: Any) -> str:
    return str(uuid.uuid5(_NS, "\0".join(str(p) for p in parts)))


def _user_id(identifier: str | None) -> str | None:
    return _derived("user", identifier) if identifier else None


def _project_id(store: Store) -> str:
    return _derived("project", os.path.realpath(store.db_path))


def _message_id(session_id: str, seq: int) -> str:
    return _derived("message", session_id, seq)


def ok(data: Any = None, status: int = 200, msg: str = "ok") -> JSONResponse:
    # The SDK treats a body "code" >= 400 as an error even on 2xx: success is always 0.
    body: dict[str, Any] = {"code": 0, "msg": msg}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status)


def error(status: int, msg: str, detail: str | None = None,
          headers: Mapping[str, str] | None = None, request: Request | None = None
          ) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "msg": msg}
    if detail:
        body["error"] = detail
    if request is not None and status >= 500:
        body["request_id"] = request_id(request.scope)
    return JSONResponse(body, status_code=status, headers=headers)


def _store(request: Request) -> Store:
    return request.app.state.daemon.store


def _utf8(value: Any, what: str) -> Any:
    """Refuse strings DuckDB cannot store (lone surrogates arrive through JSON escapes)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None
    except (TypeError, ValueError):
        raise BadRequest(f"{what} is not JSON") from None
    return value


def _json_object(text: str | None, what: str) -> dict | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise BadRequest(f"invalid {what} JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return _utf8(value, what)


def _contains(value: Any, want: Any) -> bool:
    """JSON containment as PostgreSQL's @> decides it for objects."""
    if isinstance(want, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(value[k], v) for k, v in want.items())
    return value == want


# -- pagination (keyset on (created, id), so a cursor survives dropped filters) ----------

def _cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}|{key[1]}".encode()).decode()


def _uncursor(text: str) -> tuple[int, str]:
    try:
        t, _, i = base64.urlsafe_b64decode(text.encode("ascii")).decode().partition("|")
        return int(t), i
    except (ValueError, UnicodeError, binascii.Error):
        raise BadRequest("invalid cursor") from None


def _page(rows: list, key, limit: int | None, cursor: str | None,
          desc: bool) -> tuple[list, bool, str | None]:
    rows = sorted(rows, key=key, reverse=desc)
    if cursor:
        after = _uncursor(cursor)
        rows = [r for r in rows if (key(r) < after if desc else key(r) > after)]
    if not limit:
        return rows, False, None
    items, more = rows[:limit], len(rows) > limit
    return items, more, _cursor(key(items[-1])) if more else None


def _paged(items: list, more: bool, nxt: str | None) -> dict:
    return {"items": items, "next_cursor": nxt, "has_more": more}


# -- JSON shapes ---------------------------------------------------------------------------

def space_json(space) -> dict:
    return {"id": space.id, "user_id": _user_id(space.user), "meta": space.meta or None,
            # not in Acontext's model (the SDK ignores it): the space's folder in the mount
            "name": space.name,
            "created_at": _iso(space.created_ns), "updated_at": _iso(space.updated_ns)}


def _mime(path: str) -> str:
    ext = posixpath.splitext(path)[1].lower()
    return _MIME.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _files(skill) -> list:
    return [n for _, n in sorted(skill.files.items())]


def skill_json(skill, index: bool = True) -> dict:
    out = {"id": skill.id, "user_id": _user_id(skill.user), "name": skill.name,
           "description": skill.description, "disk_id": _derived("disk", skill.id),
           "meta": skill.meta or None,
           "created_at": _iso(skill.created_ns), "updated_at": _iso(skill.updated_ns)}
    if index:
        out["file_index"] = [{"path": n.path, "mime": _mime(n.path)} for n in _files(skill)]
    return out


def session_json(store: Store, row) -> dict:
    return {"id": row.id, "project_id": _project_id(store), "user_id": _user_id(row.user),
            "disable_task_tracking": False, "configs": row.configs,
            "created_at": _iso(row.created_ns), "updated_at": _iso(row.updated_ns)}


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
    return {"id": _derived("learning", row.session_id, row.space_id, row.created_ns),
            "learning_space_id": row.space_id, "session_id": row.session_id,
            "status": _status(request, row),
            "created_at": _iso(row.created_ns), "updated_at": _iso(row.updated_ns)}


def user_json(store: Store, identifier: str, created_ns: int, updated_ns: int) -> dict:
    return {"id": _user_id(identifier), "project_id": _project_id(store),
            "identifier": identifier, "created_at": _iso(created_ns),
            "updated_at": _iso(updated_ns)}


# -- messages in the three forms -----------------------------------------------------------

def _acontext_parts(sm: StoredMessage, m: Message) -> list[dict]:
    parts: list[dict[str, Any]] = []
    if sm.format == "acontext":
        for p in sm.original.get("parts") or []:
            if isinstance(p, str):
                parts.append({"type": "text", "text": p})
            else:
                parts.append({k: p[k] for k in ("type", "text", "filename", "meta")
                              if p.get(k) is not None})
        return parts
    if m.role == "assistant":
        if m.text:
            parts.append({"type": "text", "text": m.text})
        for c in m.tool_calls:
            parts.append({"type": "tool-call", "meta": {"id": c.id, "name": c.name,
                                                        "arguments": c.arguments_json()}})
    else:
        for o in m.to_openai_messages():
            if o["role"] == "tool":
                parts.append({"type": "tool-result", "text": o["content"],
                              "meta": {"tool_call_id": o["tool_call_id"]}})
            elif o.get("content"):
                parts.append({"type": "text", "text": o["content"]})
    return parts or [{"type": "text", "text": m.text}]


def _anthropic(m: Message) -> dict:
    if m.role == "assistant":
        blocks: list[dict] = [{"type": "text", "text": m.text}] if m.text else []
        for i, c in enumerate(m.tool_calls):
            args = c.arguments if isinstance(c.arguments, dict) else {"arguments": c.arguments}
            blocks.append({"type": "tool_use", "id": c.id or f"call_{i}", "name": c.name,
                           "input": args})
        return {"role": "assistant", "content": blocks}
    blocks = []
    for o in m.to_openai_messages():
        if o["role"] == "tool":
            blocks.append({"type": "tool_result", "tool_use_id": o["tool_call_id"],
                           "content": o["content"]})
        elif o.get("content"):
            blocks.append({"type": "text", "text": o["content"]})
    # Anthropic has no system or tool role inside messages: both are the user's turn.
    return {"role": "user", "content": blocks or [{"type": "text", "text": m.text}]}


def message_json(sm: StoredMessage, learned_seq: int = -1) -> dict:
    m = sm.to_message()
    mid = _message_id(sm.session_id, sm.seq)
    return {"id": mid, "session_id": sm.session_id,
            "parent_id": _message_id(sm.session_id, sm.seq - 1) if sm.seq > 0 else None,
            "role": "user" if m.role == "tool" else m.role, "meta": sm.meta or {},
            "parts": _acontext_parts(sm, m), "task_id": sm.task_id,
            "session_task_process_status": "completed" if sm.seq <= learned_seq else "pending",
            "created_at": _iso(sm.created_ns), "updated_at": _iso(sm.created_ns)}


def _in_format(sm: StoredMessage, fmt: str, learned_seq: int) -> list[dict]:
    """One stored message as items of the requested form (OpenAI may need several)."""
    if fmt == "acontext":
        return [message_json(sm, learned_seq=learned_seq)]
    if sm.format == fmt:
        return [sm.original]  # exactly what the agent sent
    m = sm.to_message()
    if fmt == "openai":
        return m.to_openai_messages()
    return [_anthropic(m)]


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


# -- lookups -------------------------------------------------------------------------------

def _space(store: Store, space_id: uuid.UUID):
    space = store.find_space(str(space_id))
    if space is None or space.id != str(space_id):  # by id, not by a name that looks like one
        raise NotFound("learning space not found")
    return space


def _skill(store: Store, skill_id: uuid.UUID):
    skill = store.find_skill(str(skill_id))
    if skill is None:
        raise NotFound("skill not found")
    return skill


async def _session(store: Store, session_id: uuid.UUID):
    try:
        return await store.get_session(str(session_id))
    except NotFound:
        raise NotFound("session not found") from None


# -- ping ----------------------------------------------------------------------------------

@router.get("/ping")
async def ping():
    return JSONResponse({"code": 0, "msg": "pong"})


# -- learning spaces -----------------------------------------------------------------------

def _free_name(store: Store, base: str) -> str:
    name, n = base, 1
    while store.has_space_named(name):
        n += 1
        name = f"{base}-{n}"
    return name


def _wanted_name(store: Store, meta: dict | None) -> str | None:
    wanted = (meta or {}).get("name")
    if not isinstance(wanted, str):
        return None
    try:
        names.check_space_name(wanted)
    except Invalid:
        return None
    return None if store.has_space_named(wanted) else wanted


@router.post("/learning_spaces", status_code=201)
async def create_space(request: Request, body: SpaceIn | None = None):
    """The folder in the mount is `meta["name"]` when that is a free, valid name, else
    `space-<first 8 hex of the id>`."""
    store = _store(request)
    body = body or SpaceIn()
    _utf8(body.model_dump(), "body")
    space_id = str(uuid.uuid4())
    name = _wanted_name(store, body.meta)
    for _ in range(8):
        if name is None:
            name = _free_name(store, f"space-{space_id.replace('-', '')[:8]}")
        try:
            space = await store.create_space(name, body.user, body.meta, author="api",
                                             space_id=space_id)
            return ok(space_json(space), 201)
        except Exists:
            # the name was taken in between (by the mount, the spool or another request)
            name = None
    raise Conflict("could not find a free folder name for the learning space")


@router.get("/learning_spaces")
async def list_spaces(request: Request, user: str | None = None,
                      limit: int = Query(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
                      time_desc: bool = False, filter_by_meta: str | None = None):
    store = _store(request)
    want = _json_object(filter_by_meta, "filter_by_meta")
    rows = store.list_spaces()
    if user:
        rows = [s for s in rows if s.user == user]
    if want:
        rows = [s for s in rows if s.meta and _contains(s.meta, want)]
    items, more, nxt = _page(rows, lambda s: (s.created_ns, s.id), limit, cursor, time_desc)
    return ok(_paged([space_json(s) for s in items], more, nxt))


@router.get("/learning_spaces/{space_id}")
async def get_space(request: Request, space_id: uuid.UUID):
    return ok(space_json(_space(_store(request), space_id)))


@router.patch("/learning_spaces/{space_id}")
async def update_space(request: Request, space_id: uuid.UUID, body: SpaceUpdate):
    store = _store(request)
    space = _space(store, space_id)
    # Meta is merged; the folder keeps its name even if meta["name"] changes.
    space = await store.update_space(space.id, meta=_utf8(body.meta, "meta"), author="api")
    return ok(space_json(space))


@router.delete("/learning_spaces/{space_id}")
async def delete_space(request: Request, space_id: uuid.UUID):
    store = _store(request)
    await store.delete_space(_space(store, space_id).id, author="api")
    return ok()


@router.post("/learning_spaces/{space_id}/learn", status_code=201)
async def learn(request: Request, space_id: uuid.UUID, body: LearnIn):
    store = _store(request)
    space = _space(store, space_id)
    session = await _session(store, body.session_id)
    # strict: a session that learns into any space already (this one too) is a 409, and
    # of two concurrent requests for the same session exactly one gets the 201.
    try:
        row = await store.attach_session(session.id, space.id, strict=True)
    except NotFound:  # deleted in between
        raise NotFound("session not found") from None
    return ok(record_json(request, row), 201)


@router.get("/learning_spaces/{space_id}/sessions")
async def list_space_sessions(request: Request, space_id: uuid.UUID):
    store = _store(request)
    space = _space(store, space_id)
    return ok([record_json(request, r) for r in await store.list_learning(space.id)])


@router.get("/learning_spaces/{space_id}/sessions/{session_id}")
async def get_space_session(request: Request, space_id: uuid.UUID, session_id: uuid.UUID):
    store = _store(request)
    space = _space(store, space_id)
    row = await store.get_learning(str(session_id))
    if row is None or row.space_id != space.id:
        raise NotFound("session does not learn into this learning space")
    return ok(record_json(request, row))


@router.post("/learning_spaces/{space_id}/skills", status_code=201)
async def include_skill(request: Request, space_id: uuid.UUID, body: IncludeIn):
    store = _store(request)
    space, skill = _space(store, space_id), _skill(store, body.skill_id)
    if space.skills.get(skill.name) == skill.id:
        raise Conflict("skill already included in this space")
    if skill.name in space.skills:
        raise Conflict(f"skill with name '{skill.name}' already exists in this space")
    await store.include_skill(space.id, skill.id, author="api")
    # Including a skill stamps the space with the time of the link.
    linked = store.get_space(space.id).updated_ns
    return ok({"id": _derived("space-skill", space.id, skill.id),
               "learning_space_id": space.id, "skill_id": skill.id,
               "created_at": _iso(linked)}, 201)


@router.get("/learning_spaces/{space_id}/skills")
async def list_space_skills(request: Request, space_id: uuid.UUID):
    store = _store(request)
    return ok([skill_json(s) for s in store.list_space_skills(_space(store, space_id).id)])


@router.delete("/learning_spaces/{space_id}/skills/{skill_id}")
async def exclude_skill(request: Request, space_id: uuid.UUID, skill_id: uuid.UUID):
    store = _store(request)
    space = _space(store, space_id)
    if store.find_skill(str(skill_id)) is not None:  # excluding an unknown skill: a no-op
        await store.exclude_skill(space.id, str(skill_id), author="api")
    return ok()


# -- sessions ------------------------------------------------------------------------------

@router.post("/session", status_code=201)
async def create_session(request: Request, body: SessionIn | None = None):
    store = _store(request)
    body = body or SessionIn()
    _utf8(body.model_dump(mode="json"), "body")
    session_id = str(body.use_uuid) if body.use_uuid is not None else None
    try:
        row = await store.create_session(user=body.user, configs=body.configs,
                                         session_id=session_id)
    except Exists:
        raise Conflict("session with this UUID already exists") from None
    return ok(session_json(store, row), 201)


@router.get("/session")
async def list_sessions(request: Request, user: str | None = None,
                        limit: int = Query(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
                        time_desc: bool = False, filter_by_configs: str | None = None):
    store = _store(request)
    want = _json_object(filter_by_configs, "filter_by_configs")
    rows = await store.list_sessions(user=user or None)
    if want:
        rows = [r for r in rows if _contains(r.configs, want)]
    items, more, nxt = _page(rows, lambda r: (r.created_ns, r.id), limit, cursor, time_desc)
    return ok(_paged([session_json(store, r) for r in items], more, nxt))


@router.delete("/session/{session_id}")
async def delete_session(request: Request, session_id: uuid.UUID):
    store = _store(request)
    await store.delete_session((await _session(store, session_id)).id)
    return ok()


@router.get("/session/{session_id}/configs")
async def get_configs(request: Request, session_id: uuid.UUID):
    store = _store(request)
    return ok(session_json(store, await _session(store, session_id)))


@router.put("/session/{session_id}/configs")
async def replace_configs(request: Request, session_id: uuid.UUID, body: ConfigsIn):
    store = _store(request)
    row = await _session(store, session_id)
    await store.update_session_configs(row.id, _utf8(body.configs, "configs"), replace=True)
    return ok()


@router.patch("/session/{session_id}/configs")
async def patch_configs(request: Request, session_id: uuid.UUID, body: ConfigsIn):
    store = _store(request)
    row = await _session(store, session_id)
    # merged; a key given as null is removed
    row = await store.update_session_configs(row.id, _utf8(body.configs, "configs"))
    return ok({"configs": row.configs})


_MESSAGE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": MessageIn.model_json_schema()},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["payload"],
            "properties": {"payload": {"type": "string"}}}},
    },
}


async def _message_in(request: Request) -> MessageIn:
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            payload = form.get("payload")
            if not isinstance(payload, str):
                raise BadRequest("multipart message needs a 'payload' field (JSON text)")
            check_json_size(len(payload.encode("utf-8", "surrogatepass")))
            body = MessageIn.model_validate_json(payload)
            # A part names its upload by file_field; the bytes are not kept (no blob store).
            for part in body.blob.get("parts") or []:
                field = part.get("file_field") if isinstance(part, dict) else None
                if field and field not in form:
                    raise BadRequest(f"missing file {field}")
            return body
        raw = await request.body()
        check_json_size(len(raw))
        return MessageIn.model_validate_json(raw)
    except ValidationError as e:
        raise BadRequest("parameter error: " + _errors(e.errors())) from None


@router.post("/session/{session_id}/messages", status_code=201,
             openapi_extra={"requestBody": _MESSAGE_BODY})
async def store_message(request: Request, session_id: uuid.UUID):
    store = _store(request)
    session = await _session(store, session_id)
    body = await _message_in(request)
    if body.format not in FORMATS:
        raise BadRequest(f"unsupported format {body.format!r} "
                         f"(skillfs takes {', '.join(FORMATS)})")
    _utf8(body.blob, "blob")
    _utf8(body.meta, "meta")
    message = normalize(body.blob, body.format)
    if not message.text and not message.tool_calls and message.role != "tool":
        raise BadRequest("message must contain at least one part")
    [seq] = await store.add_messages(session.id, [message], author="api", metas=[body.meta])
    [stored] = await store.get_messages(session.id, after_seq=seq - 1, limit=1)
    return ok(message_json(stored), 201)


@router.get("/session/{session_id}/messages")
async def get_messages(request: Request, session_id: uuid.UUID, format: str = "openai",
                       limit: int | None = Query(None, ge=0, le=MAX_LIMIT),
                       cursor: str | None = None, time_desc: bool = False):
    store = _store(request)
    session = await _session(store, session_id)
    if format not in FORMATS:
        raise BadRequest(f"unsupported format {format!r} (skillfs gives {', '.join(FORMATS)})")
    learning = await store.get_learning(session.id)
    learned = learning.learned_seq if learning else -1
    rows = await store.get_messages(session.id)
    page, more, nxt = _page(rows, lambda m: (m.seq, ""), limit, cursor, time_desc)
    items, ids, metas = [], [], []
    for sm in page:
        for item in _in_format(sm, format, learned):
            items.append(item)
            ids.append(_message_id(sm.session_id, sm.seq))
            metas.append(sm.meta or {})
    tokens = sum(len(json.dumps(i, ensure_ascii=False)) for i in items) // 4
    data = {**_paged(items, more, nxt), "ids": ids, "metas": metas,
            "this_time_tokens": tokens}
    if ids:
        data["edit_at_message_id"] = ids[-1]
    return ok(data)


@router.post("/session/{session_id}/flush")
async def flush(request: Request, session_id: uuid.UUID):
    store = _store(request)
    session = await _session(store, session_id)
    learner = request.app.state.daemon.learner
    notify = getattr(learner, "notify", None)
    if callable(notify):
        notify(session.id, "flush")
    else:
        await store.mark_session(session.id, "flush")
    return ok({"status": 0, "errmsg": ""})


# -- agent skills --------------------------------------------------------------------------

@router.post("/agent_skills", status_code=201)
async def create_skill(request: Request, file: UploadFile = File(...),
                       user: str | None = Form(None), meta: str | None = Form(None)):
    store = _store(request)
    meta_obj = _json_object(meta, "meta")
    _utf8(user, "user")
    # Inflating takes a while: off the loop that also serves the mount.
    skill_md, files = await trio.to_thread.run_sync(read_skill_zip, file.file,
                                                    store.max_file_size)
    skill = await store.create_skill(skill_md, files, author="api", reason="upload",
                                     meta=meta_obj, user=user or None)
    return ok(skill_json(skill), 201)


@router.get("/agent_skills")
async def list_skills(request: Request, user: str | None = None,
                      limit: int = Query(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
                      time_desc: bool = False):
    store = _store(request)
    rows = store.list_skills()
    if user:
        rows = [s for s in rows if s.user == user]
    items, more, nxt = _page(rows, lambda s: (s.created_ns, s.id), limit, cursor, time_desc)
    return ok(_paged([skill_json(s, index=False) for s in items], more, nxt))


@router.get("/agent_skills/{skill_id}")
async def get_skill(request: Request, skill_id: uuid.UUID):
    return ok(skill_json(_skill(_store(request), skill_id)))


@router.delete("/agent_skills/{skill_id}")
async def delete_skill(request: Request, skill_id: uuid.UUID):
    store = _store(request)
    await store.delete_skill(_skill(store, skill_id).id, author="api")
    return ok()


def _file_node(store: Store, skill_id: uuid.UUID, file_path: str):
    skill = _skill(store, skill_id)
    try:
        names.check_rel_path(file_path)
    except Invalid as e:
        raise BadRequest(e.message) from None
    node = skill.files.get(file_path)
    if node is None:
        raise NotFound(f"file path '{file_path}' not found in agent_skills")
    return skill, node


def _sign(secret: bytes, skill_id: str, path: str, exp: int) -> str:
    return hmac.new(secret, f"{skill_id}\0{path}\0{exp}".encode(), hashlib.sha256).hexdigest()


@router.get("/agent_skills/{skill_id}/file")
async def get_file(request: Request, skill_id: uuid.UUID, file_path: str,
                   expire: int = Query(DEFAULT_EXPIRE, ge=1, le=7 * 86400)):
    store = _store(request)
    skill, node = _file_node(store, skill_id, file_path)
    data = await store.content(node)
    mime = _mime(node.path)
    out: dict[str, Any] = {"path": node.path, "mime": mime}
    try:
        text = data.decode("utf-8")  # not utf-8-sig: a BOM must survive the round trip
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if mime == "application/octet-stream":
            out["mime"] = mime = "text/plain"
        out["content"] = {"type": _CONTENT_TYPE.get(mime, "text"), "raw": text}
        return ok(out)
    listen = request.app.state.daemon.config.listen
    if listen:
        # The SDK fetches this URL with a bare httpx.get: no token, so the URL is signed.
        exp = int(time.time()) + expire
        sig = _sign(request.app.state.acontext_secret, skill.id, node.path, exp)
        query = urlencode({"file_path": node.path, "exp": exp, "sig": sig})
        out["url"] = f"http://{listen}{PREFIX}/agent_skills/{skill.id}/raw?{query}"
    else:
        out["content"] = {"type": "base64", "raw": base64.b64encode(data).decode()}
    return ok(out)


@router.get("/agent_skills/{skill_id}/raw", include_in_schema=False)
async def raw_file(request: Request, skill_id: uuid.UUID, file_path: str, exp: int, sig: str):
    expected = _sign(request.app.state.acontext_secret, str(skill_id), file_path, exp)
    if not hmac.compare_digest(sig, expected) or exp < time.time():
        return error(403, "invalid or expired download URL")
    store = _store(request)
    _, node = _file_node(store, skill_id, file_path)
    name = quote(posixpath.basename(node.path))
    return Response(await store.content(node), media_type=_mime(node.path),
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"})


@router.get("/agent_skills/{skill_id}/download_zip",
            responses={200: {"content": {"application/zip": {}}}})
async def download_zip(request: Request, skill_id: uuid.UUID):
    store = _store(request)
    skill = _skill(store, skill_id)
    buf = io.BytesIO()
    # Entries relative to the skill folder, as Acontext writes them (no top folder).
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for node in _files(skill):
            zf.writestr(node.path, await store.content(node))
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{skill.name}.zip"'})


# -- users and project: derived from the user names spaces and sessions carry --------------

async def _users(store: Store) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    rows = [(s.user, s.created_ns, s.updated_ns) for s in store.list_spaces()]
    rows += [(s.user, s.created_ns, s.updated_ns) for s in store.list_skills()]
    rows += [(r.user, r.created_ns, r.updated_ns) for r in await store.list_sessions()]
    for user, c, u in rows:
        if user:
            span = seen.setdefault(user, [c, u])
            span[0], span[1] = min(span[0], c), max(span[1], u)
    return seen


@router.get("/user/ls")
async def list_users(request: Request, limit: int | None = Query(None, ge=0, le=MAX_LIMIT),
                     cursor: str | None = None, time_desc: bool = False):
    store = _store(request)
    users = [(c, name, u) for name, (c, u) in (await _users(store)).items()]
    items, more, nxt = _page(users, lambda r: (r[0], r[1]), limit, cursor, time_desc)
    return ok(_paged([user_json(store, n, c, u) for c, n, u in items], more, nxt))


@router.get("/user/{identifier}/resources")
async def user_resources(request: Request, identifier: str):
    store = _store(request)
    sessions = await store.list_sessions(user=identifier)
    skills = [s for s in store.list_skills() if s.user == identifier]
    # skillfs has no disks.
    return ok({"counts": {"sessions_count": len(sessions), "disks_count": 0,
                          "skills_count": len(skills)}})


@router.delete("/user/{identifier}")
async def delete_user(request: Request, identifier: str):
    """Delete the user's learning spaces, sessions and skills. The skills in the user's
    spaces stay unless they are the user's own (deleting a space never deletes skills)."""
    store = _store(request)
    if identifier not in await _users(store):
        raise NotFound("user not found")
    for space in [s for s in store.list_spaces() if s.user == identifier]:
        await store.delete_space(space.id, author="api")
    for row in await store.list_sessions(user=identifier):
        await store.delete_session(row.id)
    for skill in [s for s in store.list_skills() if s.user == identifier]:
        try:
            await store.delete_skill(skill.id, author="api")
        except NotFound:  # deleted in between
            pass
    return ok()


@router.get("/project/configs")
async def project_configs():
    # skillfs has no project-level task criteria: the learner's prompts decide.
    return ok({})


# -- wiring --------------------------------------------------------------------------------

def _errors(errors: Sequence) -> str:
    return "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                     for e in errors)


async def _answer(handler: Callable[[Request, Any], Response | Awaitable[Response]],
                  request: Request, exc: Exception) -> Response:
    """What an exception handler answers: Starlette takes plain functions as well as async."""
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response


def _ours(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def _signed_raw(scope) -> bool:
    # The raw-file route checks its own HMAC signature, so it needs no bearer token.
    return bool(_RAW_PATH.match(scope.get("path", "")))


def install(app: FastAPI) -> None:
    """Serve /api/v1 and give its errors Acontext's envelope; other paths keep theirs."""
    app.include_router(router)
    app.state.acontext_secret = os.urandom(32)
    app.state.auth_exempt = _signed_raw
    skillfs_before = app.exception_handlers.get(SkillfsError)
    internal_before = app.exception_handlers.get(Exception)
    http_before = app.exception_handlers.get(HTTPException, http_exception_handler)
    validation_before = app.exception_handlers.get(RequestValidationError,
                                                   request_validation_exception_handler)

    @app.exception_handler(SkillfsError)
    async def skillfs_error(request: Request, exc: SkillfsError):
        if _ours(request) or skillfs_before is None:
            # Go answers bad input with 400 where skillfs says 422.
            status = 400 if exc.http_status == 422 else exc.http_status
            return error(status, exc.message, request=request)
        return await _answer(skillfs_before, request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        if _ours(request) or internal_before is None:
            return error(500, "internal error", request=request)
        return await _answer(internal_before, request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _ours(request):
            return error(exc.status_code, str(exc.detail), headers=exc.headers)
        return await _answer(http_before, request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if _ours(request):
            return error(400, "parameter error", _errors(exc.errors()))
        return await _answer(validation_before, request, exc)
