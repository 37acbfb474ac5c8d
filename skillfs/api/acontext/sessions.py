"""Sessions: create, list, delete, their configs, flush (learn what they have now), and what
the learner made of them: tasks, how far it has read, and the session's size in tokens."""

from __future__ import annotations

import time
import uuid

import trio
from fastapi import Query, Request

from ...errors import Conflict, Exists
from ...store import StoredMessage
from . import editing
from .schemas import ConfigsIn, SessionIn, session_json, task_json
from .wire import (MAX_LIMIT, contains, find_session, iso, json_object, ok, page, paged,
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


@router.get("/session/{session_id}/task")
async def get_tasks(request: Request, session_id: uuid.UUID,
                    limit: int = Query(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
                    time_desc: bool = False):
    """The tasks the learner found in the session so far, with status, progress notes and
    the user's preferences (the SDK's `get_tasks` and `get_session_summary`)."""
    store = store_of(request)
    session = await find_session(store, session_id)
    rows = await store.list_tasks(session.id)
    # by order, which is the order the tasks were found in (the learner keeps a task's
    # row current by writing it again, so its timestamps do not tell)
    items, more, nxt = page(rows, lambda t: (t.ord, t.id), limit, cursor, time_desc)
    return ok(paged([task_json(store, t) for t in items], more, nxt))


def _total_tokens(rows: list[StoredMessage]) -> int:
    return sum(editing.tokens(sm.to_message().to_acontext_parts()) for sm in rows)


@router.get("/session/{session_id}/token_counts")
async def token_counts(request: Request, session_id: uuid.UUID):
    store = store_of(request)
    session = await find_session(store, session_id)
    rows = await store.get_messages(session.id)
    # Counting a long session is work for a thread, not the loop.
    return ok({"total_tokens": await trio.to_thread.run_sync(_total_tokens, rows)})


@router.get("/session/{session_id}/observing_status")
async def observing_status(request: Request, session_id: uuid.UUID):
    """Messages the learner has read (observed), is reading now (in_process: those after its
    mark while it extracts tasks) and has still to read (pending)."""
    store = store_of(request)
    session = await find_session(store, session_id)
    learning = await store.get_learning(session.id)
    observed, unread = await store.message_counts(
        session.id, learning.learned_seq if learning else -1)
    live = getattr(request.app.state.daemon.learner, "status", None)
    reading = callable(live) and live(session.id) == "extracting"
    return ok({"observed": observed, "in_process": unread if reading else 0,
               "pending": 0 if reading else unread, "updated_at": iso(time.time_ns())})
