"""Tells the kernel to drop cached entries and inodes, from a thread of its own, and
works out which ones from the store's change events (`Invalidations`): the store knows
nothing of inodes or the kernel.

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
from .tree import ROOT_INO, Tree

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
    """The mount's subscriber to the store: keeps folder inode numbers in step with folders
    moved and removed, and turns each change into the entries and inodes the kernel must
    forget. A change the kernel itself made (author "fuse") is queued and not waited for;
    any other is waited for, so its caller returns only once readers see it; so is a
    dropped reservation, which its creator's close() must not outlive.

    Called on the trio thread right after the store updated its index, before any other
    task runs (the store publishes with no checkpoint in between), so no request sees a
    folder whose number is not yet re-keyed."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.kernel: KernelInvalidator | None = None

    def on_event(self, event: StoreEvent) -> Awaitable[None] | None:
        if isinstance(event, SessionEvent):
            return None
        self._renumber(event)
        if self.kernel is None:
            return None
        items = self._items(event)
        if not items:
            return None
        wait = isinstance(event, FileDropped) or event.author != "fuse"
        return self.kernel.invalidate(items, wait)

    async def invalidate(self, items: list[tuple], wait: bool) -> None:
        """For the mount's own needs (an open file's pages)."""
        if self.kernel is not None:
            await self.kernel.invalidate(items, wait)

    def _renumber(self, event: TreeEvent) -> None:
        """A removed folder's path gets a new number if made again; a moved folder keeps
        its numbers at the new path (over an empty folder there, whose number goes)."""
        if not isinstance(event, FolderRemoved | FolderMoved):
            return
        skill = self.tree.skills.get(event.skill_id)
        if skill is None:
            return
        gone = event.path if isinstance(event, FolderRemoved) else event.new_path
        for space_id in skill.spaces:
            self.tree.forget_dir(space_id, skill.id, gone)
        if isinstance(event, FolderMoved):
            self.tree.rename_dirs(skill, event.old_path, event.new_path)

    def _items(self, event: TreeEvent) -> list[tuple]:
        match event:
            case SpaceAdded():
                return [("inode", ROOT_INO, True)]
            case SpaceRemoved(name=name) | SpaceRenamed(old_name=name):
                return [("entry", ROOT_INO, name), ("inode", ROOT_INO, True)]
            case SkillAdded() | SkillRemoved():
                space = self.tree.spaces.get(event.space_id)
                if space is None or not space.ino:
                    return []
                entry = [("entry", space.ino, event.name)] if isinstance(event,
                                                                         SkillRemoved) else []
                return entry + [("inode", space.ino, True)]
            case FileChanged(file_id=file_id):
                node = self.tree.file_ids.get(file_id)
                return [("inode", node.ino, False)] if node is not None and node.ino else []
            case FileAdded() | FolderAdded():
                return self._folder(event.skill_id, event.path, with_entry=False)
            case FileRemoved() | FileDropped() | FolderRemoved():
                return self._folder(event.skill_id, event.path, with_entry=True)
            case FileMoved() | FolderMoved():
                return (self._folder(event.skill_id, event.old_path, with_entry=True)
                        + self._folder(event.skill_id, event.new_path, with_entry=True))
        return []

    def _folder(self, skill_id: str, path: str, *, with_entry: bool) -> list[tuple]:
        """The folder holding `path`, in every space that shows it (and `path`'s entry)."""
        skill = self.tree.skills.get(skill_id)
        if skill is None:
            return []
        parent, _, name = path.rpartition("/")
        items: list[tuple] = []
        for _space, ino in self.tree.known_dir_inos(skill, parent):
            if with_entry:
                items.append(("entry", ino, name))
            items.append(("inode", ino, True))
        return items
