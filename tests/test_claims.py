"""Claims on learning work (skillfs/store/claims.py) against a real PostgreSQL server: two
daemons' claims exclude each other, and a claim ends with the connection that took it."""

from __future__ import annotations

import pytest
import trio

from pgserver import PgServer
from skillfs.store.claims import LocalClaims, lock_key
from skillfs.store.postgres import PgClaims

pytestmark = pytest.mark.anyio


async def taken_soon(claims: PgClaims, kind: str, key: str) -> bool:
    """The claim, once the server has ended the session that held it (a closed connection's
    server process exits a moment after the client is gone)."""
    with trio.move_on_after(5):
        while not await claims.take(kind, key):
            await trio.sleep(0.02)
        return True
    return False


async def test_a_claim_is_one_daemons_until_released(pg_url: str) -> None:
    one, two = PgClaims(pg_url), PgClaims(pg_url)
    try:
        assert await one.take("space", "s1")
        assert await one.take("space", "s1")  # taken again by its holder: still one lock
        assert not await two.take("space", "s1")
        assert await two.take("space", "s2") and await two.take("session", "s1")
        assert one.held("space", "s1") and not two.held("space", "s1")
        await one.release("space", "s1")
        assert not one.held("space", "s1")
        assert await two.take("space", "s1")
    finally:
        await one.close()
        await two.close()


async def test_a_daemon_gone_leaves_its_claims_to_others(pg_url: str) -> None:
    one, two = PgClaims(pg_url), PgClaims(pg_url)
    try:
        assert await one.take("space", "s1")
        await one.close()  # the daemon's connection ends: the server frees its locks
        assert await taken_soon(two, "space", "s1")
    finally:
        await two.close()


async def test_a_lost_connection_loses_every_claim(pg_server: PgServer, pg_url: str) -> None:
    one, two = PgClaims(pg_url), PgClaims(pg_url)
    try:
        assert await one.take("space", "s1")
        assert pg_server.terminate(pg_url) >= 1  # every session on the database, both ours
        await one.check()
        assert not one.held("space", "s1")  # the server may have handed it on already
        assert await taken_soon(two, "space", "s1")
        assert not await one.take("space", "s1")  # on a new connection, as any other daemon
        await two.close()
        assert await taken_soon(one, "space", "s1")
    finally:
        await one.close()
        await two.close()


async def test_the_server_unreachable_grants_no_claim(tmp_path) -> None:
    claims = PgClaims(f"postgresql://nobody@/none?host={tmp_path}")
    assert not await claims.take("space", "s1")
    assert not claims.held("space", "s1")
    await claims.close()


async def test_one_process_on_duckdb_holds_every_claim() -> None:
    claims = LocalClaims()
    assert not claims.shared
    assert await claims.take("space", "s1") and claims.held("space", "s1")
    await claims.release("space", "s1")
    assert not claims.held("space", "s1")


def test_lock_keys_are_bigints_apart_by_kind() -> None:
    keys = {lock_key(kind, key) for kind in ("space", "session") for key in ("a", "b")}
    assert len(keys) == 4
    assert all(-(2**63) <= k < 2**63 for k in keys)
