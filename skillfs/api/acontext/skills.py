"""Agent skills: upload as a ZIP, list, get, delete, read a file (text inline, binary as a
signed URL on TCP or base64 on the socket), download as a ZIP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import posixpath
import time
import uuid
import zipfile
from typing import Any
from urllib.parse import quote, urlencode

import trio
from fastapi import File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from ... import names
from ...errors import Invalid, NotFound
from ...skillzip import read_skill_zip
from ...store import FileRow, SkillRow, Store
from .schemas import mime, skill_files, skill_json
from .wire import (MAX_LIMIT, PREFIX, BadRequest, error, find_skill, json_object,
                   ok, page, paged, router as new_router, store_of, utf8)

router = new_router()

DEFAULT_EXPIRE = 900
_CONTENT_TYPE = {"application/json": "json", "text/csv": "csv", "text/x-python": "code",
                 "text/x-shellscript": "code", "text/javascript": "code"}


@router.post("/agent_skills", status_code=201)
async def create_skill(request: Request, file: UploadFile = File(...),
                       user: str | None = Form(None), meta: str | None = Form(None)):
    store = store_of(request)
    meta_obj = json_object(meta, "meta")
    utf8(user, "user")
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
    store = store_of(request)
    rows = store.list_skills()
    if user:
        rows = [s for s in rows if s.user == user]
    items, more, nxt = page(rows, lambda s: (s.created_ns, s.id), limit, cursor, time_desc)
    return ok(paged([skill_json(s, index=False) for s in items], more, nxt))


@router.get("/agent_skills/{skill_id}")
async def get_skill(request: Request, skill_id: uuid.UUID):
    return ok(skill_json(find_skill(store_of(request), skill_id)))


@router.delete("/agent_skills/{skill_id}")
async def delete_skill(request: Request, skill_id: uuid.UUID):
    store = store_of(request)
    await store.delete_skill(find_skill(store, skill_id).id, author="api")
    return ok()


def _file_node(store: Store, skill_id: uuid.UUID, file_path: str) -> tuple[SkillRow, FileRow]:
    skill = find_skill(store, skill_id)
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


def signed_url(request: Request, skill_id: str, path: str, expire: int) -> str | None:
    """A URL that fetches the file without a token until `expire` seconds from now (the
    SDK fetches it with a bare httpx.get); None without a TCP listener to fetch it from."""
    listen = request.app.state.daemon.config.listen
    if not listen:
        return None
    exp = int(time.time()) + expire
    sig = _sign(request.app.state.acontext_secret, skill_id, path, exp)
    query = urlencode({"file_path": path, "exp": exp, "sig": sig})
    return f"http://{listen}{PREFIX}/agent_skills/{skill_id}/raw?{query}"


def text_content(data: bytes, file_mime: str) -> dict[str, str] | None:
    """Acontext's parsed content of a text file; None for bytes that are not UTF-8."""
    try:
        text = data.decode("utf-8")  # not utf-8-sig: a BOM must survive the round trip
    except UnicodeDecodeError:
        return None
    return {"type": _CONTENT_TYPE.get(file_mime, "text"), "raw": text}


@router.get("/agent_skills/{skill_id}/file")
async def get_file(request: Request, skill_id: uuid.UUID, file_path: str,
                   expire: int = Query(DEFAULT_EXPIRE, ge=1, le=7 * 86400)):
    store = store_of(request)
    skill, node = _file_node(store, skill_id, file_path)
    data = await store.content(node)
    out: dict[str, Any] = {"path": node.path, "mime": mime(node.path)}
    content = text_content(data, out["mime"])
    if content is not None:
        if out["mime"] == "application/octet-stream":
            out["mime"] = "text/plain"
        out["content"] = content
        return ok(out)
    url = signed_url(request, skill.id, node.path, expire)
    if url is not None:
        out["url"] = url
    else:
        out["content"] = {"type": "base64", "raw": base64.b64encode(data).decode()}
    return ok(out)


@router.get("/agent_skills/{skill_id}/raw", include_in_schema=False)
async def raw_file(request: Request, skill_id: uuid.UUID, file_path: str, exp: int, sig: str):
    expected = _sign(request.app.state.acontext_secret, str(skill_id), file_path, exp)
    if not hmac.compare_digest(sig, expected) or exp < time.time():
        return error(403, "invalid or expired download URL")
    store = store_of(request)
    _, node = _file_node(store, skill_id, file_path)
    name = quote(posixpath.basename(node.path))
    return Response(await store.content(node), media_type=mime(node.path),
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"})


@router.get("/agent_skills/{skill_id}/download_zip",
            responses={200: {"content": {"application/zip": {}}}})
async def download_zip(request: Request, skill_id: uuid.UUID):
    store = store_of(request)
    skill = find_skill(store, skill_id)
    buf = io.BytesIO()
    # Entries relative to the skill folder, as Acontext writes them (no top folder).
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for node in skill_files(skill):
            zf.writestr(node.path, await store.content(node))
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{skill.name}.zip"'})
