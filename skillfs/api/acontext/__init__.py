"""The Acontext-compatible API under /api/v1: learning spaces, sessions and messages, agent
skills, with the routes, payloads, status codes and error bodies the `acontext` SDK (0.1.x)
expects. Everything is served from the store: changes made here show up in the mount, and
files written through the mount are read back here from the in-memory tree.

`wire` holds the envelope, ids, paging and input checks every route group shares; `schemas`
the request bodies and the JSON shapes of Acontext's models; each other module is one route
group. `install` gives the app's errors on these paths Acontext's envelope; the route groups
are imported and added by `load_routes` when the first request for one of them comes (the
app calls it): their modules and FastAPI's analysis of ~40 routes are a good part of a
daemon's start, and a daemon used through its mount and CLI never needs them.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import (http_exception_handler,
                                        request_validation_exception_handler)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ...errors import SkillfsError
from .wire import PREFIX, RAW_PATH, error, errors_text, router as new_router, store_of

ping_router = new_router()
health_router = APIRouter()


@ping_router.get("/ping")
async def ping():
    return JSONResponse({"code": 0, "msg": "pong"})


@health_router.get("/health")
async def health(request: Request):
    """Acontext's probe, outside /api/v1 and without a token (a load balancer asks it): ok
    while the database is usable. It says nothing more to a caller it does not know."""
    if store_of(request).health()["healthy"]:
        return JSONResponse({"code": 0, "msg": "ok"})
    return JSONResponse({"code": 503, "msg": "unavailable"}, status_code=503)


async def _answer(handler: Callable[[Request, Any], Response | Awaitable[Response]],
                  request: Request, exc: Exception) -> Response:
    """What an exception handler answers: Starlette takes plain functions as well as async."""
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response


def _ours(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def _no_token(scope) -> bool:
    # The raw-file route checks its own HMAC signature; the health probe tells nothing.
    path = scope.get("path", "")
    return path == "/health" or bool(RAW_PATH.match(path))


GROUPS = ("spaces", "sessions", "messages", "skills", "disks", "users")


def wanted(path: str) -> bool:
    """Whether a request needs the route groups: one of their paths, or the OpenAPI schema
    (which lists them)."""
    return path in ("/health", "/openapi.json") or path == PREFIX or \
        path.startswith(PREFIX + "/")


def import_routes() -> list[APIRouter]:
    """The route groups' routers (their modules imported: a worker thread may do it)."""
    return [health_router, ping_router,
            *(importlib.import_module(f"{__name__}.{group}").router for group in GROUPS)]


def load_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    for group in routers:
        app.include_router(group)
    app.openapi_schema = None  # made again with them


def install(app: FastAPI) -> None:
    """Give errors under /api/v1 Acontext's envelope (other paths keep theirs); the routes
    come with `load_routes`."""
    app.state.acontext_secret = os.urandom(32)
    app.state.auth_exempt = _no_token
    skillfs_before = app.exception_handlers.get(SkillfsError)
    internal_before = app.exception_handlers.get(Exception)
    http_before = app.exception_handlers.get(HTTPException, http_exception_handler)
    validation_before = app.exception_handlers.get(RequestValidationError,
                                                   request_validation_exception_handler)

    @app.exception_handler(SkillfsError)
    async def skillfs_error(request: Request, exc: SkillfsError):
        if _ours(request) or skillfs_before is None:
            # Go answers bad input with 400 where skillfs says 422.
            status = 400 if exc.http_status == 422 else exc.http_status
            return error(status, exc.message, request=request)
        return await _answer(skillfs_before, request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        if _ours(request) or internal_before is None:
            return error(500, "internal error", request=request)
        return await _answer(internal_before, request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _ours(request):
            return error(exc.status_code, str(exc.detail), headers=exc.headers)
        return await _answer(http_before, request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if _ours(request):
            return error(400, "parameter error", errors_text(exc.errors()))
        return await _answer(validation_before, request, exc)
