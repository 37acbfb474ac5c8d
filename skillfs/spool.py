"""The spool: a directory agents drop session messages into, ingested exactly once.

Layout: ``SPOOL/<space>/<session>/<name>.jsonl`` (one JSON record per line) or ``.json`` (one
record or an array of records). A record is a message (see `skillfs.messages`) or a control
record ``{"event": "end" | "flush"}``. Writers create ``.name`` or ``name.tmp`` and rename it
into place; anything with a component starting with ``.`` or ending in ``.tmp`` is ignored.

Exactly once: the store commits a file's records and a ledger row (path, sha256) in one
transaction, then the file is deleted. A file whose ledger row already exists was committed
before a crash and is only deleted. A file that cannot be ingested is moved to
``SPOOL/.rejected/`` next to a ``.error.json`` sidecar saying why; nothing is dropped silently.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import logging
import math
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import trio

from .errors import Conflict, Invalid, TooBig
from pydantic import ValidationError

from .messages import Control, InvalidMessage, Message, json_type, normalize
from .names import check_component, check_space_name

log = logging.getLogger(__name__)

Record = Union[Message, Control]

REJECTED_DIR = ".rejected"
SUFFIXES = (".jsonl", ".json")
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_FILE_BYTES = 64 << 20

# Store errors that say the input is wrong: retrying cannot help, so the file is rejected.
# (NameTooLong is an Invalid.)
INPUT_ERRORS: tuple[type[Exception], ...] = (Invalid, Conflict, TooBig)


class SpoolReject(Exception):
    """Why a spool file cannot be ingested; `line` is 1-based."""

    def __init__(self, line: int | None, field: str | None, reason: str):
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


# ---------------------------------------------------------------------------------------------
# Parsing (pure)

def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_constants(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would break storing the body as JSON.
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constants)


def parse_record(obj: Any, line: int | None = None, where: str | None = None) -> Record:
    """One decoded JSON value as a record; `where` prefixes field paths (``[3]`` in an array)."""

    def field(name: str | None) -> str | None:
        if where is None:
            return name
        return f"{where}.{name}" if name else where

    if not isinstance(obj, dict):
        raise SpoolReject(line, field(None), f"expected a JSON object, got {json_type(obj)}")
    if "event" in obj:
        if "role" in obj:
            raise SpoolReject(line, field("event"), "a record is a message (role) or a control record (event), not both")
        event = obj["event"]
        if not isinstance(event, str) or event not in ("end", "flush"):
            raise SpoolReject(line, field("event"), f"unknown event {event!r} (expected 'end' or 'flush')")
        return Control(event=event, original=obj)
    try:
        return normalize(obj)
    except InvalidMessage as e:
        raise SpoolReject(line, field(e.field), e.reason) from None
    except Invalid as e:
        raise SpoolReject(line, field(None), e.message) from None
    except ValidationError as e:
        raise SpoolReject(line, field(None), f"not a message: {e.errors()[0]['msg']}") from None


def _decode_utf8(data: bytes, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpoolReject(line, None, f"invalid UTF-8 at byte {col} of the line") from None


def _loads(text: str, line_base: int) -> Any:
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as e:
        line = line_base + e.lineno - 1
        raise SpoolReject(line, None, f"malformed JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:
        raise SpoolReject(line_base, None, f"malformed JSON: {e}") from None
    except RecursionError:
        raise SpoolReject(line_base, None, "malformed JSON: nested too deeply") from None


def _array_element_lines(text: str) -> list[int]:
    """The line each top-level element of a (valid) JSON array starts on."""
    lines: list[int] = []
    ws = " \t\r\n"
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in ws:
            i += 1
        if i >= len(text) or text[i] == "]":
            return lines
        lines.append(text.count("\n", 0, i) + 1)
        _, i = _decoder.raw_decode(text, i)
        while i < len(text) and text[i] in ws:
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1


def parse_spool_bytes(
    data: bytes,
    suffix: str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> list[Record]:
    """The records in one spool file's bytes; raises SpoolReject saying where and why.

    The line cap applies to ``.jsonl`` lines (one record each); a ``.json`` file is one
    document, bounded by the file cap only.
    """
    suffix = suffix if suffix.startswith(".") else "." + suffix
    if suffix not in SUFFIXES:
        raise SpoolReject(None, None, f"unsupported suffix {suffix!r} (expected .jsonl or .json)")
    if len(data) > max_file_bytes:
        raise SpoolReject(None, None, f"file is {len(data)} bytes, over the {max_file_bytes}-byte cap")
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM some editors add
        data = data[3:]
    records: list[Record] = []
    if suffix == ".jsonl":
        for n, raw in enumerate(data.split(b"\n"), start=1):
            if len(raw) > max_line_bytes:
                raise SpoolReject(n, None, f"line is {len(raw)} bytes, over the {max_line_bytes}-byte cap")
            text = _decode_utf8(raw, n)
            if not text.strip():
                continue
            record = parse_record(_loads(text, n), n)
            if isinstance(record, Message):
                record.raw = text.strip()
            records.append(record)
    else:
        text = _decode_utf8(data)
        if text.strip():
            doc = _loads(text, 1)
            if isinstance(doc, list):
                lines: list[int] | None = None
                for i, obj in enumerate(doc):
                    try:
                        records.append(parse_record(obj, None, f"[{i}]"))
                    except SpoolReject as e:
                        # Finding element lines costs a second pass; only on the error path.
                        lines = lines or _array_element_lines(text)
                        e.line = lines[i] if i < len(lines) else None
                        raise
            else:
                first = len(text) - len(text.lstrip())
                records.append(parse_record(doc, text.count("\n", 0, first) + 1))
    if not records:
        raise SpoolReject(None, None, "empty file: no records")
    return records


# ---------------------------------------------------------------------------------------------
# Paths and rejection

@dataclass(frozen=True)
class SpoolPath:
    space: str
    session: str
    name: str
    rel: str  # "space/session/name", '/'-separated, relative to the spool

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]


def is_ignored(rel: str) -> bool:
    """Dotfiles/dot-dirs (including .rejected) and *.tmp are someone's work in progress."""
    return any(part.startswith(".") or part.endswith(".tmp") for part in rel.split("/"))


def check_spool_path(rel: str) -> SpoolPath | None:
    """None for an ignored path; raises SpoolReject for one that breaks the layout."""
    if is_ignored(rel):
        return None
    parts = rel.split("/")
    if len(parts) != 3:
        raise SpoolReject(None, None, f"{rel!r} is not <space>/<session>/<name>.jsonl|.json")
    space, session, name = parts
    if os.path.splitext(name)[1] not in SUFFIXES:
        raise SpoolReject(None, None, f"{name!r}: spool files end in .jsonl or .json")
    try:
        check_space_name(space)
    except Invalid as e:
        raise SpoolReject(None, "space", e.message) from None
    try:
        check_component(session)
    except Invalid as e:
        raise SpoolReject(None, "session", e.message) from None
    return SpoolPath(space, session, name, rel)


def _rejected_base(rel: str) -> str:
    base = "__".join(rel.split("/"))
    if len(os.fsencode(base)) > 200:
        # Keep room for a counter and ".error.json" under NAME_MAX; the sidecar keeps the path.
        digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:16]
        tail = os.fsencode(base)[-120:].decode("utf-8", "ignore")
        base = f"{digest}__{tail}"
    return base


def reject(spool_dir: str | os.PathLike, path: str | os.PathLike, error: SpoolReject | str) -> Path:
    """Move `path` to SPOOL/.rejected/<space>__<session>__<name> with a sidecar saying why.

    Returns the new path. The file is moved before the sidecar is written, so a failure
    writing the sidecar never loses the file.
    """
    spool = Path(spool_dir)
    src = Path(path)
    if not src.is_absolute():
        src = spool / src
    rel = os.path.relpath(src, spool).replace(os.sep, "/")
    err = error if isinstance(error, SpoolReject) else SpoolReject(None, None, str(error))
    rejected = spool / REJECTED_DIR
    rejected.mkdir(parents=True, exist_ok=True)
    base = _rejected_base(rel)
    stem, ext = os.path.splitext(base)
    n = 0
    while True:
        name = base if n == 0 else f"{stem}.{n}{ext}"
        dst = rejected / name
        side = rejected / (name + ".error.json")
        if not os.path.lexists(dst) and not os.path.lexists(side):
            break
        n += 1
    os.rename(src, dst)
    body = {
        "path": rel,
        "line": err.line,
        "field": err.field,
        "reason": err.reason,
        "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    tmp = rejected / (name + ".error.json.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
        os.replace(tmp, side)
    except OSError:
        log.exception("spool: could not write %s (the file itself is at %s)", side, dst)
    log.warning("spool: rejected %s: %s", rel, err)
    return dst


# ---------------------------------------------------------------------------------------------
# The ingester

@dataclass
class IngestedFile:
    space: str
    session: str
    rel_path: str
    sha256: str
    records: int
    result: Any


@dataclass
class _Retry:
    attempts: int
    due: float  # trio.current_time()


class _Unstable(Exception):
    """The file changed while it was read: someone is writing it in place."""


def _walk(spool: Path, root: str) -> list[str]:
    """Relative paths of all non-ignored entries under `root` (a relative path, "" = all).

    Directories are walked (symlinks not followed); everything else is returned for the
    caller to ingest or reject.
    """
    out: list[str] = []
    start = spool / root if root else spool
    try:
        st = os.lstat(start)
    except FileNotFoundError:
        return out
    if not stat.S_ISDIR(st.st_mode):
        if root and not is_ignored(root):
            out.append(root)
        return out
    stack = [root]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(spool / rel_dir if rel_dir else spool))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            # One unreadable folder must not hide the rest of the spool.
            log.warning("spool: cannot list %s: %s", rel_dir or ".", e)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_ignored(rel):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                stack.append(rel)
            else:
                out.append(rel)
    return out


def file_key(st: os.stat_result) -> str:
    """What tells this file from a later one with the same name and content."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


def _read_stable(path: Path, max_file_bytes: int) -> tuple[bytes, str] | int:
    """The file's bytes and key, or its size when it is over the cap (not read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SpoolReject(None, None, "not a regular file")
        if before.st_size > max_file_bytes:
            return before.st_size
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise _Unstable()
        return b"".join(chunks), file_key(after)
    finally:
        os.close(fd)


class SpoolIngester:
    """Watches the spool and hands each file to the store exactly once.

    One worker does all ingestion, so files of a session go in name order and the store sees
    one spool transaction at a time. `run` is for a trio nursery; `scan_once` is for tests
    and for callers that want the spool drained now.
    """

    def __init__(
        self,
        store: Any,
        spool_dir: str | os.PathLike,
        on_ingested: Callable[[IngestedFile], Any] | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        debounce_ms: int = 50,
        step_ms: int = 10,
        rescan_interval: float = 30.0,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
    ):
        self.store = store
        self.spool_dir = Path(os.path.realpath(spool_dir))
        self.on_ingested = on_ingested
        self.max_line_bytes = max_line_bytes
        self.max_file_bytes = max_file_bytes
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        # Safety net for lost notifications (inotify queue overflow, watch limits).
        self.rescan_interval = rescan_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.stats = {"ingested": 0, "duplicates": 0, "rejected": 0, "errors": 0}
        self._pending: set[str] = set()
        self._retry: dict[str, _Retry] = {}
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
        self.spool_dir.mkdir(parents=True, exist_ok=True)
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
        times = [self._next_full]
        times.extend(r.due for r in self._retry.values())
        return min(times)

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
                    # Never let one bad pass end the daemon's watcher; the next wakeup retries.
                    log.exception("spool: scan failed")
                    self._next_full = min(self._next_full, trio.current_time() + self.retry_max)

    def _watch_filter(self, _change: Any, path: str) -> bool:
        rel = os.path.relpath(path, self.spool_dir)
        return not rel.startswith("..") and rel != "." and not is_ignored(rel.replace(os.sep, "/"))

    async def _watch(self) -> None:
        from watchfiles import awatch

        delay = 1.0
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
                        delay = 1.0
                        for _change, path in changes:
                            rel = os.path.relpath(path, self.spool_dir).replace(os.sep, "/")
                            self._mark("/".join(rel.split("/")[:2]))
                    nursery.cancel_scope.cancel()
            except Exception:
                # E.g. the inotify watch limit, or the spool dir removed under us: rescan
                # fully, then watch again after a pause.
                log.exception("spool: watching %s failed; retrying in %.0fs", self.spool_dir, delay)
                self._mark("")
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)
                try:
                    self.spool_dir.mkdir(parents=True, exist_ok=True)
                except OSError:
                    pass

    @staticmethod
    async def _stop_on_cancel(stop: trio.Event) -> None:
        # awatch's thread only notices cancellation through its stop event; without this a
        # shutdown would wait for the watcher's timeout.
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    # --- ingestion ------------------------------------------------------------------------

    async def _process(self, roots: Iterable[str], respect_backoff: bool) -> None:
        roots = list(roots)
        async with self._lock:
            found: set[str] = set()
            for root in roots:
                found.update(await trio.to_thread.run_sync(_walk, self.spool_dir, root))
            # A scan knows everything under its roots: forget what vanished there (a stale
            # retry entry would otherwise keep the worker waking up for nothing).
            def under(rel: str) -> bool:
                return any(not r or rel == r or rel.startswith(r + "/") for r in roots)

            self._pending = {rel for rel in self._pending if not under(rel)} | found
            for rel in [rel for rel in self._retry if under(rel) and rel not in found]:
                del self._retry[rel]
            # Session order: by name within each session; sessions one after another.
            blocked: set[tuple[str, ...]] = set()
            now = trio.current_time()
            for rel in sorted(found, key=lambda r: (r.split("/")[:2], r)):
                key = tuple(rel.split("/")[:2])
                if key in blocked:
                    continue
                retry = self._retry.get(rel)
                if retry and respect_backoff and retry.due > now:
                    blocked.add(key)
                    continue
                done = await self._ingest_one(rel)
                if done:
                    self._pending.discard(rel)
                    self._retry.pop(rel, None)
                else:
                    blocked.add(key)

    def _schedule_retry(self, rel: str) -> None:
        r = self._retry.get(rel) or _Retry(0, 0.0)
        r.attempts += 1
        delay = min(self.retry_max, self.retry_base * (2 ** min(r.attempts - 1, 16)))
        r.due = trio.current_time() + delay
        self._retry[rel] = r
        self._wake.set()

    async def _reject(self, rel: str, err: SpoolReject | str) -> bool:
        try:
            await trio.to_thread.run_sync(reject, self.spool_dir, rel, err)
        except FileNotFoundError:
            return True
        except OSError:
            log.exception("spool: could not move %s to %s/", rel, REJECTED_DIR)
            self.stats["errors"] += 1
            self._schedule_retry(rel)
            return False
        self.stats["rejected"] += 1
        return True

    async def _ingest_one(self, rel: str) -> bool:
        """Ingest, reject or drop one file. False: it stays for a retry (and blocks its session)."""
        try:
            sp = check_spool_path(rel)
        except SpoolReject as e:
            return await self._reject(rel, e)
        if sp is None:
            return True
        path = self.spool_dir / rel
        try:
            data = await trio.to_thread.run_sync(_read_stable, path, self.max_file_bytes)
        except FileNotFoundError:
            return True  # gone (renamed away or already handled)
        except SpoolReject as e:
            return await self._reject(rel, e)
        except _Unstable:
            log.info("spool: %s is still being written; will retry", rel)
            self._schedule_retry(rel)
            return False
        except OSError as e:
            if e.errno == errno.ELOOP or isinstance(e, IsADirectoryError):
                return await self._reject(rel, "not a regular file")
            log.warning("spool: cannot read %s: %s; will retry", rel, e)
            self.stats["errors"] += 1
            self._schedule_retry(rel)
            return False
        if isinstance(data, int):
            return await self._reject(
                rel, SpoolReject(None, None, f"file is {data} bytes, over the {self.max_file_bytes}-byte cap")
            )
        data, key = data
        sha = file_sha256(data)
        try:
            if await self.store.spool_seen(rel, sha, key):
                # Committed before a crash, not yet deleted.
                self.stats["duplicates"] += 1
                return await self._unlink(rel)
            try:
                records = await trio.to_thread.run_sync(self._parse, data, sp.suffix)
            except SpoolReject as e:
                return await self._reject(rel, e)
            try:
                result = await self.store.ingest_spool_file(sp.space, sp.session, rel, sha, records,
                                                            file_key=key)
            except INPUT_ERRORS as e:
                msg = getattr(e, "message", None) or str(e)
                return await self._reject(rel, SpoolReject(None, None, msg))
        except Exception:
            log.exception("spool: store failed on %s; will retry", rel)
            self.stats["errors"] += 1
            self._schedule_retry(rel)
            return False
        self.stats["ingested"] += 1
        ok = await self._unlink(rel)
        await self._notify(IngestedFile(sp.space, sp.session, rel, sha, len(records), result))
        # Committed either way: the ledger stops a re-ingest if the delete failed.
        return ok

    def _parse(self, data: bytes, suffix: str) -> list[Record]:
        return parse_spool_bytes(
            data, suffix, max_line_bytes=self.max_line_bytes, max_file_bytes=self.max_file_bytes
        )

    async def _unlink(self, rel: str) -> bool:
        try:
            await trio.to_thread.run_sync(os.unlink, self.spool_dir / rel)
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("spool: could not delete %s", rel)
            self._schedule_retry(rel)
            return False
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
