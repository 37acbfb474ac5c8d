"""Tells the kernel to drop cached entries and inodes, from a thread of its own, and
works out which ones from the store's change events (`Invalidations`): the store knows
nothing of inodes or the kernel; the mount's inode table (`skillfs.inodes`) says which
numbers the kernel may hold.

`invalidate_entry` waits for FUSE requests on the same directory to finish, so calling it
from the trio thread (which serves those requests) could deadlock; a dedicated thread keeps
the loop free. Items are handled in order; a caller that must know the kernel has forgotten
(the API, the spool, the learner) waits for its batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Awaitable

from . import noflush  # noqa: F401  (before pyfuse3)

import pyfuse3  # noqa: E402
import trio

from .store.events import (
    FileAdded,
    FileChanged,
    FileDropped,
    FileMoved,
    FileMovedOver,
    FileRemoved,
    FolderAdded,
    FolderMoved,
    FolderRemoved,
    SessionEvent,
    SkillAdded,
    SkillRemoved,
    SpaceAdded,
    SpaceRemoved,
    SpaceRenamed,
    StoreEvent,
    TreeEvent,
)
from .inodes import ROOT_INO, Inodes
from .store.tree import FileNode

log = logging.getLogger(__name__)


class KernelInvalidator:
    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="skillfs-invalidate",
                                        daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self.enabled = True

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()

    def stop(self) -> None:
        self.enabled = False
        self._queue.put(None)

    async def invalidate(self, items: list[tuple], wait: bool) -> None:
        if not self.enabled or not items:
            return
        if not wait:
            self._queue.put((items, None))
            return
        done = trio.Event()
        self._queue.put((items, done))
        await done.wait()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            items, done = job
            for item in items:
                if not self.enabled:
                    break
                self._one(item)
            if done is not None:
                try:
                    trio.from_thread.run_sync(done.set, trio_token=self._token)
                except trio.RunFinishedError:
                    return

    @staticmethod
    def _one(item: tuple) -> None:
        kind, ino, arg = item
        try:
            if kind == "inode":
                pyfuse3.invalidate_inode(ino, attr_only=arg)
            else:
                pyfuse3.invalidate_entry(ino, arg.encode("utf-8", "surrogateescape"))
        except (FileNotFoundError, OSError) as e:
            # The kernel never saw this inode or name: nothing to forget.
            if getattr(e, "errno", None) not in (2, None):
                log.debug("invalidate %s: %s", item, e)


class Invalidations:
    """The mount's subscriber to the store: has the inode table follow each change, and
    turns it into the entries and inodes the kernel must forget. A change the kernel itself
    made (author "fuse") is queued and not waited for; any other is waited for, so its
    caller returns only once readers see it; so is a dropped reservation, which its
    creator's close() must not outlive.

    Called on the trio thread right after the store updated its tree, before any other
    task runs (the store publishes with no checkpoint in between), so no request sees a
    number out of step with the tree."""

    def __init__(self, inodes: Inodes) -> None:
        self.inodes = inodes
        self.tree = inodes.tree
        self.kernel: KernelInvalidator | None = None

    def on_event(self, event: StoreEvent) -> Awaitable[None] | None:
        if isinstance(event, SessionEvent):
            return None
        self.inodes.follow(event)
        if self.kernel is None:
            return None
        items = self._items(event)
        if not items:
            return None
        wait = isinstance(event, FileDropped) or event.author != "fuse"
        return self.kernel.invalidate(items, wait)

    async def forget_pages(self, node: FileNode, wait: bool) -> None:
        """For the mount's own needs: an open file's pages and attributes."""
        ino = self.inodes.known_file_ino(node)
        if self.kernel is not None and ino is not None:
            await self.kernel.invalidate([("inode", ino, False)], wait)

    def _items(self, event: TreeEvent) -> list[tuple]:
        match event:
            case SpaceAdded():
                return [("inode", ROOT_INO, True)]
            case SpaceRemoved(name=name) | SpaceRenamed(old_name=name):
                return [("entry", ROOT_INO, name), ("inode", ROOT_INO, True)]
            case SkillAdded() | SkillRemoved():
                ino = self.inodes.known_space_ino(event.space_id)
                if ino is None:
                    return []
                entry = [("entry", ino, event.name)] if isinstance(event, SkillRemoved) else []
                return entry + [("inode", ino, True)]
            case FileChanged(file_id=file_id):
                return self._file(file_id)
            case FileAdded() | FolderAdded():
                return self._folder(event.skill_id, event.path, with_entry=False)
            case FileRemoved() | FileDropped() | FolderRemoved():
                return self._folder(event.skill_id, event.path, with_entry=True)
            case FileMoved() | FolderMoved():
                return (self._folder(event.skill_id, event.old_path, with_entry=True)
                        + self._folder(event.skill_id, event.new_path, with_entry=True))
            case FileMovedOver():
                return (self._folder(event.skill_id, event.old_path, with_entry=True)
                        + self._folder(event.skill_id, event.new_path, with_entry=True)
                        + self._file(event.survivor_id))
        return []

    def _file(self, file_id: int) -> list[tuple]:
        """A file's attributes and pages."""
        node = self.tree.file_ids.get(file_id)
        ino = self.inodes.known_file_ino(node) if node is not None else None
        return [("inode", ino, False)] if ino is not None else []

    def _folder(self, skill_id: str, path: str, *, with_entry: bool) -> list[tuple]:
        """The folder holding `path`, in every space that shows it (and `path`'s entry)."""
        skill = self.tree.skills.get(skill_id)
        if skill is None:
            return []
        parent, _, name = path.rpartition("/")
        items: list[tuple] = []
        for ino in self.inodes.known_dir_inos(skill, parent):
            if with_entry:
                items.append(("entry", ino, name))
            items.append(("inode", ino, True))
        return items
