"""The API's error boundary, called directly as an ASGI app on a real Store (no mount): an
exception in a route is a 500 that names its request id, the traceback is logged under that
id, skillfs errors keep their status, and the next request is served as usual."""

from __future__ import annotations

import logging
import subprocess
import sys
import types

import httpx
import trio

from skillfs.api.app import build_app
from skillfs.config import Config
from skillfs.errors import StorageFull, Unavailable
from skillfs.store import Store


def serve_app(tmp_path, calls):
    """Run `calls(client, store)` against the app on a real Store, inside trio."""
    async def main():
        store = Store(str(tmp_path / "db.duckdb"))
        config = Config(home=tmp_path).resolved()
        daemon = types.SimpleNamespace(store=store, config=config, learner=None)
        transport = httpx.ASGITransport(app=build_app(daemon))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await calls(c, store)
        finally:
            store.close()

    trio.run(main)


def test_an_exception_is_a_500_with_a_request_id(tmp_path, monkeypatch, caplog):
    async def broken(*args, **kw):
        raise RuntimeError("the disk caught fire")

    async def calls(c: httpx.AsyncClient, store: Store):
        monkeypatch.setattr(store, "list_sessions", broken)
        monkeypatch.setattr(store, "list_learning", broken)
        r = await c.get("/api/v1/session")
        assert r.status_code == 500
        body = r.json()
        assert body["code"] == 500 and body["msg"] == "internal error"
        assert body["request_id"] == r.headers["x-request-id"]
        r2 = await c.get("/skillfs/v1/learning")
        assert r2.status_code == 500 and r2.json()["request_id"] == r2.headers["x-request-id"]
        assert r2.headers["x-request-id"] != r.headers["x-request-id"]
        # the failure left nothing behind: the next requests are served
        r3 = await c.post("/api/v1/learning_spaces", json={"meta": {"name": "after"}})
        assert r3.status_code == 201 and "x-request-id" in r3.headers
        assert (await c.get("/skillfs/v1/spaces")).json()[0]["name"] == "after"
        return body["request_id"], r2.json()["request_id"]

    ids = []

    async def run(c, store):
        ids.extend(await calls(c, store))

    with caplog.at_level(logging.ERROR, logger="skillfs.api"):
        serve_app(tmp_path, run)
    for rid in ids:
        [record] = [r for r in caplog.records if rid in r.getMessage()]
        assert record.exc_info and "the disk caught fire" in str(record.exc_info[1])


def test_skillfs_errors_keep_their_status(tmp_path, monkeypatch):
    async def full(*args, **kw):
        raise StorageFull("no space left under the database")

    async def down(*args, **kw):
        raise Unavailable("the database is being reopened")

    async def calls(c: httpx.AsyncClient, store: Store):
        monkeypatch.setattr(store, "create_space", full)
        r = await c.post("/api/v1/learning_spaces", json={})
        assert r.status_code == 507 and r.json()["msg"] == "no space left under the database"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        r = await c.post("/skillfs/v1/spaces", json={"name": "x"})
        assert r.status_code == 507 and r.json()["error"] == "no space left under the database"
        monkeypatch.setattr(store, "list_sessions", down)
        r = await c.get("/api/v1/session")
        assert r.status_code == 503 and r.json()["request_id"] == r.headers["x-request-id"]
        # a 4xx names no request id in its body, but the header is there
        r = await c.get("/skillfs/v1/spaces/nope/../x")
        assert 400 <= r.status_code < 500 and "request_id" not in r.json()
        assert r.headers["x-request-id"]

    serve_app(tmp_path, calls)


def test_a_daemon_on_duckdb_with_the_learner_off_loads_neither():
    """What a daemon imports to start: with the learner off none of the learner (its
    modules and their patterns), on DuckDB not psycopg (0.15 s each start), and none of the
    Acontext API's route groups until a request needs them (test_acontext_sdk.py and the
    first test here reach them). The API counts tokens without the learner."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, skillfs.daemon, skillfs.api.app, skillfs.spool; "
                               "print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.startswith(("skillfs.learner", "psycopg",
                                                   "skillfs.api.acontext.messages"))]
