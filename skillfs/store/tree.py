"""The store's in-memory tree: spaces, skills, folders and current files, as committed.

The store loads it at start and changes it after each commit, always on the trio thread, so
readers (the mount, the API through rows) see it without locks or database round trips.
File content is not held here but in a bounded cache (`ContentCache` in store/content.py):
metadata for 100,000 files fits in a few tens of MB, their content would not.

It holds what the database holds, plus files the mount reserved but has not written yet
(version 0): nothing of the kernel. The numbers the kernel knows folders and files by, and
the empty folders a deleter's rmdir still needs, are the mount's, kept in step through the
store's events.
A node keeps its identity while its file lives (a new version, a rename, a move over it):
the mount knows a file by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FileNode:
    __slots__ = ("id", "skill_id", "path", "version", "size", "sha256", "mtime_ns",
                 "ctime_ns", "deleted")

    def __init__(self, id: int, skill_id: str, path: str, version: int, size: int,
                 sha256: str, mtime_ns: int, ctime_ns: int):
        self.id = id
        self.skill_id = skill_id
        self.path = path
        self.version = version
        self.size = size
        self.sha256 = sha256
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.deleted = False  # out of the tree: deleted, dropped, or moved over

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(eq=False)
class Skill:
    id: str
    name: str
    description: str
    meta: dict
    created_ns: int
    updated_ns: int
    files: dict[str, FileNode] = field(default_factory=dict)
    # folder path ("" is the skill's own folder) -> {name: FileNode, or None for a sub-folder}
    children: dict[str, dict[str, FileNode | None]] = field(default_factory=lambda: {"": {}})
    dir_mtime: dict[str, int] = field(default_factory=dict)
    spaces: set[str] = field(default_factory=set)
    user: str | None = None

    def add_dir(self, path: str, now_ns: int) -> None:
        """Add folder `path` and its missing parents, each listed in its parent."""
        if not path or path in self.children:
            return
        parent, _, name = path.rpartition("/")
        self.add_dir(parent, now_ns)
        self.children[path] = {}
        self.children[parent][name] = None
        self.dir_mtime[path] = self.dir_mtime[parent] = now_ns

    def add_file(self, node: FileNode) -> None:
        parent, _, name = node.path.rpartition("/")
        self.add_dir(parent, node.mtime_ns)
        self.files[node.path] = node
        self.children[parent][name] = node
        self.dir_mtime[parent] = max(self.dir_mtime.get(parent, 0), node.mtime_ns)

    def remove_file(self, path: str, now_ns: int) -> FileNode:
        node = self.files.pop(path)
        parent, _, name = path.rpartition("/")
        del self.children[parent][name]
        self.dir_mtime[parent] = now_ns
        return node

    def remove_dir(self, path: str, now_ns: int) -> None:
        del self.children[path]
        self.dir_mtime.pop(path, None)
        parent, _, name = path.rpartition("/")
        del self.children[parent][name]
        self.dir_mtime[parent] = now_ns

    def mtime(self, path: str) -> int:
        return self.dir_mtime.get(path) or self.updated_ns


@dataclass(eq=False)
class Space:
    id: str
    name: str
    user: str | None
    meta: dict
    created_ns: int
    updated_ns: int
    skills: dict[str, Skill] = field(default_factory=dict)  # by skill name


class Tree:
    def __init__(self) -> None:
        self.spaces: dict[str, Space] = {}  # by id
        self.space_names: dict[str, Space] = {}
        self.skills: dict[str, Skill] = {}  # by id
        self.file_ids: dict[int, FileNode] = {}
        self.root_mtime = 0

    # -- changes (made by the store after a commit) --------------------------------------

    def add_space(self, space: Space) -> None:
        self.spaces[space.id] = space
        self.space_names[space.name] = space
        self.root_mtime = max(self.root_mtime, space.updated_ns)

    def remove_space(self, space: Space, now_ns: int) -> None:
        for skill in list(space.skills.values()):
            self.unlink_skill(space, skill)
        del self.spaces[space.id]
        del self.space_names[space.name]
        self.root_mtime = now_ns

    def rename_space(self, space: Space, new: str, now_ns: int) -> None:
        del self.space_names[space.name]
        space.name = new
        self.space_names[new] = space
        self.root_mtime = now_ns

    def add_skill(self, skill: Skill) -> None:
        self.skills[skill.id] = skill

    def link_skill(self, space: Space, skill: Skill, now_ns: int) -> None:
        space.skills[skill.name] = skill
        skill.spaces.add(space.id)
        space.updated_ns = now_ns

    def unlink_skill(self, space: Space, skill: Skill) -> None:
        space.skills.pop(skill.name, None)
        skill.spaces.discard(space.id)

    def add_file(self, node: FileNode) -> None:
        self.file_ids[node.id] = node
        self.skills[node.skill_id].add_file(node)

    def remove_file(self, node: FileNode, now_ns: int) -> None:
        self.skills[node.skill_id].remove_file(node.path, now_ns)
        del self.file_ids[node.id]
        node.deleted = True
