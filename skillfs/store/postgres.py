"""The PostgreSQL backend: the same store on a `postgresql://` URL, through psycopg 3.

This module and the schema's TYPES are the only code that knows PostgreSQL's dialect. The
services write their SQL once, as DuckDB reads it; `translate` turns it into PostgreSQL's:
`?` placeholders become psycopg's `%s` (a literal `%` doubled), `json_object` is
`json_build_object` and BLOB is BYTEA. Everything else they write means the same in both
(`::VARCHAR[]`, `unnest`, `RETURNING`, `CAST(x AS JSON)`).

Connections come from a pool (psycopg_pool), checked before each use, so a connection the
server dropped is replaced rather than handed out, and reopened in the background with
backoff. psycopg prepares a statement on the server once a connection has run it a few
times. A read runs on a worker thread with a pooled connection of its own, in a transaction
of its own (one snapshot), so reads go on while a group commits; `con` executes on the
connection the calling thread holds (the one read or write it runs), else on the main
connection (start-up: migrations, loading the tree). A group commit runs on one connection,
each function after a SAVEPOINT: one that raises is rolled back alone, the others commit
together.

What DuckDB needs and PostgreSQL does not is a no-op here, each said where it is: memory
limits, checkpoints, dropping buffers. Compaction (purge's "really gone") is VACUUM FULL.

The database unreachable, or a connection lost: the call fails with Unavailable, the backend
refuses at once until `supervise` reaches the server again (with backoff, never giving up),
and the tree and content cache stay as they are (a write changes them only after its commit).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import outcome
import psycopg
import psycopg_pool
from psycopg.conninfo import make_conninfo
import trio

from ..errors import SkillfsError, WriteConflict
from ..schema import FEED_LOCK, FILE_ID_BLOCK, migrate
from .backend import Backend, Fault, _Write
from .claims import lock_key

log = logging.getLogger("skillfs.store")
claims_log = logging.getLogger("skillfs.claims")

POOL_SIZE = 4  # one for the writing group, the rest for reads running beside it
CONNECT_TIMEOUT = 5  # seconds: a FUSE write waits no longer for an unreachable server
# Over TCP, a server gone silent (a host or a network down, no reset sent) fails the query
# in flight after 10 s, rather than after TCP's own timeouts, many minutes.
NETWORK_OPTIONS = {"connect_timeout": CONNECT_TIMEOUT, "tcp_user_timeout": 10_000,
                   "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}
PROBE_FIRST_DELAY = 0.2
PROBE_MAX_DELAY = 30.0
MIGRATION_LOCK = 0x736B696C6C6673  # "skillfs": the advisory lock held while migrating
# The tables a purge rewrites: where VACUUM FULL must drop the old rows' bytes.
PURGED_TABLES = ("file_versions", "version_chunks", "messages", "tasks", "lessons")

# Quoted text first, so that nothing inside a literal or a quoted name is translated.
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|(\?)|(%)|\b(json_object|BLOB)\b""",
                     re.IGNORECASE)
_RENAMED = {"json_object": "json_build_object", "blob": "BYTEA"}
_DISK_FULL, _OUT_OF_MEMORY = "53100", "53200"


def without_password(url: str) -> str:
    """`url` as messages and the status show it."""
    url = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """DuckDB's SQL as the services write it, as PostgreSQL reads it through psycopg."""
    def token(m: re.Match) -> str:
        if m[1]:
            return m[1].replace("%", "%%")
        if m[2]:
            return "%s"
        if m[3]:
            return "%%"
        return _RENAMED[m[4].lower()]
    return _TOKENS.sub(token, sql)


class Connection:
    """What the services call `con`: it executes on the connection the calling thread
    holds, with DuckDB's placeholders and names translated."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._db.held().execute(translate(sql), args)


class PgDatabase(Backend):
    """One PostgreSQL database, reached through a pool of connections."""

    Error = psycopg.Error
    shared = True

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, writer: str = "") -> None:
        super().__init__()
        self.url = url
        # who the change feed says wrote a change: set on every connection of this daemon
        self.writer = writer
        self._options: dict[str, Any] = {**NETWORK_OPTIONS,
                                         "options": f"-c skillfs.writer={writer}"}
        self.limiter = trio.CapacityLimiter(max(pool_size - 1, 1))
        self.write_limiter = trio.CapacityLimiter(1)
        self._local = threading.local()
        self.closed = False
        self.con = Connection(self)
        try:
            self._main = self._connect_main()
            self._migrate()
            self.pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=pool_size, open=True, timeout=CONNECT_TIMEOUT,
                check=psycopg_pool.ConnectionPool.check_connection,
                kwargs=self._options,
                # retried with backoff for as long as the server is away
                reconnect_timeout=24 * 3600.0)
        except psycopg.OperationalError as e:
            raise SkillfsError(f"cannot reach the database {self.where}: "
                               f"{str(e).strip().splitlines()[0]}") from None

    @property
    def where(self) -> str:
        return without_password(self.url)

    def _migrate(self) -> None:
        """The schema brought up to date, by one daemon at a time: others starting on the
        same database wait, then find nothing left to do."""
        self._main.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            migrate(self.con, "postgres")
        finally:
            self._main.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    def _connect_main(self) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(self.url, **self._options), autocommit=True)

    def held(self) -> psycopg.Connection:
        """The connection of this thread's read or write, else the main connection (opened
        again if the server dropped it)."""
        held = getattr(self._local, "con", None)
        if held is not None:
            return held
        if self.closed:
            raise psycopg.InterfaceError("the database is closed")
        if self._main.closed or self._main.broken:
            self._main = self._connect_main()
        return self._main

    @contextmanager
    def _holding(self, isolation: psycopg.IsolationLevel = psycopg.IsolationLevel.READ_COMMITTED
                 ) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as pg:
            pg.isolation_level = isolation  # for its next BEGIN: no round trip
            self._local.con = pg
            try:
                yield pg
            finally:
                self._local.con = None

    def claims(self) -> PgClaims:
        """Advisory locks on a connection of their own: held across transactions, and freed
        by the server when this daemon's connection ends."""
        return PgClaims(self.url)

    def close(self) -> None:
        self.closed = True
        self.pool.close()
        self._main.close()

    # -- health ----------------------------------------------------------------------------

    def size_bytes(self) -> int:
        """What the database takes on the server's disk (on a worker thread: a query)."""
        row = self.con.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def status(self) -> dict[str, Any]:
        stats = self.pool.get_stats()
        return {**super().status(), "backend": "postgresql", "database": self.where,
                "pool": {k: stats.get(k, 0) for k in ("pool_size", "pool_available",
                                                      "requests_waiting")}}

    def fault(self, error: BaseException) -> Fault | None:
        state = getattr(error, "sqlstate", None)
        if state == _DISK_FULL or "No space left on device" in str(error):
            return Fault(disk_full=True)
        if state == _OUT_OF_MEMORY:
            return Fault(out_of_memory=True)
        # a lost or refused connection, a server shutting down, a pool with none to give
        if isinstance(error, psycopg_pool.PoolTimeout) or (
                isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
                and (state is None or state.startswith(("08", "57P")))):
            return Fault(connection_dead=True)
        # a deadlock, a lock or statement timeout, too many connections: this call's
        if isinstance(error, psycopg.OperationalError):
            return Fault()
        return None

    def _call(self, fn: Callable, *args) -> Any:
        """A read: its statements see one snapshot, as on DuckDB, where no commit could come
        between them (a read-only transaction at this level never fails to serialize)."""
        with self._holding(psycopg.IsolationLevel.REPEATABLE_READ):
            return fn(*args)

    # -- transactions ----------------------------------------------------------------------

    def tx(self, fn: Callable[[Connection], Any]) -> Any:
        with self._holding() as pg, pg.transaction():
            self._serialize(pg)
            return fn(self.con)

    @staticmethod
    def _serialize(pg: psycopg.Connection) -> None:
        """One writing transaction at a time across the daemons sharing the database, from
        its first statement: the change feed's numbers follow commit order, and a version
        or a name checked inside it cannot be taken by another daemon before it commits
        (the feed's triggers take the same lock, later, for writers that come from
        elsewhere)."""
        pg.execute("SELECT pg_advisory_xact_lock(%s)", [FEED_LOCK])

    def _tx_group(self, group: list[_Write]) -> list[outcome.Outcome]:
        """Each function's outcome, all committed in one transaction; one that raises is
        rolled back to its savepoint, the others stand."""
        try:
            with self._holding() as pg, pg.transaction():
                self._serialize(pg)
                if len(group) == 1:
                    return [outcome.Value(group[0].fn(self.con))]
                return [self._saved(pg, queued.fn) for queued in group]
        except Exception as e:  # the transaction itself failed: nothing was committed
            return [outcome.Error(e)] * len(group)

    def _saved(self, pg: psycopg.Connection, fn: Callable[[Connection], Any]) -> outcome.Outcome:
        try:
            with pg.transaction():
                return outcome.Value(fn(self.con))
        except psycopg.OperationalError:
            raise  # the connection is gone: the whole group failed
        except Exception as e:
            return outcome.Error(e)

    def file_id_block(self) -> range:
        """File ids no other daemon will use: a block of the database's sequence."""
        self.check_usable()
        try:
            start = self.held().execute("SELECT nextval('file_ids')").fetchall()[0][0]
        except psycopg.Error as e:
            raise self._mapped(e) from e
        return range(start, start + FILE_ID_BLOCK)

    def refused(self, error: BaseException) -> SkillfsError | None:
        """A name another daemon took first (a unique index said no at commit)."""
        if isinstance(error, psycopg.errors.UniqueViolation):
            return WriteConflict(f"taken meanwhile by another daemon: {error.diag.message_detail}")
        return None

    def insert_many(self, con: Any, table: str, ncols: int,
                    rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows by COPY, PostgreSQL's bulk load."""
        if not rows:
            return
        if len(rows[0]) != ncols:
            raise RuntimeError(f"{len(rows[0])} values for {ncols} columns of {table}")
        with self.held().cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    # -- what DuckDB needs and PostgreSQL does not ----------------------------------------

    def checkpoint(self) -> None:
        """Nothing: PostgreSQL checkpoints by itself, and a commit is durable in its log."""

    def drop_buffers(self) -> None:
        """Nothing: the server's shared buffers are its own, not the daemon's memory."""

    def compact(self) -> None:
        """VACUUM FULL the tables a purge rewrote: each is copied without its dead rows, so
        purged bytes leave the table's files (the server's log keeps them until it recycles
        its segments). VACUUM runs outside a transaction."""
        pg = self.held()
        pg.commit()
        pg.autocommit = True
        try:
            for table in PURGED_TABLES:
                pg.execute(f"VACUUM FULL {table}")
        finally:
            pg.autocommit = False

    # -- reconnecting -----------------------------------------------------------------------

    async def supervise(self) -> None:
        """Whenever a connection was lost: reach the server again, with backoff, for as long
        as it takes (the pool replaces its connections meanwhile)."""
        while True:
            await self._broken.wait()
            await self._probe_with_backoff()
            self._broken = trio.Event()
            self.invalidated = False
            self.recovered()

    async def _probe_with_backoff(self) -> None:
        delay = PROBE_FIRST_DELAY
        while True:
            await trio.sleep(delay)
            try:
                await trio.to_thread.run_sync(self._call, self._probe,
                                              limiter=self.write_limiter)
                log.warning("database reachable again after: %s", self.reason)
                return
            except psycopg.Error as e:
                log.error("the database is still unreachable: %s",
                          str(e).strip().splitlines()[0])
            delay = min(delay * 2, PROBE_MAX_DELAY)

    def _probe(self) -> None:
        self.held().execute("SELECT 1")


# A host cut off without a word (no FIN, no RST): the claims connection must fail here about
# as soon as the server could end its session, or both daemons would think they hold a claim.
CLAIMS_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                    "keepalives_count": 3, "tcp_user_timeout": 10_000}


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
                claims_log.warning("learning claims lost with their connection: %s",
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
            conninfo = make_conninfo(self.url, connect_timeout=CONNECT_TIMEOUT,
                                     **CLAIMS_KEEPALIVE)
            con = self._con = psycopg.connect(conninfo, autocommit=True)
        row = con.execute(sql, list(args)).fetchone()
        return (row[0] if row else None), reconnected
