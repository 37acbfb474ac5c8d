"""The trash: what was deleted, and bringing it back.

Nothing is copied aside at deletion. A deleted file's versions stay in `file_versions`; a
deleted skill's or space's row waits in the `trash` table (schema migration 4). Listing is a
few queries over those, and a restore makes each thing current again as a new version, so
the deletion and the restore both stay in the history.

A skill comes back with the files deleted after its last other change: `rm -rf` unlinks a
skill's files one by one before its SKILL.md, and a restore should undo all of that, not
bring back files deleted long before. A space comes back with the skills deleted out of it
that are still in the trash, and those it held that live on in other spaces.

A file renamed over another is recorded as deleted too, but it lives on in the file it
replaced: such deletions are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Exists, Invalid, NotFound
from .tree import FileNode, Skill, Space
from . import writes
from .context import Context, Service
from .events import SkillAdded, SpaceAdded
from .files import Files
from .rows import SKILL_MD, _json, _unjson, now_ns
from .spaces import Spaces

_NOT_RENAME = "d.reason IS NULL OR d.reason NOT LIKE 'rename %'"

# The deleted files of a skill that a restore brings back (see the module docstring), with
# the last version each had.
_RUN = f"""
SELECT f.id, f.path, f.version, f.created_ns, l.version, l.sha256, l.size
FROM files f
JOIN file_versions d ON d.file_id = f.id AND d.version = f.version
JOIN file_versions l ON l.file_id = f.id AND l.version = (
    SELECT max(x.version) FROM file_versions x WHERE x.file_id = f.id AND NOT x.deleted)
WHERE f.skill_id = ? AND f.deleted AND ({_NOT_RENAME}) AND d.at_ns > coalesce((
    SELECT max(v.at_ns) FROM file_versions v JOIN files g ON g.id = v.file_id
    WHERE g.skill_id = ? AND NOT v.deleted), 0)
ORDER BY d.at_ns
"""

_DELETED_FILES = f"""
SELECT f.id, f.skill_id, f.path, d.author, d.at_ns, (
    SELECT max(x.version) FROM file_versions x WHERE x.file_id = f.id AND NOT x.deleted)
FROM files f JOIN file_versions d ON d.file_id = f.id AND d.version = f.version
WHERE f.deleted AND ({_NOT_RENAME})
ORDER BY d.at_ns
"""


@dataclass(frozen=True)
class TrashEntry:
    kind: str  # "space", "skill" or "file"
    path: str  # SPACE, SPACE/SKILL or SPACE/SKILL/FILE: what `restore` takes
    author: str
    at_ns: int
    version: int | None  # a file's last version; a skill's SKILL.md's
    files: int | None = None  # a skill's files that come back with it


@dataclass(frozen=True)
class _Trashed:
    kind: str
    id: str
    name: str
    row: dict
    links: list[str]
    author: str
    at_ns: int


class Trash(Service):
    """Listing what was deleted, and restoring it."""

    def __init__(self, ctx: Context, spaces: Spaces, files: Files) -> None:
        super().__init__(ctx)
        self.spaces = spaces
        self.files = files

    def _trashed(self, kind: str) -> list[_Trashed]:
        rows = self.con.execute(
            "SELECT kind, id, name, row, links, author, at_ns FROM trash WHERE kind = ? "
            "ORDER BY at_ns", [kind]).fetchall()
        return [_Trashed(k, i, n, _unjson(r, {}), _unjson(ln, []), a, t)
                for k, i, n, r, ln, a, t in rows]

    def _skill_run(self, skill_id: str) -> dict[str, tuple]:
        """The deleted files a restore of the skill brings back, by path."""
        return {r[1]: r for r in self.con.execute(_RUN, [skill_id, skill_id]).fetchall()}

    # -- listing -----------------------------------------------------------------------

    async def list_trash(self, space: str | None = None) -> list[TrashEntry]:
        """Deleted spaces, skills and files, oldest deletion first; with `space`, only what
        was deleted in or with the space of that name."""
        def q():
            spaces, skills = self._trashed("space"), self._trashed("skill")
            runs = {t.id: self._skill_run(t.id) for t in skills}
            return spaces, skills, runs, self.con.execute(_DELETED_FILES).fetchall()
        spaces, skills, runs, files = await self._db(q)
        names = {t.id: t.name for t in spaces}
        names.update({s.id: s.name for s in self.tree.spaces.values()})
        out = [TrashEntry("space", t.name, t.author, t.at_ns, None)
               for t in spaces if space in (None, t.name)]
        for t in skills:
            md = runs[t.id].get(SKILL_MD)
            for space_name in sorted(names.get(s, s) for s in t.links) or ["-"]:
                if space in (None, space_name):
                    out.append(TrashEntry("skill", f"{space_name}/{t.name}", t.author, t.at_ns,
                                          md[4] if md else None, len(runs[t.id])))
        out += self._deleted_files(files, space)
        return sorted(out, key=lambda e: e.at_ns)

    def _deleted_files(self, rows: list[tuple], space: str | None) -> list[TrashEntry]:
        latest: dict[tuple[str, str], tuple] = {}
        for row in rows:
            skill = self.tree.skills.get(row[1])
            if skill is None or row[5] is None:
                continue  # in a deleted skill (it comes back with it), or never written
            if row[2] not in skill.files and row[2] not in skill.children:
                latest[(skill.id, row[2])] = row
        out = []
        for (skill_id, path), (_, _, _, author, at, last) in latest.items():
            skill = self.tree.skills[skill_id]
            for space_id in sorted(skill.spaces):
                name = self.tree.spaces[space_id].name
                if space in (None, name):
                    out.append(TrashEntry("file", f"{name}/{skill.name}/{path}", author, at,
                                          last))
        return out

    # -- restoring ---------------------------------------------------------------------

    async def restore(self, path: str, author: str = "cli") -> dict:
        """Bring back a space (SPACE), a skill (SPACE/SKILL) or a file (SPACE/SKILL/FILE)
        from the trash, as new versions. Exists if its name is taken again."""
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            raise Invalid("restore what? Give SPACE, SPACE/SKILL or SPACE/SKILL/FILE")
        if len(parts) == 1:
            return await self.restore_space(parts[0], author)
        space = self.tree.space_names.get(parts[0])
        if space is None:
            trashed = any(t.name == parts[0] for t in await self._db(self._trashed, "space"))
            raise NotFound(f"no space {parts[0]!r}" + (
                f"; it is in the trash: restore it first (skillfs restore {parts[0]})"
                if trashed else ""))
        if len(parts) == 2:
            return await self.restore_skill(space, parts[1], author)
        return await self._restore_file(space, parts[1], "/".join(parts[2:]), author)

    async def _restore_file(self, space: Space, skill_name: str, path: str,
                            author: str) -> dict:
        skill = space.skills.get(skill_name)
        if skill is None:
            raise NotFound(f"no skill {skill_name!r} in space {space.name!r}; if it is in "
                           f"the trash, restore it first (skillfs restore "
                           f"{space.name}/{skill_name})")
        if path in skill.files or path in skill.children:
            raise Exists(f"{space.name}/{skill_name}/{path} exists again: move it away "
                         "first to restore the deleted one")

        def last_version() -> tuple[int, int]:
            fid = self.files.find_file_id(skill, path)
            row = self.con.execute(
                "SELECT max(version) FROM file_versions WHERE file_id = ? AND NOT deleted",
                [fid]).fetchall()[0]
            if row[0] is None:
                raise NotFound(f"{path!r} has no version to restore")
            return fid, row[0]
        fid, version = await self._db(last_version)
        content = await self.files.read_version(skill.id, path, version)
        node = await self.files.undelete(skill, fid, path, content, version, author,
                                    reason=f"restore version {version}")
        return {"kind": "file", "path": f"{space.name}/{skill_name}/{path}",
                "version": node.version, "restored_version": version}

    async def restore_skill(self, space: Space, name: str, author: str = "cli") -> dict:
        """Bring a deleted skill back into `space`, with the files its deletion removed."""
        if name in space.skills:
            raise Exists(f"space {space.name!r} has a skill named {name!r} again: delete or "
                         "rename that one first")
        found = [t for t in await self._db(self._trashed, "skill")
                 if t.name == name and (space.id in t.links or not t.links)]
        if not found:
            raise NotFound(f"no skill {name!r} of space {space.name!r} in the trash")
        trashed = found[-1]
        async with self._lock:
            if name in space.skills or self.ctx.space(space.id) is not space:
                raise Exists(f"space {space.name!r} has a skill named {name!r} again")
            skill, nodes, sources = await self._db(self._plan_restore, trashed)
            found = await self._db(self.files.read_versions, list(sources.values()))
            contents = {fid: found[key] for fid, key in sources.items()}
            t = now_ns()
            for n in nodes:
                n.mtime_ns = t
            await self._write(lambda con: self._sql_restore_skill(
                con, space, skill, trashed, nodes, contents, author, t))
            self.tree.add_skill(skill)
            for d in trashed.row.get("dirs", []):
                skill.add_dir(d, t)
            for n in nodes:
                self.tree.add_file(n)
                self.cache.put((n.id, n.version), contents[n.id])
            self.tree.link_skill(space, skill, t)
        await self.ctx.publish(SkillAdded(space.id, skill.id, name, author))
        return {"kind": "skill", "path": f"{space.name}/{name}", "files": len(nodes)}

    def _plan_restore(self, trashed: _Trashed
                      ) -> tuple[Skill, list[FileNode], dict[int, tuple[int, int]]]:
        run = self._skill_run(trashed.id)
        if SKILL_MD not in run:
            raise Invalid(f"skill {trashed.name!r} has no SKILL.md to restore")
        row = trashed.row
        skill = Skill(trashed.id, trashed.name, row.get("description", ""),
                      row.get("meta") or {}, row.get("created_ns", 0), now_ns(),
                      user=row.get("user"))
        # Each file's next version holds the content of its last one before the deletion.
        nodes = [FileNode(fid, skill.id, path, deleted + 1, size, digest, 0, created)
                 for fid, path, deleted, created, _, digest, size in run.values()]
        return skill, nodes, {fid: (fid, last) for fid, _, _, _, last, _, _ in run.values()}

    def _sql_restore_skill(self, con, space: Space, skill: Skill, trashed: _Trashed,
                           nodes: list[FileNode], contents: dict, author: str, t: int) -> None:
        con.execute("INSERT INTO skills VALUES (?,?,?,?,?,?,?)",
                    [skill.id, skill.name, skill.description, _json(skill.meta),
                     skill.created_ns, t, skill.user])
        con.execute("INSERT INTO space_skills VALUES (?,?,?)", [space.id, skill.id, t])
        for d in trashed.row.get("dirs", []):
            con.execute("INSERT INTO skill_dirs VALUES (?,?,?)", [skill.id, d, t])
        for n in nodes:
            con.execute("UPDATE files SET version = ?, path = ?, deleted = false WHERE id = ?",
                        [n.version, n.path, n.id])
            writes.version(con, n, contents[n.id], author, "restore",
                           None, None, False)
        con.execute("DELETE FROM trash WHERE kind = 'skill' AND id = ?", [skill.id])

    async def restore_space(self, name: str, author: str = "cli") -> dict:
        """Bring a deleted space back, with its skills (see the module docstring)."""
        if name in self.tree.space_names:
            raise Exists(f"a space named {name!r} exists again: rename it first")
        found = [t for t in await self._db(self._trashed, "space") if t.name == name]
        if not found:
            raise NotFound(f"no space {name!r} in the trash")
        trashed = found[-1]
        async with self._lock:
            if name in self.tree.space_names:
                raise Exists(f"a space named {name!r} exists again")
            row, t = trashed.row, now_ns()
            space = Space(trashed.id, name, row.get("user"), row.get("meta") or {},
                          row.get("created_ns", t), t)

            def sql(con):
                con.execute("INSERT INTO spaces VALUES (?,?,?,?,?,?)",
                            [space.id, name, space.user, _json(space.meta), space.created_ns,
                             t])
                con.execute("DELETE FROM trash WHERE kind = 'space' AND id = ?", [space.id])
            await self._write(sql)
            self.tree.add_space(space)
        await self.ctx.publish(SpaceAdded(space.id, name, author))
        skills = await self._restore_space_skills(space, trashed.links, author)
        return {"kind": "space", "path": name, "skills": skills}

    async def _restore_space_skills(self, space: Space, held: list[str],
                                    author: str) -> list[str]:
        for skill_id in held:
            skill = self.tree.skills.get(skill_id)
            if skill is not None and skill.name not in space.skills:
                await self.spaces.include_skill(space.id, skill_id, author)
        trashed = {t.name: t for t in await self._db(self._trashed, "skill")
                   if space.id in t.links}
        for name in sorted(trashed):
            if name not in space.skills:
                await self.restore_skill(space, name, author)
        return sorted(space.skills)
