"""The store: the only code that touches DuckDB.

Every change is one transaction on one worker thread (DuckDB connections are not
thread-safe, and one writer is all a single file needs). After a commit the store updates the
in-memory tree on the trio thread, tells the kernel what it must forget (when the change did
not come through the kernel itself) and tells subscribers (the learner) what happened.

Mutations hold `self._lock` from validation to tree update, so the tree and the database
never disagree; the kernel is told only after the lock is released, because telling it can
wait for FUSE requests that may themselves be waiting for the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
import trio

from . import names, skillmd
from .errors import (Conflict, Exists, Forbidden, Invalid, NotEmpty, NotFound, SkillfsError,
                     StaleVersion, TooBig)
from .messages import Control
from .schema import migrate
from .tree import ContentCache, FileNode, Skill, Space, Tree

log = logging.getLogger(__name__)

AUTHORS = ("fuse", "api", "spool", "learner", "cli")
DEFAULT_MAX_FILE_SIZE = 1 << 20
SKILL_MD = "SKILL.md"


def now_ns() -> int:
    return time.time_ns()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _unjson(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


class Kernel(Protocol):
    """What the store needs from the mount: a way to make the kernel drop cached state."""

    async def invalidate(self, items: list[tuple], wait: bool) -> None: ...


@dataclass
class StoreEvent:
    kind: str  # "messages" | "end" | "flush" | "attached" | "session_deleted"
    session_id: str
    space_id: str | None = None
    count: int = 0


@dataclass
class FileContent:
    content: bytes
    version: int
    sha256: str
    path: str


@dataclass
class VersionRow:
    version: int
    path: str
    sha256: str
    size: int
    author: str
    reason: str | None
    session_id: str | None
    task_id: str | None
    at_ns: int
    deleted: bool


@dataclass
class SessionRow:
    id: str
    name: str | None
    user: str | None
    space_id: str | None
    configs: dict
    ended: bool
    created_ns: int
    updated_ns: int


@dataclass
class StoredMessage:
    session_id: str
    seq: int
    role: str
    format: str
    body: dict
    original: Any
    task_id: str | None
    created_ns: int
    meta: dict = field(default_factory=dict)

    def to_message(self):
        from .messages import Message
        return Message.model_validate({**self.body, "original": self.original})


@dataclass
class TaskRow:
    id: str
    session_id: str
    ord: int
    description: str
    status: str
    progress: list = field(default_factory=list)
    preferences: list = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    learned: bool = False
    created_ns: int = 0
    updated_ns: int = 0


@dataclass
class LearningRow:
    session_id: str
    space_id: str
    status: str
    error: str | None
    learned_seq: int
    created_ns: int
    updated_ns: int


LESSON_STATUSES = ("queued", "written", "failed")


@dataclass
class LessonRow:
    """A distilled lesson kept until its space's skill writer has written it. `task_id` is
    None for facts stated outside any task; `payload` is the lesson itself (the learner's)."""

    id: str
    session_id: str
    space_id: str
    task_id: str | None
    payload: dict
    status: str = "queued"  # queued | written | failed
    error: str | None = None
    ord: int = 0
    created_ns: int = 0
    updated_ns: int = 0


@dataclass
class IngestResult:
    space_id: str
    session_id: str
    messages: int
    events: list[str]


_TASK_COLS = ("id, session_id, ord, description, status, progress, preferences, first_seq, "
              "last_seq, learned, created_ns, updated_ns")
_LEARNING_COLS = "session_id, space_id, status, error, learned_seq, created_ns, updated_ns"
_LESSON_COLS = ("id, session_id, space_id, task_id, ord, payload, status, error, created_ns, "
                "updated_ns")
_SESSION_COLS = 'id, name, "user", space_id, configs, ended, created_ns, updated_ns'
# session_id, seq, role, format, body, original, task_id, source, created_ns, meta


def _task(row) -> TaskRow:
    return TaskRow(row[0], row[1], row[2], row[3], row[4], _unjson(row[5], []),
                   _unjson(row[6], []), row[7], row[8], row[9], row[10], row[11])


def _lesson(row) -> LessonRow:
    return LessonRow(row[0], row[1], row[2], row[3], json.loads(row[5]), row[6], row[7],
                     row[4], row[8], row[9])


def _session(row) -> SessionRow:
    return SessionRow(row[0], row[1], row[2], row[3], _unjson(row[4], {}), row[5], row[6],
                      row[7])


_column_types: dict[str, list[str]] = {}


def _insert_many(con: duckdb.DuckDBPyConnection, table: str, ncols: int,
                 rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows as one list per column: DuckDB converts each list in one call, about ten
    times faster than binding every value of a multi-row VALUES."""
    if not rows:
        return
    types = _column_types.get(table)
    if types is None:
        types = _column_types[table] = [t for (t,) in con.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall()]
    if len(types) != ncols:
        raise RuntimeError(f"{table} has {len(types)} columns, not {ncols}")
    columns = [list(c) for c in zip(*rows)]
    select = ", ".join(f"unnest(?::{t}[])" for t in types)
    con.execute(f"INSERT INTO {table} SELECT * FROM (SELECT {select})", columns)


@dataclass
class _MessageBatch:
    """Messages to insert, a list per column. DuckDB builds each stored body (the normalised
    message as JSON) itself: encoding it in Python was the largest cost per message."""

    session_id: str
    source: str | None
    t: int
    seqs: list[int]
    roles: list[str]
    formats: list[str]
    texts: list[str]
    tool_calls: list[str]
    tool_call_ids: list[str | None]
    names: list[str | None]
    originals: list[str]
    metas: list[str | None]

    _SQL = (
        "INSERT INTO messages (session_id, seq, role, format, body, original, task_id, "
        "source, created_ns, meta) "
        "SELECT ?, s, r, f, json_object('role', r, 'text', x, 'tool_calls', json(c), "
        "'tool_call_id', i, 'name', n, 'format', f)::VARCHAR, o, NULL, ?, ?, m FROM ("
        "SELECT unnest(?::BIGINT[]) s, unnest(?::VARCHAR[]) r, unnest(?::VARCHAR[]) f, "
        "unnest(?::VARCHAR[]) x, unnest(?::VARCHAR[]) c, unnest(?::VARCHAR[]) i, "
        "unnest(?::VARCHAR[]) n, unnest(?::VARCHAR[]) o, unnest(?::VARCHAR[]) m)")

    def insert(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.seqs:
            con.execute(self._SQL, [self.session_id, self.source, self.t, self.seqs,
                                    self.roles, self.formats, self.texts, self.tool_calls,
                                    self.tool_call_ids, self.names, self.originals,
                                    self.metas])


class Store:
    def __init__(self, db_path: str, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
                 cache_bytes: int = 32 << 20, duckdb_memory: str | None = "64MB") -> None:
        self.db_path = str(db_path)
        self.max_file_size = max_file_size
        self.tree = Tree()
        self.cache = ContentCache(cache_bytes)
        self.kernel: Kernel | None = None
        self._subscribers: list[Callable[[StoreEvent], None]] = []
        self._limiter = trio.CapacityLimiter(1)
        self._lock = trio.Lock()
        try:
            # DuckDB's default buffer pool is most of the machine's memory; reads are served
            # from the tree and the content cache, so it needs little.
            config = {"memory_limit": duckdb_memory} if duckdb_memory else {}
            self.con = duckdb.connect(self.db_path, config=config)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise SkillfsError(
                    f"{self.db_path} is in use by another process (is a skillfs daemon already "
                    "running on it?)") from None
            raise
        migrate(self.con)
        self._next_file_id = 1
        self._session_seq: dict[str, int] = {}
        self._load()

    def close(self) -> None:
        self.con.close()

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
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _tx(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            result = fn(con)
            con.execute("COMMIT")
            return result
        except BaseException:
            con.execute("ROLLBACK")
            raise

    async def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]):
        return await self._db(self._tx, fn)

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
        rows = con.execute(
            "SELECT f.id, f.skill_id, f.path, f.version, v.size, v.sha256, v.at_ns, "
            "f.created_ns FROM files f JOIN file_versions v "
            "ON v.file_id = f.id AND v.version = f.version WHERE NOT f.deleted").fetchall()
        for fid, skill_id, path, version, size, digest, at, created in rows:
            tree.add_file(FileNode(fid, skill_id, path, version, size, digest, at, created))
        self._next_file_id = (con.execute("SELECT max(id) FROM files").fetchone()[0] or 0) + 1
        self._session_seq = dict(con.execute(
            "SELECT session_id, max(seq) FROM messages GROUP BY session_id").fetchall())
        for space in tree.spaces.values():
            for skill in space.skills.values():
                space.updated_ns = max(space.updated_ns, skill.updated_ns)

    # -- spaces ------------------------------------------------------------------------

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

    def _plan_space(self, name: str, user: str | None, meta: dict | None, author: str,
                    space_id: str | None = None
                    ) -> tuple[Space, list[tuple[Skill, FileNode, bytes]]]:
        names.check_space_name(name)
        if space_id is not None:
            if not _is_uuid(space_id):
                raise Invalid(f"space id {space_id!r} is not a UUID (lower-case, with hyphens)")
            if space_id in self.tree.spaces:
                raise Exists(f"a learning space with id {space_id} already exists")
        if name in self.tree.space_names:
            raise Exists(f"a learning space named {name!r} already exists")
        t = now_ns()
        space = Space(space_id or str(uuid.uuid4()), name, user, dict(meta or {}), t, t)
        defaults = []
        for skill_name in skillmd.DEFAULT_SKILLS:
            text = skillmd.default_skill(skill_name)
            defaults.append(self._plan_skill(skill_name, text.encode(), t))
        return space, defaults

    def _plan_skill(self, name: str, content: bytes, t: int) -> tuple[Skill, FileNode, bytes]:
        parsed = skillmd.parse(content, name)
        skill = Skill(str(uuid.uuid4()), name, parsed.description, {}, t, t)
        node = FileNode(self._alloc_file_id(), skill.id, SKILL_MD, 1, len(content),
                        sha256(content), t, t)
        return skill, node, content

    def _alloc_file_id(self) -> int:
        fid = self._next_file_id
        self._next_file_id += 1
        return fid

    @staticmethod
    def _sql_space(con, space: Space, skills: list[tuple[Skill, FileNode, bytes]],
                   author: str) -> None:
        con.execute("INSERT INTO spaces VALUES (?,?,?,?,?,?)",
                    [space.id, space.name, space.user, _json(space.meta), space.created_ns,
                     space.updated_ns])
        for skill, node, content in skills:
            Store._sql_new_skill(con, skill, node, content, author, "default skill")
            con.execute("INSERT INTO space_skills VALUES (?,?,?)",
                        [space.id, skill.id, space.created_ns])

    @staticmethod
    def _sql_new_skill(con, skill: Skill, node: FileNode, content: bytes, author: str,
                       reason: str, session_id: str | None = None,
                       task_id: str | None = None) -> None:
        con.execute("INSERT INTO skills VALUES (?,?,?,?,?,?,?)",
                    [skill.id, skill.name, skill.description, _json(skill.meta),
                     skill.created_ns, skill.updated_ns, skill.user])
        Store._sql_new_file(con, node, content, author, reason, session_id, task_id)

    @staticmethod
    def _sql_new_file(con, node: FileNode, content: bytes, author: str, reason: str,
                      session_id: str | None = None, task_id: str | None = None) -> None:
        con.execute("INSERT INTO files VALUES (?,?,?,?,false,?)",
                    [node.id, node.skill_id, node.path, node.version, node.ctime_ns])
        Store._sql_version(con, node, content, author, reason, session_id, task_id, False)

    @staticmethod
    def _sql_version(con, node: FileNode, content: bytes | None, author: str, reason: str,
                     session_id: str | None, task_id: str | None, deleted: bool) -> None:
        con.execute("INSERT INTO file_versions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [node.id, node.version, node.path, content, node.sha256, node.size,
                     author, reason, session_id, task_id, node.mtime_ns, deleted])

    def _apply_space(self, space: Space, skills: list[tuple[Skill, FileNode, bytes]]) -> None:
        self.tree.add_space(space)
        for skill, node, content in skills:
            self.tree.add_skill(skill)
            self.tree.add_file(node)
            self.cache.put((node.id, node.version), content)
            self.tree.link_skill(space, skill, space.created_ns)

    async def create_space(self, name: str, user: str | None = None, meta: dict | None = None,
                           author: str = "api", space_id: str | None = None) -> Space:
        """`space_id` (a UUID) lets the caller pick the id, e.g. to derive the name from it;
        Exists if a space already has that id or name."""
        async with self._lock:
            space, skills = self._plan_space(name, user, meta, author, space_id)
            await self._write(lambda con: self._sql_space(con, space, skills, author))
            self._apply_space(space, skills)
        await self._tell_kernel([("inode", 1, True)], author)
        return space

    async def update_space(self, space_id: str, *, meta: dict | None = None,
                           name: str | None = None, author: str = "api") -> Space:
        async with self._lock:
            space = self.space(space_id)
            new_meta = {**space.meta, **(meta or {})}
            new_name = space.name
            if name is not None and name != space.name:
                names.check_space_name(name)
                if name in self.tree.space_names:
                    raise Exists(f"a learning space named {name!r} already exists")
                new_name = name
            t = now_ns()
            await self._write(lambda con: con.execute(
                "UPDATE spaces SET meta = ?, name = ?, updated_ns = ? WHERE id = ?",
                [_json(new_meta), new_name, t, space.id]))
            old_name = space.name
            space.meta, space.updated_ns = new_meta, t
            if new_name != old_name:
                self.tree.rename_space(space, new_name, t)
        if new_name != old_name:
            await self._tell_kernel([("entry", 1, old_name), ("inode", 1, True)], author)
        return space

    async def delete_space(self, space_id: str, author: str = "api") -> None:
        """Delete a space; its skills and sessions stay (sessions are detached)."""
        async with self._lock:
            space = self.space(space_id)

            def sql(con):
                con.execute("DELETE FROM space_skills WHERE space_id = ?", [space.id])
                con.execute("DELETE FROM spaces WHERE id = ?", [space.id])
                con.execute("UPDATE sessions SET space_id = NULL WHERE space_id = ?",
                            [space.id])
                con.execute("DELETE FROM learning WHERE space_id = ?", [space.id])
                con.execute("DELETE FROM lessons WHERE space_id = ?", [space.id])
            await self._write(sql)
            self.tree.remove_space(space, now_ns())
        await self._tell_kernel([("entry", 1, space.name), ("inode", 1, True)], author)

    # -- skills ------------------------------------------------------------------------

    async def create_skill(self, skill_md: str | bytes, files: dict[str, bytes] | None = None,
                           *, space_id: str | None = None, author: str = "api",
                           reason: str = "create skill", session_id: str | None = None,
                           task_id: str | None = None, meta: dict | None = None,
                           user: str | None = None) -> Skill:
        content = skill_md.encode() if isinstance(skill_md, str) else skill_md
        parsed = skillmd.parse(content)
        files = dict(files or {})
        files.pop(SKILL_MD, None)
        for path, data in files.items():
            names.check_rel_path(path)
            self._check_size(data)
        self._check_size(content)
        async with self._lock:
            space = self.space(space_id) if space_id else None
            if space is not None and parsed.name in space.skills:
                raise Exists(f"space {space.name!r} already has a skill named {parsed.name!r}")
            t = now_ns()
            skill, node, _ = self._plan_skill(parsed.name, content, t)
            skill.meta, skill.user = dict(meta or {}), user
            others = []
            for path in sorted(files):
                data = files[path]
                others.append((FileNode(self._alloc_file_id(), skill.id, path, 1, len(data),
                                        sha256(data), t, t), data))

            def sql(con):
                self._sql_new_skill(con, skill, node, content, author, reason, session_id,
                                    task_id)
                for other, data in others:
                    self._sql_new_file(con, other, data, author, reason, session_id, task_id)
                if space is not None:
                    con.execute("INSERT INTO space_skills VALUES (?,?,?)", [space.id, skill.id, t])
            await self._write(sql)
            self.tree.add_skill(skill)
            for n, data in [(node, content)] + others:
                self.tree.add_file(n)
                self.cache.put((n.id, n.version), data)
            items = []
            if space is not None:
                self.tree.link_skill(space, skill, t)
                items = [("inode", self.tree.space_ino(space), True)]
        await self._tell_kernel(items, author)
        return skill

    async def include_skill(self, space_id: str, skill_id: str, author: str = "api") -> None:
        async with self._lock:
            space, skill = self.space(space_id), self.skill(skill_id)
            if skill.id in {s.id for s in space.skills.values()}:
                raise Exists(f"skill {skill.name!r} is already in space {space.name!r}")
            if skill.name in space.skills:
                raise Exists(f"space {space.name!r} already has a skill named {skill.name!r}")
            t = now_ns()
            await self._write(lambda con: con.execute(
                "INSERT INTO space_skills VALUES (?,?,?)", [space.id, skill.id, t]))
            self.tree.link_skill(space, skill, t)
        await self._tell_kernel([("inode", self.tree.space_ino(space), True)], author)

    async def exclude_skill(self, space_id: str, skill_id: str, author: str = "api") -> bool:
        """Remove a skill from a space (the skill itself stays); False if it was not there."""
        async with self._lock:
            space, skill = self.space(space_id), self.skill(skill_id)
            if space.skills.get(skill.name) is not skill:
                return False
            await self._write(lambda con: con.execute(
                "DELETE FROM space_skills WHERE space_id = ? AND skill_id = ?",
                [space.id, skill.id]))
            self.tree.unlink_skill(space, skill)
            space.updated_ns = now_ns()
        ino = self.tree.space_ino(space)
        await self._tell_kernel([("entry", ino, skill.name), ("inode", ino, True)], author)
        return True

    async def delete_skill(self, skill_id: str, author: str = "api") -> None:
        """Delete a skill everywhere. Its file history is kept (files are marked deleted)."""
        skill = self.skill(skill_id)
        for space_id in list(skill.spaces):
            await self.exclude_skill(space_id, skill_id, author)
        async with self._lock:
            t = now_ns()
            nodes = list(skill.files.values())

            def sql(con):
                for node in nodes:
                    self._sql_delete_version(con, node, t, author, "delete skill", None, None)
                con.execute("DELETE FROM skills WHERE id = ?", [skill.id])
            await self._write(sql)
            for node in nodes:
                self.tree.remove_file(node, t)
            del self.tree.skills[skill.id]

    def list_space_skills(self, space_id: str) -> list[Skill]:
        return sorted(self.space(space_id).skills.values(), key=lambda s: s.created_ns)

    # -- files -------------------------------------------------------------------------

    def _check_size(self, content: bytes) -> None:
        if len(content) > self.max_file_size:
            raise TooBig(f"file is {len(content)} bytes; the limit is {self.max_file_size}")

    def _check_skill_md(self, skill: Skill, path: str, content: bytes) -> str | None:
        """Validate a SKILL.md write; return the new description, if it is one."""
        if path != SKILL_MD:
            return None
        return skillmd.parse(content, skill.name).description

    async def read_file(self, skill_id: str, path: str) -> FileContent:
        node = self.skill(skill_id).files.get(path)
        if node is None:
            raise NotFound(f"no file {path!r} in skill {self.skill(skill_id).name!r}")
        return FileContent(await self.content(node), node.version, node.sha256, node.path)

    async def content(self, node: FileNode) -> bytes:
        if node.version == 0:
            return b""
        key = (node.id, node.version)
        data = self.cache.get(key)
        if data is None:
            # Whoever reads one file of a folder (grep, find -exec, an agent) usually reads
            # the rest: fetch the folder's uncached files in the same query.
            keys = [key] + self._uncached_siblings(node)
            found = await self._db(self._read_versions, keys)
            for k, content in found.items():
                self.cache.put(k, content)
            data = found.get(key)
            if data is None:
                raise NotFound(f"file {node.id} has no version {node.version}")
        return data

    _PREFETCH_FILES = 256

    async def preload(self) -> int:
        """Fill the content cache with current file contents, folder by folder, while it has
        room: a fresh mount then answers its first reads without DuckDB. Returns the number
        of files loaded."""
        room = self.cache.max_bytes - self.cache.bytes
        loaded = 0
        keys: list[tuple[int, int]] = []
        for node in list(self.tree.file_ids.values()):
            if not node.version or self.cache.get((node.id, node.version), touch=False):
                continue
            room -= node.size
            if room < 0:
                break
            keys.append((node.id, node.version))
            if len(keys) == self._PREFETCH_FILES:
                loaded += await self._preload_chunk(keys)
                keys = []
        if keys:
            loaded += await self._preload_chunk(keys)
        return loaded

    async def _preload_chunk(self, keys: list[tuple[int, int]]) -> int:
        found = await self._db(self._read_versions, keys)
        for k, content in found.items():
            # Not over anything read meanwhile: that is fresher and wanted more.
            if self.cache.get(k, touch=False) is None:
                self.cache.put(k, content)
        return len(found)

    def _uncached_siblings(self, node: FileNode) -> list[tuple[int, int]]:
        skill = self.tree.skills.get(node.skill_id)
        if skill is None:
            return []
        budget = self.cache.max_bytes // 8
        out = []
        for sib in skill.children.get(node.path.rpartition("/")[0], {}).values():
            if sib is None or sib is node or not sib.version:
                continue
            k = (sib.id, sib.version)
            if self.cache.get(k, touch=False) is not None:
                continue
            budget -= sib.size
            if budget < 0 or len(out) >= self._PREFETCH_FILES:
                break
            out.append(k)
        return out

    def _read_versions(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        # A filter (not a join) lets DuckDB skip row groups by file id and read content only
        # for matching rows: a join reads every row's content.
        ids = sorted({f for f, _ in keys})
        marks = ",".join("?" * len(ids))
        rows = self.con.execute(
            "SELECT file_id, version, content FROM file_versions "
            f"WHERE file_id BETWEEN ? AND ? AND file_id IN ({marks}) "
            f"AND version IN ({','.join('?' * len({n for _, n in keys}))})",
            [ids[0], ids[-1], *ids, *sorted({n for _, n in keys})]).fetchall()
        wanted = set(keys)
        return {(f, n): bytes(c) if c is not None else b"" for f, n, c in rows
                if (f, n) in wanted}

    async def write_file(self, skill_id: str, path: str, content: bytes, *, author: str,
                         reason: str = "", session_id: str | None = None,
                         task_id: str | None = None,
                         expect_version: int | None = None) -> FileNode:
        """Create or replace a file as a new version."""
        names.check_rel_path(path)
        self._check_size(content)
        async with self._lock:
            skill = self.skill(skill_id)
            node, items = await self._write_locked(skill, path, content, author, reason,
                                                   session_id, task_id, expect_version)
        await self._tell_kernel(items, author)
        return node

    async def _write_locked(self, skill: Skill, path: str, content: bytes, author: str,
                            reason: str, session_id: str | None, task_id: str | None,
                            expect_version: int | None) -> tuple[FileNode, list[tuple]]:
        new_desc = self._check_skill_md(skill, path, content)
        node = skill.files.get(path)
        current = node.version if node else 0
        reserved = node if node is not None and node.version == 0 else None
        if reserved is not None:
            node = None
        if expect_version is not None and expect_version != current:
            if expect_version == 0:
                raise Exists(f"{path!r} already exists in skill {skill.name!r}")
            raise StaleVersion(f"{path!r} is at version {current}, not {expect_version}")
        self._check_path_free(skill, path, node)
        t = now_ns()
        digest = sha256(content)
        if node is None:
            new = FileNode(reserved.id if reserved else self._alloc_file_id(), skill.id, path, 1,
                           len(content), digest, t, t)

            new_dirs = [d for d in self._parents(path) if d not in skill.children]

            def sql(con):
                self._sql_new_file(con, new, content, author, reason, session_id, task_id)
                # Folders a file implies are kept, as a real filesystem keeps them.
                for d in new_dirs:
                    con.execute("INSERT INTO skill_dirs VALUES (?,?,?)", [skill.id, d, t])
                if new_desc is not None:
                    con.execute("UPDATE skills SET description = ?, updated_ns = ? WHERE id = ?",
                                [new_desc, t, skill.id])
        else:
            new = FileNode(node.id, skill.id, path, node.version + 1, len(content), digest, t,
                           node.ctime_ns)

            def sql(con):
                con.execute("UPDATE files SET version = ? WHERE id = ?", [new.version, new.id])
                self._sql_version(con, new, content, author, reason, session_id, task_id, False)
                if new_desc is not None:
                    con.execute("UPDATE skills SET description = ?, updated_ns = ? WHERE id = ?",
                                [new_desc, t, skill.id])
        await self._write(sql)
        items: list[tuple] = []
        if reserved is not None:
            reserved.version, reserved.size, reserved.sha256, reserved.mtime_ns = (
                1, new.size, new.sha256, t)
            new = reserved
            if new.ino:
                items.append(("inode", new.ino, False))
        elif node is None:
            parent = path.rpartition("/")[0]
            self.tree.add_file(new)
            items += self._dir_items(skill, parent)
            for d in new_dirs:
                items += self._dir_items(skill, d.rpartition("/")[0])
        else:
            # Keep the inode: the kernel knows this file by it.
            node.version, node.size, node.sha256, node.mtime_ns = (
                new.version, new.size, new.sha256, new.mtime_ns)
            new = node
            if new.ino:
                items.append(("inode", new.ino, False))
        self.cache.put((new.id, new.version), content)
        if new_desc is not None:
            skill.description = new_desc
        skill.updated_ns = t
        return new, items

    @staticmethod
    def _parents(path: str) -> list[str]:
        parts = path.split("/")[:-1]
        return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]

    def _check_path_free(self, skill: Skill, path: str, node: FileNode | None) -> None:
        if node is None and path in skill.children:
            raise Exists(f"{path!r} is a folder")
        for parent in self._parents(path):
            if parent in skill.files:
                raise Invalid(f"{parent!r} is a file, not a folder")

    def _sql_delete_version(self, con, node: FileNode, t: int, author: str, reason: str,
                            session_id: str | None, task_id: str | None) -> None:
        gone = FileNode(node.id, node.skill_id, node.path, node.version + 1, 0, sha256(b""), t,
                        node.ctime_ns)
        con.execute("UPDATE files SET version = ?, deleted = true WHERE id = ?",
                    [gone.version, node.id])
        self._sql_version(con, gone, None, author, reason, session_id, task_id, True)

    async def reserve_file(self, skill_id: str, path: str) -> FileNode:
        """Make an empty file visible in the tree before its first version is committed
        (a file created through the mount exists from `create` until its first close)."""
        names.check_rel_path(path)
        async with self._lock:
            skill = self.skill(skill_id)
            if path in skill.files:
                raise Exists(f"{path!r} already exists")
            self._check_path_free(skill, path, None)
            if path.rpartition("/")[0] not in skill.children:
                raise NotFound(f"no folder for {path!r}")
            t = now_ns()
            node = FileNode(self._alloc_file_id(), skill.id, path, 0, 0, sha256(b""), t, t)
            self.tree.add_file(node)
            return node

    async def drop_reserved(self, node: FileNode) -> None:
        """Forget a created file whose first version never committed (its writer failed).
        The kernel is told before this returns, so the writer's close() is followed by a
        name that is gone."""
        if node.version != 0 or node.deleted:
            return
        skill = self.tree.skills[node.skill_id]
        self.tree.remove_file(node, now_ns())
        parent, _, name = node.path.rpartition("/")
        if self.kernel is not None:
            await self.kernel.invalidate(self._dir_items(skill, parent, name), wait=True)

    async def delete_file(self, skill_id: str, path: str, *, author: str, reason: str = "delete",
                          session_id: str | None = None, task_id: str | None = None,
                          expect_version: int | None = None) -> None:
        async with self._lock:
            skill = self.skill(skill_id)
            node = skill.files.get(path)
            if node is None:
                raise NotFound(f"no file {path!r} in skill {skill.name!r}")
            if path == SKILL_MD:
                raise Forbidden("SKILL.md cannot be deleted; delete the skill instead")
            if expect_version is not None and expect_version != node.version:
                raise StaleVersion(f"{path!r} is at version {node.version}, not {expect_version}")
            t = now_ns()
            if node.version:  # a reserved file (version 0) was never written to the database
                await self._write(lambda con: self._sql_delete_version(
                    con, node, t, author, reason, session_id, task_id))
            self.tree.remove_file(node, t)
            skill.updated_ns = t
            parent, _, name = path.rpartition("/")
            items = self._dir_items(skill, parent, name)
        await self._tell_kernel(items, author)

    async def move_file(self, skill_id: str, old: str, new: str, *, author: str,
                        reason: str = "", session_id: str | None = None,
                        task_id: str | None = None, replace: bool = True) -> FileNode:
        """Rename a file inside a skill. Over an existing file, the target keeps its history
        and gains the source's content as a new version (an editor's save); the source is
        recorded as deleted."""
        names.check_rel_path(new)
        async with self._lock:
            skill = self.skill(skill_id)
            node = skill.files.get(old)
            if node is None:
                raise NotFound(f"no file {old!r} in skill {skill.name!r}")
            if old == new:
                return node
            if SKILL_MD in (old,):
                raise Forbidden("SKILL.md cannot be renamed")
            target = skill.files.get(new)
            if node.version == 0 and target is None:
                # Not committed yet: only the tree knows it.
                self._check_path_free(skill, new, None)
                self.tree.remove_file(node, now_ns())
                node.deleted, node.path = False, new
                self.tree.add_file(node)
                return node
            if target is not None and not replace:
                raise Exists(f"{new!r} already exists")
            self._check_path_free(skill, new, target)
            reason = reason or f"rename {old} -> {new}"
            if target is not None:
                content = await self.content(node)
                new_desc = self._check_skill_md(skill, new, content)
                t = now_ns()
                digest = node.sha256
                upd = FileNode(target.id, skill.id, new, target.version + 1, node.size, digest,
                               t, target.ctime_ns)

                def sql(con):
                    con.execute("UPDATE files SET version = ? WHERE id = ?",
                                [upd.version, upd.id])
                    self._sql_version(con, upd, content, author, reason, session_id, task_id,
                                      False)
                    self._sql_delete_version(con, node, t, author, reason, session_id, task_id)
                    if new_desc is not None:
                        con.execute("UPDATE skills SET description = ? WHERE id = ?",
                                    [new_desc, skill.id])
                await self._write(sql)
                self.tree.remove_file(node, t)
                self.tree.take_inode(target, node)
                target.version, target.size, target.sha256, target.mtime_ns = (
                    upd.version, upd.size, upd.sha256, t)
                self.cache.put((target.id, target.version), content)
                if new_desc is not None:
                    skill.description = new_desc
                result = target
                items = [("inode", target.ino, False)] if target.ino else []
            else:
                if new == SKILL_MD:
                    self._check_skill_md(skill, new, await self.content(node))
                t = now_ns()
                content = await self.content(node)
                moved = FileNode(node.id, skill.id, new, node.version + 1, node.size,
                                 node.sha256, t, node.ctime_ns)

                def sql(con):
                    con.execute("UPDATE files SET version = ?, path = ? WHERE id = ?",
                                [moved.version, new, node.id])
                    self._sql_version(con, moved, content, author, reason, session_id, task_id,
                                      False)
                await self._write(sql)
                self.tree.remove_file(node, t)
                node.deleted = False
                node.path, node.version, node.mtime_ns = new, moved.version, t
                self.tree.add_file(node)
                self.cache.put((node.id, node.version), content)
                result = node
                items = []
            skill.updated_ns = t
            op, _, oname = old.rpartition("/")
            np_, _, nname = new.rpartition("/")
            items += self._dir_items(skill, op, oname) + self._dir_items(skill, np_, nname)
        await self._tell_kernel(items, author)
        return result

    async def make_dir(self, skill_id: str, path: str, author: str = "api") -> None:
        names.check_rel_path(path)
        async with self._lock:
            skill = self.skill(skill_id)
            if path in skill.children or path in skill.files:
                raise Exists(f"{path!r} already exists")
            self._check_path_free(skill, path + "/x", None)
            t = now_ns()
            await self._write(lambda con: con.execute(
                "INSERT INTO skill_dirs VALUES (?,?,?)", [skill.id, path, t]))
            skill.add_dir(path, t)
            items = self._dir_items(skill, path.rpartition("/")[0])
        await self._tell_kernel(items, author)

    async def remove_dir(self, skill_id: str, path: str, author: str = "api") -> None:
        async with self._lock:
            skill = self.skill(skill_id)
            if path not in skill.children or not path:
                raise NotFound(f"no folder {path!r}")
            if skill.children[path]:
                raise NotEmpty(f"folder {path!r} is not empty")
            await self._write(lambda con: con.execute(
                "DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?", [skill.id, path]))
            parent, _, name = path.rpartition("/")
            items = self._dir_items(skill, parent, name)
            skill.remove_dir(path, now_ns())
            for space_id in skill.spaces:
                self.tree.forget_dir(space_id, skill.id, path)
        await self._tell_kernel(items, author)

    async def move_dir(self, skill_id: str, old: str, new: str, author: str = "api") -> None:
        """Rename a sub-folder of a skill with everything in it."""
        names.check_rel_path(new)
        async with self._lock:
            skill = self.skill(skill_id)
            if old not in skill.children or not old:
                raise NotFound(f"no folder {old!r}")
            if new in skill.files:
                raise Exists(f"{new!r} is a file")
            if new in skill.children and skill.children[new]:
                raise NotEmpty(f"folder {new!r} is not empty")
            if (new + "/").startswith(old + "/"):
                raise Invalid("cannot move a folder into itself")
            t = now_ns()
            moved_files = [n for p, n in skill.files.items() if p.startswith(old + "/")]
            moved_dirs = [d for d in skill.children if d == old or d.startswith(old + "/")]
            contents = {n.id: await self.content(n) for n in moved_files}

            def sql(con):
                for d in moved_dirs:
                    con.execute("DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?",
                                [skill.id, d])
                    con.execute("INSERT INTO skill_dirs VALUES (?,?,?)",
                                [skill.id, new + d[len(old):], t])
                if new in skill.children:
                    con.execute("DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?",
                                [skill.id, new])
                for n in moved_files:
                    moved = FileNode(n.id, skill.id, new + n.path[len(old):], n.version + 1,
                                     n.size, n.sha256, t, n.ctime_ns)
                    con.execute("UPDATE files SET version = ?, path = ? WHERE id = ?",
                                [moved.version, moved.path, n.id])
                    self._sql_version(con, moved, contents[n.id], author,
                                      f"rename {old} -> {new}", None, None, False)
            await self._write(sql)
            op, _, oname = old.rpartition("/")
            np_, _, nname = new.rpartition("/")
            items = self._dir_items(skill, op, oname) + self._dir_items(skill, np_, nname)
            for n in moved_files:
                self.tree.remove_file(n, t)
            for d in sorted(moved_dirs, reverse=True):
                skill.remove_dir(d, t)
            if new in skill.children:
                skill.remove_dir(new, t)
                for space_id in skill.spaces:
                    self.tree.forget_dir(space_id, skill.id, new)
            self.tree.rename_dirs(skill, old, new)
            for d in sorted(moved_dirs):
                skill.add_dir(new + d[len(old):], t)
            for n in moved_files:
                n.deleted = False
                n.path, n.version, n.mtime_ns = new + n.path[len(old):], n.version + 1, t
                self.tree.add_file(n)
                self.cache.put((n.id, n.version), contents[n.id])
        await self._tell_kernel(items, author)

    def _find_file_id(self, skill: Skill, path: str) -> int:
        node = skill.files.get(path)
        if node is not None:
            return node.id
        row = self.con.execute(
            "SELECT id FROM files WHERE skill_id = ? AND path = ? ORDER BY id DESC LIMIT 1",
            [skill.id, path]).fetchone()
        if row is None:
            row = self.con.execute(
                "SELECT file_id FROM file_versions v JOIN files f ON f.id = v.file_id "
                "WHERE f.skill_id = ? AND v.path = ? ORDER BY v.at_ns DESC LIMIT 1",
                [skill.id, path]).fetchone()
        if row is None:
            raise NotFound(f"{path!r} has no history in skill {skill.name!r}")
        return row[0]

    async def file_log(self, skill_id: str, path: str) -> list[VersionRow]:
        """All versions of the file at `path` (or of the last file that had that path)."""
        skill = self.skill(skill_id)

        def q():
            fid = self._find_file_id(skill, path)
            return self.con.execute(
                "SELECT version, path, sha256, size, author, reason, session_id, task_id, "
                "at_ns, deleted FROM file_versions WHERE file_id = ? ORDER BY version",
                [fid]).fetchall()
        return [VersionRow(*r) for r in await self._db(q)]

    async def revert_file(self, skill_id: str, path: str, version: int,
                          author: str = "cli") -> FileNode:
        """Make an old version current again, as a new version (history is kept)."""
        skill = self.skill(skill_id)

        def q():
            fid = self._find_file_id(skill, path)
            return fid, self.con.execute(
                "SELECT content, deleted FROM file_versions WHERE file_id = ? AND version = ?",
                [fid, version]).fetchone()
        fid, row = await self._db(q)
        if row is None:
            raise NotFound(f"{path!r} has no version {version}")
        if row[1]:
            raise Invalid(f"version {version} of {path!r} is a deletion")
        content = bytes(row[0] or b"")
        node = skill.files.get(path)
        if node is not None:
            return await self.write_file(skill_id, path, content, author=author,
                                         reason=f"revert to version {version}")
        return await self._undelete(skill, fid, path, content, version, author)

    async def _undelete(self, skill: Skill, fid: int, path: str, content: bytes, version: int,
                        author: str) -> FileNode:
        self._check_size(content)
        async with self._lock:
            if path in skill.files:
                raise Exists(f"{path!r} exists again")
            self._check_path_free(skill, path, None)
            last = await self._db(lambda: self.con.execute(
                "SELECT version, created_ns FROM files WHERE id = ?", [fid]).fetchone())
            t = now_ns()
            node = FileNode(fid, skill.id, path, last[0] + 1, len(content), sha256(content), t,
                            last[1])

            def sql(con):
                con.execute("UPDATE files SET version = ?, path = ?, deleted = false "
                            "WHERE id = ?", [node.version, path, fid])
                self._sql_version(con, node, content, author, f"revert to version {version}",
                                  None, None, False)
            await self._write(sql)
            self.tree.add_file(node)
            self.cache.put((node.id, node.version), content)
            items = self._dir_items(skill, path.rpartition("/")[0])
        await self._tell_kernel(items, author)
        return node

    # -- sessions and messages ------------------------------------------------------------

    async def create_session(self, user: str | None = None, configs: dict | None = None,
                             space_id: str | None = None, name: str | None = None,
                             session_id: str | None = None) -> SessionRow:
        """`session_id` (a UUID) lets the caller pick the id; Exists if it is taken."""
        if session_id is not None and not _is_uuid(session_id):
            raise Invalid(f"session id {session_id!r} is not a UUID (lower-case, with hyphens)")
        space = self.space(space_id) if space_id else None
        t = now_ns()
        row = SessionRow(session_id or str(uuid.uuid4()), name, user,
                         space.id if space else None, dict(configs or {}), False, t, t)

        def sql(con):
            if session_id is not None and con.execute(
                    "SELECT 1 FROM sessions WHERE id = ?", [session_id]).fetchone():
                raise Exists(f"a session with id {session_id} already exists")
            self._sql_session(con, row)
            if space is not None:
                self._sql_learning(con, row.id, space.id, t)
        await self._write(sql)
        if space is not None:
            self._emit(StoreEvent("attached", row.id, space.id))
        return row

    @staticmethod
    def _sql_session(con, row: SessionRow) -> None:
        con.execute(f"INSERT INTO sessions ({_SESSION_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                    [row.id, row.name, row.user, row.space_id, _json(row.configs), row.ended,
                     row.created_ns, row.updated_ns])

    @staticmethod
    def _sql_learning(con, session_id: str, space_id: str, t: int) -> None:
        con.execute(f"INSERT INTO learning ({_LEARNING_COLS}) VALUES (?,?,'pending',NULL,-1,?,?)",
                    [session_id, space_id, t, t])

    async def get_session(self, session_id: str) -> SessionRow:
        row = await self._db(lambda: self.con.execute(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", [session_id]).fetchone())
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return _session(row)

    async def list_sessions(self, space_id: str | None = None,
                            user: str | None = None) -> list[SessionRow]:
        where, args = [], []
        if space_id is not None:
            where.append("space_id = ?")
            args.append(self.space(space_id).id)
        if user is not None:
            where.append('"user" = ?')
            args.append(user)
        sql = f"SELECT {_SESSION_COLS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._db(lambda: self.con.execute(
            sql + " ORDER BY created_ns", args).fetchall())
        return [_session(r) for r in rows]

    async def update_session_configs(self, session_id: str, configs: dict,
                                     replace: bool = False) -> SessionRow:
        """Replace a session's configs with `configs` (replace=True), or merge them in, where
        a key whose new value is None is removed. Read and write are one transaction."""
        t = now_ns()

        def sql(con):
            row = con.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?",
                              [session_id]).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            session = _session(row)
            if replace:
                session.configs = dict(configs)
            else:
                merged = {**session.configs, **configs}
                session.configs = {k: v for k, v in merged.items()
                                   if not (k in configs and configs[k] is None)}
            session.updated_ns = t
            con.execute("UPDATE sessions SET configs = ?, updated_ns = ? WHERE id = ?",
                        [_json(session.configs), t, session_id])
            return session
        return await self._write(sql)

    async def delete_session(self, session_id: str) -> None:
        await self.get_session(session_id)

        def sql(con):
            for table, col in (("messages", "session_id"), ("tasks", "session_id"),
                               ("lessons", "session_id"), ("learning", "session_id"),
                               ("sessions", "id")):
                con.execute(f"DELETE FROM {table} WHERE {col} = ?", [session_id])
        await self._write(sql)
        self._session_seq.pop(session_id, None)
        self._emit(StoreEvent("session_deleted", session_id))

    async def attach_session(self, session_id: str, space_id: str,
                             strict: bool = False) -> LearningRow:
        """Make a session learn into a space; Conflict if it learns into another one. With
        `strict`, Conflict too if it learns into this very space already (a session is
        attached once; of two concurrent strict attaches, one wins)."""
        async with self._lock:
            space = self.space(space_id)
            t = now_ns()

            def sql(con):
                # Checked in the transaction: a session deleted meanwhile is not attached.
                row = con.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?",
                                  [session_id]).fetchone()
                if row is None:
                    raise NotFound(f"no session {session_id!r}")
                session = _session(row)
                found = con.execute(f"SELECT {_LEARNING_COLS} FROM learning "
                                    "WHERE session_id = ?", [session_id]).fetchone()
                existing = LearningRow(*found) if found else None
                if strict and (existing is not None or session.space_id is not None):
                    same = (existing.space_id if existing else session.space_id) == space.id
                    raise Conflict(f"session {session_id} already learns into "
                                   f"{'this' if same else 'another'} space")
                if session.space_id not in (None, space.id) or (
                        existing is not None and existing.space_id != space.id):
                    raise Conflict(f"session {session_id} already learns into another space")
                if existing is not None:
                    return existing
                con.execute("UPDATE sessions SET space_id = ?, updated_ns = ? WHERE id = ?",
                            [space.id, t, session_id])
                self._sql_learning(con, session_id, space.id, t)
                return None
            existing = await self._write(sql)
            if existing is not None:
                return existing
        self._emit(StoreEvent("attached", session_id, space.id))
        return LearningRow(session_id, space.id, "pending", None, -1, t, t)

    def _message_batch(self, session_id: str, messages: Sequence, source: str | None,
                       t: int, metas: Sequence[dict | None] | None = None) -> "_MessageBatch":
        first = self._session_seq.get(session_id, -1) + 1
        return _MessageBatch(
            session_id, source, t, list(range(first, first + len(messages))),
            [m.role for m in messages], [m.format for m in messages],
            [m.text for m in messages],
            [_json([{"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in m.tool_calls]) if m.tool_calls else "[]" for m in messages],
            [m.tool_call_id for m in messages], [m.name for m in messages],
            [m.raw if m.raw is not None else _json(m.original) for m in messages],
            [_json(meta) if meta else None for meta in metas] if metas is not None
            else [None] * len(messages))

    async def add_messages(self, session_id: str, messages: Sequence, author: str = "api",
                           source: str | None = None,
                           metas: Sequence[dict | None] | None = None) -> list[int]:
        """Append messages; `metas` (one dict or None per message) is kept with each."""
        if metas is not None and len(metas) != len(messages):
            raise Invalid(f"{len(metas)} metas for {len(messages)} messages")
        session = await self.get_session(session_id)
        async with self._lock:
            t = now_ns()
            batch = self._message_batch(session_id, messages, source or author, t, metas)
            await self._write(batch.insert)
            if batch.seqs:
                self._session_seq[session_id] = batch.seqs[-1]
        if batch.seqs:
            self._emit(StoreEvent("messages", session_id, session.space_id, len(batch.seqs)))
        return batch.seqs

    async def mark_session(self, session_id: str, event: str) -> None:
        """Record a control event ('end' or 'flush') for a session and tell subscribers."""
        session = await self.get_session(session_id)
        if event == "end":
            await self._write(lambda con: con.execute(
                "UPDATE sessions SET ended = true, updated_ns = ? WHERE id = ?",
                [now_ns(), session_id]))
        self._emit(StoreEvent(event, session_id, session.space_id))

    async def get_messages(self, session_id: str, after_seq: int = -1,
                           limit: int | None = None) -> list[StoredMessage]:
        sql = ("SELECT session_id, seq, role, format, body, original, task_id, created_ns, "
               "meta FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq")
        args: list = [session_id, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self._db(lambda: self.con.execute(sql, args).fetchall())
        return [StoredMessage(r[0], r[1], r[2], r[3], json.loads(r[4]), _unjson(r[5]), r[6],
                              r[7], _unjson(r[8], {})) for r in rows]

    def last_seq(self, session_id: str) -> int:
        return self._session_seq.get(session_id, -1)

    # -- spool -------------------------------------------------------------------------

    async def spool_seen(self, rel_path: str, digest: str, file_key: str | None = None) -> bool:
        """Whether this very file was committed already. `file_key` (device, inode, mtime)
        tells a file left behind by a crash from a new file that happens to have the same
        name and content."""
        row = await self._db(lambda: self.con.execute(
            "SELECT 1 FROM spool_ledger WHERE path = ? AND sha256 = ? "
            "AND file_key IS NOT DISTINCT FROM ? LIMIT 1", [rel_path, digest, file_key]
        ).fetchone())
        return row is not None

    async def ingest_spool_file(self, space_name: str, session_name: str, rel_path: str,
                                digest: str, records: Sequence,
                                file_key: str | None = None) -> IngestResult:
        """Commit a spool file's messages, control events and ledger row in one transaction.
        A missing space is created; a missing session is created and attached to it."""
        names.check_component(session_name)
        messages = [r for r in records if not isinstance(r, Control)]
        events = [r.event for r in records if isinstance(r, Control)]
        async with self._lock:
            t = now_ns()
            space = self.tree.space_names.get(space_name)
            new_space = None
            if space is None:
                new_space = self._plan_space(space_name, None, None, "spool")
                space = new_space[0]
            session = await self._db(self._find_session, space.id, session_name)
            new_session = None
            if session is None:
                session = new_session = SessionRow(
                    str(uuid.uuid4()) if not _is_uuid(session_name) else session_name,
                    session_name, None, space.id, {}, False, t, t)
            elif session.space_id not in (None, space.id):
                raise Conflict(f"session {session_name!r} learns into another space")
            attach = session.space_id is None
            ended = "end" in events
            batch = self._message_batch(session.id, messages, "spool", t)

            def sql(con):
                if new_space is not None:
                    self._sql_space(con, *new_space, "spool")
                if new_session is not None:
                    self._sql_session(con, new_session)
                elif attach:
                    con.execute("UPDATE sessions SET space_id = ? WHERE id = ?",
                                [space.id, session.id])
                if new_session is not None or attach:
                    has = con.execute("SELECT 1 FROM learning WHERE session_id = ?",
                                      [session.id]).fetchone()
                    if not has:
                        self._sql_learning(con, session.id, space.id, t)
                batch.insert(con)
                if ended:
                    con.execute("UPDATE sessions SET ended = true, updated_ns = ? WHERE id = ?",
                                [t, session.id])
                con.execute("INSERT INTO spool_ledger VALUES (?,?,?,?,?)",
                            [rel_path, digest, file_key, len(batch.seqs), t])
            await self._write(sql)
            if new_space is not None:
                self._apply_space(*new_space)
            if batch.seqs:
                self._session_seq[session.id] = batch.seqs[-1]
        if new_space is not None:
            await self._tell_kernel([("inode", 1, True)], "spool")
        if new_session is not None or attach:
            self._emit(StoreEvent("attached", session.id, space.id))
        if batch.seqs:
            self._emit(StoreEvent("messages", session.id, space.id, len(batch.seqs)))
        for event in events:
            self._emit(StoreEvent(event, session.id, space.id))
        return IngestResult(space.id, session.id, len(batch.seqs), events)

    def _find_session(self, space_id: str, name: str) -> SessionRow | None:
        row = self.con.execute(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ? OR (name = ? AND space_id = ?) "
            "ORDER BY (id = ?) DESC LIMIT 1", [name, name, space_id, name]).fetchone()
        return _session(row) if row else None

    # -- tasks and learning status --------------------------------------------------------

    async def list_tasks(self, session_id: str) -> list[TaskRow]:
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE session_id = ? ORDER BY ord",
            [session_id]).fetchall())
        return [_task(r) for r in rows]

    async def save_task(self, task: TaskRow) -> TaskRow:
        """Insert or replace a task (the learner owns task rows)."""
        task.updated_ns = now_ns()
        if not task.created_ns:
            task.created_ns = task.updated_ns
        await self._write(lambda con: self._sql_task(con, task))
        return task

    @staticmethod
    def _sql_task(con, task: TaskRow) -> None:
        con.execute("DELETE FROM tasks WHERE id = ?", [task.id])
        con.execute(f"INSERT INTO tasks ({_TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [task.id, task.session_id, task.ord, task.description, task.status,
                     _json(task.progress), _json(task.preferences), task.first_seq,
                     task.last_seq, task.learned, task.created_ns, task.updated_ns])
        if task.first_seq is not None:
            con.execute("UPDATE messages SET task_id = ? WHERE session_id = ? AND seq "
                        "BETWEEN ? AND ?", [task.id, task.session_id, task.first_seq,
                                             task.last_seq if task.last_seq is not None
                                             else task.first_seq])

    async def get_learning(self, session_id: str) -> LearningRow | None:
        row = await self._db(lambda: self.con.execute(
            f"SELECT {_LEARNING_COLS} FROM learning WHERE session_id = ?",
            [session_id]).fetchone())
        return LearningRow(*row) if row else None

    async def list_learning(self, space_id: str | None = None) -> list[LearningRow]:
        sql = f"SELECT {_LEARNING_COLS} FROM learning"
        args = []
        if space_id is not None:
            sql += " WHERE space_id = ?"
            args.append(self.space(space_id).id)
        rows = await self._db(lambda: self.con.execute(sql + " ORDER BY created_ns",
                                                       args).fetchall())
        return [LearningRow(*r) for r in rows]

    async def set_learning(self, session_id: str, status: str, error: str | None = None,
                           learned_seq: int | None = None) -> None:
        t = now_ns()
        if learned_seq is None:
            await self._write(lambda con: con.execute(
                "UPDATE learning SET status = ?, error = ?, updated_ns = ? WHERE session_id = ?",
                [status, error, t, session_id]))
        else:
            await self._write(lambda con: con.execute(
                "UPDATE learning SET status = ?, error = ?, learned_seq = ?, updated_ns = ? "
                "WHERE session_id = ?", [status, error, learned_seq, t, session_id]))

    # -- lessons -------------------------------------------------------------------------

    async def save_lessons(self, session_id: str, lessons: Sequence[LessonRow], *,
                           tasks: Sequence[TaskRow] = (),
                           learned_seq: int | None = None) -> list[LessonRow]:
        """Keep new lessons of one session, with the task rows they came from and how far the
        session's messages are now learned, in one transaction: after a crash either all of it
        is there or none of it (and the messages are learned again). NotFound if the session
        does not learn into a space."""
        t = now_ns()
        rows = []
        for i, lesson in enumerate(lessons):
            if lesson.session_id != session_id:
                raise Invalid(f"lesson {lesson.id} belongs to session {lesson.session_id}, "
                              f"not {session_id}")
            if lesson.status not in LESSON_STATUSES:
                raise Invalid(f"unknown lesson status {lesson.status!r}")
            lesson.ord, lesson.created_ns, lesson.updated_ns = i, t, t
            rows.append([lesson.id, lesson.session_id, lesson.space_id, lesson.task_id,
                         lesson.ord, _json(lesson.payload), lesson.status, lesson.error, t, t])
        for task in tasks:
            task.updated_ns = t
            task.created_ns = task.created_ns or t

        def sql(con):
            if not con.execute("SELECT 1 FROM learning WHERE session_id = ?",
                               [session_id]).fetchone():
                raise NotFound(f"session {session_id!r} does not learn into any space")
            for task in tasks:
                self._sql_task(con, task)
            _insert_many(con, "lessons", 10, rows)
            if learned_seq is not None:
                con.execute("UPDATE learning SET learned_seq = ?, updated_ns = ? "
                            "WHERE session_id = ?", [learned_seq, t, session_id])
        await self._write(sql)
        return list(lessons)

    async def mark_lessons(self, lesson_ids: Sequence[str], status: str,
                           error: str | None = None) -> int:
        """Set lessons' status: "written" also marks their tasks learned, in the same
        transaction; "failed" keeps `error`; "queued" puts them back in line. A written
        lesson stays written. Returns how many lessons changed."""
        if status not in LESSON_STATUSES:
            raise Invalid(f"unknown lesson status {status!r}")
        ids = list(dict.fromkeys(lesson_ids))
        if not ids:
            return 0
        t = now_ns()
        marks = ",".join("?" * len(ids))

        def sql(con):
            changed = con.execute(
                f"UPDATE lessons SET status = ?, error = ?, updated_ns = ? "
                f"WHERE id IN ({marks}) AND status <> 'written' RETURNING task_id",
                [status, error if status == "failed" else None, t, *ids]).fetchall()
            task_ids = [task_id for (task_id,) in changed if task_id is not None]
            if status == "written" and task_ids:
                con.execute(f"UPDATE tasks SET learned = true, updated_ns = ? WHERE id IN "
                            f"({','.join('?' * len(task_ids))}) AND NOT learned",
                            [t, *task_ids])
            return len(changed)
        return await self._write(sql)

    async def list_lessons(self, *, session_id: str | None = None, space_id: str | None = None,
                           status: str | Sequence[str] | None = None) -> list[LessonRow]:
        """Lessons in the order they were kept, optionally of one session, one space and/or
        with the given status(es)."""
        where, args = [], []
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        if space_id is not None:
            where.append("space_id = ?")
            args.append(space_id)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        sql = f"SELECT {_LESSON_COLS} FROM lessons"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._db(lambda: self.con.execute(
            sql + " ORDER BY created_ns, ord", args).fetchall())
        return [_lesson(r) for r in rows]

    async def unwritten_lessons(self, *, session_id: str | None = None,
                                space_id: str | None = None) -> list[LessonRow]:
        """Lessons not written yet (queued, or failed and waiting for a retry)."""
        return await self.list_lessons(session_id=session_id, space_id=space_id,
                                       status=("queued", "failed"))

    # -- bulk import (daemon not running) ------------------------------------------------

    def import_tree(self, src: str, author: str = "cli", progress=None) -> dict[str, int]:
        """Import a directory laid out like the mount (SPACE/SKILL/files) in a few large
        transactions. Synchronous: for use before the daemon starts, not inside it."""
        import os
        from pathlib import Path

        root = Path(src)
        t = now_ns()
        counts = {"spaces": 0, "skills": 0, "files": 0, "bytes": 0}
        space_rows, skill_rows, link_rows, dir_rows, file_rows, version_rows = ([] for _ in range(6))
        for space_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            space = self.tree.space_names.get(space_dir.name)
            if space is None:
                names.check_space_name(space_dir.name)
                space = Space(str(uuid.uuid4()), space_dir.name, None, {}, t, t)
                space_rows.append([space.id, space.name, None, _json({}), t, t])
                self.tree.add_space(space)
                counts["spaces"] += 1
            for skill_dir in sorted(p for p in space_dir.iterdir() if p.is_dir()):
                if skill_dir.name in space.skills:
                    raise Exists(f"{space.name}/{skill_dir.name} already exists")
                md_path = skill_dir / SKILL_MD
                if not md_path.is_file():
                    raise Invalid(f"{skill_dir} has no SKILL.md")
                parsed = skillmd.parse(md_path.read_bytes(), skill_dir.name)
                skill = Skill(str(uuid.uuid4()), parsed.name, parsed.description, {}, t, t)
                self.tree.add_skill(skill)
                self.tree.link_skill(space, skill, t)
                skill_rows.append([skill.id, skill.name, skill.description, _json({}), t, t,
                                   None])
                link_rows.append([space.id, skill.id, t])
                counts["skills"] += 1
                for dirpath, dirnames, filenames in os.walk(skill_dir):
                    dirnames.sort()
                    rel_dir = os.path.relpath(dirpath, skill_dir)
                    if rel_dir != ".":
                        dir_rows.append([skill.id, rel_dir, t])
                    for fname in sorted(filenames):
                        rel = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                        names.check_rel_path(rel)
                        data = (Path(dirpath) / fname).read_bytes()
                        self._check_size(data)
                        node = FileNode(self._alloc_file_id(), skill.id, rel, 1, len(data),
                                        sha256(data), t, t)
                        file_rows.append([node.id, skill.id, rel, 1, False, t])
                        version_rows.append([node.id, 1, rel, data, node.sha256, len(data),
                                             author, "import", None, None, t, False])
                        self.tree.add_file(node)
                        counts["files"] += 1
                        counts["bytes"] += len(data)
                if progress is not None:
                    progress(counts)

        def sql(con):
            _insert_many(con, "spaces", 6, space_rows)
            _insert_many(con, "skills", 7, skill_rows)
            _insert_many(con, "space_skills", 3, link_rows)
            _insert_many(con, "skill_dirs", 3, dir_rows)
            _insert_many(con, "files", 6, file_rows)
            _insert_many(con, "file_versions", 12, version_rows)
        self._tx(sql)
        self.con.execute("CHECKPOINT")
        return counts

    # -- status ------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        def q():
            out = {}
            for table in ("sessions", "messages", "tasks", "file_versions", "spool_ledger"):
                out[table] = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return out
        out = await self._db(q)
        out["spaces"] = len(self.tree.spaces)
        out["skills"] = len(self.tree.skills)
        out["files"] = len(self.tree.file_ids)
        return out

    async def checkpoint(self) -> None:
        await self._db(lambda: self.con.execute("CHECKPOINT"))


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
