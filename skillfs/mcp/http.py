"""The daemon's /mcp endpoint: the MCP tools over streamable HTTP, in the daemon's trio loop
(the SDK runs on anyio).

Stateless and with JSON answers: every POST is one exchange that holds nothing open, so no
session or stream outlives its request, and a request's access (access.py) is its own —
that of the token it carries (the TCP listener), narrowed by `?space=S` (repeatable) and
`?read_only=1`. No DNS-rebinding check: the Unix socket is private to the daemon's user
and TCP needs a bearer token, which a page in a browser does not have.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import trio

from .. import access

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = logging.getLogger("skillfs.mcp")

PATH = "/mcp"
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class McpEndpoint:
    """ASGI app for /mcp. The SDK takes seconds of CPU to import (its protocol models), so
    it is loaded, on a worker thread, when the first request comes rather than at every
    start of the daemon; `run` (a task of the daemon's nursery) then keeps its session
    manager alive."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.wanted = trio.Event()
        self.ready = trio.Event()
        self.manager: StreamableHTTPSessionManager | None = None

    async def run(self) -> None:
        await self.wanted.wait()
        try:
            manager = await trio.to_thread.run_sync(self._build, abandon_on_cancel=True)
        except Exception:
            log.exception("the MCP server could not be built; /mcp answers 503")
            self.ready.set()
            return
        async with manager.run():
            self.manager = manager
            self.ready.set()
            await trio.sleep_forever()

    def _build(self) -> StreamableHTTPSessionManager:
        from mcp.server.transport_security import TransportSecuritySettings

        from .tools import build_server

        server = build_server(self.daemon.store)
        server.streamable_http_app(
            stateless_http=True, json_response=True,
            max_request_body_size=self.daemon.config.max_request_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        return server.session_manager

    async def __call__(self, scope, receive, send) -> None:
        try:
            spaces, read_only = _narrowing(scope.get("query_string", b""))
        except ValueError as e:
            await _answer(send, 400, str(e))
            return
        self.wanted.set()
        await self.ready.wait()
        if self.manager is None:
            await _answer(send, 503, "the MCP server is unavailable (see the daemon's log)")
            return
        scope = {**scope, access.SCOPE_KEY: access.of(scope).narrowed(spaces, read_only)}
        await self.manager.handle_request(scope, receive, send)


def _narrowing(query: bytes) -> tuple[list[str], bool]:
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    unknown = sorted(set(params) - {"space", "read_only"})
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0]!r} (space, read_only)")
    flags = [v.lower() for v in params.get("read_only", [])]
    if any(v not in _TRUE + _FALSE for v in flags):
        raise ValueError("read_only is 1 or 0")
    spaces = [s for s in params.get("space", []) if s]
    return spaces, any(v in _TRUE for v in flags)


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
