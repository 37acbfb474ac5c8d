"""The control API the `skillfs` CLI speaks, under /skillfs/v1."""

from __future__ import annotations

import os
import time

import trio
from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field

from .. import noflush, search
from ..patterns import SearchError
from ..errors import Conflict, Invalid, NotFound
from ..skillzip import read_skill_zip, write_skill_zip
from ..store import Store
from .guard import TextCheckedRoute

router = APIRouter(prefix="/skillfs/v1", route_class=TextCheckedRoute)


def _store(request: Request) -> Store:
    return request.app.state.daemon.store


def _ns(ns: int) -> float:
    return ns / 1e9


def space_json(space) -> dict:
    return {"id": space.id, "name": space.name, "user": space.user, "meta": space.meta,
            "skills": sorted(space.skills), "created_at": _ns(space.created_ns),
            "updated_at": _ns(space.updated_ns)}


def skill_json(skill) -> dict:
    return {"id": skill.id, "name": skill.name, "description": skill.description,
            "files": [{"path": p, "size": n.size, "version": n.version}
                      for p, n in sorted(skill.files.items())],
            "spaces": sorted(skill.spaces), "updated_at": _ns(skill.updated_ns)}


def session_json(row, learning=None) -> dict:
    return {"id": row.id, "name": row.name, "user": row.user, "space_id": row.space_id,
            "configs": row.configs, "ended": row.ended, "created_at": _ns(row.created_ns),
            "learning_status": learning.status if learning else None,
            "learning_error": learning.error if learning else None}


def _rejected(spool) -> int:
    """Spool files moved aside: each has a `.error.json` sidecar saying why."""
    try:
        return sum(1 for e in os.scandir(os.path.join(spool, ".rejected"))
                   if e.name.endswith(".error.json"))
    except OSError:
        return 0


@router.get("/status")
async def status(request: Request):
    d = request.app.state.daemon
    store = d.store
    counts = await store.counts()
    db_size = await store.size_bytes()
    return {"pid": os.getpid(), "mountpoint": str(d.mountpoint), "db": store.db_path,
            "db_bytes": db_size, "database": store.health(), "spool": str(d.config.spool),
            "socket": str(d.config.socket), "log": str(d.config.log_file),
            "home": str(d.config.home),
            "spool_backlog": d.spool_backlog(), "spool_rejected": _rejected(d.config.spool),
            "counts": counts,
            "learner": d.learner_backend, "uptime_s": round(time.time() - d.started_at, 3),
            "learner_usage": d.learner.usage_total() if d.learner is not None else None,
            "noflush": noflush.ACTIVE, "noflush_opens": noflush.replies()}


class SpaceIn(BaseModel):
    name: str
    user: str | None = None
    meta: dict | None = None


@router.get("/spaces")
async def list_spaces(request: Request):
    return [space_json(s) for s in
            sorted(_store(request).list_spaces(), key=lambda s: s.name)]


@router.post("/spaces", status_code=201)
async def create_space(request: Request, body: SpaceIn):
    space = await _store(request).create_space(body.name, body.user, body.meta, author="cli")
    return space_json(space)


@router.delete("/spaces/{ref}")
async def delete_space(request: Request, ref: str):
    store = _store(request)
    await store.delete_space(store.get_space(ref).id, author="cli", with_skills=True)
    return {"deleted": ref}


def _skill_in(store: Store, space: str, skill: str):
    """A skill of the space, by name or id. Another space's skill is not found here, and
    the answer does not tell whether it exists elsewhere."""
    skills = store.get_space(space).skills  # ids by name
    found = skills.get(skill) or (skill if skill in skills.values() else None)
    if found is None:
        raise NotFound(f"no skill {skill!r} in space {space!r}")
    return store.get_skill(found)


@router.get("/skills")
async def list_skills(request: Request, space: str):
    store = _store(request)
    return [skill_json(s) for s in store.list_space_skills(store.get_space(space).id)]


@router.delete("/skills")
async def delete_skill(request: Request, space: str, skill: str):
    """Take a skill out of a space; a skill no other space includes is deleted (its files'
    history stays in the database)."""
    store = _store(request)
    found = _skill_in(store, space, skill)
    deleted = await store.remove_skill(store.get_space(space).id, found.id, author="cli")
    left = store.find_skill(found.id)
    return {"name": found.name, "deleted": deleted, "still_in": sorted(
        store.get_space(s).name for s in (left.spaces if left else ()))}


@router.post("/skills/import", status_code=201)
async def import_skill(request: Request, space: str = Query(...),
                       data: bytes = Body(..., media_type="application/zip")):
    store = _store(request)
    # Inflating takes a while: off the loop that also serves the mount.
    skill_md, files = await trio.to_thread.run_sync(read_skill_zip, data, store.max_file_size)
    skill = await store.create_skill(skill_md, files, space_id=store.get_space(space).id,
                                     author="cli", reason="import")
    return skill_json(skill)


@router.get("/skills/export")
async def export_skill(request: Request, space: str, skill: str):
    store = _store(request)
    found = _skill_in(store, space, skill)
    files = {p: await store.content(n) for p, n in found.files.items()}
    return Response(write_skill_zip(found.name, files), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{found.name}.zip"'})


@router.get("/sessions")
async def list_sessions(request: Request, space: str | None = None):
    store = _store(request)
    learning = {r.session_id: r for r in await store.list_learning()}
    space_id = store.get_space(space).id if space else None
    return [session_json(s, learning.get(s.id))
            for s in await store.list_sessions(space_id=space_id)]


async def _session_id(store: Store, ref: str) -> str:
    """A session's id from its id or its name (the spool folder it came from)."""
    try:
        return (await store.get_session(ref)).id
    except NotFound:
        pass
    found = [s for s in await store.list_sessions() if s.name == ref]
    if not found:
        raise NotFound(f"no session with id or name {ref!r}")
    if len(found) > 1:
        raise Conflict(f"{len(found)} sessions are named {ref!r}; use an id: "
                       + ", ".join(s.id for s in found))
    return found[0].id


@router.get("/sessions/{session_ref}")
async def show_session(request: Request, session_ref: str):
    store = _store(request)
    session_id = await _session_id(store, session_ref)
    row = await store.get_session(session_id)
    out = session_json(row, await store.get_learning(session_id))
    out["messages"] = [{"seq": m.seq, "role": m.role, "format": m.format,
                        "text": m.body.get("text", ""), "task_id": m.task_id}
                       for m in await store.get_messages(session_id)]
    out["tasks"] = [{"id": t.id, "description": t.description, "status": t.status}
                    for t in await store.list_tasks(session_id)]
    return out


def _split(path: str) -> tuple[str, str, str]:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 3:
        raise Invalid(f"{path!r} is not a file inside a skill (SPACE/SKILL/FILE)")
    return parts[0], parts[1], "/".join(parts[2:])


@router.get("/files/log")
async def file_log(request: Request, path: str):
    store = _store(request)
    space, skill, rel = _split(path)
    rows = await store.file_log(_skill_in(store, space, skill).id, rel)
    return [{"version": r.version, "path": r.path, "size": r.size, "sha256": r.sha256,
             "author": r.author, "reason": r.reason, "session_id": r.session_id,
             "task_id": r.task_id, "at": _ns(r.at_ns), "deleted": r.deleted,
             "purged_by": r.purged_by, "purge_reason": r.purge_reason,
             "purged_at": _ns(r.purged_at_ns) if r.purged_at_ns else None} for r in rows]


@router.get("/files")
async def read_file(request: Request, path: str, version: int | None = Query(None, ge=1)):
    """The current content of a file, or that of one of its versions."""
    store = _store(request)
    space, skill, rel = _split(path)
    skill_id = _skill_in(store, space, skill).id
    if version is not None:
        return Response(await store.read_version(skill_id, rel, version),
                        media_type="application/octet-stream",
                        headers={"X-Skillfs-Version": str(version)})
    content = await store.read_file(skill_id, rel)
    return Response(content.content, media_type="application/octet-stream",
                    headers={"X-Skillfs-Version": str(content.version)})


@router.put("/files")
async def write_file(request: Request, path: str,
                     data: bytes = Body(..., media_type="application/octet-stream")):
    store = _store(request)
    space, skill, rel = _split(path)
    node = await store.write_file(_skill_in(store, space, skill).id, rel, data, author="api",
                                  reason="write through the API")
    return {"path": path, "version": node.version, "size": node.size}


class RevertIn(BaseModel):
    path: str
    version: int


@router.post("/files/revert")
async def revert(request: Request, body: RevertIn):
    store = _store(request)
    space, skill, rel = _split(body.path)
    node, changed = await store.revert_file(_skill_in(store, space, skill).id, rel,
                                            body.version, author="cli")
    return {"path": body.path, "version": node.version, "size": node.size, "changed": changed}


class BadRequest(Invalid):
    http_status = 400


class PurgeIn(BaseModel):
    """What to purge: one version, or every version matching a regular expression. `who`
    is the caller's name for the record (the CLI sends its user's), `why` is required."""

    path: str
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    all_matching: str | None = Field(None, max_length=4096)
    why: str = Field(..., max_length=4096)
    who: str | None = Field(None, max_length=256)


def _purger(who: str | None, why: str) -> tuple[str, str]:
    if not why.strip():
        raise BadRequest("say why the content is purged (why)")
    return (who or "").strip() or "api", why.strip()


@router.post("/files/purge")
async def purge_file(request: Request, body: PurgeIn):
    """Replace the content of versions of a file by a tombstone; a current content that
    matches is first written again without the matches."""
    if (body.version is None) == (body.all_matching is None):
        raise BadRequest("give either version or all_matching")
    by, why = _purger(body.who, body.why)
    store = _store(request)
    space, skill, rel = _split(body.path)
    # A bad pattern is the search engine's SearchError, a 400.
    out = await store.purge_file(_skill_in(store, space, skill).id, rel, by=by, why=why,
                                 version=body.version, pattern=body.all_matching)
    return {"path": body.path, "purged": out.purged, "rewritten": out.rewritten,
            "compacted": out.compacted}


class SessionPurgeIn(BaseModel):
    why: str = Field(..., max_length=4096)
    who: str | None = Field(None, max_length=256)


@router.post("/sessions/{session_ref}/purge")
async def purge_session(request: Request, session_ref: str, body: SessionPurgeIn):
    """Replace the content of a session's messages by a tombstone (the rows stay)."""
    by, why = _purger(body.who, body.why)
    store = _store(request)
    session_id = await _session_id(store, session_ref)
    count, compacted = await store.purge_session(session_id, by=by, why=why)
    return {"session_id": session_id, "purged": count, "compacted": compacted}


SEARCH_CAP = 10_000  # matches one search may return
GLOB_CAP = 100_000  # paths one glob may return
SEARCH_SECONDS = 30.0  # the longest time cap a search may ask for


def _bounded(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SearchError(f"{name} must be between {low:g} and {high:g}, not {value:g}")


@router.get("/search")
async def search_files(request: Request, pattern: str, space: list[str] | None = Query(None),
                       skill: str | None = None, glob: str | None = None, fixed: bool = False,
                       ignore_case: bool = False, max_results: int = 1000,
                       timeout: float = 5.0):
    """Lines of current files that match, in space, skill and path order (the engine:
    skillfs/search.py)."""
    _bounded("max_results", max_results, 1, SEARCH_CAP)
    _bounded("timeout", timeout, 0.1, SEARCH_SECONDS)
    found = await search.search(_store(request), pattern, spaces=space, skill=skill,
                                glob=glob, fixed=fixed, ignore_case=ignore_case,
                                max_results=max_results, timeout=timeout)
    return found.as_json()


@router.get("/glob")
async def glob_files(request: Request, pattern: str, space: list[str] | None = Query(None),
                     skill: str | None = None, max_results: int = 10_000):
    """Current files whose path relative to their space matches the glob, as paths under
    the mount root."""
    _bounded("max_results", max_results, 1, GLOB_CAP)
    paths = await search.glob(_store(request), pattern, spaces=space, skill=skill,
                              max_results=max_results + 1)
    return {"paths": paths[:max_results], "truncated": len(paths) > max_results}


@router.get("/trash")
async def list_trash(request: Request, space: str | None = None):
    """Deleted spaces, skills and files, oldest deletion first."""
    return [{"kind": e.kind, "path": e.path, "author": e.author, "at": _ns(e.at_ns),
             "version": e.version, "files": e.files}
            for e in await _store(request).list_trash(space)]


class RestoreIn(BaseModel):
    path: str


@router.post("/trash/restore")
async def restore(request: Request, body: RestoreIn):
    """Bring back a deleted space, skill or file as a new version."""
    return await _store(request).restore(body.path, author="cli")


@router.post("/sessions/{session_ref}/flush")
async def flush_session(request: Request, session_ref: str):
    store = _store(request)
    session_id = await _session_id(store, session_ref)
    await store.mark_session(session_id, "flush")
    return {"flushed": session_id}


def learning_json(row, learner=None) -> dict:
    # usage: model calls and tokens spent on the session since the daemon started
    return {"session_id": row.session_id, "space_id": row.space_id, "status": row.status,
            "error": row.error, "updated_at": _ns(row.updated_ns),
            "usage": learner.usage(row.session_id) if learner is not None else None}


def _learner(request: Request):
    return request.app.state.daemon.learner


@router.get("/learning")
async def learning_status(request: Request, session: str | None = None,
                          space: str | None = None):
    store = _store(request)
    space_id = store.get_space(space).id if space else None
    if session is not None:
        session = await _session_id(store, session)
        row = await store.get_learning(session)
        if row is None or space_id not in (None, row.space_id):
            raise NotFound(f"session {session} is not learning into "
                           f"{'space ' + repr(space) if space else 'any space'}")
        return [learning_json(row, _learner(request))]
    return [learning_json(r, _learner(request)) for r in await store.list_learning(space_id)]


@router.post("/learning/{session_ref}/wait")
async def learning_wait(request: Request, session_ref: str, timeout: float = 120.0):
    d = request.app.state.daemon
    store = d.store
    # A session just dropped into the spool may not be ingested yet: wait for it too.
    with trio.move_on_after(min(timeout, 10.0)):
        while True:
            try:
                session_id = await _session_id(store, session_ref)
                if await store.get_learning(session_id) is not None:
                    break
            except NotFound:
                pass
            await trio.sleep(0.1)
    session_id = await _session_id(store, session_ref)
    if await store.get_learning(session_id) is None:
        raise NotFound(f"session {session_id} is not learning into any space")
    with trio.move_on_after(timeout):
        if d.learner is not None:
            await d.learner.wait(session_id, timeout)
        else:
            while (await store.get_learning(session_id)).status not in ("completed", "failed"):
                await trio.sleep(0.2)
    row = await store.get_learning(session_id)
    out = learning_json(row, d.learner)
    out["timed_out"] = row.status not in ("completed", "failed")
    return out


@router.post("/learning/{session_ref}/retry")
async def learning_retry(request: Request, session_ref: str):
    d = request.app.state.daemon
    if d.learner is None:
        raise Invalid("the learner is off (start the daemon with --learner rules|openai)")
    session_id = await _session_id(d.store, session_ref)
    await d.learner.retry(session_id)
    return learning_json(await d.store.get_learning(session_id), d.learner)


@router.post("/shutdown")
async def shutdown(request: Request):
    # Reply first, then stop: the caller waits for the process to exit.
    trio.lowlevel.spawn_system_task(request.app.state.daemon.stop)
    return {"stopping": True}
