"""A session's messages: stored in any of the three forms (JSON or multipart), read back in
any of them, a page at a time."""

from __future__ import annotations

import json
import uuid

import trio
from fastapi import Query, Request
from pydantic import ValidationError

from ...errors import NotFound
from ...messages import FORMATS, normalize
from ..guard import check_json_size
from . import editing
from .schemas import MAX_META, MessageIn, MetaIn, in_format, message_json
from .wire import (MAX_LIMIT, BadRequest, errors_text, find_session, message_id, ok, page,
                   router as new_router, store_of, utf8)

router = new_router()

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
        raise BadRequest("parameter error: " + errors_text(e.errors())) from None


@router.post("/session/{session_id}/messages", status_code=201,
             openapi_extra={"requestBody": _MESSAGE_BODY})
async def store_message(request: Request, session_id: uuid.UUID):
    store = store_of(request)
    session = await find_session(store, session_id)
    body = await _message_in(request)
    if body.format not in FORMATS:
        raise BadRequest(f"unsupported format {body.format!r} "
                         f"(skillfs takes {', '.join(FORMATS)})")
    utf8(body.blob, "blob")
    utf8(body.meta, "meta")
    message = normalize(body.blob, body.format)
    if not message.text and not message.tool_calls and message.role != "tool":
        raise BadRequest("message must contain at least one part")
    [seq] = await store.add_messages(session.id, [message], author="api", metas=[body.meta])
    [stored] = await store.get_messages(session.id, after_seq=seq - 1, limit=1)
    return ok(message_json(stored), 201)


def _rendered(item: editing.Item, fmt: str, learned: int) -> list[dict]:
    """A page's message in the requested form: as stored, or from its edited parts."""
    sm = item.stored
    if not item.edited:
        return in_format(sm, fmt, learned)
    if fmt == "acontext":
        return [{**message_json(sm, learned_seq=learned), "parts": item.parts}]
    role = sm.to_message().role
    return normalize({"role": role, "parts": item.parts}, "acontext").render(fmt)


def _page_out(items: list[editing.Item], fmt: str, learned: int) -> dict:
    out: dict[str, list] = {"items": [], "ids": [], "metas": []}
    for item in items:
        for rendered in _rendered(item, fmt, learned):
            out["items"].append(rendered)
            out["ids"].append(item.id)
            out["metas"].append(item.stored.meta or {})
    return {**out, "this_time_tokens": sum(editing.tokens(i.parts) for i in items)}


@router.get("/session/{session_id}/messages")
async def get_messages(request: Request, session_id: uuid.UUID, format: str = "openai",
                       limit: int | None = Query(None, ge=0, le=MAX_LIMIT),
                       cursor: str | None = None, time_desc: bool = False,
                       with_events: bool = False, edit_strategies: str | None = None,
                       pin_editing_strategies_at_message: str | None = None):
    """A page of messages, oldest first (`time_desc` picks which page); `edit_strategies`
    (see editing.py) apply to it before it is rendered."""
    store = store_of(request)
    session = await find_session(store, session_id)
    if format not in FORMATS:
        raise BadRequest(f"unsupported format {format!r} (skillfs gives {', '.join(FORMATS)})")
    strategies = editing.parse(edit_strategies) if edit_strategies else []
    learning = await store.get_learning(session.id)
    learned = learning.learned_seq if learning else -1
    rows = await store.get_messages(session.id)
    chosen, more, nxt = page(rows, lambda m: (m.seq, ""), limit, cursor, time_desc)
    chosen.sort(key=lambda m: m.seq)
    # with no strategy there is nothing to pin: edits end at the page's last message
    pin = pin_editing_strategies_at_message if strategies else None
    # Converting and counting a long session's tokens is work for a thread, not the loop.
    data = await trio.to_thread.run_sync(_edited_page, chosen, strategies, pin, format,
                                         learned)
    data.update(next_cursor=nxt, has_more=more)
    if with_events:
        data["events"] = []  # skillfs keeps no session events
    return ok(data)


def _edited_page(chosen: list, strategies: list, pin: str | None, fmt: str,
                 learned: int) -> dict:
    items, edit_at = editing.edit(chosen, strategies, pin)
    data = _page_out(items, fmt, learned)
    if edit_at is not None:
        data["edit_at_message_id"] = edit_at
    return data


def _seq_of(session_id: str, last_seq: int, wanted: str) -> int:
    """The sequence number behind a message id (ids are derived from it, not stored)."""
    for seq in range(last_seq + 1):
        if message_id(session_id, seq) == wanted:
            return seq
    raise NotFound("message not found")


@router.patch("/session/{session_id}/messages/{message_id}/meta")
async def patch_message_meta(request: Request, session_id: uuid.UUID, message_id: uuid.UUID,
                             body: MetaIn):
    """Merge `meta` into the message's own meta (a key given as null is removed); the
    message itself does not change."""
    store = store_of(request)
    session = await find_session(store, session_id)
    if len(json.dumps(utf8(body.meta, "meta"), ensure_ascii=False).encode()) > MAX_META:
        raise BadRequest("meta size exceeds 64KB limit")
    seq = await trio.to_thread.run_sync(_seq_of, session.id, store.last_seq(session.id),
                                        str(message_id))
    try:
        meta = await store.patch_message_meta(session.id, seq, body.meta)
    except NotFound:  # its session was deleted in between
        raise NotFound("message not found") from None
    return ok({"meta": meta})
