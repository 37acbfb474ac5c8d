"""Watching the spool and taking each file in exactly once, in order, without getting stuck.

One worker does all ingestion, so files of a session go in name order and the store sees one
spool transaction at a time. Exactly once: the store commits a file's records and a ledger
row (path, sha256, file key) in the same transaction, then the file is deleted; a file whose
ledger row exists was committed before a crash and is only deleted.

Many small files: a harness that writes one file per message is the common case. The files of
a session that read and parse cleanly are read in one trip to a thread, committed in one
store call (one transaction) and deleted in one more trip; a file with anything unusual
about it goes the careful way, alone.

Never stuck: a file that fails for a reason other than its content (a full disk, an
unexpected error) is tried again after 1, 2, 4 ... seconds; after `RETRY_TRIES` tries it is
rejected with the last reason, so it holds back the later files of its session for a bounded
time. The database unavailable (a server down, restarting or unreachable; not out of memory,
which a file's size may cause) is not the file's fault and will pass: the file waits in
place, tried again every 30 s at most, for as long as it takes. Each file, session folder
and scan has its own error boundary: an error is logged with its traceback and the loop
goes on.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from watchfiles import Change, awatch

from ..errors import Conflict, Invalid, OutOfMemory, TooBig, Unavailable
from ..store.sessions import SpoolFile
from .folders import (
    REJECTED_DIR,
    WHY_NOT,
    Changed,
    Folder,
    Rejected,
    Unstable,
    file_key,
    kind_of,
    open_spool,
)
from .parse import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    Record,
    SpoolPath,
    SpoolReject,
    check_folder,
    check_spool_path,
    file_sha256,
    is_ignored,
    parse_spool_bytes,
    shown,
    spool_file_path,
)

log = logging.getLogger("skillfs.spool")

RETRY_BASE = 1.0  # seconds before the second try; doubled for each further one
RETRY_MAX = 30.0  # the longest wait between two tries
RETRY_TRIES = 6  # tries before a file is rejected: 1+2+4+8+16 s of waiting in all
WATCH_RETRY_BASE = 0.2  # pause before watching again after the watcher failed
# Files of a session committed in one store call: a bound on one transaction's size, and on
# how long the first of them waits for its commit.
CHUNK_FILES = 512
CHUNK_BYTES = 4 << 20
SESSION_LISTINGS = 4  # listings of a session in one pass

# Store errors that say the input is wrong: retrying cannot help, so the file is rejected.
# (NameTooLong is an Invalid.)
INPUT_ERRORS: tuple[type[Exception], ...] = (Invalid, Conflict, TooBig)
# What makes a file unusual: it leaves the batch and goes the careful way, alone.
UNUSUAL: tuple[type[Exception], ...] = (OSError, SpoolReject, Unstable, *INPUT_ERRORS)

_thread = trio.to_thread.run_sync


def _input_reject(error: Exception) -> SpoolReject:
    return SpoolReject(None, None, getattr(error, "message", None) or str(error))


@dataclass
class IngestedFile:
    space: str
    session: str
    rel_path: str
    sha256: str
    records: int
    result: Any


@dataclass
class _Ready:
    """A spool file read and parsed, ready to commit."""

    name: str
    sp: SpoolPath
    st: os.stat_result  # as read: deleted only if still the same file
    file: SpoolFile


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0  # trio.current_time()


@dataclass
class _Pass:
    """One walk over some of the spool, holding the descriptors it walks from."""

    root: Folder
    rejected: Rejected
    respect_backoff: bool
    now: float
    found: set[str] = field(default_factory=set)


class SpoolIngester:
    """Watches the spool and hands each file to the store exactly once.

    `run` is for a trio nursery; `scan_once` is for tests and for callers that want the
    spool drained now.
    """

    def __init__(
        self,
        sessions: Any,
        spool_dir: str | os.PathLike,
        on_ingested: Callable[[IngestedFile], Any] | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        debounce_ms: int = 50,
        step_ms: int = 10,
        rescan_interval: float = 30.0,
        retry_base: float = RETRY_BASE,
        retry_max: float = RETRY_MAX,
        retry_tries: int = RETRY_TRIES,
    ):
        self.sessions = sessions  # the store's service that owns the spool ledger
        self.spool_dir = Path(os.path.realpath(spool_dir))
        self.on_ingested = on_ingested
        self.max_line_bytes = max_line_bytes
        self.max_file_bytes = max_file_bytes
        self.max_message_bytes = max_message_bytes
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        # Safety net for lost notifications (inotify queue overflow, watch limits).
        self.rescan_interval = rescan_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.retry_tries = retry_tries
        self.stats = {"ingested": 0, "duplicates": 0, "rejected": 0, "errors": 0}
        self._pending: set[str] = set()
        self._retry: dict[str, _Retry] = {}
        # Given up on and not even movable to .rejected/: left in place, holding nothing back.
        self._skipped: set[str] = set()
        self._dirty: set[str] = set()
        self._next_full = math.inf
        self._wake = trio.Event()
        self._lock = trio.Lock()

    # --- public -------------------------------------------------------------------------

    def backlog(self) -> int:
        """Files seen in the spool and not yet ingested or rejected (including retries)."""
        return len(self._pending | set(self._retry))

    async def scan_once(self) -> None:
        """Walk the whole spool and ingest everything there now, retries included."""
        await self._process([""], respect_backoff=False)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Initial scan, then watch; reports started once the backlog at start is handled."""
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            try:
                await self._process([""], respect_backoff=True)
            except Exception:
                log.exception("spool: initial scan of %s failed", self.spool_dir)
            # The watcher may have come up after the initial scan began; one more pass soon
            # closes that window.
            self._next_full = trio.current_time() + 1.0
            task_status.started()
            await self._worker()

    # --- scheduling -----------------------------------------------------------------------

    def _mark(self, root: str) -> None:
        self._dirty.add(root)
        self._wake.set()

    def _next_wakeup(self) -> float:
        return min([self._next_full, *(r.due for r in self._retry.values())])

    async def _worker(self) -> None:
        while True:
            with trio.move_on_at(self._next_wakeup()):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            roots: set[str] = set(self._dirty)
            self._dirty.clear()
            if now >= self._next_full:
                roots = {""}
                self._next_full = now + self.rescan_interval
            else:
                # A due retry rescans its session so later files of it follow in order.
                for rel, r in self._retry.items():
                    if r.due <= now:
                        roots.add("/".join(rel.split("/")[:2]))
            if roots:
                try:
                    await self._process(sorted(roots), respect_backoff=True)
                except Exception:
                    # Never let one bad pass end the daemon's watcher.
                    log.exception("spool: scan failed")
                    self._next_full = min(self._next_full, trio.current_time() + self.retry_max)

    def _watch_filter(self, change: Any, path: str) -> bool:
        # Called for every change, the ingester's own deletes included: kept cheap. A
        # deletion brings nothing to ingest.
        rel = self._spool_rel(path)
        return change != Change.deleted and bool(rel) and not is_ignored(rel)

    def _spool_rel(self, path: str) -> str:
        """`path` from the spool root, "" if it is not under it."""
        prefix = f"{self.spool_dir}{os.sep}"
        return path[len(prefix):].replace(os.sep, "/") if path.startswith(prefix) else ""

    async def _watch(self) -> None:
        delay = WATCH_RETRY_BASE
        while True:
            stop = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._stop_on_cancel, stop)
                    async for changes in awatch(
                        self.spool_dir,
                        watch_filter=self._watch_filter,
                        debounce=self.debounce_ms,
                        step=self.step_ms,
                        stop_event=stop,
                        force_polling=False,
                    ):
                        delay = WATCH_RETRY_BASE
                        for _change, path in changes:
                            self._mark("/".join(self._spool_rel(path).split("/")[:2]))
                    nursery.cancel_scope.cancel()
            except Exception:
                # E.g. a name that is not UTF-8 (the watcher cannot decode it), the inotify
                # watch limit, the spool removed under us. A full scan rejects a bad name; the
                # watcher comes back after a pause, and a second scan soon after it catches
                # what arrived meanwhile.
                log.exception("spool: watching %s failed; watching again in %.1fs",
                              self.spool_dir, delay)
                self._mark("")
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                self._next_full = min(self._next_full, trio.current_time() + 1.0)
                try:
                    os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
                except OSError:
                    log.exception("spool: cannot create %s", self.spool_dir)

    @staticmethod
    async def _stop_on_cancel(stop: trio.Event) -> None:
        # awatch's thread only notices cancellation through its stop event; without this a
        # shutdown would wait for the watcher's timeout.
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    # --- walking --------------------------------------------------------------------------

    async def _process(self, roots: Iterable[str], respect_backoff: bool) -> None:
        async with self._lock:
            try:
                root = await _thread(open_spool, self.spool_dir)
            except OSError:
                log.exception("spool: cannot open %s", self.spool_dir)
                return
            walk = _Pass(root, Rejected(root), respect_backoff, trio.current_time())
            try:
                for rel in roots:
                    try:
                        await self._scan(walk, rel)
                    except Exception:
                        log.exception("spool: scanning %s failed", shown(rel) or ".")
            finally:
                walk.rejected.close()
                root.close()

    async def _scan(self, walk: _Pass, root: str) -> None:
        """Ingest what is under `root`: "" (everything), "space" or "space/session"."""
        walk.found = set()
        if root:
            space, _, session = root.partition("/")
            await self._space(walk, space, session or None)
        else:
            for name in await _thread(walk.root.names):
                await self._space(walk, name, None)
        self._forget_vanished(root, walk.found)

    def _forget_vanished(self, root: str, found: set[str]) -> None:
        """A scan knows everything under its root: forget what is no longer there (a stale
        retry would keep the worker waking up for nothing)."""
        def gone(rel: str) -> bool:
            return (not root or rel == root or rel.startswith(root + "/")) and rel not in found

        self._pending = {rel for rel in self._pending if not gone(rel)}
        self._skipped = {rel for rel in self._skipped if not gone(rel)}
        for rel in [rel for rel in self._retry if gone(rel)]:
            del self._retry[rel]

    async def _space(self, walk: _Pass, name: str, only_session: str | None) -> None:
        folder = await self._enter(walk, walk.root, name)
        if folder is None:
            return
        try:
            names = [only_session] if only_session else await _thread(folder.names)
            for session in names:
                try:
                    await self._session(walk, folder, session)
                except Exception:
                    log.exception("spool: session folder %s failed", shown(folder.child(session)))
        finally:
            folder.close()

    async def _enter(self, walk: _Pass, parent: Folder, name: str) -> Folder | None:
        """Open space or session folder `name`; reject it if it is anything else."""
        if is_ignored(name):
            return None
        st = await _thread(parent.lstat, name)
        try:
            if st is None or await self._rejected_folder(walk, parent, name, st):
                return None
            return await _thread(parent.open_folder, name)
        except FileNotFoundError:
            return None
        except SpoolReject:
            # Swapped for something else since it was looked at: judge what is there now
            # (or, if it is a folder again, at the next scan).
            if (st := await _thread(parent.lstat, name)) is not None:
                await self._rejected_folder(walk, parent, name, st)
            return None

    async def _rejected_folder(self, walk: _Pass, parent: Folder, name: str,
                               st: os.stat_result) -> bool:
        """Reject `name` (described by `st`) if it is no space or session folder."""
        rel = parent.child(name)
        kind = kind_of(st.st_mode)
        try:
            if kind == "file":
                check_spool_path(rel)  # raises: a file where a folder belongs
            if kind != "folder":
                raise SpoolReject(None, None, WHY_NOT[kind])
            check_folder(rel)
        except SpoolReject as e:
            await self._reject(walk, parent, name, e, st)
            return True
        return False

    async def _session(self, walk: _Pass, space: Folder, name: str) -> None:
        """The files of one session, in name order; a file that must wait holds back the rest."""
        folder = await self._enter(walk, space, name)
        if folder is None:
            return
        try:
            # Files that arrived while the last listing was taken in are taken in too: a
            # burst drains without waiting for the watcher (a few times, so a session
            # written to without pause cannot hold back the others).
            names: list[str] = []
            for _ in range(SESSION_LISTINGS):
                listed = await self._listing(walk, folder)
                if not listed or listed == names or not await self._files(walk, folder, listed):
                    break
                names = listed
        finally:
            folder.close()

    async def _listing(self, walk: _Pass, folder: Folder) -> list[str]:
        names = [n for n in await _thread(folder.settled_names) if not is_ignored(n)]
        walk.found.update(folder.child(n) for n in names)
        names = [n for n in names if folder.child(n) not in self._skipped]
        self._pending.update(folder.child(n) for n in names)
        return names

    async def _files(self, walk: _Pass, folder: Folder, names: list[str]) -> bool:
        """Take `names` in in order; False if one must wait (and holds back the rest)."""
        async with trio.open_nursery() as nursery:
            # The next batch is read while this one commits.
            send, batches = trio.open_memory_channel[tuple[int, list[_Ready]]](0)
            nursery.start_soon(self._read_ahead, folder, names, send)
            async for i, ready in batches:
                if not await self._take(walk, folder, names, i, ready):
                    nursery.cancel_scope.cancel()
                    return False
        return True

    async def _read_ahead(self, folder: Folder, names: list[str],
                          send: trio.MemorySendChannel[tuple[int, list[_Ready]]]) -> None:
        """Batches of `names` as they read, each with where it starts; an empty one for a
        file that must go the careful way."""
        async with send:
            i = 0
            while i < len(names):
                try:
                    ready = await _thread(self._read_ready, folder, self._chunk(folder, names, i))
                except Exception:
                    ready = []  # `_file` meets the error again and handles it
                await send.send((i, ready))
                i += max(len(ready), 1)

    async def _take(self, walk: _Pass, folder: Folder, names: list[str], i: int,
                    ready: list[_Ready]) -> bool:
        """Commit a batch (or the one file at `i`); False: the session waits."""
        retry = self._retry.get(folder.child(names[i]))
        if retry and walk.respect_backoff and retry.due > walk.now:
            return False
        try:
            done = await (self._commit(walk, folder, ready) if ready
                          else self._file(walk, folder, names[i]))
        except Exception as e:
            log.exception("spool: unexpected error on %s", shown(folder.child(names[i])))
            done = await self._failed(walk, folder, names[i], f"unexpected error: {e!r}")
        if done:
            for n in names[i:i + max(len(ready), 1)]:
                self._pending.discard(folder.child(n))
                self._retry.pop(folder.child(n), None)
        return done

    def _chunk(self, folder: Folder, names: list[str], i: int) -> list[str]:
        """`names[i]` and the files after it that are not waiting for a retry."""
        chunk = [names[i]]
        for n in names[i + 1:i + CHUNK_FILES]:
            if folder.child(n) in self._retry:
                break
            chunk.append(n)
        return chunk

    def _read_ready(self, folder: Folder, names: list[str]) -> list[_Ready]:
        """The leading files of `names` that read and parse cleanly (on a thread); the first
        that does not ends the list and is left to `_file`."""
        ready: list[_Ready] = []
        size = 0
        for name in names:
            try:
                one = self._ready(folder, name)
            except UNUSUAL:
                break
            ready.append(one)
            size += one.st.st_size
            if size >= CHUNK_BYTES:
                break
        return ready

    def _ready(self, folder: Folder, name: str) -> _Ready:
        # `_session` left out ignored names, and `_enter` checked the folders' names.
        space, session = folder.rel.split("/")
        sp = spool_file_path(space, session, name)
        # No lstat: the read refuses a link, a folder or anything but a plain file.
        data, read_stat = folder.read(name, self.max_file_bytes)
        records = self._parse(data, sp.suffix)
        return _Ready(name, sp, read_stat,
                      SpoolFile(sp.rel, file_sha256(data), file_key(read_stat), records))

    # --- one file -------------------------------------------------------------------------

    async def _file(self, walk: _Pass, folder: Folder, name: str) -> bool:
        """Ingest, reject or drop one file. False: it stays for a retry (and holds back its
        session)."""
        st = None
        try:
            sp = check_spool_path(folder.child(name))
            if sp is None:
                return True
            st = await _thread(folder.lstat, name)
            if st is None:
                return True
            if kind_of(st.st_mode) != "file":
                raise SpoolReject(None, None, WHY_NOT[kind_of(st.st_mode)])
            data, read_stat = await _thread(folder.read, name, self.max_file_bytes)
        except FileNotFoundError:
            return True  # gone (renamed away or already handled)
        except SpoolReject as e:
            return await self._reject(walk, folder, name, e, st)
        except Unstable:
            log.info("spool: %s is still being written; will retry", shown(folder.child(name)))
            return await self._failed(walk, folder, name, "the file kept changing while read")
        except OSError as e:
            log.warning("spool: cannot read %s: %s; will retry", shown(folder.child(name)), e)
            return await self._failed(walk, folder, name, f"cannot read it: {e}")
        try:
            records = await _thread(self._parse, data, sp.suffix)
        except SpoolReject as e:
            return await self._reject(walk, folder, name, e, read_stat)
        except INPUT_ERRORS as e:
            return await self._reject(walk, folder, name, _input_reject(e), read_stat)
        file = SpoolFile(sp.rel, file_sha256(data), file_key(read_stat), records)
        return await self._commit(walk, folder, [_Ready(name, sp, read_stat, file)])

    async def _commit(self, walk: _Pass, folder: Folder, ready: list[_Ready]) -> bool:
        """Commit files of one session in one store call, then delete them. False: the
        first stays for a retry (and holds back its session)."""
        first = ready[0]
        try:
            results = await self.sessions.ingest_spool_files(
                first.sp.space, first.sp.session, [r.file for r in ready])
        except INPUT_ERRORS as e:
            if len(ready) > 1:  # perhaps one file's fault: each alone finds which
                return await self._commit_each(walk, folder, ready)
            return await self._reject(walk, folder, first.name, _input_reject(e), first.st)
        except Unavailable as e:
            if isinstance(e, OutOfMemory):  # perhaps this file's size: bounded, as others
                log.warning("spool: the store failed on %s: %s; will retry", first.sp.rel, e)
                return await self._failed(walk, folder, first.name, f"the store failed: {e}")
            log.warning("spool: %s waits for the database: %s", first.sp.rel, e.message)
            return await self._failed(walk, folder, first.name, e.message, waits=True)
        except Exception as e:
            log.exception("spool: the store failed on %s; will retry", first.sp.rel)
            return await self._failed(walk, folder, first.name, f"the store failed: {e}")
        # Committed either way: the ledger stops a re-ingest if a delete failed.
        unlinked = await _thread(self._unlink_all, folder, ready)
        ok = True
        for r, result, error in zip(ready, results, unlinked, strict=True):
            self.stats["ingested" if result is not None else "duplicates"] += 1
            if error is not None:
                log.error("spool: could not delete %s: %s", shown(folder.child(r.name)), error)
                ok = ok and await self._failed(walk, folder, r.name, f"cannot delete it: {error}")
            if result is not None:
                await self._notify(IngestedFile(r.sp.space, r.sp.session, r.sp.rel,
                                                r.file.digest, len(r.file.records), result))
        return ok

    async def _commit_each(self, walk: _Pass, folder: Folder, ready: list[_Ready]) -> bool:
        for r in ready:
            if not await self._commit(walk, folder, [r]):
                return False
        return True

    @staticmethod
    def _unlink_all(folder: Folder, ready: list[_Ready]) -> list[OSError | None]:
        errors: list[OSError | None] = []
        for r in ready:
            try:
                folder.unlink_if_same(r.name, r.st)
                errors.append(None)
            except OSError as e:
                errors.append(e)
        return errors

    def _parse(self, data: bytes, suffix: str) -> list[Record]:
        return parse_spool_bytes(
            data, suffix, max_line_bytes=self.max_line_bytes, max_file_bytes=self.max_file_bytes,
            max_message_bytes=self.max_message_bytes)

    async def _failed(self, walk: _Pass, folder: Folder, name: str, reason: str,
                      waits: bool = False) -> bool:
        """A failure not caused by the file's content: try again later, up to a bound
        unless it `waits` for the database to come back."""
        rel = folder.child(name)
        self.stats["errors"] += 1
        retry = self._retry.setdefault(rel, _Retry())
        retry.attempts += 1
        if retry.attempts >= self.retry_tries and not waits:
            why = SpoolReject(None, None, f"gave up after {retry.attempts} tries: {reason}")
            return await self._reject(walk, folder, name, why, last_resort=True)
        delay = min(self.retry_max, self.retry_base * 2 ** (retry.attempts - 1))
        retry.due = trio.current_time() + delay
        self._wake.set()
        return False

    async def _reject(self, walk: _Pass, folder: Folder, name: str, err: SpoolReject,
                      expect: os.stat_result | None = None, last_resort: bool = False) -> bool:
        """Move the entry `expect` describes (what is there now if None) to .rejected/."""
        rel = folder.child(name)
        try:
            await _thread(walk.rejected.move, folder, name, err, expect)
        except (FileNotFoundError, Changed):
            return True  # gone, or replaced by something the next scan judges
        except OSError as e:
            log.exception("spool: could not move %s to %s/", shown(rel), REJECTED_DIR)
            if last_resort:
                log.error("spool: leaving %s where it is and going on without it", shown(rel))
                self._skipped.add(rel)
                return True
            return await self._failed(walk, folder, name,
                                      f"{err} (and moving it to {REJECTED_DIR}/ failed: {e})")
        self.stats["rejected"] += 1
        return True

    async def _notify(self, info: IngestedFile) -> None:
        if self.on_ingested is None:
            return
        try:
            out = self.on_ingested(info)
            if inspect.isawaitable(out):
                await out
        except Exception:
            log.exception("spool: on_ingested callback failed for %s", info.rel_path)
