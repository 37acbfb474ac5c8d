"""A session's messages: stored in any of the three forms (JSON or multipart), read back in
any of them, a page at a time."""

from __future__ import annotations

import json
import uuid

from fastapi import Query, Request
from pydantic import ValidationError

from ...messages import FORMATS, normalize
from ..guard import check_json_size
from .schemas import MessageIn, in_format, message_json
from .wire import (MAX_LIMIT, BadRequest, errors_text, find_session, message_id, ok, page,
                   paged, router as new_router, store_of, utf8)

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


@router.get("/session/{session_id}/messages")
async def get_messages(request: Request, session_id: uuid.UUID, format: str = "openai",
                       limit: int | None = Query(None, ge=0, le=MAX_LIMIT),
                       cursor: str | None = None, time_desc: bool = False):
    store = store_of(request)
    session = await find_session(store, session_id)
    if format not in FORMATS:
        raise BadRequest(f"unsupported format {format!r} (skillfs gives {', '.join(FORMATS)})")
    learning = await store.get_learning(session.id)
    learned = learning.learned_seq if learning else -1
    rows = await store.get_messages(session.id)
    items_page, more, nxt = page(rows, lambda m: (m.seq, ""), limit, cursor, time_desc)
    items, ids, metas = [], [], []
    for sm in items_page:
        for item in in_format(sm, format, learned):
            items.append(item)
            ids.append(message_id(sm.session_id, sm.seq))
            metas.append(sm.meta or {})
    tokens = sum(len(json.dumps(i, ensure_ascii=False)) for i in items) // 4
    data = {**paged(items, more, nxt), "ids": ids, "metas": metas,
            "this_time_tokens": tokens}
    if ids:
        data["edit_at_message_id"] = ids[-1]
    return ok(data)
