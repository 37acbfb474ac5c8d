"""Learning spaces: create, list, get, update, delete; a session learns into one; the skills
it includes. A space is a folder of the mount."""

from __future__ import annotations

import uuid

from fastapi import Query, Request

from ... import names
from ...errors import Conflict, Exists, Invalid, NotFound
from ...store import Store
from .schemas import IncludeIn, LearnIn, SpaceIn, SpaceUpdate, record_json, skill_json, space_json
from .wire import (MAX_LIMIT, contains, derived, find_session, find_skill, find_space, iso,
                   json_object, ok, page, paged, router as new_router, store_of, utf8)

router = new_router()


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
    store = store_of(request)
    body = body or SpaceIn()
    utf8(body.model_dump(), "body")
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
    store = store_of(request)
    want = json_object(filter_by_meta, "filter_by_meta")
    rows = store.list_spaces()
    if user:
        rows = [s for s in rows if s.user == user]
    if want:
        rows = [s for s in rows if s.meta and contains(s.meta, want)]
    items, more, nxt = page(rows, lambda s: (s.created_ns, s.id), limit, cursor, time_desc)
    return ok(paged([space_json(s) for s in items], more, nxt))


@router.get("/learning_spaces/{space_id}")
async def get_space(request: Request, space_id: uuid.UUID):
    return ok(space_json(find_space(store_of(request), space_id)))


@router.patch("/learning_spaces/{space_id}")
async def update_space(request: Request, space_id: uuid.UUID, body: SpaceUpdate):
    store = store_of(request)
    space = find_space(store, space_id)
    # Meta is merged; the folder keeps its name even if meta["name"] changes.
    space = await store.update_space(space.id, meta=utf8(body.meta, "meta"), author="api")
    return ok(space_json(space))


@router.delete("/learning_spaces/{space_id}")
async def delete_space(request: Request, space_id: uuid.UUID):
    store = store_of(request)
    await store.delete_space(find_space(store, space_id).id, author="api")
    return ok()


@router.post("/learning_spaces/{space_id}/learn", status_code=201)
async def learn(request: Request, space_id: uuid.UUID, body: LearnIn):
    store = store_of(request)
    space = find_space(store, space_id)
    session = await find_session(store, body.session_id)
    # strict: a session that learns into any space already (this one too) is a 409, and
    # of two concurrent requests for the same session exactly one gets the 201.
    try:
        row = await store.attach_session(session.id, space.id, strict=True)
    except NotFound:  # deleted in between
        raise NotFound("session not found") from None
    return ok(record_json(request, row), 201)


@router.get("/learning_spaces/{space_id}/sessions")
async def list_space_sessions(request: Request, space_id: uuid.UUID):
    store = store_of(request)
    space = find_space(store, space_id)
    return ok([record_json(request, r) for r in await store.list_learning(space.id)])


@router.get("/learning_spaces/{space_id}/sessions/{session_id}")
async def get_space_session(request: Request, space_id: uuid.UUID, session_id: uuid.UUID):
    store = store_of(request)
    space = find_space(store, space_id)
    row = await store.get_learning(str(session_id))
    if row is None or row.space_id != space.id:
        raise NotFound("session does not learn into this learning space")
    return ok(record_json(request, row))


@router.post("/learning_spaces/{space_id}/skills", status_code=201)
async def include_skill(request: Request, space_id: uuid.UUID, body: IncludeIn):
    store = store_of(request)
    space, skill = find_space(store, space_id), find_skill(store, body.skill_id)
    if space.skills.get(skill.name) == skill.id:
        raise Conflict("skill already included in this space")
    if skill.name in space.skills:
        raise Conflict(f"skill with name '{skill.name}' already exists in this space")
    await store.include_skill(space.id, skill.id, author="api")
    # Including a skill stamps the space with the time of the link.
    linked = store.get_space(space.id).updated_ns
    return ok({"id": derived("space-skill", space.id, skill.id),
               "learning_space_id": space.id, "skill_id": skill.id,
               "created_at": iso(linked)}, 201)


@router.get("/learning_spaces/{space_id}/skills")
async def list_space_skills(request: Request, space_id: uuid.UUID):
    store = store_of(request)
    return ok([skill_json(s) for s in store.list_space_skills(find_space(store, space_id).id)])


@router.delete("/learning_spaces/{space_id}/skills/{skill_id}")
async def exclude_skill(request: Request, space_id: uuid.UUID, skill_id: uuid.UUID):
    store = store_of(request)
    space = find_space(store, space_id)
    if store.find_skill(str(skill_id)) is not None:  # excluding an unknown skill: a no-op
        await store.exclude_skill(space.id, str(skill_id), author="api")
    return ok()
