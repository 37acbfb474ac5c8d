"""Acontext's wire format, shared by every route group: the response envelope, times, the
ids skillfs derives rather than stores, keyset paging, the checks every input goes through,
and finding what a path names.

Acontext has users, a project and per-row ids that skillfs does not keep (a learning record,
a space-skill link, a message, a disk); those ids are derived (uuid5) from what skillfs does
keep, so they are stable across calls and restarts.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, UTC
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...errors import NotFound, SkillfsError
from ...store import SkillRow, SpaceRow, SessionRow, Store
from ..guard import TextCheckedRoute, request_id

PREFIX = "/api/v1"
MAX_LIMIT = 200
# A skill file's signed download (skills.py): it carries its own proof, no token
RAW_PATH = re.compile(rf"^{PREFIX}/agent_skills/[^/]+/raw$")

# Namespace of every id skillfs derives rather than stores.
_NS = uuid.uuid5(uuid.NAMESPACE_OID, "skillfs.acontext")


class BadRequest(SkillfsError):
    http_status = 400


def router() -> APIRouter:
    """A route group's router: under /api/v1, JSON bodies checked for lone surrogates."""
    return APIRouter(prefix=PREFIX, route_class=TextCheckedRoute)


# -- ids, times, envelopes ---------------------------------------------------------------

def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def derived(*parts: Any) -> str:
    return str(uuid.uuid5(_NS, "\0".join(str(p) for p in parts)))


def user_id(identifier: str | None) -> str | None:
    return derived("user", identifier) if identifier else None


def project_id(store: Store) -> str:
    return derived("project", os.path.realpath(store.db_path))


def message_id(session_id: str, seq: int) -> str:
    return derived("message", session_id, seq)


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


def store_of(request: Request) -> Store:
    return request.app.state.daemon.store


# -- input ---------------------------------------------------------------------------------

def utf8(value: Any, what: str) -> Any:
    """Refuse strings DuckDB cannot store (lone surrogates arrive through JSON escapes)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None
    except (TypeError, ValueError):
        raise BadRequest(f"{what} is not JSON") from None
    return value


def json_object(text: str | None, what: str) -> dict | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise BadRequest(f"invalid {what} JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return utf8(value, what)


def contains(value: Any, want: Any) -> bool:
    """JSON containment as PostgreSQL's @> decides it for objects."""
    if isinstance(want, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in want.items())
    return value == want


def errors_text(errors: Sequence) -> str:
    return "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                     for e in errors)


# -- pagination (keyset on (created, id), so a cursor survives dropped filters) ----------

def _cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}|{key[1]}".encode()).decode()


def _uncursor(text: str) -> tuple[int, str]:
    try:
        t, _, i = base64.urlsafe_b64decode(text.encode("ascii")).decode().partition("|")
        return int(t), i
    except (ValueError, UnicodeError, binascii.Error):
        raise BadRequest("invalid cursor") from None


def page(rows: list, key: Callable[[Any], tuple[int, str]], limit: int | None,
         cursor: str | None, desc: bool) -> tuple[list, bool, str | None]:
    rows = sorted(rows, key=key, reverse=desc)
    if cursor:
        after = _uncursor(cursor)
        rows = [r for r in rows if (key(r) < after if desc else key(r) > after)]
    if not limit:
        return rows, False, None
    items, more = rows[:limit], len(rows) > limit
    return items, more, _cursor(key(items[-1])) if more else None


def paged(items: list, more: bool, nxt: str | None) -> dict:
    return {"items": items, "next_cursor": nxt, "has_more": more}


# -- lookups -------------------------------------------------------------------------------

def find_space(store: Store, space_id: uuid.UUID) -> SpaceRow:
    space = store.find_space(str(space_id))
    if space is None or space.id != str(space_id):  # by id, not by a name that looks like one
        raise NotFound("learning space not found")
    return space


def find_skill(store: Store, skill_id: uuid.UUID) -> SkillRow:
    skill = store.find_skill(str(skill_id))
    if skill is None:
        raise NotFound("skill not found")
    return skill


async def find_session(store: Store, session_id: uuid.UUID) -> SessionRow:
    try:
        return await store.get_session(str(session_id))
    except NotFound:
        raise NotFound("session not found") from None
