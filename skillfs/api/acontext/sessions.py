"""Sessions: create, list, delete, their configs, and flush (learn what they have now)."""

from __future__ import annotations

import uuid

from fastapi import Query, Request

from ...errors import Conflict, Exists
from .schemas import ConfigsIn, SessionIn, session_json
from .wire import (MAX_LIMIT, contains, find_session, json_object, ok, page, paged,
                   router as new_router, store_of, utf8)

router = new_router()


@router.post("/session", status_code=201)
async def create_session(request: Request, body: SessionIn | None = None):
    store = store_of(request)
    body = body or SessionIn()
    utf8(body.model_dump(mode="json"), "body")
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
    store = store_of(request)
    want = json_object(filter_by_configs, "filter_by_configs")
    rows = await store.list_sessions(user=user or None)
    if want:
        rows = [r for r in rows if contains(r.configs, want)]
    items, more, nxt = page(rows, lambda r: (r.created_ns, r.id), limit, cursor, time_desc)
    return ok(paged([session_json(store, r) for r in items], more, nxt))


@router.delete("/session/{session_id}")
async def delete_session(request: Request, session_id: uuid.UUID):
    store = store_of(request)
    await store.delete_session((await find_session(store, session_id)).id)
    return ok()


@router.get("/session/{session_id}/configs")
async def get_configs(request: Request, session_id: uuid.UUID):
    store = store_of(request)
    return ok(session_json(store, await find_session(store, session_id)))


@router.put("/session/{session_id}/configs")
async def replace_configs(request: Request, session_id: uuid.UUID, body: ConfigsIn):
    store = store_of(request)
    row = await find_session(store, session_id)
    await store.update_session_configs(row.id, utf8(body.configs, "configs"), replace=True)
    return ok()


@router.patch("/session/{session_id}/configs")
async def patch_configs(request: Request, session_id: uuid.UUID, body: ConfigsIn):
    store = store_of(request)
    row = await find_session(store, session_id)
    # merged; a key given as null is removed
    row = await store.update_session_configs(row.id, utf8(body.configs, "configs"))
    return ok({"configs": row.configs})


@router.post("/session/{session_id}/flush")
async def flush(request: Request, session_id: uuid.UUID):
    store = store_of(request)
    session = await find_session(store, session_id)
    learner = request.app.state.daemon.learner
    notify = getattr(learner, "notify", None)
    if callable(notify):
        notify(session.id, "flush")
    else:
        await store.mark_session(session.id, "flush")
    return ok({"status": 0, "errmsg": ""})
