"""`Store`, the composition root: it opens the database, loads the index and builds the
services, each given what it needs. Callers reach an operation through the service that
owns it (`store.files.write_file`, `store.spaces.create_space`)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import is_postgres_url
from ..errors import SkillfsError
from .tree import Tree
from .content import ContentCache
from .context import Context
from .backend import Backend
from .database import Database
from .files import Files
from .learning import Learning
from .loading import load_tree
from .purging import Purge
from .events import Subscriber
from .rows import DEFAULT_MAX_FILE_SIZE
from .sessions import Sessions
from .spaces import Spaces
from .trash import Trash

if TYPE_CHECKING:  # imported for PostgreSQL only: it imports psycopg
    from .feed import Feed


class Store:
    """One database (a DuckDB file, or a `postgresql://` URL): spaces, skills, versioned
    files, sessions, messages, learning. The DuckDB settings are ignored on PostgreSQL,
    where other daemons may share the database: `feed` (run by the daemon) then keeps the
    tree current with their changes. `host` names this host's spool in the ledger (default:
    the machine's hostname)."""

    def __init__(self, db_path: str, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
                 cache_bytes: int = 32 << 20, duckdb_memory: str | None = "32MB",
                 checkpoint_memory: str | None = "1GB", temp_dir: Path | None = None,
                 duckdb_threads: int | None = None, host: str | None = None) -> None:
        self.db_path = str(db_path)
        self.max_file_size = max_file_size
        self.host = host or socket.gethostname()
        # this daemon, as the change feed names who wrote a change
        self.writer = f"{self.host}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.db: Backend
        self.feed: Feed | None = None
        if is_postgres_url(self.db_path):
            # psycopg takes ~0.15 s to import: only a daemon on PostgreSQL pays it
            from .postgres import PgDatabase

            url = self.db_path
            self.db = PgDatabase(url, writer=self.writer)
            self.db_path = self.db.where  # what status shows: never a password
        else:
            self.db = Database(self.db_path, memory_limit=duckdb_memory,
                               checkpoint_memory=checkpoint_memory, temp_dir=temp_dir,
                               threads=duckdb_threads)
        self.tree = Tree()
        self.cache = ContentCache(cache_bytes)
        self.ctx = ctx = Context(self.db, self.tree, self.cache, max_file_size)
        if self.db.shared:
            from .feed import Feed

            self.feed = Feed(ctx, url, self.writer)
            self.feed.start_at(self.db.con)
            ctx.behind = self.feed.poke
        ctx.next_file_id = load_tree(self.db.con, self.tree)
        self.files = Files(ctx)
        self.spaces = Spaces(ctx)
        self.trash = Trash(ctx, self.spaces, self.files)
        self.sessions = Sessions(ctx, self.spaces, self.host)
        self.purge = Purge(ctx, self.files, self.sessions)
        self.learning = Learning(ctx)
        self._delegate()

    def _delegate(self) -> None:
        """The services' methods as the store's own, for the callers not yet moved to the
        services (the API, the learner, tests; the mount, the spool and the CLI call the
        services). `space` and `skill` hand out the index's live objects, for the mount;
        the others hand out frozen rows."""
        ctx, spaces, trash, files = self.ctx, self.spaces, self.trash, self.files
        sessions, purge, learning = self.sessions, self.purge, self.learning
        self.space, self.skill = ctx.space, ctx.skill
        self.create_space, self.update_space = spaces.create_space, spaces.update_space
        self.delete_space, self.create_skill = spaces.delete_space, spaces.create_skill
        self.include_skill, self.exclude_skill = spaces.include_skill, spaces.exclude_skill
        self.remove_skill, self.delete_skill = spaces.remove_skill, spaces.delete_skill
        self.list_space_skills = spaces.list_space_skills
        self.get_space, self.find_space = spaces.get_space, spaces.find_space
        self.list_spaces, self.get_skill = spaces.list_spaces, spaces.get_skill
        self.find_skill, self.list_skills = spaces.find_skill, spaces.list_skills
        self.skill_ids = spaces.skill_ids
        self.has_space_named = spaces.has_space_named
        self.list_trash, self.restore = trash.list_trash, trash.restore
        self.restore_skill, self.restore_space = trash.restore_skill, trash.restore_space
        self.read_file, self.content, self.preload = files.read_file, files.content, files.preload
        self.write_file, self.reserve_file = files.write_file, files.reserve_file
        self.drop_reserved, self.delete_file = files.drop_reserved, files.delete_file
        self.move_file, self.make_dir = files.move_file, files.make_dir
        self.remove_dir, self.move_dir = files.remove_dir, files.move_dir
        self.file_log, self.read_version = files.file_log, files.read_version
        self.revert_file, self.import_tree = files.revert_file, files.import_tree
        self.purge_file, self.purge_session = purge.purge_file, purge.purge_session
        self.create_session, self.get_session = sessions.create_session, sessions.get_session
        self.list_sessions = sessions.list_sessions
        self.update_session_configs = sessions.update_session_configs
        self.delete_session, self.attach_session = (sessions.delete_session,
                                                    sessions.attach_session)
        self.add_messages, self.mark_session = sessions.add_messages, sessions.mark_session
        self.get_messages, self.last_seq = sessions.get_messages, sessions.last_seq
        self.message_counts = sessions.message_counts
        self.patch_message_meta = sessions.patch_message_meta
        self.ingest_spool_files = sessions.ingest_spool_files
        self.list_tasks, self.save_task = learning.list_tasks, learning.save_task
        self.get_learning, self.list_learning = learning.get_learning, learning.list_learning
        self.set_learning, self.save_lessons = learning.set_learning, learning.save_lessons
        self.mark_lessons, self.list_lessons = learning.mark_lessons, learning.list_lessons
        self.unwritten_lessons = learning.unwritten_lessons

    def subscribe(self, callback: Subscriber) -> None:
        """Hear of every change after its commit (see events.py)."""
        self.ctx.subscribers.append(callback)

    def close(self) -> None:
        self.db.close()

    # -- status ------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Rows per table; only what the tree knows while the database is unusable."""
        def q():
            out = {}
            for table in ("sessions", "messages", "tasks", "file_versions", "spool_ledger"):
                out[table] = self.db.con.execute(
                    f"SELECT count(*) FROM {table}").fetchall()[0][0]
            return out
        try:
            out = await self.db.run(q)
        except SkillfsError:
            out = {}
        out["spaces"] = len(self.tree.spaces)
        out["skills"] = len(self.tree.skills)
        out["files"] = len(self.tree.file_ids)
        return out

    async def size_bytes(self) -> int | None:
        """How much disk the database takes: the DuckDB file and its log, or the PostgreSQL
        database's size on its server; None while the server cannot be asked (status must
        answer then too)."""
        if isinstance(self.db, Database):
            return self.db.size_bytes()  # two stat calls: no need of the connection
        try:
            return await self.db.run(self.db.size_bytes)
        except SkillfsError:
            return None

    def health(self) -> dict[str, Any]:
        status = self.db.status()
        if self.feed is not None:
            status["feed"] = {"writer": self.writer, "last": self.feed.last, **self.feed.stats}
        return status

    async def checkpoint(self) -> None:
        await self.db.run(self.db.checkpoint)
