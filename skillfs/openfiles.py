"""Open files: one state per file, shared by every handle, as a local filesystem keeps it.

The first writer to open a file gets a working copy of its current version (loaded at its
first read or write); every later writer writes into that same copy, and every handle,
readers too, reads it while it holds uncommitted changes. Otherwise they read the committed
version. Nothing is private to a handle but its access mode, its O_APPEND flag and a sticky
error. An O_APPEND handle writes at the end of the working copy, whatever offset the kernel
sent (it sends the size it last heard of).

When a version is committed (history holds what writers meant to write, not every step):
- at each flush (each close() of a writer's descriptor) after bytes were written, so an
  error (an invalid SKILL.md, say) reaches the close() that wrote it;
- at fsync, whatever is pending;
- at the release of the last writer, whatever is still pending. A change made only by
  O_TRUNC, ftruncate or create waits until then: `cmd > file` (open O_TRUNC, dup2, close,
  write, close) makes one version, not an empty one and then the real one. Nobody waits
  for a release, so a refusal there (`: > SKILL.md`) is only logged.
A truncate(2) on a path with no writer open is a version of its own; with a writer open it
changes the working copy and is committed with it.

When a change is refused (a write past the size cap, a commit the store refuses or fails),
the working copy is dropped: the file is its last committed version again, and a file
created through the mount that never committed disappears. Every writer open on it then
gets the error at its next write, flush or fsync, as a failed writeback is reported.

The kernel's page cache is per inode, like this state. Writer handles are opened with
direct_io: their writes bypass the cache and the kernel drops the pages they cover, so
cached pages only ever come from READ replies, each cut from one state. (Pages a buffered
writer filled, joined with a page read after its next rewrite, gave readers content nobody
wrote.) The price: a writable shared mmap of a writer's handle is refused (ENODEV); a
private one, or any mapping of a read-only handle, works. Whenever content changes behind
the kernel's back (a refusal drops the working copy, an O_APPEND write lands past the
offset the kernel sent) the kernel is told to forget the inode's pages and attributes. So
read handles keep keep_cache=True, and warm reads of a file nobody writes stay in the
kernel.
"""

from __future__ import annotations

import errno
import logging
import os
import time

import trio

from .boundary import errno_for
from .errors import SkillfsError, TooBig
from .invalidate import Invalidations
from .store import Store
from .store.tree import FileNode

log = logging.getLogger("skillfs.fs")


class Refused(SkillfsError):
    """An earlier write or commit through this handle was refused; it keeps saying so."""

    def __init__(self, code: int):
        super().__init__(os.strerror(code))
        self.errno = code


class OpenFile:
    """The state of one file while any writer has it open."""

    __slots__ = ("base_version", "changes", "commit_lock", "data", "dirty", "loaded", "mtime_ns",
                 "node", "writers", "written")

    def __init__(self, node: FileNode):
        self.node = node
        self.data = bytearray()  # the working copy
        self.loaded = False  # `data` was loaded (or made) since the last drop
        self.base_version = 0  # the committed version `data` started from
        self.dirty = False  # `data` differs from what is committed
        self.written = False  # bytes were written since the last commit
        self.changes = 0  # counts changes, so a commit knows whether it caught them all
        self.mtime_ns = node.mtime_ns
        self.writers: set[Handle] = set()
        self.commit_lock = trio.Lock()  # commits of one file in order, each awaited

    def changed(self, written: bool) -> None:
        self.changes += 1
        self.dirty = True
        self.written = self.written or written
        self.mtime_ns = time.time_ns()

    def stale(self) -> bool:
        """Whether the working copy must be (re)loaded from the committed version."""
        return not self.loaded or (not self.dirty and self.base_version != self.node.version)

    def reset(self, data: bytes, version: int) -> None:
        self.data, self.base_version, self.loaded = bytearray(data), version, True

    def drop(self) -> None:
        self.data, self.loaded, self.dirty, self.written = bytearray(), False, False, False


class Handle:
    __slots__ = ("append", "error", "file", "node", "seen", "snapshot")

    def __init__(self, node: FileNode, file: OpenFile | None, append: bool = False):
        self.node = node
        self.file = file  # None for a read-only handle
        self.append = append
        self.error = 0
        # What a reader's read from offset 0 saw: the kernel splits one read(2) into several
        # READs, and each must come from the same content.
        self.snapshot: bytes | None = None
        self.seen: tuple = ()


class OpenFiles:
    def __init__(self, store: Store, kernel: Invalidations):
        self.store = store
        self.kernel = kernel
        self._handles: dict[int, Handle] = {}
        self._files: dict[int, OpenFile] = {}  # by file id, while a writer has it open
        self._next_fh = 1

    # -- handles -----------------------------------------------------------------------

    def _add(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def get(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise Refused(errno.EBADF)
        return handle

    def open_reader(self, node: FileNode) -> int:
        return self._add(Handle(node, None))

    def open_writer(self, node: FileNode, *, truncate: bool, append: bool,
                    created: bool = False) -> int:
        of = self._files.get(node.id)
        if of is None:
            of = self._files[node.id] = OpenFile(node)
        handle = Handle(node, of, append)
        of.writers.add(handle)
        if created:
            of.reset(b"", 0)
            of.changed(written=False)  # a new file is committed even if nothing is written
        elif truncate:
            self._truncate_working(of)
        return self._add(handle)

    def _truncate_working(self, of: OpenFile) -> None:
        if of.stale():
            # Nothing to keep: no need to load what is about to be dropped.
            of.reset(b"", of.node.version)
        if of.data or of.node.size or of.dirty:
            del of.data[:]
            of.changed(written=False)

    # -- what readers and getattr see --------------------------------------------------

    def pending(self, node: FileNode) -> OpenFile | None:
        """The working copy of `node` if it holds uncommitted changes."""
        of = self._files.get(node.id)
        return of if of is not None and of.dirty else None

    def size(self, node: FileNode) -> int:
        of = self.pending(node)
        return len(of.data) if of is not None else node.size

    def mtime_ns(self, node: FileNode) -> int:
        of = self.pending(node)
        return of.mtime_ns if of is not None else node.mtime_ns

    async def read(self, handle: Handle, off: int, size: int) -> bytes:
        if handle.file is None and off and handle.snapshot is not None:
            # The rest of a read that started at 0: the same content, even if it changed
            # meanwhile. Pages of the old content must not outlive this reply in the cache.
            if handle.seen != self._state(handle.node):
                await self._forget_pages(handle.node, wait=False)
            return handle.snapshot[off:off + size]
        data, state = await self._current(handle.node)
        if handle.file is None:
            handle.snapshot, handle.seen = data, state
        return data[off:off + size]

    def _state(self, node: FileNode) -> tuple:
        of = self.pending(node)
        return ("pending", id(of), of.changes) if of is not None else ("version", node.version)

    async def _current(self, node: FileNode) -> tuple[bytes, tuple]:
        while True:
            of = self.pending(node)
            if of is not None:
                return bytes(of.data), self._state(node)
            version = node.version
            data = self.store.cache.get((node.id, version))
            if data is None:
                data = await self.store.files.content(node)
            # A commit (ours or the store's) may have landed while we waited; answering
            # with what it replaced after its invalidation would leave that cached.
            if node.version == version and self.pending(node) is None:
                return data, ("version", version)

    # -- changes -----------------------------------------------------------------------

    async def _working(self, of: OpenFile) -> bytearray:
        while of.stale():
            version = of.node.version
            content = await self.store.files.content(of.node)
            if of.stale() and of.node.version == version:
                of.reset(content, version)
        return of.data

    async def write(self, handle: Handle, off: int, buf: bytes) -> int:
        of = handle.file
        if of is None:
            raise Refused(errno.EBADF)
        if handle.error:
            raise Refused(handle.error)
        data = await self._working(of)
        at = len(data) if handle.append else off
        end = at + len(buf)
        if end > self.store.max_file_size:
            # The kernel holds this write's pages locked until we answer: do not wait.
            await self._refuse(of, errno.EFBIG, wait=False)
            raise TooBig(f"a write up to {end} bytes; the limit is {self.store.max_file_size}")
        if at > len(data):
            data.extend(bytes(at - len(data)))
        data[at:end] = buf
        of.changed(written=True)
        if at != off:
            await self._forget_pages(of.node, wait=False)
        return len(buf)

    async def truncate(self, node: FileNode, size: int, fh: int | None) -> None:
        """truncate(2) on a path (fh None) or ftruncate(2) on a handle."""
        if size > self.store.max_file_size:
            raise TooBig(f"{size} bytes; the limit is {self.store.max_file_size}")
        handle = self._handles.get(fh) if fh else None
        of = handle.file if handle is not None else None
        if handle is not None and of is not None and handle.error:
            raise Refused(handle.error)
        of = of or self._files.get(node.id)
        if of is None:
            # truncate(2) on a path nobody is writing: a version of its own
            content = await self.store.files.content(node)
            content = content[:size] + bytes(max(0, size - len(content)))
            await self.store.files.write_file(node.skill_id, node.path, content,
                                              author="fuse", reason="truncate")
            return
        data = await self._working(of)
        if size < len(data):
            del data[size:]
        else:
            data.extend(bytes(size - len(data)))
        of.changed(written=False)

    async def flush(self, handle: Handle, *, sync: bool) -> None:
        """A writer's close() (sync=False) or fsync (sync=True)."""
        of = handle.file
        if of is None:
            return
        if handle.error:
            await self.store.files.drop_reserved(handle.node)  # only if never committed
            raise Refused(handle.error)
        if of.written or (sync and of.dirty):
            await self._commit(of)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        of = handle.file if handle is not None else None
        if of is None:
            return
        of.writers.discard(handle)
        if of.writers:
            return
        try:
            await self._commit(of)
        except Exception as e:
            # Nobody waits for a release's answer: the log is the only place to say it.
            if errno_for(e) is None:
                log.exception("commit of %s at release failed", of.node.path)
            else:
                log.info("write to %s refused at release: %s", of.node.path, e)
        finally:
            if not of.writers and self._files.get(of.node.id) is of:  # nobody opened since
                del self._files[of.node.id]
                of.drop()
        if not of.writers:
            await self.store.files.drop_reserved(of.node)  # only if never committed

    async def _commit(self, of: OpenFile) -> None:
        async with of.commit_lock:
            node = of.node
            if not of.dirty or node.deleted:
                return
            # Still pending while the store works: readers and getattr keep seeing it.
            content, changes = bytes(of.data), of.changes
            try:
                await self.store.files.write_file(node.skill_id, node.path, content,
                                                  author="fuse", reason="write")
            except Exception as e:
                await self._refuse(of, errno_for(e) or errno.EIO, wait=True)
                await self.store.files.drop_reserved(node)  # only if never committed
                raise
            of.base_version = node.version
            if of.changes == changes:
                of.dirty = of.written = False

    async def _refuse(self, of: OpenFile, code: int, *, wait: bool) -> None:
        """Drop the working copy: the file is its committed version again."""
        for handle in of.writers:
            handle.error = code
        of.drop()
        await self._forget_pages(of.node, wait=wait)

    async def _forget_pages(self, node: FileNode, *, wait: bool) -> None:
        await self.kernel.forget_pages(node, wait=wait)
