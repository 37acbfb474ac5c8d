"""The in-memory tree the mount serves: spaces, skills, folders, files and their inodes.

The store loads it at start and changes it after each commit, always on the trio thread, so
FUSE handlers read it without locks or database round trips. File content is not held here
but in a bounded cache (`ContentCache` in store/content.py): metadata for 100,000 files fits
in a few tens of MB, their content would not.

Inodes: 1 is the mount's root; a space, a (space, skill, folder) triple and a file each get
a number the first time the mount needs one. A skill included in several spaces has a folder
inode per space but its files have one inode each, seen at several paths. Numbers are never
reused within a daemon's life.

Empty folders: when the mount's last SKILL.md unlink takes a skill out of a space, its folder
stays listed, empty, until rmdir: `rm -rf`, `shutil.rmtree` and `find -delete` all remove a
folder after its entries, and fail if it has vanished. These stand-ins live only in memory;
a restart, an rmdir or a new skill of that name ends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROOT_INO = 1


class FileNode:
    __slots__ = ("id", "skill_id", "path", "version", "size", "sha256", "mtime_ns",
                 "ctime_ns", "ino", "deleted")

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
        self.ino = 0
        self.deleted = False

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
    ino: int = 0
    empty: dict[str, Skill] = field(default_factory=dict)  # stand-in folders, by name

    def entries(self) -> dict[str, Skill]:
        return {**self.empty, **self.skills}

    # Without building entries(): lookups and getattr run for every request, and a space
    # holds a hundred skills at 100,000 files.
    def entry(self, name: str) -> Skill | None:
        skill = self.skills.get(name)
        return skill if skill is not None else self.empty.get(name)

    def entry_count(self) -> int:
        return len(self.skills) + sum(1 for name in self.empty if name not in self.skills)


class DirRef:
    """What a folder inode stands for. space None = the root; skill None = a space.
    `path` changes when the folder is renamed: the kernel keeps the inode across a rename."""

    __slots__ = ("space", "skill", "path")

    def __init__(self, space: Space | None, skill: Skill | None, path: str = ""):
        self.space = space
        self.skill = skill
        self.path = path


class Tree:
    def __init__(self) -> None:
        self.spaces: dict[str, Space] = {}  # by id
        self.space_names: dict[str, Space] = {}
        self.skills: dict[str, Skill] = {}  # by id
        self.file_ids: dict[int, FileNode] = {}
        self.inodes: dict[int, DirRef | FileNode] = {ROOT_INO: DirRef(None, None)}
        self._dir_inos: dict[tuple[str, str, str], int] = {}
        self._next_ino = ROOT_INO + 1
        self.root_mtime = 0

    # -- inodes ------------------------------------------------------------------------

    def _alloc(self, obj: DirRef | FileNode) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self.inodes[ino] = obj
        return ino

    def space_ino(self, space: Space) -> int:
        if not space.ino:
            space.ino = self._alloc(DirRef(space, None))
        return space.ino

    def dir_ino(self, space: Space, skill: Skill, path: str) -> int:
        key = (space.id, skill.id, path)
        ino = self._dir_inos.get(key)
        if ino is None:
            ino = self._dir_inos[key] = self._alloc(DirRef(space, skill, path))
        return ino

    def file_ino(self, node: FileNode) -> int:
        if not node.ino:
            node.ino = self._alloc(node)
        return node.ino

    def rename_dirs(self, skill: Skill, old: str, new: str) -> None:
        """Re-key folder inodes under `old` to `new` in every space, as the kernel expects."""
        for (space_id, skill_id, path), ino in list(self._dir_inos.items()):
            if skill_id != skill.id or not (path == old or path.startswith(old + "/")):
                continue
            moved = new + path[len(old):]
            del self._dir_inos[(space_id, skill_id, path)]
            self._dir_inos[(space_id, skill_id, moved)] = ino
            self.inodes[ino].path = moved

    def take_inode(self, survivor: FileNode, gone: FileNode) -> None:
        """After `gone` was renamed over `survivor`, the kernel knows the name by `gone`'s
        inode: let the surviving file answer to that number, and retire its old one."""
        if not gone.ino:
            return
        old = survivor.ino
        survivor.ino = gone.ino
        self.inodes[gone.ino] = survivor
        gone.ino = old
        if old:
            self.inodes[old] = gone

    def release_inode(self, ino: int) -> None:
        """The kernel forgot `ino`: a deleted file's number can go (numbers are not reused)."""
        obj = self.inodes.get(ino)
        if isinstance(obj, FileNode) and obj.deleted:
            del self.inodes[ino]

    def known_dir_inos(self, skill: Skill, path: str) -> list[tuple[Space, int]]:
        """Folder inodes the kernel may have been given for `path` of `skill`."""
        out = []
        for space_id in skill.spaces:
            ino = self._dir_inos.get((space_id, skill.id, path))
            if ino is not None:
                out.append((self.spaces[space_id], ino))
        return out

    def forget_dir(self, space_id: str, skill_id: str, path: str) -> None:
        # The inode number stays in `inodes` (the kernel may still hold it) but a new folder
        # at the same path gets a new number.
        self._dir_inos.pop((space_id, skill_id, path), None)

    # -- lookups -----------------------------------------------------------------------

    def children(self, ref: DirRef, last: str | None = None
                 ) -> list[tuple[str, int, Space | Skill | FileNode | None]]:
        """(name, inode, object) for each entry of a folder, in a stable order; `last`, in a
        skill's own folder, comes after the rest (recursive deleters reach it last). The object
        is None for a folder inside a skill."""
        if ref.space is None:
            return [(s.name, self.space_ino(s), s) for s in
                    sorted(self.spaces.values(), key=lambda s: s.name)]
        space = ref.space
        if ref.skill is None:
            return [(name, self.dir_ino(space, sk, ""), sk) for name, sk in
                    sorted(space.entries().items())]
        skill = ref.skill
        out: list[tuple[str, int, Space | Skill | FileNode | None]] = []
        prefix = ref.path + "/" if ref.path else ""
        entries = skill.children.get(ref.path, {}).items()
        for name, node in sorted(entries, key=lambda e: (not ref.path and e[0] == last, e[0])):
            if node is None:
                out.append((name, self.dir_ino(space, skill, prefix + name), None))
            else:
                out.append((name, self.file_ino(node), node))
        return out

    def lookup(self, ref: DirRef, name: str) -> int | None:
        if ref.space is None:
            space = self.space_names.get(name)
            return self.space_ino(space) if space else None
        space = ref.space
        if ref.skill is None:
            skill = space.entry(name)
            return self.dir_ino(space, skill, "") if skill else None
        entries = ref.skill.children.get(ref.path)
        if entries is None or name not in entries:
            return None
        node = entries[name]
        if node is None:
            return self.dir_ino(space, ref.skill, f"{ref.path}/{name}" if ref.path else name)
        return self.file_ino(node)

    def is_live(self, ref: DirRef) -> bool:
        """Whether a folder inode still names something that exists."""
        if ref.space is None:
            return True
        if self.spaces.get(ref.space.id) is not ref.space:
            return False
        if ref.skill is None:
            return True
        return (ref.space.entry(ref.skill.name) is ref.skill
                and ref.path in ref.skill.children)

    # -- changes (called by the store after a commit) ------------------------------------

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
        space.empty.pop(skill.name, None)
        space.skills[skill.name] = skill
        skill.spaces.add(space.id)
        space.updated_ns = now_ns

    def unlink_skill(self, space: Space, skill: Skill) -> None:
        space.skills.pop(skill.name, None)
        skill.spaces.discard(space.id)
        for path in list(skill.children):
            self.forget_dir(space.id, skill.id, path)

    def leave_empty_folder(self, space: Space, skill: Skill, ino: int) -> None:
        """After `skill` left `space` through its folder: keep that folder, empty, under the
        inode the kernel knows, until rmdir."""
        stand_in = Skill(f"empty:{skill.id}", skill.name, "", {}, skill.created_ns,
                         skill.updated_ns)
        space.empty[skill.name] = stand_in
        self._dir_inos[(space.id, stand_in.id, "")] = ino
        self.inodes[ino] = DirRef(space, stand_in, "")

    def remove_empty_folder(self, space: Space, name: str, now_ns: int) -> None:
        stand_in = space.empty.pop(name)
        self.forget_dir(space.id, stand_in.id, "")
        space.updated_ns = now_ns

    def add_file(self, node: FileNode) -> None:
        self.file_ids[node.id] = node
        self.skills[node.skill_id].add_file(node)

    def remove_file(self, node: FileNode, now_ns: int) -> None:
        self.skills[node.skill_id].remove_file(node.path, now_ns)
        del self.file_ids[node.id]
        node.deleted = True
