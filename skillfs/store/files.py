"""Files inside skills: every change a version; moves, folders, history, bulk import."""

from __future__ import annotations

import logging
import uuid

import trio

from .. import names, skillmd
from ..errors import (
    Exists,
    Forbidden,
    Invalid,
    NotEmpty,
    NotFound,
    OutOfMemory,
    StaleVersion,
)
from .tree import FileNode, Skill, Space
from . import versions, writes
from .context import Service
from .events import (
    FileAdded,
    FileChanged,
    FileDropped,
    FileMoved,
    FileMovedOver,
    FileRemoved,
    FolderAdded,
    FolderMoved,
    FolderRemoved,
    TreeEvent,
)
from .rows import SKILL_MD, FileContent, FileRow, VersionRow, _json, now_ns, sha256


log = logging.getLogger("skillfs.store")

class Files(Service):
    """Files of skills, their versions and folders, and reading their content."""

    # -- files -------------------------------------------------------------------------

    def check_skill_md(self, skill: Skill, path: str, content: bytes) -> str | None:
        """Validate a SKILL.md write; return the new description, if it is one."""
        if path != SKILL_MD:
            return None
        return skillmd.parse(content, skill.name).description

    async def read_file(self, skill_id: str, path: str) -> FileContent:
        node = self.ctx.skill(skill_id).files.get(path)
        if node is None:
            raise NotFound(f"no file {path!r} in skill {self.ctx.skill(skill_id).name!r}")
        return FileContent(await self.content(node), node.version, node.sha256, node.path)

    async def content(self, node: FileNode | FileRow) -> bytes:
        if node.version == 0:
            return b""
        key = (node.id, node.version)
        data = self.cache.get(key)
        if data is None:
            # Whoever reads one file of a folder (grep, find -exec, an agent) usually reads
            # the rest: fetch the folder's uncached files in the same query.
            keys = [key] + self._uncached_neighbours(node)
            self._fetched_upto = max(k[0] for k in keys)
            found = await self._db(self.read_versions, keys)
            for k, content in found.items():
                self.cache.put(k, content)
            data = found.get(key)
            if data is None:
                raise NotFound(f"file {node.id} has no version {node.version}")
        return data

    _PREFETCH_FILES = 128
    _fetched_upto = -10  # the highest file id the last cold read fetched
    _missed_folder: tuple[str, str] | None = None  # (skill id, folder) of the last miss
    # A preload slice: files of neighbouring ids, read in one scan on a cursor of its own.
    # Large enough that a scan pays off, small enough that a write's checkpoint or a
    # compaction does not wait long for it.
    _SLICE_FILES = 2048
    _SLICE_BYTES = 8 << 20

    async def preload(self) -> int:
        """Fill the content cache with current file contents, in file id order (creation
        order: a skill's files are neighbours), until it is full: a fresh mount then answers
        its first reads without DuckDB. Returns the number of files loaded. Each slice is
        one scan aside from the worker thread (cold reads and writes never queue behind
        it); if every file would not fit as it is, a slice is compressed on a third thread
        while the next one is scanned."""
        self.cache.compress = (sum(n.size for n in self.tree.file_ids.values())
                               > self.cache.max_bytes)
        loaded = 0
        send, receive = trio.open_memory_channel[dict](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._scan_slices, send)
            async with receive:
                async for found in receive:
                    packed = (await trio.to_thread.run_sync(self._pack_all, found)
                              if self.cache.compress else self._pack_all(found))
                    loaded += self._keep_preloaded(packed)
                    if self.cache.full():
                        nursery.cancel_scope.cancel()
        if loaded:  # what DuckDB cached of the scans is in the content cache now
            await self.ctx.db.run(self.ctx.db.drop_buffers)
        return loaded

    async def _scan_slices(self, send: trio.MemorySendChannel[dict]) -> None:
        async with send:
            for keys in self._preload_slices():
                try:
                    # On the worker thread, between other statements: DuckDB crashed
                    # (SIGSEGV) scanning on a cursor of its own while a write checkpointed
                    # under a small memory limit.
                    found = await self.ctx.db.run(self._scan, self.ctx.db.con, keys)
                except OutOfMemory as e:
                    # A small `duckdb_memory`: what the scans would take, reads and writes
                    # need more. The rest is read when it is asked for.
                    log.info("the preload stops: %s", e.message)
                    return
                await send.send(found)

    def _preload_slices(self):
        """Keys of uncached current files in id order, a slice at a time; a file larger
        than what is left of the cache is passed over (it would evict what came before)."""
        keys: list[tuple[int, int]] = []
        room = self._SLICE_BYTES
        for fid in sorted(self.tree.file_ids):
            node = self.tree.file_ids.get(fid)
            if node is None or not node.version or (fid, node.version) in self.cache:
                continue
            if node.size > self.cache.max_bytes - self.cache.bytes:
                continue
            if keys and (len(keys) == self._SLICE_FILES or node.size > room):
                yield keys
                keys, room = [], self._SLICE_BYTES
            keys.append((fid, node.version))
            room -= node.size
        if keys:
            yield keys

    @staticmethod
    def _scan(cursor, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return versions.read_contents(cursor, keys, scan=True)

    def _pack_all(self, found: dict[tuple[int, int], bytes]
                  ) -> dict[tuple[int, int], tuple[bytes, bool]]:
        # On a thread of its own when compressing: zstd releases the GIL meanwhile.
        return {k: self.cache.pack(content) for k, content in found.items()}

    def _keep_preloaded(self, packed: dict[tuple[int, int], tuple[bytes, bool]]) -> int:
        kept = 0
        for (fid, version), entry in packed.items():
            node = self.tree.file_ids.get(fid)
            # Not a version written meanwhile, nor over what a read cached meanwhile.
            if node is None or node.version != version or (fid, version) in self.cache:
                continue
            if self.cache.bytes + len(entry[0]) > self.cache.max_bytes:
                break  # it would evict what the preload loaded before
            self.cache.put_packed((fid, version), entry)
            kept += 1
        return kept

    def _uncached_neighbours(self, node: FileNode | FileRow) -> list[tuple[int, int]]:
        """Uncached files likely read next: the rest of the folder, then the files created
        after this one (a tree walk meets them next: ids follow creation order). Nothing
        for a reader picking files here and there: its first miss in a folder that does
        not follow the last one fetches only the file (a third of a folder's query, while
        the preload has not reached it); a second miss there, or a walk, the rest."""
        skill = self.tree.skills.get(node.skill_id)
        if skill is None:
            return []
        folder = (node.skill_id, node.path.rpartition("/")[0])
        walking = self._fetched_upto < node.id <= self._fetched_upto + 2
        again, self._missed_folder = folder == self._missed_folder, folder
        if not (walking or again):
            return []
        budget = self.cache.max_bytes // 8
        out: list[tuple[int, int]] = []

        def take(other: FileNode | None) -> bool:
            nonlocal budget
            if other is None or other is node or not other.version:
                return True
            k = (other.id, other.version)
            if k in self.cache:
                return True
            budget -= other.size
            if budget < 0 or len(out) >= self._PREFETCH_FILES:
                return False
            out.append(k)
            return True

        for sib in skill.children.get(folder[1], {}).values():
            if not take(sib):
                return out
        # Only a walk gets more: a miss just past what the previous miss fetched. A reader
        # picking files here and there would pay for files it never reads.
        if walking:
            files = self.tree.file_ids
            for fid in range(node.id + 1, node.id + 1 + self._PREFETCH_FILES):
                if not take(files.get(fid)):
                    break
        return out

    def read_versions(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return versions.read_contents(self.con, keys)

    async def write_file(self, skill_id: str, path: str, content: bytes, *, author: str,
                         reason: str = "", session_id: str | None = None,
                         task_id: str | None = None,
                         expect_version: int | None = None) -> FileRow:
        """Create or replace a file as a new version."""
        names.check_rel_path(path)
        self.ctx.check_size(content)
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            node, events = await self._write_locked(skill, path, content, author, reason,
                                                    session_id, task_id, expect_version)
        await self.ctx.publish(*events)
        return FileRow.of(node)

    async def _write_locked(self, skill: Skill, path: str, content: bytes, author: str,
                            reason: str, session_id: str | None, task_id: str | None,
                            expect_version: int | None) -> tuple[FileNode, list[TreeEvent]]:
        new_desc = self.check_skill_md(skill, path, content)
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
            new = FileNode(reserved.id if reserved else self.ctx.alloc_file_id(), skill.id, path, 1,
                           len(content), digest, t, t)

            new_dirs = [d for d in self._parents(path) if d not in skill.children]

            def sql(con):
                writes.new_file(con, new, content, author, reason, session_id, task_id)
                # Folders a file implies are kept, as a real filesystem keeps them.
                for d in new_dirs:
                    con.execute("INSERT INTO skill_dirs VALUES (?,?,?)", [skill.id, d, t])
                if new_desc is not None:
                    con.execute("UPDATE skills SET description = ?, updated_ns = ? WHERE id = ?",
                                [new_desc, t, skill.id])
        else:
            new = FileNode(node.id, skill.id, path, node.version + 1, len(content), digest, t,
                           node.ctime_ns)
            prev = self.cache.get((node.id, node.version), touch=False)

            def sql(con):
                writes.bump(con, new.id, new.version)
                writes.version(con, new, content, author, reason, session_id, task_id, False,
                               prev)
                if new_desc is not None:
                    con.execute("UPDATE skills SET description = ?, updated_ns = ? WHERE id = ?",
                                [new_desc, t, skill.id])
        await self._write(sql)
        events: list[TreeEvent] = []
        if reserved is not None:
            reserved.version, reserved.size, reserved.sha256, reserved.mtime_ns = (
                1, new.size, new.sha256, t)
            new = reserved
            events.append(FileChanged(skill.id, path, new.id, author))
        elif node is None:
            self.tree.add_file(new)
            events.append(FileAdded(skill.id, path, new.id, author))
            events += [FolderAdded(skill.id, d, author) for d in new_dirs]
        else:
            # Keep the node: the mount knows this file by it.
            node.version, node.size, node.sha256, node.mtime_ns = (
                new.version, new.size, new.sha256, new.mtime_ns)
            new = node
            events.append(FileChanged(skill.id, path, new.id, author))
        self.cache.put((new.id, new.version), content)
        if new_desc is not None:
            skill.description = new_desc
        skill.updated_ns = t
        return new, events

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

    async def reserve_file(self, skill_id: str, path: str) -> FileNode:
        """Make an empty file visible in the tree before its first version is committed
        (a file created through the mount exists from `create` until its first close)."""
        names.check_rel_path(path)
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            if path in skill.files:
                raise Exists(f"{path!r} already exists")
            self._check_path_free(skill, path, None)
            if path.rpartition("/")[0] not in skill.children:
                raise NotFound(f"no folder for {path!r}")
            t = now_ns()
            node = FileNode(self.ctx.alloc_file_id(), skill.id, path, 0, 0, sha256(b""), t, t)
            self.tree.add_file(node)
            return node

    async def drop_reserved(self, node: FileNode) -> None:
        """Forget a created file whose first version never committed (its writer failed).
        The kernel is told before this returns, so the writer's close() is followed by a
        name that is gone."""
        if node.version != 0 or node.deleted:
            return
        self.tree.remove_file(node, now_ns())
        await self.ctx.publish(FileDropped(node.skill_id, node.path, node.id))

    async def delete_file(self, skill_id: str, path: str, *, author: str, reason: str = "delete",
                          session_id: str | None = None, task_id: str | None = None,
                          expect_version: int | None = None) -> None:
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            node = skill.files.get(path)
            if node is None:
                raise NotFound(f"no file {path!r} in skill {skill.name!r}")
            if path == SKILL_MD:
                raise Forbidden("SKILL.md cannot be deleted; delete the skill instead")
            if expect_version is not None and expect_version != node.version:
                raise StaleVersion(f"{path!r} is at version {node.version}, not {expect_version}")
            t = now_ns()
            if node.version:  # a reserved file (version 0) was never written to the database
                await self._write(lambda con: writes.delete_version(
                    con, node, t, author, reason, session_id, task_id))
            self.tree.remove_file(node, t)
            skill.updated_ns = t
        await self.ctx.publish(FileRemoved(skill.id, path, node.id, author))

    async def move_file(self, skill_id: str, old: str, new: str, *, author: str,
                        reason: str = "", session_id: str | None = None,
                        task_id: str | None = None, replace: bool = True) -> FileRow:
        """Rename a file inside a skill. Over an existing file, the target keeps its history
        and gains the source's content as a new version (an editor's save); the source is
        recorded as deleted."""
        names.check_rel_path(new)
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            node = skill.files.get(old)
            if node is None:
                raise NotFound(f"no file {old!r} in skill {skill.name!r}")
            if old == new:
                return FileRow.of(node)
            if old == SKILL_MD:
                raise Forbidden("SKILL.md cannot be renamed")
            target = skill.files.get(new)
            if node.version == 0 and target is None:
                # Not committed yet: only the tree knows it.
                self._check_path_free(skill, new, None)
                self.tree.remove_file(node, now_ns())
                node.deleted, node.path = False, new
                self.tree.add_file(node)
                return FileRow.of(node)
            if target is not None and not replace:
                raise Exists(f"{new!r} already exists")
            self._check_path_free(skill, new, target)
            reason = reason or f"rename {old} -> {new}"
            if target is not None:
                content = await self.content(node)
                new_desc = self.check_skill_md(skill, new, content)
                t = now_ns()
                digest = node.sha256
                upd = FileNode(target.id, skill.id, new, target.version + 1, node.size, digest,
                               t, target.ctime_ns)
                prev = self.cache.get((target.id, target.version), touch=False)

                def sql(con):
                    writes.bump(con, upd.id, upd.version)
                    writes.version(con, upd, content, author, reason, session_id, task_id,
                                   False, prev)
                    writes.delete_version(con, node, t, author, reason, session_id, task_id)
                    if new_desc is not None:
                        con.execute("UPDATE skills SET description = ? WHERE id = ?",
                                    [new_desc, skill.id])
                await self._write(sql)
                self.tree.remove_file(node, t)
                target.version, target.size, target.sha256, target.mtime_ns = (
                    upd.version, upd.size, upd.sha256, t)
                self.cache.put((target.id, target.version), content)
                if new_desc is not None:
                    skill.description = new_desc
                result = target
                event: TreeEvent = FileMovedOver(skill.id, old, new, node.id, target.id,
                                                 author)
            else:
                content = await self.content(node)
                self.check_skill_md(skill, new, content)
                t = now_ns()
                moved = FileNode(node.id, skill.id, new, node.version + 1, node.size,
                                 node.sha256, t, node.ctime_ns)

                def sql(con):
                    writes.bump(con, node.id, moved.version, new)
                    writes.version(con, moved, content, author, reason, session_id, task_id,
                                   False, content)
                await self._write(sql)
                self.tree.remove_file(node, t)
                node.deleted = False
                node.path, node.version, node.mtime_ns = new, moved.version, t
                self.tree.add_file(node)
                self.cache.put((node.id, node.version), content)
                result = node
                event = FileMoved(skill.id, old, new, node.id, author)
            skill.updated_ns = t
        await self.ctx.publish(event)
        return FileRow.of(result)

    async def make_dir(self, skill_id: str, path: str, author: str = "api") -> None:
        names.check_rel_path(path)
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            if path in skill.children or path in skill.files:
                raise Exists(f"{path!r} already exists")
            self._check_path_free(skill, path + "/x", None)
            t = now_ns()
            await self._write(lambda con: con.execute(
                "INSERT INTO skill_dirs VALUES (?,?,?)", [skill.id, path, t]))
            skill.add_dir(path, t)
        await self.ctx.publish(FolderAdded(skill.id, path, author))

    async def remove_dir(self, skill_id: str, path: str, author: str = "api") -> None:
        async with self._lock:
            skill = self.ctx.skill(skill_id)
            if path not in skill.children or not path:
                raise NotFound(f"no folder {path!r}")
            if skill.children[path]:
                raise NotEmpty(f"folder {path!r} is not empty")
            await self._write(lambda con: con.execute(
                "DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?", [skill.id, path]))
            skill.remove_dir(path, now_ns())
        await self.ctx.publish(FolderRemoved(skill.id, path, author))

    async def move_dir(self, skill_id: str, old: str, new: str, author: str = "api") -> None:
        """Rename a sub-folder of a skill with everything in it."""
        names.check_rel_path(new)
        async with self._lock:
            skill = self.ctx.skill(skill_id)
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
                # The empty folder moved over goes first: the moved one takes its path.
                if new in skill.children:
                    con.execute("DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?",
                                [skill.id, new])
                for d in moved_dirs:
                    con.execute("DELETE FROM skill_dirs WHERE skill_id = ? AND path = ?",
                                [skill.id, d])
                    con.execute("INSERT INTO skill_dirs VALUES (?,?,?)",
                                [skill.id, new + d[len(old):], t])
                for n in moved_files:
                    moved = FileNode(n.id, skill.id, new + n.path[len(old):], n.version + 1,
                                     n.size, n.sha256, t, n.ctime_ns)
                    writes.bump(con, n.id, moved.version, moved.path)
                    writes.version(con, moved, contents[n.id], author,
                                   f"rename {old} -> {new}", None, None, False,
                                   contents[n.id])
            await self._write(sql)
            for n in moved_files:
                self.tree.remove_file(n, t)
            for d in sorted(moved_dirs, reverse=True):
                skill.remove_dir(d, t)
            if new in skill.children:
                skill.remove_dir(new, t)
            for d in sorted(moved_dirs):
                skill.add_dir(new + d[len(old):], t)
            for n in moved_files:
                n.deleted = False
                n.path, n.version, n.mtime_ns = new + n.path[len(old):], n.version + 1, t
                self.tree.add_file(n)
                self.cache.put((n.id, n.version), contents[n.id])
        await self.ctx.publish(FolderMoved(skill.id, old, new, author))

    def find_file_id(self, skill: Skill, path: str) -> int:
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
        skill = self.ctx.skill(skill_id)

        def q():
            fid = self.find_file_id(skill, path)
            return self.con.execute(
                "SELECT version, path, sha256, size, author, reason, session_id, task_id, "
                "at_ns, deleted, purged_by, purged_at_ns, purge_reason FROM file_versions "
                "WHERE file_id = ? ORDER BY version",
                [fid]).fetchall()
        return [VersionRow(*r) for r in await self._db(q)]

    async def read_version(self, skill_id: str, path: str, version: int) -> bytes:
        """The content of one version of the file at `path` (or of the last file that had
        that path)."""
        skill = self.ctx.skill(skill_id)

        def q() -> bytes | None:
            fid = self.find_file_id(skill, path)
            row = self.con.execute(
                "SELECT deleted, purged_by, purged_at_ns, purge_reason FROM file_versions "
                "WHERE file_id = ? AND version = ?", [fid, version]).fetchone()
            if row is None:
                raise NotFound(f"{path!r} has no version {version}")
            if row[2] is not None:
                raise Invalid(f"version {version} of {path!r} was {versions.tombstone(*row[1:])}")
            if row[0]:
                return None
            return versions.read_contents(self.con, [(fid, version)])[(fid, version)]
        content = await self._db(q)
        if content is None:
            raise Invalid(f"version {version} of {path!r} is a deletion")
        return content

    async def revert_file(self, skill_id: str, path: str, version: int,
                          author: str = "cli") -> tuple[FileRow, bool]:
        """Make an old version current again, as a new version (history is kept). Returns
        the file and whether anything changed: reverting to the current content is a no-op."""
        skill = self.ctx.skill(skill_id)
        content = await self.read_version(skill_id, path, version)
        node = skill.files.get(path)
        if node is not None:
            if node.version and node.sha256 == sha256(content):
                return FileRow.of(node), False
            return await self.write_file(skill_id, path, content, author=author,
                                         reason=f"revert to version {version}"), True
        fid = await self._db(self.find_file_id, skill, path)
        node = await self.undelete(skill, fid, path, content, version, author)
        return FileRow.of(node), True

    async def undelete(self, skill: Skill, fid: int, path: str, content: bytes, version: int,
                       author: str, reason: str | None = None) -> FileNode:
        self.ctx.check_size(content)
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
                writes.version(con, node, content, author,
                               reason or f"revert to version {version}", None, None, False)
            await self._write(sql)
            self.tree.add_file(node)
            self.cache.put((node.id, node.version), content)
        await self.ctx.publish(FileAdded(skill.id, path, node.id, author))
        return node

    # -- bulk import (daemon not running) ------------------------------------------------

    def import_tree(self, src: str, author: str = "cli", progress=None) -> dict[str, int]:
        """Import a directory laid out like the mount (SPACE/SKILL/files) in a few large
        transactions. Synchronous: for use before the daemon starts, not inside it."""
        import os
        from pathlib import Path

        root = Path(src)
        t = now_ns()
        counts = {"spaces": 0, "skills": 0, "files": 0, "bytes": 0}
        space_rows, skill_rows, link_rows, dir_rows, file_rows, version_rows, chunk_rows = (
            [] for _ in range(7))
        later: list[tuple] = []  # tree changes, made after the commit
        for space_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            space = self.tree.space_names.get(space_dir.name)
            if space is None:
                names.check_space_name(space_dir.name)
                space = Space(str(uuid.uuid4()), space_dir.name, None, {}, t, t)
                space_rows.append([space.id, space.name, None, _json({}), t, t])
                later.append((self.tree.add_space, space))
                counts["spaces"] += 1
            for skill_dir in sorted(p for p in space_dir.iterdir() if p.is_dir()):
                if skill_dir.name in space.skills:
                    raise Exists(f"{space.name}/{skill_dir.name} already exists")
                md_path = skill_dir / SKILL_MD
                if not md_path.is_file():
                    raise Invalid(f"{skill_dir} has no SKILL.md")
                parsed = skillmd.parse(md_path.read_bytes(), skill_dir.name)
                skill = Skill(str(uuid.uuid4()), parsed.name, parsed.description, {}, t, t)
                later += [(self.tree.add_skill, skill), (self.tree.link_skill, space, skill, t)]
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
                        self.ctx.check_size(data)
                        node = FileNode(self.ctx.alloc_file_id(), skill.id, rel, 1, len(data),
                                        sha256(data), t, t)
                        file_rows.append([node.id, skill.id, rel, 1, False, t])
                        pieces = versions.split(data) or []
                        version_rows.append([node.id, 1, rel, None if pieces else data,
                                             node.sha256, len(data), author, "import", None,
                                             None, t, False, 0, 0, len(pieces), None,
                                             None, None])
                        chunk_rows += [[node.id, 1, i, p] for i, p in enumerate(pieces)]
                        later.append((self.tree.add_file, node))
                        counts["files"] += 1
                        counts["bytes"] += len(data)
                if progress is not None:
                    progress(counts)

        def sql(con):
            self.ctx.db.insert_many(con, "spaces", 6, space_rows)
            self.ctx.db.insert_many(con, "skills", 7, skill_rows)
            self.ctx.db.insert_many(con, "space_skills", 3, link_rows)
            self.ctx.db.insert_many(con, "skill_dirs", 3, dir_rows)
            self.ctx.db.insert_many(con, "files", 6, file_rows)
            self.ctx.db.insert_many(con, "file_versions", versions.COLUMNS, version_rows)
            self.ctx.db.insert_many(con, "version_chunks", 4, chunk_rows)
        self.ctx.db.tx(sql)
        for apply, *args in later:  # the tree learns of it only once it is committed
            apply(*args)
        self.ctx.db.checkpoint()
        return counts
