"""Users and the project: derived from the user names spaces, sessions and skills carry
(skillfs keeps no user or project rows)."""

from __future__ import annotations

from fastapi import Query, Request

from ...errors import NotFound
from ...store import Store
from .schemas import user_json
from .wire import MAX_LIMIT, ok, page, paged, router as new_router, store_of

router = new_router()


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
    store = store_of(request)
    users = [(c, name, u) for name, (c, u) in (await _users(store)).items()]
    items, more, nxt = page(users, lambda r: (r[0], r[1]), limit, cursor, time_desc)
    return ok(paged([user_json(store, n, c, u) for c, n, u in items], more, nxt))


@router.get("/user/{identifier}/resources")
async def user_resources(request: Request, identifier: str):
    store = store_of(request)
    sessions = await store.list_sessions(user=identifier)
    skills = [s for s in store.list_skills() if s.user == identifier]
    # a disk is a skill's folder: one each
    return ok({"counts": {"sessions_count": len(sessions), "disks_count": len(skills),
                          "skills_count": len(skills)}})


@router.delete("/user/{identifier}")
async def delete_user(request: Request, identifier: str):
    """Delete the user's learning spaces, sessions and skills. The skills in the user's
    spaces stay unless they are the user's own (deleting a space never deletes skills)."""
    store = store_of(request)
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
