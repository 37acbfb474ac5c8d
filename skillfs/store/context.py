"""What the store's services share, handed to each in its constructor.

The services (spaces, trash, files, purge, sessions, learning) each own one kind of data,
but they change one database and one in-memory index under one lock: a change is validated
against the index, committed, and only then applied to the index, so the two never
disagree. This module holds those shared parts and nothing else; a service that needs
another's work takes that service in its constructor and calls its public methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ..errors import NotFound, TooBig, WriteConflict
from .tree import Skill, Space, Tree
from .content import ContentCache
from .backend import Backend
from .events import StoreEvent, Subscriber

log = logging.getLogger("skillfs.store")


class Context:
    """The database, the in-memory index (tree and content cache), the write lock, the
    size limit, the file id counter and the store's subscribers."""

    def __init__(self, db: Backend, tree: Tree, cache: ContentCache,
                 max_file_size: int) -> None:
        self.db = db
        self.tree = tree
        self.cache = cache
        self.max_file_size = max_file_size
        self.lock = trio.Lock()
        self.subscribers: list[Subscriber] = []
        self.next_file_id = 1
        self._file_ids: range | None = None  # a block of ids taken from a shared database
        # wakes the change feed (store/feed.py) when a write finds another daemon was first
        self.behind: Callable[[], None] | None = None

    # -- the index ---------------------------------------------------------------------

    def space(self, id_or_name: str) -> Space:
        space = self.tree.spaces.get(id_or_name) or self.tree.space_names.get(id_or_name)
        if space is None:
            raise NotFound(f"no learning space {id_or_name!r}")
        return space

    def skill(self, skill_id: str) -> Skill:
        skill = self.tree.skills.get(skill_id)
        if skill is None:
            raise NotFound(f"no skill {skill_id!r}")
        return skill

    def alloc_file_id(self) -> int:
        if not self._file_ids:
            self._file_ids = self.db.file_id_block()
        if self._file_ids is not None:
            fid, self._file_ids = self._file_ids[0], self._file_ids[1:]
            return fid
        fid = self.next_file_id
        self.next_file_id += 1
        return fid

    def check_size(self, content: bytes) -> None:
        if len(content) > self.max_file_size:
            raise TooBig(f"file is {len(content)} bytes; the limit is {self.max_file_size}")

    # -- the database ------------------------------------------------------------------

    async def read(self, fn: Callable, *args) -> Any:
        return await self.db.run(fn, *args)

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn` in a transaction (the database's group commit may share it with other
        writers'); returns once it is committed."""
        try:
            return await self.db.write(fn)
        except WriteConflict:
            if self.behind is not None:
                self.behind()
            raise

    # -- listeners ---------------------------------------------------------------------

    async def publish(self, *events: StoreEvent) -> None:
        """Tell every subscriber, after the commit and the index update; wait for what a
        subscriber hands back (the mount's invalidations), so the caller is answered only
        once readers see the change."""
        waits = []
        for event in events:
            for cb in self.subscribers:
                try:
                    pending = cb(event)
                except Exception:
                    log.exception("store subscriber failed on %s", event)
                    continue
                if pending is not None:
                    waits.append(pending)
        for pending in waits:
            await pending


class Service:
    """A part of the store: what every service reaches through its context, by short
    names."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tree = ctx.tree
        self.cache = ctx.cache
        self._lock = ctx.lock

    @property
    def con(self) -> Any:
        """Executes SQL with `?` placeholders, on DuckDB or PostgreSQL (store/backend.py)."""
        return self.ctx.db.con

    async def _db(self, fn: Callable, *args) -> Any:
        return await self.ctx.read(fn, *args)

    async def _write(self, fn: Callable[[Any], Any]) -> Any:
        return await self.ctx.write(fn)

