"""What every database backend shares: its health, and group commit.

The store runs on DuckDB (store/database.py, the embedded default) or PostgreSQL
(store/postgres.py). Both hand the services the same interface: `run(fn, *args)` runs a
read on a worker thread, `write(fn)` runs `fn(con)` in a transaction, `con` executes SQL with
`?` placeholders. Each backend turns its driver's errors into the store's own (StorageFull,
OutOfMemory, Unavailable), so no caller (a FUSE handler, a spool file) dies of a driver's
exception, and marks itself unhealthy with the reason; a dead connection is refused at once
until `supervise` has it back.

Small writes are committed in groups (`write`): an agent harness drops one spool file per
message, and a transaction each costs a commit each. Writers queue their transaction
function; whoever finds no group running runs everything queued in one transaction on the
worker thread, commits once, and only then tells each writer. How a backend keeps one
function's error its caller's alone is its own (`_tx_group`): DuckDB has no SAVEPOINT and
runs the group again one by one, PostgreSQL rolls back to a savepoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import outcome
import trio

from ..errors import OutOfMemory, SkillfsError, StorageFull, Unavailable
from .claims import Claims, LocalClaims

log = logging.getLogger("skillfs.store")

# A group's bounds: what its transaction holds uncommitted must fit DuckDB's memory, and a
# writer should not wait behind a long one.
GROUP_MAX_WRITES = 1024
GROUP_MAX_BYTES = 4 << 20


@dataclass(eq=False)
class _Write:
    """A transaction function waiting in a group, and what became of it."""

    fn: Callable[[Any], Any]
    size: int
    result: outcome.Outcome | None = None


@dataclass(frozen=True)
class Fault:
    """What a driver's error says about the database."""

    disk_full: bool = False
    out_of_memory: bool = False
    connection_dead: bool = False  # nothing works until it is reopened


class Backend:
    """A database's health and group commit; the driver's parts are the subclass's."""

    Error: type[Exception] = Exception  # the driver's base error
    shared = False  # other daemons may write the same database (then the feed runs)
    con: Any  # executes SQL with `?` placeholders: `con.execute(sql, args).fetchall()`

    def __init__(self) -> None:
        self.reason: str | None = None  # why it is unhealthy, None while healthy
        self.since: float | None = None  # wall time it became unhealthy
        self.invalidated = False  # the connection is dead: reopen before any use
        self._broken = trio.Event()
        self.limiter = trio.CapacityLimiter(1)  # the threads reads run on
        self.write_limiter = self.limiter  # the thread groups run on
        self._queued: list[_Write] = []
        self._grouping = False  # a writer is running a group: the others wait for its end
        self._group_done = trio.Event()
        self.group_totals = {"groups": 0, "writes": 0}  # commits and the writes they held

    # -- the driver's parts ----------------------------------------------------------------

    def fault(self, error: BaseException) -> Fault | None:
        """What `error` says about the database; None for an error that says nothing about
        its health (a bug, a constraint)."""
        raise NotImplementedError

    def _tx_group(self, group: list[_Write]) -> list[outcome.Outcome]:
        raise NotImplementedError

    def tx(self, fn: Callable[[Any], Any]) -> Any:
        """`fn(con)` in a transaction of its own, on the calling thread."""
        raise NotImplementedError

    def insert_many(self, con: Any, table: str, ncols: int,
                    rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def checkpoint(self) -> None:
        raise NotImplementedError

    def file_id_block(self) -> range | None:
        """File ids for this daemon alone, where several share the database; None where one
        daemon owns it (it counts from the highest id it loaded)."""
        return None

    def refused(self, error: BaseException) -> SkillfsError | None:
        """The store's error for a driver's error that says the database refused a change
        another writer made impossible; None for any other."""
        return None

    def drop_buffers(self) -> None:
        raise NotImplementedError

    def compact(self) -> None:
        """Make purged bytes really gone from the database's files."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def supervise(self) -> None:
        """Reopen the database whenever it fails."""
        raise NotImplementedError

    def size_bytes(self) -> int:
        """How many bytes the database takes (run on the worker thread)."""
        raise NotImplementedError

    def claims(self) -> Claims:
        """Claims on learning work (store/claims.py): one process owns the database, so every
        claim is its own; a shared backend gives daemons' claims that exclude each other."""
        return LocalClaims()

    def _call(self, fn: Callable, *args) -> Any:
        """`fn(*args)` on a worker thread."""
        return fn(*args)

    def _judge_deferred(self) -> None:
        """Judge, on the trio thread, an error the worker thread put aside."""

    # -- health ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.reason is None

    def status(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reason": self.reason, "since": self.since,
                "invalidated": self.invalidated, "group_commit": dict(self.group_totals)}

    def check_usable(self) -> None:
        """Refuse at once while the connection is dead (it is being reopened)."""
        if self.invalidated:
            cls = StorageFull if self.reason and "disk full" in self.reason else Unavailable
            raise cls(f"the database is unavailable: {self.reason}")

    def _mark(self, reason: str) -> None:
        if self.reason is None:
            self.since = time.time()
        if reason != self.reason:
            log.error("database unhealthy: %s", reason)
        self.reason = reason

    def recovered(self) -> None:
        """A write committed: whatever was wrong is over."""
        if self.reason is not None and not self.invalidated:
            log.warning("database healthy again (was: %s)", self.reason)
            self.reason = self.since = None

    def failed(self, error: BaseException) -> SkillfsError | None:
        """Record a driver's error; return the store error to raise instead, or None for an
        error that says nothing about the database's health."""
        fault = self.fault(error)
        if fault is None:
            return None
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        if fault.connection_dead:
            if not self.invalidated:
                self.invalidated = True
                self._mark(("disk full: " if fault.disk_full else "") + first_line)
                self._broken.set()
        elif fault.disk_full:
            self._mark("disk full: " + first_line)
        elif fault.out_of_memory:
            log.warning("database out of memory: %s", first_line)
        if fault.disk_full:
            return StorageFull(f"no space left for the database: {first_line}")
        if fault.out_of_memory:
            return OutOfMemory(f"the database is out of memory: {first_line}")
        return Unavailable(f"the database cannot take changes now: {first_line}")

    async def run(self, fn: Callable, *args):
        """Run `fn(*args)` on a worker thread, the driver's errors turned into the store's."""
        self.check_usable()
        try:
            result = await trio.to_thread.run_sync(self._call, fn, *args, limiter=self.limiter)
        except self.Error as e:
            raise self._mapped(e) from e
        finally:
            self._judge_deferred()
        return result

    def _mapped(self, error: BaseException) -> SkillfsError:
        mapped = self.refused(error) or self.failed(error)
        if mapped is None:
            # A bug, not the database's state: reported as an error of this call only.
            log.error("database error", exc_info=error)
            mapped = SkillfsError(f"database error: {str(error).splitlines()[0]}")
        return mapped

    # -- group commit (on the trio thread) -------------------------------------------------

    async def write(self, fn: Callable[[Any], Any], size: int = 0):
        """Run `fn(con)` in a transaction, likely shared with other writers' functions;
        return once it committed (`size`: about how many bytes it writes). Like `run`, it
        is not cancelled half-way: a caller learns the fate of what it queued."""
        self.check_usable()
        queued = _Write(fn, size)
        self._queued.append(queued)
        with trio.CancelScope(shield=True):
            result = await self._settled(queued)
        value = result.unwrap()
        self.recovered()
        return value

    async def _settled(self, queued: _Write) -> outcome.Outcome:
        while True:
            if queued.result is not None:
                return queued.result
            # One writer at a time runs a group; when it is done the others wake, the
            # committed ones return, and one of the rest runs the next group.
            if self._grouping:
                await self._group_done.wait()
            else:
                await self._run_group()

    async def _run_group(self) -> None:
        self._grouping = True
        group = self._next_group()
        try:
            results = await trio.to_thread.run_sync(self._tx_group, group,
                                                    limiter=self.write_limiter)
        except BaseException as e:  # the hop to the thread failed: no function ran
            results = [outcome.Error(e)] * len(group)
        finally:
            self._grouping = False
        self._judge_deferred()
        for queued, result in zip(group, results, strict=True):
            queued.result = self._mapped_outcome(result)
        done, self._group_done = self._group_done, trio.Event()
        done.set()

    def _next_group(self) -> list[_Write]:
        count, size = 0, 0
        for queued in self._queued:
            if count and (count == GROUP_MAX_WRITES or size + queued.size > GROUP_MAX_BYTES):
                break
            count, size = count + 1, size + queued.size
        group, self._queued = self._queued[:count], self._queued[count:]
        self.group_totals["groups"] += 1
        self.group_totals["writes"] += count
        return group

    def _mapped_outcome(self, result: outcome.Outcome) -> outcome.Outcome:
        if isinstance(result, outcome.Error) and isinstance(result.error, self.Error):
            mapped = self._mapped(result.error)
            mapped.__cause__ = result.error
            return outcome.Error(mapped)
        return result
