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
from urllib.parse import parse_qs

import trio
from mcp.server.transport_security import TransportSecuritySettings

from .. import access
from .tools import build_server

PATH = "/mcp"
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class McpEndpoint:
    """ASGI app for /mcp; `run` (a task of the daemon's nursery) keeps its session manager
    alive."""

    def __init__(self, daemon):
        self.server = build_server(lambda: daemon.store)
        self.server.streamable_http_app(
            stateless_http=True, json_response=True,
            max_request_body_size=daemon.config.max_request_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager = self.server.session_manager

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.manager.run():
            task_status.started()
            await trio.sleep_forever()

    async def __call__(self, scope, receive, send) -> None:
        try:
            spaces, read_only = _narrowing(scope.get("query_string", b""))
        except ValueError as e:
            await _bad_request(send, str(e))
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


async def _bad_request(send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
