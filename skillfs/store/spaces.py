"""Learning spaces and skills."""

from __future__ import annotations

import uuid

from .. import names, skillmd
from ..errors import Exists, Invalid
from .tree import FileNode, Skill, Space
from . import writes
from .context import Service
from .events import SkillAdded, SkillRemoved, SpaceAdded, SpaceRemoved, SpaceRenamed
from .rows import SKILL_MD, SkillRow, SpaceRow, _is_uuid, _json, now_ns, sha256


class Spaces(Service):
    """Spaces, skills and which space includes which."""

    # -- spaces ------------------------------------------------------------------------

    def plan_space(self, name: str, user: str | None, meta: dict | None, author: str,
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
        node = FileNode(self.ctx.alloc_file_id(), skill.id, SKILL_MD, 1, len(content),
                        sha256(content), t, t)
        return skill, node, content

    def apply_space(self, space: Space, skills: list[tuple[Skill, FileNode, bytes]]) -> None:
        self.tree.add_space(space)
        for skill, node, content in skills:
            self.tree.add_skill(skill)
            self.tree.add_file(node)
            self.cache.put((node.id, node.version), content)
            self.tree.link_skill(space, skill, space.created_ns)

    async def create_space(self, name: str, user: str | None = None, meta: dict | None = None,
                           author: str = "api", space_id: str | None = None) -> SpaceRow:
        """`space_id` (a UUID) lets the caller pick the id, e.g. to derive the name from it;
        Exists if a space already has that id or name."""
        async with self._lock:
            space, skills = self.plan_space(name, user, meta, author, space_id)
            await self._write(lambda con: writes.space(con, space, skills, author))
            self.apply_space(space, skills)
        await self.ctx.publish(SpaceAdded(space.id, space.name, author))
        return SpaceRow.of(space)

    async def update_space(self, space_id: str, *, meta: dict | None = None,
                           name: str | None = None, author: str = "api") -> SpaceRow:
        async with self._lock:
            space = self.ctx.space(space_id)
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
            await self.ctx.publish(SpaceRenamed(space.id, old_name, new_name, author))
        return SpaceRow.of(space)

    async def delete_space(self, space_id: str, author: str = "api",
                           with_skills: bool = False) -> None:
        """Delete a space into the trash; sessions are detached. Its skills stay, unless
        `with_skills`: then those no other space includes go to the trash with it (the
        mount and the CLI show no skill outside a space)."""
        space = self.ctx.space(space_id)
        held = [skill.id for skill in space.skills.values()]
        if with_skills:
            for skill in list(space.skills.values()):
                if skill.spaces == {space.id}:
                    await self.delete_skill(skill.id, author)
        async with self._lock:
            space = self.ctx.space(space_id)
            row = {"user": space.user, "meta": space.meta, "created_ns": space.created_ns}

            def sql(con):
                writes.trash(con, "space", space.id, space.name, row, held, author,
                             now_ns())
                con.execute("DELETE FROM space_skills WHERE space_id = ?", [space.id])
                con.execute("DELETE FROM spaces WHERE id = ?", [space.id])
                con.execute("UPDATE sessions SET space_id = NULL WHERE space_id = ?",
                            [space.id])
                con.execute("DELETE FROM learning WHERE space_id = ?", [space.id])
                con.execute("DELETE FROM lessons WHERE space_id = ?", [space.id])
            await self._write(sql)
            self.tree.remove_space(space, now_ns())
        await self.ctx.publish(SpaceRemoved(space.id, space.name, author))

    # -- skills ------------------------------------------------------------------------

    async def create_skill(self, skill_md: str | bytes, files: dict[str, bytes] | None = None,
                           *, space_id: str | None = None, author: str = "api",
                           reason: str = "create skill", session_id: str | None = None,
                           task_id: str | None = None, meta: dict | None = None,
                           user: str | None = None) -> SkillRow:
        content = skill_md.encode() if isinstance(skill_md, str) else skill_md
        parsed = skillmd.parse(content)
        files = dict(files or {})
        files.pop(SKILL_MD, None)
        for path, data in files.items():
            names.check_rel_path(path)
            self.ctx.check_size(data)
        self.ctx.check_size(content)
        async with self._lock:
            space = self.ctx.space(space_id) if space_id else None
            if space is not None and parsed.name in space.skills:
                raise Exists(f"space {space.name!r} already has a skill named {parsed.name!r}")
            t = now_ns()
            skill, node, _ = self._plan_skill(parsed.name, content, t)
            skill.meta, skill.user = dict(meta or {}), user
            others = []
            for path in sorted(files):
                data = files[path]
                others.append((FileNode(self.ctx.alloc_file_id(), skill.id, path, 1, len(data),
                                        sha256(data), t, t), data))

            def sql(con):
                writes.new_skill(con, skill, node, content, author, reason, session_id,
                                 task_id)
                for other, data in others:
                    writes.new_file(con, other, data, author, reason, session_id, task_id)
                if space is not None:
                    con.execute("INSERT INTO space_skills VALUES (?,?,?)", [space.id, skill.id, t])
            await self._write(sql)
            self.tree.add_skill(skill)
            for n, data in [(node, content)] + others:
                self.tree.add_file(n)
                self.cache.put((n.id, n.version), data)
            if space is not None:
                self.tree.link_skill(space, skill, t)
        if space is not None:
            await self.ctx.publish(SkillAdded(space.id, skill.id, skill.name, author))
        return SkillRow.of(skill)

    async def include_skill(self, space_id: str, skill_id: str, author: str = "api") -> None:
        async with self._lock:
            space, skill = self.ctx.space(space_id), self.ctx.skill(skill_id)
            if skill.id in {s.id for s in space.skills.values()}:
                raise Exists(f"skill {skill.name!r} is already in space {space.name!r}")
            if skill.name in space.skills:
                raise Exists(f"space {space.name!r} already has a skill named {skill.name!r}")
            t = now_ns()
            await self._write(lambda con: con.execute(
                "INSERT INTO space_skills VALUES (?,?,?)", [space.id, skill.id, t]))
            self.tree.link_skill(space, skill, t)
        await self.ctx.publish(SkillAdded(space.id, skill.id, skill.name, author))

    async def exclude_skill(self, space_id: str, skill_id: str, author: str = "api") -> bool:
        """Remove a skill from a space (the skill itself stays); False if it was not there."""
        async with self._lock:
            space, skill = self.ctx.space(space_id), self.ctx.skill(skill_id)
            if space.skills.get(skill.name) is not skill:
                return False
            await self._write(lambda con: con.execute(
                "DELETE FROM space_skills WHERE space_id = ? AND skill_id = ?",
                [space.id, skill.id]))
            self.tree.unlink_skill(space, skill)
            space.updated_ns = now_ns()
        await self.ctx.publish(SkillRemoved(space.id, skill.id, skill.name, author))
        return True

    async def remove_skill(self, space_id: str, skill_id: str, author: str = "api") -> bool:
        """Take a skill out of a space; delete it (into the trash) when no other space
        includes it. Returns whether it was deleted."""
        skill = self.ctx.skill(skill_id)
        if skill.spaces - {space_id}:
            await self.exclude_skill(space_id, skill_id, author)
            return False
        await self.delete_skill(skill_id, author)
        return True

    async def delete_skill(self, skill_id: str, author: str = "api") -> None:
        """Delete a skill everywhere, into the trash: its row, folders and the spaces it was
        in are kept there, its files' history stays (the files are marked deleted)."""
        skill = self.ctx.skill(skill_id)
        spaces = sorted(skill.spaces)
        for space_id in spaces:
            await self.exclude_skill(space_id, skill_id, author)
        async with self._lock:
            t = now_ns()
            nodes = [node for node in skill.files.values() if node.version]
            row = {"description": skill.description, "meta": skill.meta, "user": skill.user,
                   "created_ns": skill.created_ns,
                   "dirs": sorted(d for d in skill.children if d)}

            def sql(con):
                for node in nodes:
                    writes.delete_version(con, node, t, author, "delete skill", None, None)
                con.execute("DELETE FROM skills WHERE id = ?", [skill.id])
                con.execute("DELETE FROM skill_dirs WHERE skill_id = ?", [skill.id])
                writes.trash(con, "skill", skill.id, skill.name, row, spaces, author, t)
            await self._write(sql)
            for node in list(skill.files.values()):
                self.tree.remove_file(node, t)
            del self.tree.skills[skill.id]

    # -- reading: rows, never the index's own objects --------------------------------------

    def list_space_skills(self, space_id: str) -> list[SkillRow]:
        skills = sorted(self.ctx.space(space_id).skills.values(), key=lambda s: s.created_ns)
        return [SkillRow.of(s) for s in skills]

    def get_space(self, id_or_name: str) -> SpaceRow:
        """NotFound if there is no such space."""
        return SpaceRow.of(self.ctx.space(id_or_name))

    def find_space(self, id_or_name: str) -> SpaceRow | None:
        space = self.tree.spaces.get(id_or_name) or self.tree.space_names.get(id_or_name)
        return SpaceRow.of(space) if space is not None else None

    def has_space_named(self, name: str) -> bool:
        return name in self.tree.space_names

    def list_spaces(self) -> list[SpaceRow]:
        return [SpaceRow.of(s) for s in self.tree.spaces.values()]

    def get_skill(self, skill_id: str) -> SkillRow:
        """NotFound if there is no such skill."""
        return SkillRow.of(self.ctx.skill(skill_id))

    def find_skill(self, skill_id: str) -> SkillRow | None:
        skill = self.tree.skills.get(skill_id)
        return SkillRow.of(skill) if skill is not None else None

    def list_skills(self) -> list[SkillRow]:
        return [SkillRow.of(s) for s in self.tree.skills.values()]

    def skill_ids(self) -> list[str]:
        """Every skill's id, without copying any skill's files into a row."""
        return list(self.tree.skills)
