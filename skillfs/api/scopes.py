"""The HTTP API's scope gate: a request whose token is read-only or bound to spaces reaches
only what that scope allows (access.py).

It sits between the request guard and the routes and knows them by method and path, so the
routes stay as they are. For a scoped request:

- read-only: any method but GET and HEAD is a 403 (/mcp is MCP's: its tools check writes);
- bound to spaces: a route that names a space — by id or name, through a session, a skill
  or a `SPACE/SKILL/FILE` path, in the path, the query or the JSON body — is served when the
  space is within the scope, else it is a 404, the same answer as for a space that does not
  exist (a bound token cannot tell the other spaces' objects from missing ones); the lists
  (spaces, skills, sessions) are filtered; a route that a `space` query narrows (sessions,
  trash, learning, search, glob) needs one; every other route (status, shutdown, users,
  project, creating spaces or free skills, and routes this table does not know, such as
  Acontext's disks and artifacts) is a 403.

A session that learns into no space yet is reachable by id only through `learn`, which
attaches it to a space the token sees (Acontext's flow: create a session, then learn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from .. import access as accessmod
from ..access import Access
from ..errors import Invalid, NotFound
from .guard import MAX_JSON_BYTES

_READS = ("GET", "HEAD")
_ACONTEXT = "/api/v1"
_CONTROL = "/skillfs/v1"

# What a rule returns: True (in scope), False (out of scope: 404), a reason (403), or a
# filter for the JSON body of a list (the rule is a list route).
Verdict = bool | str | Callable[[Any], Any]
_NAME_A_SPACE = "name a space in scope (?space=…)"


class _Request:
    """What the rules read of a request: its path's groups, query and JSON body."""

    def __init__(self, store, access: Access, groups: dict, query: dict, body: Any):
        self.store, self.access, self.groups = store, access, groups
        self.query, self.body = query, body

    def q(self, key: str) -> str | None:
        return self.query.get(key, [None])[0]

    def field(self, key: str) -> str | None:
        value = self.body.get(key) if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None

    def space(self, ref: str | None) -> bool:
        found = self.store.find_space(ref) if ref else None
        return found is not None and self.access.sees(found)

    def space_id(self, space_id: str | None) -> bool:
        found = self.store.find_space(space_id) if space_id else None
        return found is not None and found.id == space_id and self.access.sees(found)

    def path(self, path: str | None) -> bool:
        return self.space((path or "").strip("/").split("/")[0])

    def skill(self, skill_id: str | None) -> bool:
        found = self.store.find_skill(skill_id) if skill_id else None
        return found is not None and any(self.space_id(s) for s in found.spaces)

    async def session(self, ref: str | None, unattached: bool = False) -> bool:
        """A session by id (or, on the control API, by name) that learns into a space in
        scope; with `unattached`, one that learns into none also passes."""
        if not ref:
            return False
        try:
            rows = [await self.store.get_session(ref)]
        except (NotFound, Invalid):
            rows = [s for s in await self.store.list_sessions() if s.name == ref]
        return bool(rows) and all(
            (unattached and r.space_id is None) or self.space_id(r.space_id) for r in rows)

    def visible_ids(self, ids: set[str]) -> set[str]:
        return {i for i in ids if self.space_id(i)}


Rule = Callable[[_Request], Awaitable[Verdict]]


def _items(keep: Callable[[dict], bool]) -> Callable[[Any], Any]:
    """A filter for Acontext's paged lists ({"data": {"items": [...]}})."""
    def filter_body(body: Any) -> Any:
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            data["items"] = [i for i in data["items"] if keep(i)]
        return body
    return filter_body


async def _spaces_list(r: _Request) -> Verdict:
    return lambda body: [s for s in body if r.space_id(s.get("id"))] \
        if isinstance(body, list) else body


async def _acontext_spaces(r: _Request) -> Verdict:
    return _items(lambda item: r.space_id(item.get("id")))


async def _acontext_skills(r: _Request) -> Verdict:
    return _items(lambda item: r.skill(item.get("id")))


async def _acontext_sessions(r: _Request) -> Verdict:
    seen = {s.id for s in await r.store.list_sessions() if r.space_id(s.space_id)}
    return _items(lambda item: item.get("id") in seen)


async def _learn(r: _Request) -> Verdict:
    return r.space_id(r.groups["space"]) and \
        await r.session(r.field("session_id"), unattached=True)


async def _include(r: _Request) -> Verdict:
    return r.space_id(r.groups["space"]) and r.skill(r.field("skill_id"))


async def _space_id(r: _Request) -> Verdict:
    return r.space_id(r.groups["space"])


async def _session_group(r: _Request) -> Verdict:
    return await r.session(r.groups["session"])


async def _skill_group(r: _Request) -> Verdict:
    return r.skill(r.groups["skill"])


async def _allowed(r: _Request) -> Verdict:
    return True


async def _space_group(r: _Request) -> Verdict:
    return r.space(r.groups["space"])


async def _space_query(r: _Request) -> Verdict:
    """A route whose `space` narrows it: without one it would span every space."""
    return r.space(r.q("space")) if r.q("space") else _NAME_A_SPACE


async def _spaces_query(r: _Request) -> Verdict:
    named = r.query.get("space", [])
    return all(r.space(s) for s in named) if named else _NAME_A_SPACE


async def _path_query(r: _Request) -> Verdict:
    return r.path(r.q("path"))


async def _path_body(r: _Request) -> Verdict:
    return r.path(r.field("path"))


async def _learning(r: _Request) -> Verdict:
    session = r.q("session")
    if not r.q("space"):
        return _NAME_A_SPACE
    return r.space(r.q("space")) and (session is None or await r.session(session))


_ANY = "*"
_SESSION = r"(?P<session>[^/]+)"
# (methods, path pattern, rule); the first match decides. Anything unmatched: 403.
RULES: list[tuple[str | tuple[str, ...], str, Rule]] = [
    ("GET", rf"{_ACONTEXT}/ping", _allowed),
    ("GET", rf"{_ACONTEXT}/learning_spaces", _acontext_spaces),
    ("POST", rf"{_ACONTEXT}/learning_spaces/(?P<space>[^/]+)/learn", _learn),
    ("POST", rf"{_ACONTEXT}/learning_spaces/(?P<space>[^/]+)/skills", _include),
    (_ANY, rf"{_ACONTEXT}/learning_spaces/(?P<space>[^/]+)(/.*)?", _space_id),
    ("POST", rf"{_ACONTEXT}/session", _allowed),
    ("GET", rf"{_ACONTEXT}/session", _acontext_sessions),
    (_ANY, rf"{_ACONTEXT}/session/{_SESSION}(/.*)?", _session_group),
    ("GET", rf"{_ACONTEXT}/agent_skills", _acontext_skills),
    (_ANY, rf"{_ACONTEXT}/agent_skills/(?P<skill>[^/]+)(/.*)?", _skill_group),
    ("GET", rf"{_CONTROL}/spaces", _spaces_list),
    ("DELETE", rf"{_CONTROL}/spaces/(?P<space>[^/]+)", _space_group),
    (_ANY, rf"{_CONTROL}/skills(/import|/export)?", _space_query),
    (_ANY, rf"{_CONTROL}/files(/log)?", _path_query),
    ("POST", rf"{_CONTROL}/files/(revert|purge)", _path_body),
    ("GET", rf"{_CONTROL}/(sessions|trash)", _space_query),
    ("POST", rf"{_CONTROL}/trash/restore", _path_body),
    (_ANY, rf"{_CONTROL}/sessions/{_SESSION}(/purge|/flush)?", _session_group),
    ("GET", rf"{_CONTROL}/learning", _learning),
    ("POST", rf"{_CONTROL}/learning/{_SESSION}/(wait|retry)", _session_group),
    (_ANY, rf"{_CONTROL}/(search|glob)", _spaces_query),
]
_COMPILED = [(m, re.compile(p + "$"), rule) for m, p, rule in RULES]


def _rule(method: str, path: str) -> tuple[Rule, dict] | None:
    for methods, pattern, rule in _COMPILED:
        if methods != _ANY and method not in ((methods,) if isinstance(methods, str)
                                              else methods):
            continue
        m = pattern.match(path)
        if m:
            return rule, m.groupdict()
    return None


class ScopeGate:
    """ASGI: let a scoped request through only to what its access allows."""

    def __init__(self, app, store_of: Callable[[], Any]):
        self.app = app
        self.store_of = store_of

    async def __call__(self, scope, receive, send):
        access = accessmod.of(scope)
        if scope["type"] != "http" or access.full or scope["path"] == "/mcp":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if access.read_only and method not in _READS:
            await _refuse(send, path, 403, f"this token is read-only ({access.describe()})")
            return
        if access.everywhere:
            await self.app(scope, receive, send)
            return
        found = _rule("GET" if method == "HEAD" else method, path)
        if found is None:
            await _refuse(send, path, 403, f"this token is bound to {access.describe()}; "
                          f"{method} {path} is not served to it")
            return
        body, receive = await _read_body(receive)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        verdict = await found[0](_Request(self.store_of(), access, found[1], query, body))
        if verdict is False:
            await _refuse(send, path, 404, "not found")
        elif isinstance(verdict, str):
            await _refuse(send, path, 403, f"this token is bound to {access.describe()}: "
                          + verdict)
        elif verdict is True:
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, _filtered(send, verdict))


async def _read_body(receive) -> tuple[Any, Callable]:
    """The request's JSON body (None if it has none or it is not JSON), and a `receive`
    that hands the route the same bytes."""
    chunks, size, more = [], 0, True
    # past the JSON cap the body is no JSON a route takes: the rest is left unread
    while more and size <= MAX_JSON_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return None, _replay([message], receive)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    replayed = [{"type": "http.request", "body": raw, "more_body": more}]
    try:
        body = json.loads(raw) if raw and not more else None
    except ValueError:
        body = None
    return body, _replay(replayed, receive)


def _replay(messages: list, then):
    """`receive` that gives `messages` first, then the rest (a route may read on, or wait
    for the client to go away)."""
    async def receive():
        return messages.pop(0) if messages else await then()
    return receive


def _filtered(send, keep: Callable[[Any], Any]):
    """`send` that rewrites a successful JSON answer through `keep`."""
    start: dict = {}
    chunks: list[bytes] = []

    async def send_filtered(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        if start.get("status") != 200 or not body:  # an error, or HEAD's empty body
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        # a list that cannot be read is not sent unfiltered: this raises, the guard 500s
        body = json.dumps(keep(json.loads(body))).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length",
                                                    str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return send_filtered


async def _refuse(send, path: str, status: int, message: str) -> None:
    body: dict[str, Any] = {"error": message}
    if path.startswith(_ACONTEXT + "/"):
        # The Acontext SDK reads "code" and "msg".
        body = {"code": status, "msg": message, **body}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
