"""The mount's inode table: the numbers the kernel knows the store's tree by.

1 is the mount's root; a space, a (space, skill, folder) triple and a file each get a number
the first time the mount hands one to the kernel. A skill included in several spaces has a
folder number per space, but each of its files one number, seen at several paths. Numbers
are never reused within a daemon's life: pyfuse3's lookup counts and the kernel's caches
are keyed by them.

The store knows nothing of inodes; this table keeps its numbers in step with the store's
events (`follow`, called by `skillfs.invalidate` before anything else hears of a change, on
the trio thread right after the store changed its tree, so no request sees a number out of
step): a moved folder keeps its numbers at its new path, a removed folder's path gets a new
number if it is made again, a file renamed over another hands the survivor its number, a
skill that leaves a space (or a space that goes) takes its folder numbers with it. A file's
number stays with its node: the store keeps one node per live file.

Empty folders: when the mount's last SKILL.md unlink takes a skill out of a space, its folder
stays listed, empty, under the number the kernel knows, until rmdir: `rm -rf`,
`shutil.rmtree` and `find -delete` all remove a folder after its entries, and fail if it has
vanished. These stand-ins are the mount's alone (the store has no row for them): a restart,
an rmdir, or a skill of that name joining the space ends them.
"""

from __future__ import annotations

from .store.events import (
    FileDropped,
    FileMovedOver,
    FileRemoved,
    FolderMoved,
    FolderRemoved,
    SkillAdded,
    SkillRemoved,
    SpaceRemoved,
    StoreEvent,
)
from .store.tree import FileNode, Skill, Space, Tree

ROOT_INO = 1


class DirRef:
    """What a folder number stands for. space None = the root; skill None = a space.
    `path` changes when the folder is renamed: the kernel keeps the number across a rename."""

    __slots__ = ("space", "skill", "path")

    def __init__(self, space: Space | None, skill: Skill | None, path: str = ""):
        self.space = space
        self.skill = skill
        self.path = path


Entry = tuple[str, int, Space | Skill | FileNode | None]


class Inodes:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.objects: dict[int, DirRef | FileNode] = {ROOT_INO: DirRef(None, None)}
        self._spaces: dict[str, int] = {}  # space id -> number
        self._dirs: dict[tuple[str, str], dict[str, int]] = {}  # (space, skill) -> path -> number
        # file id -> number; a number stands for the node it was given to, not for the id
        # (a restored file is a new node under its old id, and gets a new number)
        self._files: dict[int, int] = {}
        self._empty: dict[str, dict[str, Skill]] = {}  # space id -> stand-in folders by name
        self._emptied_ns: dict[str, int] = {}  # space id -> when an rmdir took a stand-in
        self._next = ROOT_INO + 1

    # -- numbers -----------------------------------------------------------------------

    def _alloc(self, obj: DirRef | FileNode) -> int:
        ino = self._next
        self._next += 1
        self.objects[ino] = obj
        return ino

    def space_ino(self, space: Space) -> int:
        ino = self._spaces.get(space.id)
        if ino is None:
            ino = self._spaces[space.id] = self._alloc(DirRef(space, None))
        return ino

    def dir_ino(self, space: Space, skill: Skill, path: str) -> int:
        paths = self._dirs.get((space.id, skill.id))
        if paths is None:
            paths = self._dirs[(space.id, skill.id)] = {}
        ino = paths.get(path)
        if ino is None:
            ino = paths[path] = self._alloc(DirRef(space, skill, path))
        return ino

    def file_ino(self, node: FileNode) -> int:
        ino = self._files.get(node.id)
        if ino is None or self.objects.get(ino) is not node:
            ino = self._files[node.id] = self._alloc(node)
        return ino

    def known_file_ino(self, node: FileNode) -> int | None:
        """The number the kernel may hold for `node`, without giving it one."""
        ino = self._files.get(node.id)
        return ino if ino is not None and self.objects.get(ino) is node else None

    def known_space_ino(self, space_id: str) -> int | None:
        return self._spaces.get(space_id)

    def known_dir_inos(self, skill: Skill, path: str) -> list[int]:
        """Folder numbers the kernel may have been given for `path` of `skill`."""
        out = []
        for space_id in skill.spaces:
            ino = self._dirs.get((space_id, skill.id), {}).get(path)
            if ino is not None:
                out.append(ino)
        return out

    def release(self, ino: int) -> None:
        """The kernel forgot `ino`: a file's number that no longer stands for a file in the
        tree can go (numbers are not reused)."""
        obj = self.objects.get(ino)
        if isinstance(obj, FileNode) and (obj.deleted or self._files.get(obj.id) != ino):
            del self.objects[ino]
            if self._files.get(obj.id) == ino:
                del self._files[obj.id]

    # -- following the store -------------------------------------------------------------

    def follow(self, event: StoreEvent) -> None:
        """Keep the numbers in step with a change the store just made to its tree."""
        match event:
            case FolderRemoved(skill_id=skill_id, path=path):
                self._forget_dirs(skill_id, path)
            case FolderMoved(skill_id=skill_id, old_path=old, new_path=new):
                self._forget_dirs(skill_id, new)  # an empty folder moved over: its number goes
                self._move_dirs(skill_id, old, new)
            case FileMovedOver():
                self._moved_over(event.moved_id, event.survivor_id)
            case FileRemoved(file_id=file_id) | FileDropped(file_id=file_id):
                self._files.pop(file_id, None)
            case SkillAdded(space_id=space_id, name=name):
                stand_in = self._empty.get(space_id, {}).pop(name, None)
                if stand_in is not None:
                    self._dirs.pop((space_id, stand_in.id), None)
            case SkillRemoved(space_id=space_id, skill_id=skill_id):
                self._dirs.pop((space_id, skill_id), None)
                self._forget_unreachable_files(skill_id)
            case SpaceRemoved(space_id=space_id):
                self._spaces.pop(space_id, None)
                self._empty.pop(space_id, None)
                for key in [k for k in self._dirs if k[0] == space_id]:
                    del self._dirs[key]

    def _forget_dirs(self, skill_id: str, path: str) -> None:
        # The numbers stay in `objects` (the kernel may still hold them), but a new folder
        # at the same path gets a new number.
        skill = self.tree.skills.get(skill_id)
        if skill is None:
            return
        for space_id in skill.spaces:
            self._dirs.get((space_id, skill_id), {}).pop(path, None)

    def _move_dirs(self, skill_id: str, old: str, new: str) -> None:
        """Re-key folder numbers under `old` to `new` in every space, as the kernel
        expects."""
        for (_, sk), paths in self._dirs.items():
            if sk != skill_id:
                continue
            for path in [p for p in paths if p == old or p.startswith(old + "/")]:
                moved = new + path[len(old):]
                ino = paths[moved] = paths.pop(path)
                ref = self.objects[ino]
                assert isinstance(ref, DirRef)
                ref.path = moved

    def _moved_over(self, moved_id: int, survivor_id: int) -> None:
        """The kernel now knows the name by the moved file's number: the survivor answers to
        it, and its own old number goes to the moved file's node, gone, until forgotten."""
        ino = self._files.pop(moved_id, None)
        survivor = self.tree.file_ids.get(survivor_id)
        if ino is None or survivor is None:
            return
        old = self.known_file_ino(survivor)
        gone = self.objects[ino]
        self._files[survivor_id] = ino
        self.objects[ino] = survivor
        if old is not None:
            self.objects[old] = gone

    def _forget_unreachable_files(self, skill_id: str) -> None:
        """A skill in no space has no path in the mount (and a deleted skill's files leave
        the tree without events): if it comes back, its files get new numbers."""
        skill = self.tree.skills.get(skill_id)
        if skill is None or skill.spaces:
            return
        for node in skill.files.values():
            self._files.pop(node.id, None)

    # -- empty stand-in folders ------------------------------------------------------------

    def leave_empty_folder(self, space: Space, skill: Skill, ino: int) -> None:
        """After `skill` left `space` through its folder: keep that folder, empty, under the
        number the kernel knows, until rmdir."""
        stand_in = Skill(f"empty:{skill.id}", skill.name, "", {}, skill.created_ns,
                         skill.updated_ns)
        self._empty.setdefault(space.id, {})[skill.name] = stand_in
        self._dirs[(space.id, stand_in.id)] = {"": ino}
        self.objects[ino] = DirRef(space, stand_in, "")

    def is_empty_folder(self, space: Space, name: str) -> bool:
        return name in self._empty.get(space.id, {})

    def remove_empty_folder(self, space: Space, name: str, now_ns: int) -> None:
        stand_in = self._empty[space.id].pop(name)
        self._dirs.pop((space.id, stand_in.id), None)
        self._emptied_ns[space.id] = now_ns

    # -- what a folder holds -----------------------------------------------------------

    # Without building a merged dict: lookups and getattr run for every request, and a
    # space holds a hundred skills at 100,000 files.
    def entry(self, space: Space, name: str) -> Skill | None:
        skill = space.skills.get(name)
        if skill is not None:
            return skill
        empty = self._empty.get(space.id)
        return empty.get(name) if empty else None

    def entry_count(self, space: Space) -> int:
        empty = self._empty.get(space.id)
        if not empty:
            return len(space.skills)
        return len(space.skills) + sum(1 for name in empty if name not in space.skills)

    def space_mtime(self, space: Space) -> int:
        return max(space.updated_ns, self._emptied_ns.get(space.id, 0))

    def children(self, ref: DirRef, last: str | None = None) -> list[Entry]:
        """(name, number, object) for each entry of a folder, in a stable order; `last`, in
        a skill's own folder, comes after the rest (recursive deleters reach it last). The
        object is None for a folder inside a skill."""
        if ref.space is None:
            return [(s.name, self.space_ino(s), s) for s in
                    sorted(self.tree.spaces.values(), key=lambda s: s.name)]
        space = ref.space
        if ref.skill is None:
            entries = {**self._empty.get(space.id, {}), **space.skills}
            return [(name, self.dir_ino(space, sk, ""), sk) for name, sk in
                    sorted(entries.items())]
        skill = ref.skill
        out: list[Entry] = []
        prefix = ref.path + "/" if ref.path else ""
        listed = skill.children.get(ref.path, {}).items()
        for name, node in sorted(listed, key=lambda e: (not ref.path and e[0] == last, e[0])):
            if node is None:
                out.append((name, self.dir_ino(space, skill, prefix + name), None))
            else:
                out.append((name, self.file_ino(node), node))
        return out

    def lookup(self, ref: DirRef, name: str) -> int | None:
        if ref.space is None:
            space = self.tree.space_names.get(name)
            return self.space_ino(space) if space else None
        space = ref.space
        if ref.skill is None:
            skill = self.entry(space, name)
            return self.dir_ino(space, skill, "") if skill else None
        entries = ref.skill.children.get(ref.path)
        if entries is None or name not in entries:
            return None
        node = entries[name]
        if node is None:
            return self.dir_ino(space, ref.skill, f"{ref.path}/{name}" if ref.path else name)
        return self.file_ino(node)

    def is_live(self, ref: DirRef) -> bool:
        """Whether a folder number still names something that exists."""
        if ref.space is None:
            return True
        if self.tree.spaces.get(ref.space.id) is not ref.space:
            return False
        if ref.skill is None:
            return True
        return (self.entry(ref.space, ref.skill.name) is ref.skill
                and ref.path in ref.skill.children)
