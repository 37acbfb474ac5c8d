"""The DuckDB backend, the embedded default: how it is opened, whether it is usable, and
getting it back.

DuckDB marks a database *invalidated* after a fatal error (a checkpoint that ran out of
memory, a write that hit a full disk): every later call on that connection fails. The daemon
must not die of that. This module turns DuckDB's errors into the store's own (StorageFull,
Unavailable), marks the database unhealthy with the reason, and reopens it in the background
(which replays the write-ahead log) with backoff. The tree and the content cache stay as they
are: a write changes them only after its commit returned, so they still match what the
reopened database holds.

DuckDB does not zero the blocks it frees: bytes deleted or overwritten (a purged version,
a purged message) stay in the file after a checkpoint, VACUUM or a table rewrite.
`compact` copies every table into a new file and swaps it in, so they are really gone.

Automatic checkpoints are turned off: DuckDB runs them inside a COMMIT, and a checkpoint that
fails there makes a committed write look failed. `maybe_checkpoint` runs them after the
commit instead, so a failing checkpoint never hides a commit.

Group commit and health are store/backend.py's; a group in which one function raised is
rolled back and each of its functions run alone (DuckDB has no SAVEPOINT).

`read_aside` runs a read on a thread and a cursor of its own, closing the connection
(compaction, reopening) waiting for it. Nothing uses it now: the content cache's preload
scanned there until DuckDB crashed in that thread while a write checkpointed under a small
memory limit; the preload scans on the worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import outcome
import trio

from ..errors import SkillfsError
from ..schema import migrate
from .backend import Backend, Fault, _Write
from .backend import GROUP_MAX_BYTES, GROUP_MAX_WRITES  # noqa: F401 (read here by tests)

log = logging.getLogger("skillfs.store")

# DuckDB keeps what was committed since the last checkpoint in memory it cannot always
# spill: checkpoint once the log holds an eighth of the memory limit (measured: at 8 MB, a
# 1 MB log works and an 8 MB one fails the commit).
CHECKPOINT_SHARE = 8
CHECKPOINT_WAL_BYTES = (512 << 10, 16 << 20)  # never below, never above
REOPEN_FIRST_DELAY = 0.2
REOPEN_MAX_DELAY = 30.0
REOPEN_ATTEMPTS = 12  # failed reopens (not counting a full disk) before giving up
DROP_BUFFERS_LIMIT = 16 << 20  # what drop_buffers lowers the memory limit to


class DatabaseLost(SkillfsError):
    """The database failed and could not be reopened; the daemon must stop."""


def _bytes(size: str) -> int:
    """'32MB', '1.5 GiB', '512KB' as bytes (DuckDB's units, decimal or binary)."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(I?)B?\s*", size.upper())
    if m is None:
        raise ValueError(f"not a size: {size!r}")
    unit = (1024 if m[3] else 1000) ** "_KMGT".index(m[2] or "_")
    return int(float(m[1]) * unit)


def _disk_full(error: BaseException) -> bool:
    text = str(error)
    return "No space left on device" in text or os.strerror(errno.ENOSPC) in text


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return (isinstance(error, duckdb.OutOfMemoryException) or "failed to pin block" in text
            or "could not allocate block" in text) and not _invalidates(error)


def _invalidates(error: BaseException) -> bool:
    # A closed connection is as dead as an invalidated one: both need reopening.
    return (isinstance(error, (duckdb.FatalException, duckdb.InternalException,
                               duckdb.ConnectionException))
            or "database has been invalidated" in str(error))


class Database(Backend):
    """One DuckDB file and its connection, with DuckDB's memory and spill settings."""

    Error = duckdb.Error

    def __init__(self, path: str, *, memory_limit: str | None = None,
                 checkpoint_memory: str | None = None, temp_dir: Path | None = None,
                 threads: int | None = None) -> None:
        self.path = path
        self.config: dict[str, Any] = {"checkpoint_threshold": "1TB"}
        self.checkpoint_wal_bytes = CHECKPOINT_WAL_BYTES[1]
        if memory_limit:
            self.checkpoint_wal_bytes = min(max(
                _bytes(memory_limit) // CHECKPOINT_SHARE, CHECKPOINT_WAL_BYTES[0]),
                CHECKPOINT_WAL_BYTES[1])
            # The serving limit: reads come from the tree and the content cache, and work
            # beyond the limit spills to temp_dir (up to DuckDB's default, 90% of the free
            # disk) instead of failing.
            self.config.update(memory_limit=memory_limit, preserve_insertion_order=False)
        # DuckDB holds a row group's long strings in memory while it checkpoints it (file
        # content is chunked for that reason, message text is not): a checkpoint, and the
        # replay of the log when the database opens, get this larger limit for as long as
        # they run, so a checkpoint that fails can never invalidate the database and then
        # fail again at every start.
        self.memory_limit = memory_limit
        self.checkpoint_memory = checkpoint_memory if memory_limit else None
        if threads:
            self.config["threads"] = threads
        if temp_dir is not None:
            temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(temp_dir, 0o700)
            self.config["temp_directory"] = str(temp_dir)
        super().__init__()
        self._remove_copy()
        self.con = self._connect()
        migrate(self.con, "duckdb")
        self._deferred: duckdb.Error | None = None  # a checkpoint's error, not yet judged
        self._aside_limiter = trio.CapacityLimiter(1)
        self._aside_lock = threading.RLock()  # held by an aside read and by closing
        self._column_types: dict[str, list[str]] = {}

    def _connect(self) -> duckdb.DuckDBPyConnection:
        config = dict(self.config)
        if self.checkpoint_memory:
            config["memory_limit"] = self.checkpoint_memory
        try:
            con = duckdb.connect(self.path, config=config)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise SkillfsError(
                    f"{self.path} is in use by another process (is a skillfs daemon already "
                    "running on it?)") from None
            raise
        if self.checkpoint_memory:
            con.execute("CHECKPOINT")
            con.execute("SET memory_limit = ?", [self.memory_limit])
        return con

    def checkpoint(self) -> None:
        self._with_more_memory(self.con.execute, "CHECKPOINT")

    def drop_buffers(self) -> None:
        """Let DuckDB free the blocks it keeps cached, by lowering its memory limit for a
        moment: a scan of every file (the preload) leaves the buffer pool full of blocks
        nothing reads again (~70 MB of RSS at 100,000 files). Pinned blocks stay."""
        if not self.memory_limit:
            return
        try:
            self.con.execute("SET memory_limit = ?", [f"{DROP_BUFFERS_LIMIT}B"])
        except duckdb.Error as e:
            log.info("database buffers not dropped: %s", str(e).splitlines()[0])
        finally:
            self.con.execute("SET memory_limit = ?", [self.memory_limit])

    def _with_more_memory(self, fn: Callable, *args):
        if not self.checkpoint_memory:
            return fn(*args)
        self.con.execute("SET memory_limit = ?", [self.checkpoint_memory])
        try:
            return fn(*args)
        finally:
            self.con.execute("SET memory_limit = ?", [self.memory_limit])

    def _roomy(self, fn: Callable, *args):
        """`fn(*args)`, tried once more with the checkpoint's limit if it ran out of memory:
        DuckDB works on 2,048 rows at a time, so a scan of long messages can need more than
        the serving limit."""
        try:
            return fn(*args)
        except duckdb.Error as e:
            if not _out_of_memory(e) or not self.checkpoint_memory:
                raise
            log.warning("database out of memory; trying again with %s: %s",
                        self.checkpoint_memory, str(e).splitlines()[0])
        return self._with_more_memory(fn, *args)

    def close(self) -> None:
        with self._aside_lock:
            try:
                self.con.close()
            except duckdb.Error:
                log.exception("closing the database failed")

    # -- health ----------------------------------------------------------------------------

    def size_bytes(self) -> int:
        """The database on disk: the file and its write-ahead log."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + ".wal")
                   if os.path.exists(p))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "memory_limit": self.config.get("memory_limit"),
                "temp_directory": self.config.get("temp_directory")}

    def fault(self, error: BaseException) -> Fault | None:
        full, short, dead = _disk_full(error), _out_of_memory(error), _invalidates(error)
        return Fault(full, short, dead) if full or short or dead else None

    def _call(self, fn: Callable, *args):
        return self._roomy(fn, *args)

    async def read_aside(self, fn: Callable, *args):
        """`fn(cursor, *args)` on a thread and a DuckDB cursor of its own, DuckDB's errors
        turned into the store's: a long read that must not hold the worker thread."""
        self.check_usable()
        try:
            return await trio.to_thread.run_sync(self._aside, fn, *args,
                                                 limiter=self._aside_limiter)
        except duckdb.Error as e:
            raise self._mapped(e) from e

    def _aside(self, fn: Callable, *args):
        with self._aside_lock:
            cursor = self.con.cursor()
            try:
                return fn(cursor, *args)
            finally:
                cursor.close()

    def _judge_deferred(self) -> None:
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            self.failed(deferred)

    # -- transactions and checkpoints (on the database's worker thread) -----------------

    def tx(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        try:
            result = self._tx_once(fn)
        except duckdb.Error as e:
            if not _out_of_memory(e):
                raise
            # What was committed since the last checkpoint holds memory DuckDB cannot
            # always spill; a checkpoint frees it. Then the transaction is tried once more.
            log.warning("database out of memory; checkpointing and trying again: %s",
                        str(e).splitlines()[0])
            # Without a scan aside (the preload) holding memory meanwhile: a checkpoint that
            # runs out of memory can invalidate the database.
            with self._aside_lock:
                self.checkpoint()
                result = self._tx_once(fn)
        self.maybe_checkpoint()
        return result

    def _tx_group(self, group: list[_Write]) -> list[outcome.Outcome]:
        """Each function's outcome: all in one transaction if none raises, else each in its
        own (the group rolled back), so one function's error is only its own."""
        if len(group) > 1:
            try:
                results = self._roomy(self.tx, lambda con: [queued.fn(con) for queued in group])
                return [outcome.Value(result) for result in results]
            except Exception as e:
                if _invalidates(e):
                    return [outcome.Error(e)] * len(group)
        return [outcome.capture(self._roomy, self.tx, queued.fn) for queued in group]

    def _tx_once(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        con = self.con
        try:
            con.execute("BEGIN TRANSACTION")
        except duckdb.TransactionException as e:
            # A transaction whose ROLLBACK failed (out of memory itself) is still open,
            # aborted: every statement on the connection would fail until it is ended.
            if "aborted" not in str(e):
                raise
            log.warning("ending a transaction left aborted: %s", str(e).splitlines()[0])
            con.execute("ROLLBACK")
            con.execute("BEGIN TRANSACTION")
        try:
            result = fn(con)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # no transaction left to roll back (a failed COMMIT, a dead connection)
            raise
        return result

    def maybe_checkpoint(self) -> None:
        try:
            wal = os.path.getsize(self.path + ".wal")
        except OSError:
            return
        if wal < self.checkpoint_wal_bytes:
            return
        try:
            self.checkpoint()
        except duckdb.Error as e:
            # The commit before it stands (it is in the log); a checkpoint is tried again
            # after the next write, or on reopen.
            log.warning("checkpoint failed: %s", str(e).splitlines()[0])
            self._deferred = e  # judged on the trio thread, which owns the health state

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> None:
        """Copy the database into a new file and put that in its place (on the worker
        thread, so nothing else uses the connection meanwhile). A crash leaves either the
        old file or the complete new one: the swap is a rename, after the copy is closed."""
        target = self._remove_copy()
        self.checkpoint()
        try:
            self._copy_to(target)
            with self._aside_lock:
                self.con.close()
                try:
                    self._swap_in(target)
                finally:
                    self.con = self._connect()
        finally:
            self._remove_copy()  # a failed copy's part

    def _copy_to(self, target: str) -> None:
        name = self.con.execute("SELECT current_database()").fetchall()[0][0]
        self.con.execute("SET enable_progress_bar = false")  # it would print to the log
        self.con.execute("ATTACH ? AS skillfs_compact", [target])
        try:
            self._with_more_memory(self.con.execute,
                                   f'COPY FROM DATABASE "{name}" TO skillfs_compact')
        finally:
            self.con.execute("DETACH skillfs_compact")

    def _swap_in(self, target: str) -> None:
        if os.path.exists(self.path + ".wal"):
            raise SkillfsError(f"{self.path}.wal was left behind; not compacting")
        os.chmod(target, os.stat(self.path).st_mode & 0o777)
        os.replace(target, self.path)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _remove_copy(self) -> str:
        """Remove what an interrupted compaction left (it may hold purged bytes); return
        the copy's path."""
        target = self.path + ".compact"
        for leftover in (target, target + ".wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        return target

    # -- reopening ----------------------------------------------------------------------

    def _reopen(self) -> None:
        with self._aside_lock:
            self.close()
            self.con = self._connect()
        self.checkpoint()

    async def supervise(self) -> None:
        """Reopen the database whenever it fails; raise DatabaseLost when it cannot be."""
        while True:
            await self._broken.wait()
            await self._reopen_with_backoff()
            self._broken = trio.Event()
            self.invalidated = False
            self.recovered()

    async def _reopen_with_backoff(self) -> None:
        delay, attempts = REOPEN_FIRST_DELAY, 0
        while True:
            await trio.sleep(delay)
            try:
                await trio.to_thread.run_sync(self._reopen, limiter=self.limiter)
                log.warning("database reopened after: %s", self.reason)
                return
            except (duckdb.Error, SkillfsError) as e:
                full = _disk_full(e)
                attempts += 0 if full else 1
                log.error("reopening the database failed (%s): %s",
                          "disk full, waiting for space" if full else f"attempt {attempts}",
                          str(e).splitlines()[0])
                if attempts >= REOPEN_ATTEMPTS:
                    log.critical("giving up on the database %s: %s; stopping", self.path, e)
                    raise DatabaseLost(
                        f"the database {self.path} failed ({self.reason}) and could not be "
                        f"reopened: {e}") from e
            delay = min(delay * 2, REOPEN_MAX_DELAY)

    # -- DuckDB's own SQL: statements PostgreSQL writes differently ---------------------------

    def insert_many(self, con: duckdb.DuckDBPyConnection, table: str, ncols: int,
                    rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows as one list per column: DuckDB converts each list in one call, about
        ten times faster than binding every value of a multi-row VALUES."""
        if not rows:
            return
        types = self._column_types.get(table)
        if types is None:
            types = self._column_types[table] = [t for (t,) in con.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position", [table]).fetchall()]
        if len(types) != ncols:
            raise RuntimeError(f"{table} has {len(types)} columns, not {ncols}")
        columns = [list(c) for c in zip(*rows, strict=True)]
        select = ", ".join(f"unnest(?::{t}[])" for t in types)
        con.execute(f"INSERT INTO {table} SELECT * FROM (SELECT {select})", columns)
