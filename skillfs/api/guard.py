"""The API's outer boundary: every request gets an id, every response carries it, and no
exception escapes to the server.

The id is the one thing a client can quote from a failed call and find in the log: a 5xx
body holds it, the traceback line holds it, and `X-Request-ID` holds it on every response
(the bearer check's 401 too, which answers before the app is reached).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute

log = logging.getLogger("skillfs.api")

_ID_KEY = "skillfs.request_id"
_HEADER = b"x-request-id"
_STARTS = ("http.response.start", "websocket.http.response.start")


def request_id(scope) -> str:
    """The request's id, made on first use."""
    rid = scope.get(_ID_KEY)
    if rid is None:
        rid = scope[_ID_KEY] = uuid.uuid4().hex
    return rid


def stamped(scope, send):
    """`send` that adds the request's id to the response's headers."""
    header = (_HEADER, request_id(scope).encode())

    async def send_stamped(message):
        if message["type"] in _STARTS:
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return send_stamped


class RequestGuard:
    """The outermost layer of the app: the id, a body whose declared length is over the cap
    (refused before a byte of it is read; FastAPI cuts off a chunked one as it streams), and
    the error boundary. Starlette's own boundary answers first (with the app's 500 handler)
    and raises on; the traceback is logged here, once, and the server never sees it."""

    def __init__(self, app, max_body: int | None):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        started = False
        send_stamped = stamped(scope, send)
        declared = _content_length(scope) if scope["type"] == "http" else None
        if self.max_body is not None and declared is not None and declared > self.max_body:
            # Both APIs' clients find the reason: the SDK reads code/msg, the CLI "error".
            await _answer(send_stamped, 413, {
                "code": 413, "msg": "request body too large",
                "error": f"the body is {declared} bytes; the limit is {self.max_body}"})
            return

        async def send_tracked(message):
            nonlocal started
            started = started or message["type"] in (*_STARTS, "websocket.accept")
            await send_stamped(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            log.exception("request %s failed: %s %s", request_id(scope),
                          scope.get("method", scope["type"]), scope.get("path"))
            if not started:
                await _refuse(scope, send_stamped)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope, send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011})
    else:
        await _answer(send, 500, internal_error_body(scope))


async def _answer(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def internal_error_body(scope) -> dict[str, Any]:
    return {"error": f"internal error (request id {request_id(scope)})",
            "request_id": request_id(scope)}


# -- JSON bodies: their size, and their text ----------------------------------------------

# Metadata, configs and messages are stored as single rows; far larger ones exhaust the
# database's memory budget (a 3 MiB message does at 32 MB) instead of being refused.
MAX_JSON_BYTES = 1 << 20

def _bad_text(value: Any, where: str) -> str | None:
    """Where a JSON value holds text that is not Unicode (a lone surrogate: JSON's \\ud800
    escape decodes to one, and nothing downstream can store or send it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _bad_text(key, where) or _bad_text(item, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_text(item, f"{where}[{i}]")
            if found:
                return found
    return None


def check_json_size(size: int) -> None:
    if size > MAX_JSON_BYTES:
        raise HTTPException(413, f"a JSON body holds at most {MAX_JSON_BYTES} bytes (this "
                                 f"one: {size}); files travel as ZIPs or raw bytes")


class TextRequest(Request):
    async def json(self) -> Any:
        check_json_size(len(await self.body()))
        value = await super().json()
        where = _bad_text(value, "body")
        if where:
            # FastAPI turns anything but an HTTPException raised here into a bare 400.
            raise HTTPException(400, f"{where}: text is not valid Unicode (a lone "
                                     "surrogate such as \\ud800)")
        return value


class TextCheckedRoute(APIRoute):
    """A route whose JSON body is refused (400) when it holds a lone surrogate."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request: Request):
            return await handler(TextRequest(request.scope, request.receive))

        return checked
