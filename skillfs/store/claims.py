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
learner's own scheduling keeps one writer per space inside the process. The advisory locks
are `postgres.PgClaims` (with psycopg, which a daemon on DuckDB never imports).
"""

from __future__ import annotations

import hashlib
from typing import Protocol


def lock_key(kind: str, key: str) -> int:
    """The advisory lock's number for a claim: 64 bits of a hash, as PostgreSQL's signed
    bigint (a collision only makes two spaces share a writer)."""
    digest = hashlib.blake2b(f"skillfs:{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Claims(Protocol):
    """What the learner asks of claims, on either backend."""

    shared: bool

    async def take(self, kind: str, key: str) -> bool: ...

    def held(self, kind: str, key: str) -> bool: ...

    async def release(self, kind: str, key: str) -> None: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


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
