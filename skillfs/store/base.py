"""The store's core: the DuckDB connection, its worker thread, loading the tree, telling
the kernel and subscribers what changed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import trio

from ..errors import SkillfsError
from ..tree import ContentCache, FileNode, Skill, Space, Tree
from .database import Database
from .rows import DEFAULT_MAX_FILE_SIZE, Kernel, SessionRow, StoreEvent, _unjson

log = logging.getLogger("skillfs.store")


class StoreBase:
    def __init__(self, db_path: str, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
                 cache_bytes: int = 32 << 20, duckdb_memory: str | None = "32MB",
                 checkpoint_memory: str | None = "1GB", temp_dir: Path | None = None,
                 duckdb_threads: int | None = None) -> None:
        self.db_path = str(db_path)
        self.max_file_size = max_file_size
        self.tree = Tree()
        self.cache = ContentCache(cache_bytes)
        self.kernel: Kernel | None = None
        self._subscribers: list[Callable[[StoreEvent], None]] = []
        self._lock = trio.Lock()
        self.db = Database(self.db_path, memory_limit=duckdb_memory,
                           checkpoint_memory=checkpoint_memory, temp_dir=temp_dir,
                           threads=duckdb_threads)
        self._next_file_id = 1
        self._session_seq: dict[str, int] = {}
        self._load()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.db.con

    def close(self) -> None:
        self.db.close()

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> None:
        self._subscribers.append(callback)

    def _emit(self, event: StoreEvent) -> None:
        for cb in self._subscribers:
            try:
                cb(event)
            except Exception:
                log.exception("store subscriber failed on %s", event)
    # -- plumbing ----------------------------------------------------------------------

    async def _db(self, fn: Callable, *args):
        return await self.db.run(fn, *args)

    def _tx(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        return self.db.tx(fn)

    async def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        result = await self._db(self._tx, fn)
        self.db.recovered()
        return result

    async def _tell_kernel(self, items: list[tuple], author: str) -> None:
        # Changes that came through the kernel are already known to it; the rest must be
        # visible to readers once the call that made them returns.
        if items and self.kernel is not None:
            await self.kernel.invalidate(items, wait=author != "fuse")

    def _dir_items(self, skill: Skill, path: str, name: str | None = None) -> list[tuple]:
        items: list[tuple] = []
        for _space, ino in self.tree.known_dir_inos(skill, path):
            if name is not None:
                items.append(("entry", ino, name))
            items.append(("inode", ino, True))
        return items

    # -- loading -----------------------------------------------------------------------

    def _load(self) -> None:
        con, tree = self.con, self.tree
        for sid, name, user, meta, c, u in con.execute(
                'SELECT id, name, "user", meta, created_ns, updated_ns FROM spaces').fetchall():
            tree.add_space(Space(sid, name, user, _unjson(meta, {}), c, u))
        for kid, name, desc, meta, c, u, user in con.execute(
                'SELECT id, name, description, meta, created_ns, updated_ns, "user" FROM skills'
        ).fetchall():
            tree.add_skill(Skill(kid, name, desc, _unjson(meta, {}), c, u, user=user))
        for space_id, skill_id, c in con.execute(
                "SELECT space_id, skill_id, created_ns FROM space_skills ORDER BY created_ns"
        ).fetchall():
            tree.link_skill(tree.spaces[space_id], tree.skills[skill_id], c)
        for skill_id, path, c in con.execute(
                "SELECT skill_id, path, created_ns FROM skill_dirs").fetchall():
            tree.skills[skill_id].add_dir(path, c)
        cur = con.execute(
            "SELECT f.id, f.skill_id, f.path, f.version, v.size, v.sha256, v.at_ns, "
            "f.created_ns FROM files f JOIN file_versions v "
            "ON v.file_id = f.id AND v.version = f.version WHERE NOT f.deleted")
        skills = tree.skills
        # In chunks: all rows at once would double the memory the tree needs, for a moment.
        while rows := cur.fetchmany(8192):
            for fid, skill_id, path, version, size, digest, at, created in rows:
                # the skill's own id string, not a copy per file (~9 MB at 100,000 files)
                tree.add_file(FileNode(fid, skills[skill_id].id, path, version, size, digest,
                                       at, created))
        self._next_file_id = (con.execute("SELECT max(id) FROM files").fetchall()[0][0] or 0) + 1
        self._session_seq = dict(con.execute(
            "SELECT session_id, max(seq) FROM messages GROUP BY session_id").fetchall())
        for space in tree.spaces.values():
            for skill in space.skills.values():
                space.updated_ns = max(space.updated_ns, skill.updated_ns)

    # -- status ------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Rows per table; only what the tree knows while the database is unusable."""
        def q():
            out = {}
            for table in ("sessions", "messages", "tasks", "file_versions", "spool_ledger"):
                out[table] = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            return out
        try:
            out = await self._db(q)
        except SkillfsError:
            out = {}
        out["spaces"] = len(self.tree.spaces)
        out["skills"] = len(self.tree.skills)
        out["files"] = len(self.tree.file_ids)
        return out

    def health(self) -> dict[str, Any]:
        return self.db.status()

    async def checkpoint(self) -> None:
        await self._db(self.db.checkpoint)


class StoreMixin(StoreBase):
    """What each mixin of the Store sees of the whole: the base, and the methods it calls
    that another mixin defines. Those are declared for the type checker only (the Store's
    own mixins define them at runtime, and the checker holds the two signatures to each
    other); this class goes when the mixins become parts the Store is composed of."""

    if TYPE_CHECKING:
        # SpacesMixin
        def space(self, id_or_name: str) -> Space: ...
        def skill(self, skill_id: str) -> Skill: ...
        def _alloc_file_id(self) -> int: ...

        def _plan_space(self, name: str, user: str | None, meta: dict | None, author: str,
                        space_id: str | None = None
                        ) -> tuple[Space, list[tuple[Skill, FileNode, bytes]]]: ...

        def _apply_space(self, space: Space,
                         skills: list[tuple[Skill, FileNode, bytes]]) -> None: ...

        @staticmethod
        def _sql_space(con: duckdb.DuckDBPyConnection, space: Space,
                       skills: list[tuple[Skill, FileNode, bytes]], author: str) -> None: ...

        @staticmethod
        def _sql_new_file(con: duckdb.DuckDBPyConnection, node: FileNode, content: bytes,
                          author: str, reason: str, session_id: str | None = None,
                          task_id: str | None = None) -> None: ...

        @staticmethod
        def _sql_version(con: duckdb.DuckDBPyConnection, node: FileNode, content: bytes | None,
                         author: str, reason: str, session_id: str | None,
                         task_id: str | None, deleted: bool,
                         prev: bytes | None = None) -> None: ...

        # FilesMixin
        def _check_size(self, content: bytes) -> None: ...

        def _sql_delete_version(self, con: duckdb.DuckDBPyConnection, node: FileNode, t: int,
                                author: str, reason: str, session_id: str | None,
                                task_id: str | None) -> None: ...

        def _check_skill_md(self, skill: Skill, path: str, content: bytes) -> str | None: ...
        def _find_file_id(self, skill: Skill, path: str) -> int: ...
        def _read_versions(self, keys: list[tuple[int, int]]
                           ) -> dict[tuple[int, int], bytes]: ...
        async def content(self, node: FileNode) -> bytes: ...
        async def read_version(self, skill_id: str, path: str, version: int) -> bytes: ...

        async def _undelete(self, skill: Skill, fid: int, path: str, content: bytes,
                            version: int, author: str, reason: str | None = None
                            ) -> FileNode: ...

        # SpacesMixin (public)
        async def include_skill(self, space_id: str, skill_id: str,
                                author: str = "api") -> None: ...

        # SessionsMixin
        async def get_session(self, session_id: str) -> SessionRow: ...
