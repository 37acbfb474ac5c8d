"""Claims: which daemon may do a piece of learning work (write a space, learn a session) now.

Several daemons may share one PostgreSQL database, each with its own learner; a space's
files must have one writer at a time, and a session's messages must become tasks and
lessons once. A claim is a PostgreSQL session-level advisory lock taken on a connection of
its own, kept open for as long as the daemon runs: a daemon that dies (kill -9, a lost host)
loses that connection, the server ends its session, and every lock it held is free for
another daemon to take. No lease to tune, and no row that a dead daemon leaves behind.

A lost claims connection loses every claim with it (the server may already have handed them
to another daemon): `held` says so at once, and the learner stops before its next step.

On DuckDB one process owns the file, so every claim is granted (`LocalClaims`): the
learner's own scheduling keeps one writer per space inside the process.
"""

from __future__ import annotations

import hashlib
import logging

import psycopg
import trio
from psycopg.conninfo import make_conninfo

log = logging.getLogger("skillfs.claims")

CONNECT_TIMEOUT = 5  # seconds
# A host cut off without a word (no FIN, no RST): the claims connection must fail here about
# as soon as the server could end its session, or both daemons would think they hold a claim.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
             "keepalives_count": 3, "tcp_user_timeout": 10_000}


def lock_key(kind: str, key: str) -> int:
    """The advisory lock's number for a claim: 64 bits of a hash, as PostgreSQL's signed
    bigint (a collision only makes two spaces share a writer)."""
    digest = hashlib.blake2b(f"skillfs:{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LocalClaims:
    """One process on its own database: every claim is granted."""

    shared = False  # no other daemon could hold a claim

    def __init__(self) -> None:
        self._held: set[tuple[str, str]] = set()

    async def take(self, kind: str, key: str) -> bool:
        self._held.add((kind, key))
        return True

    def held(self, kind: str, key: str) -> bool:
        return (kind, key) in self._held

    async def release(self, kind: str, key: str) -> None:
        self._held.discard((kind, key))

    async def check(self) -> None:
        """Nothing to check: no connection to lose."""

    async def close(self) -> None:
        self._held.clear()


class PgClaims:
    """Claims as advisory locks on one PostgreSQL connection of the daemon's own."""

    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._con: psycopg.Connection | None = None
        self._held: set[tuple[str, str]] = set()
        self._limiter = trio.CapacityLimiter(1)  # one statement at a time on the connection

    async def take(self, kind: str, key: str) -> bool:
        """Take the claim unless another daemon holds it (never waits for it)."""
        if (kind, key) in self._held:
            return True
        got = await self._run("SELECT pg_try_advisory_lock(%s)", lock_key(kind, key))
        if got:
            self._held.add((kind, key))
        return bool(got)

    def held(self, kind: str, key: str) -> bool:
        return (kind, key) in self._held

    async def release(self, kind: str, key: str) -> None:
        if (kind, key) not in self._held:
            return
        self._held.discard((kind, key))
        await self._run("SELECT pg_advisory_unlock(%s)", lock_key(kind, key))

    async def check(self) -> None:
        """Find out whether the connection (and so every claim) was lost."""
        if self._held:
            await self._run("SELECT 1")

    async def close(self) -> None:
        self._held.clear()
        con, self._con = self._con, None
        if con is not None:
            await trio.to_thread.run_sync(con.close, limiter=self._limiter)

    async def _run(self, sql: str, *args: object) -> object:
        """One statement's single value; False when the server cannot be reached (the claims
        held are then lost: another daemon may have them now)."""
        try:
            value, reconnected = await trio.to_thread.run_sync(self._execute, sql, args,
                                                               limiter=self._limiter)
        except psycopg.Error as e:
            if self._held:
                log.warning("learning claims lost with their connection: %s",
                            str(e).strip().splitlines()[0])
            self._held.clear()
            return False
        if reconnected:
            self._held.clear()  # a new server session holds none of the old locks
        return value

    def _execute(self, sql: str, args: tuple[object, ...]) -> tuple[object, bool]:
        """On the claims' thread: the statement's value, and whether it took a new
        connection."""
        con = self._con
        reconnected = con is not None and (con.closed or con.broken)
        if con is None or reconnected:
            conninfo = make_conninfo(self.url, connect_timeout=CONNECT_TIMEOUT, **KEEPALIVE)
            con = self._con = psycopg.connect(conninfo, autocommit=True)
        row = con.execute(sql, list(args)).fetchone()
        return (row[0] if row else None), reconnected
