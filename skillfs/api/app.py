"""The FastAPI application served on the daemon's Unix socket (and, if asked, on TCP).

Layers, outermost first: the bearer check (TCP only, every scope but lifespan; it gives the
request its token's access), the request guard (ids and the error boundary), the scope gate
(what a read-only or space-bound token may reach), FastAPI's body cap, the routes and /mcp.
Every refusal is a 4xx with a reason; anything else that goes wrong is a 5xx that names its
request id.
"""

from __future__ import annotations

import hmac
from typing import Any

import trio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from starlette.routing import Route

from ..access import SCOPE_KEY, Access
from ..config import TokenScope, token_access
from ..errors import SkillfsError
from ..mcp.http import PATH as MCP_PATH
from ..mcp.http import McpEndpoint
from . import acontext, control
from .guard import RequestGuard, internal_error_body, request_id, stamped
from .scopes import ScopeGate


class SkillfsApp(FastAPI):
    _acontext: trio.Lock | None = None
    _acontext_loaded = False

    async def __call__(self, scope, receive, send) -> None:
        if not self._acontext_loaded and scope["type"] == "http" and \
                acontext.wanted(scope.get("path", "")):
            await self._load_acontext()
        await super().__call__(scope, receive, send)

    async def _load_acontext(self) -> None:
        """The Acontext routes, at the first request that needs them (acontext/__init__)."""
        if self._acontext is None:
            self._acontext = trio.Lock()
        async with self._acontext:
            if not self._acontext_loaded:
                routers = await trio.to_thread.run_sync(acontext.import_routes)
                acontext.load_routes(self, routers)
                self._acontext_loaded = True

    def build_middleware_stack(self):
        # Outside Starlette's own stack, so its 500s and 413s carry the request id too; the
        # scope gate inside the guard, so its refusals do as well.
        gate = ScopeGate(super().build_middleware_stack(), lambda: self.state.daemon.store)
        return RequestGuard(gate, self.max_body_size)


def error_body(request: Request, status: int, message: str) -> dict:
    body = {"error": message}
    if status >= 500:
        body["request_id"] = request_id(request.scope)
    return body


def build_app(daemon) -> FastAPI:
    app = SkillfsApp(title="skillfs", version="1", docs_url=None, redoc_url=None,
                     max_body_size=daemon.config.max_request_bytes)
    app.state.daemon = daemon
    app.include_router(control.router)

    @app.exception_handler(SkillfsError)
    async def skillfs_error(request: Request, exc: SkillfsError):
        return JSONResponse(error_body(request, exc.http_status, exc.message),
                            status_code=exc.http_status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # The traceback is logged by the guard, under the same id.
        return JSONResponse(internal_error_body(request.scope), status_code=500)

    # After the handlers above: the Acontext API wraps them for its own paths (its routes
    # come at the first request for one of them: SkillfsApp.__call__).
    acontext.install(app)

    # MCP's streamable HTTP: its own protocol and errors, past the routers' handlers.
    app.state.mcp = McpEndpoint(daemon)
    app.router.routes.append(Route(MCP_PATH, app.state.mcp))

    return app


class BearerAuth:
    """ASGI wrapper for the TCP listener: every request needs one of the configured tokens,
    whatever its kind (HTTP, a WebSocket handshake, anything a server may add later), and
    carries that token's access (config.TokenScope) to the scope gate and MCP."""

    def __init__(self, app, tokens: list[str | TokenScope]):
        self.app = app
        self.tokens = [(t.encode(), a) for t, a in token_access(tokens).items()]

    async def __call__(self, scope, receive, send):
        # Routes that carry their own proof (signed download URLs) need no token.
        exempt = getattr(getattr(self.app, "state", None), "auth_exempt", None)
        if scope["type"] == "lifespan" or (exempt and exempt(scope)):
            await self.app(scope, receive, send)
            return
        found = self._access(scope)
        if found is None:
            await self._refuse(scope, receive, stamped(scope, send))
            return
        await self.app({**scope, SCOPE_KEY: found}, receive, send)

    def _access(self, scope) -> Access | None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        token = header[7:] if header[:7].lower() == b"bearer " else b""
        found = None
        for known, access in self.tokens:  # every one compared: the time tells nothing
            if hmac.compare_digest(token, known) and token:
                found = access
        return found

    async def _refuse(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and \
                "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] not in ("http", "websocket"):
            return  # a kind of connection this app does not know: nothing is served
        body: dict[str, Any] = {"error": "missing or wrong bearer token"}
        if scope.get("path", "").startswith("/api/v1/"):
            # The Acontext SDK reads "code" and "msg".
            body = {"code": 401, "msg": "unauthorized", **body}
        response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
