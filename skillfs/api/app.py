"""The FastAPI application served on the daemon's Unix socket (and, if asked, on TCP)."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import SkillfsError
from . import acontext, control


def build_app(daemon) -> FastAPI:
    app = FastAPI(title="skillfs", version="1", docs_url=None, redoc_url=None)
    app.state.daemon = daemon
    app.include_router(control.router)

    @app.exception_handler(SkillfsError)
    async def skillfs_error(request: Request, exc: SkillfsError):
        return JSONResponse({"error": exc.message}, status_code=exc.http_status)

    # After the handler above: the Acontext API wraps it for its own paths.
    acontext.install(app)

    return app


class BearerAuth:
    """ASGI wrapper for the TCP listener: every request needs one of the configured tokens."""

    def __init__(self, app, tokens: list[str]):
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    async def __call__(self, scope, receive, send):
        # Routes that carry their own proof (signed download URLs) need no token.
        exempt = getattr(getattr(self.app, "state", None), "auth_exempt", None)
        if scope["type"] == "http" and not (exempt and exempt(scope)):
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            token = header[7:] if header[:7].lower() == b"bearer " else b""
            if not token or not any(hmac.compare_digest(token, t) for t in self.tokens):
                body = {"error": "missing or wrong bearer token"}
                if scope.get("path", "").startswith("/api/v1/"):
                    # The Acontext SDK reads "code" and "msg".
                    body = {"code": 401, "msg": "unauthorized", **body}
                response = JSONResponse(body, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
