"""The change feed: one daemon's tree kept current with what other daemons commit.

Several daemons may share one PostgreSQL database, each serving reads from its own tree and
content cache. Triggers (schema 7) append a row per changed space or skill to `changes` in
the writing transaction, numbered in commit order and naming the writer (its connections'
`skillfs.writer`), and NOTIFY at its commit. A listener thread waits for the notifications
on a connection of its own and wakes `Feed.run` on the trio thread, which reads the changes
after the last it applied and the rows of every space and skill they name, all in one
snapshot, brings the tree to match them (re-read rows, not replayed payloads: the result is
the database's state whatever the order of what led to it), and publishes the events a
local change would, so the mount tells the kernel. The content cache is keyed by (file,
version): a new version is a miss, never stale content. A daemon's own changes are skipped:
its tree has them already.

A disconnected listener gets no notifications (PostgreSQL does not queue them): after a lost
connection, at start, and every few seconds anyway, the feed reads from the last number it
applied. Rows older than an hour are trimmed; a daemon that was behind the trimmed part
re-reads every space and skill.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
import trio
from psycopg.conninfo import make_conninfo

from ..errors import SkillfsError
from ..schema import FEED_CHANNEL
from .context import Context
from .postgres import NETWORK_OPTIONS
from .events import (
    FileAdded,
    FileChanged,
    FileDropped,
    FileMoved,
    FileRemoved,
    FolderAdded,
    FolderRemoved,
    SkillAdded,
    SkillRemoved,
    SpaceAdded,
    SpaceRemoved,
    SpaceRenamed,
    TreeEvent,
)
from .rows import _unjson, now_ns
from .tree import FileNode, Skill, Space

log = logging.getLogger("skillfs.store")

AUTHOR = "feed"  # the author of what another daemon changed, to subscribers
POLL_SECONDS = 2.0  # a look at the feed without a notification: one lost is late, not lost
TRIM_SECONDS = 600.0
KEEP = "1 hour"  # rows of the feed kept for daemons that were away
LISTEN_TIMEOUT = 1.0  # how often the listener looks whether it should stop
RECONNECT_MAX = 5.0


@dataclass
class _Snapshot:
    """What the database held at one moment, for the spaces and skills changed."""

    last: int
    space_ids: set[str]
    skill_ids: set[str]
    spaces: dict[str, tuple] = field(default_factory=dict)
    skills: dict[str, tuple] = field(default_factory=dict)
    links: dict[str, dict[str, int]] = field(default_factory=dict)  # skill -> space -> ns
    dirs: dict[str, set[str]] = field(default_factory=dict)
    files: dict[str, dict[int, tuple]] = field(default_factory=dict)


class Feed:
    """Applies the changes other daemons commit to this daemon's tree."""

    def __init__(self, ctx: Context, url: str, writer: str) -> None:
        self.ctx = ctx
        self._conninfo = make_conninfo(url, **NETWORK_OPTIONS)
        self.writer = writer
        self.last = 0  # the number of the last change applied
        self.stats = {"applied": 0, "catch_ups": 0}
        self._wake = trio.Event()

    def start_at(self, con: Any) -> None:
        """Before the tree is loaded: what commits after the loaded state is applied."""
        self.last = con.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchall()[0][0]

    def poke(self) -> None:
        """Look at the feed now (a notification came, or a write lost a race)."""
        self._wake.set()

    async def run(self) -> None:
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()
        listener = threading.Thread(target=self._listen, args=(token, stop), daemon=True,
                                    name="skillfs-feed")
        listener.start()
        next_trim = trio.current_time()
        try:
            while True:
                with trio.move_on_after(POLL_SECONDS):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._quietly(self.catch_up)
                if trio.current_time() >= next_trim:
                    next_trim = trio.current_time() + TRIM_SECONDS
                    await self._quietly(self._trim)
        finally:
            stop.set()

    @staticmethod
    async def _quietly(step) -> None:
        """One look at the feed; what fails is tried again at the next, the daemon goes on
        (applying changes twice is harmless: rows are re-read, not replayed)."""
        try:
            await step()
        except SkillfsError as e:  # the database away
            log.info("change feed: %s", e.message)
        except Exception:
            log.exception("change feed: applying changes failed")

    # -- the listener thread ---------------------------------------------------------------

    def _listen(self, token: trio.lowlevel.TrioToken, stop: threading.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as con:
                    con.execute(f"LISTEN {FEED_CHANNEL}")
                    delay = 0.1
                    self._poke_from_thread(token)  # whatever came while not listening
                    while not stop.is_set():
                        for _ in con.notifies(timeout=LISTEN_TIMEOUT):
                            self._poke_from_thread(token)
            except psycopg.Error as e:
                log.info("change feed: listening again after: %s", str(e).strip()[:200])
            except trio.RunFinishedError:
                return
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _poke_from_thread(self, token: trio.lowlevel.TrioToken) -> None:
        trio.from_thread.run_sync(self.poke, trio_token=token)

    # -- catching up -------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Apply every change committed after the last applied, then tell subscribers."""
        async with self.ctx.lock:
            known = (set(self.ctx.tree.spaces), set(self.ctx.tree.skills))
            snap = await self.ctx.read(self._read, self.last, known)
            events = self._apply(snap)
            self.last = snap.last
        if events:
            self.stats["catch_ups"] += 1
            self.stats["applied"] += len(events)
        await self.ctx.publish(*events)

    def _read(self, last: int, known: tuple[set[str], set[str]]) -> _Snapshot:
        """On a worker thread, in one snapshot: the changes after `last` and the rows of
        what they name."""
        con = self.ctx.db.con
        [(upto, trimmed)] = con.execute(
            "SELECT (SELECT coalesce(max(seq), ?) FROM changes), upto FROM changes_trimmed",
            [last]).fetchall()
        snap = _Snapshot(max(last, upto), set(), set())
        if trimmed > last:  # changes were trimmed unseen: everything may have changed
            log.warning("change feed: behind its trimmed part; re-reading every skill")
            snap.space_ids = known[0] | {r[0] for r in con.execute(
                "SELECT id FROM spaces").fetchall()}
            snap.skill_ids = known[1] | {r[0] for r in con.execute(
                "SELECT id FROM skills").fetchall()}
        # another daemon's (or a writer with no name, such as psql), each named once
        for kind, key in con.execute(
                "SELECT DISTINCT kind, id FROM changes WHERE seq > ? AND seq <= ? "
                "AND writer IS DISTINCT FROM ?", [last, snap.last, self.writer]).fetchall():
            (snap.space_ids if kind == "space" else snap.skill_ids).add(key)
        self._read_rows(con, snap)
        return snap

    @staticmethod
    def _read_rows(con: Any, snap: _Snapshot) -> None:
        spaces, skills = sorted(snap.space_ids), sorted(snap.skill_ids)
        for row in con.execute('SELECT id, name, "user", meta, created_ns, updated_ns '
                               "FROM spaces WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                               [spaces]).fetchall():
            snap.spaces[row[0]] = row
        if not skills:
            return
        within = "IN (SELECT unnest(?::VARCHAR[]))"
        for row in con.execute('SELECT id, name, description, meta, created_ns, updated_ns, '
                               f'"user" FROM skills WHERE id {within}', [skills]).fetchall():
            snap.skills[row[0]] = row
        for space_id, skill_id, created in con.execute(
                f"SELECT space_id, skill_id, created_ns FROM space_skills WHERE skill_id "
                f"{within}", [skills]).fetchall():
            snap.links.setdefault(skill_id, {})[space_id] = created
        for skill_id, path in con.execute(
                f"SELECT skill_id, path FROM skill_dirs WHERE skill_id {within}",
                [skills]).fetchall():
            snap.dirs.setdefault(skill_id, set()).add(path)
        for fid, skill_id, *rest in con.execute(
                "SELECT f.id, f.skill_id, f.path, f.version, v.size, v.sha256, v.at_ns, "
                "f.created_ns FROM files f JOIN file_versions v ON v.file_id = f.id "
                f"AND v.version = f.version WHERE NOT f.deleted AND f.skill_id {within}",
                [skills]).fetchall():
            snap.files.setdefault(skill_id, {})[fid] = tuple(rest)

    async def _trim(self) -> None:
        def sql(con):
            con.execute(
                f"WITH gone AS (DELETE FROM changes WHERE at < now() - interval '{KEEP}' "
                "RETURNING seq) UPDATE changes_trimmed SET upto = greatest(upto, "
                "(SELECT max(seq) FROM gone))")
        await self.ctx.write(sql)

    # -- applying (on the trio thread, holding the store's lock) ---------------------------

    def _apply(self, snap: _Snapshot) -> list[TreeEvent]:
        events: list[TreeEvent] = []
        # gone and renamed spaces first: a new one may take a name they had
        order = sorted(snap.space_ids, key=lambda sid: sid in snap.spaces)
        for space_id in order:
            events += self._space(space_id, snap.spaces.get(space_id))
        # deleted skills first: a new one may take a name they had in a space
        for skill_id in sorted(snap.skill_ids, key=lambda kid: (kid in snap.skills, kid)):
            events += self._skill(skill_id, snap)
        return events

    def _space(self, space_id: str, row: tuple | None) -> list[TreeEvent]:
        tree = self.ctx.tree
        space = tree.spaces.get(space_id)
        if row is None:
            if space is None:
                return []
            tree.remove_space(space, now_ns())
            return [SpaceRemoved(space_id, space.name, AUTHOR)]
        _, name, user, meta, created, updated = row
        if space is None:
            tree.add_space(Space(space_id, name, user, _unjson(meta, {}), created, updated))
            return [SpaceAdded(space_id, name, AUTHOR)]
        space.user, space.meta = user, _unjson(meta, {})
        space.updated_ns = max(space.updated_ns, updated)
        if space.name == name:
            return []
        old = space.name
        tree.rename_space(space, name, now_ns())
        return [SpaceRenamed(space_id, old, name, AUTHOR)]

    def _skill(self, skill_id: str, snap: _Snapshot) -> list[TreeEvent]:
        tree = self.ctx.tree
        row = snap.skills.get(skill_id)
        skill = tree.skills.get(skill_id)
        if row is None:
            return self._skill_gone(skill) if skill is not None else []
        _, name, description, meta, created, updated, user = row
        if skill is None:
            skill = Skill(skill_id, name, description, _unjson(meta, {}), created, updated,
                          user=user)
            tree.add_skill(skill)
        skill.description, skill.meta, skill.user = description, _unjson(meta, {}), user
        skill.updated_ns = max(skill.updated_ns, updated)
        links = snap.links.get(skill_id, {})
        events: list[TreeEvent] = []
        for space_id in sorted(skill.spaces - set(links)):
            tree.unlink_skill(tree.spaces[space_id], skill)
            events.append(SkillRemoved(space_id, skill_id, skill.name, AUTHOR))
        events += _FilesDiff(tree, skill, snap.dirs.get(skill_id, set()),
                             snap.files.get(skill_id, {})).apply()
        for space_id, linked in sorted(links.items()):
            space = tree.spaces.get(space_id)
            if space is not None and space_id not in skill.spaces:
                tree.link_skill(space, skill, linked)
                events.append(SkillAdded(space_id, skill_id, skill.name, AUTHOR))
        return events

    def _skill_gone(self, skill: Skill) -> list[TreeEvent]:
        """Deleted elsewhere (into the trash): as a local delete leaves the tree."""
        tree = self.ctx.tree
        events: list[TreeEvent] = []
        for space_id in sorted(skill.spaces):
            tree.unlink_skill(tree.spaces[space_id], skill)
            events.append(SkillRemoved(space_id, skill.id, skill.name, AUTHOR))
        t = now_ns()
        for node in list(skill.files.values()):
            tree.remove_file(node, t)
        del tree.skills[skill.id]
        return events


class _FilesDiff:
    """A skill's folders and current files brought to what the database holds, keeping
    each surviving file's node (the mount knows a file by it) and the files this daemon
    reserved and has not written yet, unless another daemon took their name."""

    def __init__(self, tree, skill: Skill, dirs: set[str], files: dict[int, tuple]) -> None:
        self.tree, self.skill, self.dirs, self.files = tree, skill, dirs, files
        self.t = now_ns()
        self.events: list[TreeEvent] = []

    def apply(self) -> list[TreeEvent]:
        moved = self._remove_gone_and_moving()
        for path in sorted(self.dirs - set(self.skill.children)):
            self.skill.add_dir(path, self.t)
            self.events.append(FolderAdded(self.skill.id, path, AUTHOR))
        for fid, (path, version, size, digest, at, created) in sorted(self.files.items()):
            node = moved[fid][0] if fid in moved else self.tree.file_ids.get(fid)
            if node is None or fid in moved:
                self._place(fid, node, path, version, size, digest, at, created, moved)
            elif node.version != version:
                node.version, node.size, node.sha256, node.mtime_ns = version, size, digest, at
                self.events.append(FileChanged(self.skill.id, path, fid, AUTHOR))
        self._remove_empty_dirs()
        return self.events

    def _remove_gone_and_moving(self) -> dict[int, tuple[FileNode, str]]:
        """Files no longer there go (FileRemoved); files at another path leave the tree to
        come back at it. Returns the moving files' nodes and old paths by id."""
        moved: dict[int, tuple[FileNode, str]] = {}
        for node in list(self.skill.files.values()):
            row = self.files.get(node.id)
            if row is None and node.version == 0:
                continue  # reserved here, its first version not written yet
            if row is None:
                self.tree.remove_file(node, self.t)
                self.events.append(FileRemoved(self.skill.id, node.path, node.id, AUTHOR))
            elif row[0] != node.path:
                moved[node.id] = (node, node.path)
                self.tree.remove_file(node, self.t)
        return moved

    def _place(self, fid: int, node: FileNode | None, path: str, version: int, size: int,
               digest: str, at: int, created: int,
               moved: dict[int, tuple[FileNode, str]]) -> None:
        taken = self.skill.files.get(path)
        if taken is not None:  # a reservation of ours whose name another daemon took
            self.tree.remove_file(taken, self.t)
            self.events.append(FileDropped(self.skill.id, path, taken.id))
        if node is None:
            node = FileNode(fid, self.skill.id, path, version, size, digest, at, created)
            self.tree.add_file(node)
            self.events.append(FileAdded(self.skill.id, path, fid, AUTHOR))
            return
        node.deleted = False
        node.path, node.version, node.size, node.sha256, node.mtime_ns = (
            path, version, size, digest, at)
        self.tree.add_file(node)
        self.events.append(FileMoved(self.skill.id, moved[fid][1], path, fid, AUTHOR))

    def _remove_empty_dirs(self) -> None:
        for path in sorted(set(self.skill.children) - self.dirs - {""}, reverse=True):
            if not self.skill.children[path]:
                self.skill.remove_dir(path, self.t)
                self.events.append(FolderRemoved(self.skill.id, path, AUTHOR))
