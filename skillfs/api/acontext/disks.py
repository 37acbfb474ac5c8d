"""Disks and artifacts, as far as skills have them: in Acontext every skill keeps its files
on a disk (`skill.disk_id`), and its plugins read and search a skill through that disk's
artifact routes. Here a disk is a skill's folder, under the id each skill already reports;
an artifact is one of its files, at `path` (its folder, between slashes) + `filename`.

Served: list disks, get, download, list, grep and glob artifacts, and upload or delete one
(through the store, as a write through the mount: a new version, seen there at once).
grep and glob run on the search engine (search.py), the one behind `skillfs search`: grep
takes RE2 patterns, case-insensitive as Acontext's `~*`, and answers the files with a
matching line (text files only, as Acontext's); glob takes shell globs (`*` within a folder,
`**` across folders) from the disk's root, and one without `/` matches names at any depth.
A grep that hit the engine's time or result cap says so in `X-Skillfs-Search` (the SDK's
list has no room for it).
Not served: creating or deleting a disk (a disk comes and goes with its skill), artifact
meta (skillfs keeps none per file: a non-empty `meta` is refused), sandboxes.
"""

from __future__ import annotations

import posixpath
import uuid
from typing import Any

from fastapi import File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from ... import names
from ...errors import Invalid, NotFound
from ...search import glob, search
from ...store import FileRow, SkillRow, Store
from .schemas import mime, skill_disk_id, skill_files
from .skills import signed_url, text_content
from .wire import (MAX_LIMIT, BadRequest, iso, json_object, ok, page, paged, project_id,
                   router as new_router, store_of, user_id)

router = new_router()

_INFO = "__artifact_info__"
# Acontext's default and cap on the files a grep or glob answers
_DEFAULT_FOUND, _MAX_FOUND = 100, 1000
# the engine's caps on one grep: matching lines (several may be in one file) and seconds
_GREP_LINES, _GREP_SECONDS = 10_000, 5.0


def _disk(store: Store, wanted: uuid.UUID) -> SkillRow:
    for skill_id in store.skill_ids():
        if skill_disk_id(skill_id) == str(wanted):
            skill = store.find_skill(skill_id)
            if skill is not None:  # deleted in between
                return skill
    raise NotFound("disk not found")


def _file_path(text: str) -> str:
    """A skill-relative path from Acontext's (`/notes/a.md`, or without the first slash)."""
    path = text.strip().removeprefix("/")
    try:
        names.check_rel_path(path)
    except Invalid as e:
        raise BadRequest(f"invalid file_path: {e.message}") from None
    return path


def _folder(path: str) -> str:
    """Acontext's folder form: `/` or `/a/b/`."""
    return f"/{path}/" if path else "/"


def disk_json(store: Store, skill: SkillRow) -> dict:
    return {"id": skill_disk_id(skill.id), "project_id": project_id(store),
            "user_id": user_id(skill.user), "created_at": iso(skill.created_ns),
            "updated_at": iso(skill.updated_ns)}


def artifact_json(skill: SkillRow, node: FileRow) -> dict:
    folder, name = posixpath.split(node.path)
    info = {"path": _folder(folder), "filename": name, "mime": mime(node.path),
            "size": node.size}
    return {"disk_id": skill_disk_id(skill.id), "path": _folder(folder), "filename": name,
            "meta": {_INFO: info},
            "created_at": iso(node.ctime_ns), "updated_at": iso(node.mtime_ns)}


def _artifact(store: Store, wanted: uuid.UUID, file_path: str) -> tuple[SkillRow, FileRow]:
    skill = _disk(store, wanted)
    node = skill.files.get(_file_path(file_path))
    if node is None:
        raise NotFound("artifact not found")
    return skill, node


@router.get("/disk")
async def list_disks(request: Request, user: str | None = None,
                     limit: int = Query(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
                     time_desc: bool = False):
    store = store_of(request)
    rows = [s for s in store.list_skills() if not user or s.user == user]
    items, more, nxt = page(rows, lambda s: (s.created_ns, s.id), limit, cursor, time_desc)
    return ok(paged([disk_json(store, s) for s in items], more, nxt))


@router.get("/disk/{disk_id}/artifact")
async def get_artifact(request: Request, disk_id: uuid.UUID, file_path: str,
                       with_public_url: bool = True, with_content: bool = True,
                       expire: int = Query(3600, ge=1, le=7 * 86400)):
    """The artifact; its text when asked and it is UTF-8; a URL that fetches it without a
    token when asked and the daemon listens on TCP."""
    store = store_of(request)
    skill, node = _artifact(store, disk_id, file_path)
    out: dict[str, Any] = {"artifact": artifact_json(skill, node)}
    if with_public_url:
        url = signed_url(request, skill.id, node.path, expire)
        if url is not None:
            out["public_url"] = url
    if with_content:
        content = text_content(await store.content(node), mime(node.path))
        if content is not None:
            out["content"] = content
    return ok(out)


@router.get("/disk/{disk_id}/artifact/download",
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_artifact(request: Request, disk_id: uuid.UUID, file_path: str):
    store = store_of(request)
    _, node = _artifact(store, disk_id, file_path)
    return Response(await store.content(node), media_type=mime(node.path))


@router.get("/disk/{disk_id}/artifact/ls")
async def list_artifacts(request: Request, disk_id: uuid.UUID, path: str = "/"):
    """The artifacts right in folder `path` and the names of its sub-folders."""
    skill = _disk(store_of(request), disk_id)
    folder = path.strip() or "/"
    if folder != "/" and not folder.endswith("/"):
        raise BadRequest("both ends of the path must be '/'")
    folder = folder.strip("/")
    if folder:
        _file_path(folder)
    prefix = folder + "/" if folder else ""
    artifacts, folders = [], set()
    for node in skill_files(skill):
        if not node.path.startswith(prefix):
            continue
        rest = node.path[len(prefix):]
        if "/" in rest:
            folders.add(rest.split("/", 1)[0])
        else:
            artifacts.append(artifact_json(skill, node))
    return ok({"artifacts": artifacts, "directories": sorted(folders)})


@router.post("/disk/{disk_id}/artifact", status_code=201)
async def upsert_artifact(request: Request, disk_id: uuid.UUID, file: UploadFile = File(...),
                          file_path: str = Form("/"), meta: str | None = Form(None)):
    """Write the uploaded file into folder `file_path` under its own name, as a new version
    (SKILL.md is checked as every write of it is)."""
    store = store_of(request)
    skill = _disk(store, disk_id)
    if json_object(meta, "meta"):
        raise BadRequest("skillfs keeps no meta per artifact: send none")
    folder = file_path.strip().strip("/")
    path = _file_path(f"{folder}/{file.filename or ''}" if folder else file.filename or "")
    row = await store.write_file(skill.id, path, await file.read(), author="api",
                                 reason="upload")
    return ok(artifact_json(skill, row), 201)


@router.delete("/disk/{disk_id}/artifact")
async def delete_artifact(request: Request, disk_id: uuid.UUID, file_path: str):
    store = store_of(request)
    skill, node = _artifact(store, disk_id, file_path)
    await store.delete_file(skill.id, node.path, author="api")
    return ok()


def _scope(skill: SkillRow) -> list[str] | None:
    """Where the engine finds the skill: one space that includes it (a skill included in
    several is one skill), or none for a skill in no space."""
    return sorted(skill.spaces)[:1] or None


def _found(skill: SkillRow, paths: list[str], limit: int) -> list[dict]:
    """Artifacts of the distinct `paths`, in order, at most `limit` (0: the default)."""
    out: list[dict] = []
    for path in dict.fromkeys(paths):
        node = skill.files.get(path)
        if node is not None:  # a file created since the skill's row was taken is not in it
            out.append(artifact_json(skill, node))
        if len(out) == (limit or _DEFAULT_FOUND):
            break
    return out


@router.get("/disk/{disk_id}/artifact/grep")
async def grep_artifacts(request: Request, disk_id: uuid.UUID, query: str,
                         limit: int = Query(_DEFAULT_FOUND, ge=0, le=_MAX_FOUND)):
    """The artifacts with a line that matches `query`, in path order."""
    store = store_of(request)
    skill = _disk(store, disk_id)
    found = await search(store, query, spaces=_scope(skill), skill=skill.id,
                         ignore_case=True, max_results=_GREP_LINES, timeout=_GREP_SECONDS)
    paths = [m.path for m in found.matches if not m.binary]
    response = ok(_found(skill, paths, limit))
    if found.timed_out or found.truncated:
        response.headers["X-Skillfs-Search"] = "timed-out" if found.timed_out else "truncated"
    return response


@router.get("/disk/{disk_id}/artifact/glob")
async def glob_artifacts(request: Request, disk_id: uuid.UUID, query: str,
                         limit: int = Query(_DEFAULT_FOUND, ge=0, le=_MAX_FOUND)):
    """The artifacts whose path from the disk's root matches the glob `query`."""
    store = store_of(request)
    skill = _disk(store, disk_id)
    rel = query.strip().lstrip("/")
    # the engine's globs start at the space: the skill's folder comes first
    pattern = f"{skill.name}/{rel}" if "/" in rel else rel
    found = await glob(store, pattern, spaces=_scope(skill), skill=skill.id,
                       max_results=limit or _DEFAULT_FOUND)
    return ok(_found(skill, [p.split("/", 2)[2] for p in found], limit))
