"""FUSE requests in, tree reads, open-file state and store calls out.

Reads are answered from the in-memory tree (and the content cache) without touching DuckDB
in the common case. What open handles share, and when writes become versions, is kept in
`skillfs.openfiles`; every handler sits behind `skillfs.boundary`, so no error ends the
daemon.

Deleting is whole: a skill folder lists its SKILL.md last, so `rm -rf`, `shutil.rmtree` and
`find -delete` remove its other entries first; unlinking SKILL.md from an otherwise empty
folder deletes the skill (into the trash, or only out of this space if another includes it)
and leaves the folder empty for the deleter's rmdir; rmdir of an empty space deletes it.
While other entries remain, SKILL.md cannot be unlinked (EBUSY), so a deleter that stops
halfway never leaves a skill without one.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

from . import noflush  # before pyfuse3: see skillfs/noflush.py

import pyfuse3  # noqa: E402

from .boundary import error_boundary
from .inodes import ROOT_INO, DirRef, Inodes
from .invalidate import Invalidations
from .names import check_skill_name
from .openfiles import OpenFiles
from .skillmd import render
from .store import SKILL_MD, Store
from .store.tree import FileNode

log = logging.getLogger(__name__)

CACHE_TIMEOUT = 300.0
BLOCK = 4096
NAME_MAX = 255


def _err(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def _name(raw: bytes) -> str:
    if len(raw) > NAME_MAX:
        raise _err(errno.ENAMETOOLONG)
    return raw.decode("utf-8", "surrogateescape")


@error_boundary
class SkillFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False  # the store changes files behind the kernel's back
    enable_acl = False

    def __init__(self, store: Store, *, uid: int | None = None, gid: int | None = None,
                 shared: bool = False, group_write: bool = False):
        super().__init__()
        self.store = store
        self.tree = store.tree
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        # Private: only the owner's bits. Shared (allow_other): the group reads, or writes too.
        group = (0o60 if group_write else 0o40) if shared else 0
        self.file_mode = 0o600 | group
        self.dir_mode = 0o700 | group | (0o10 if shared else 0)
        # The store says what changed; the mount keeps its numbers in step and works out
        # what the kernel must forget.
        self.inodes = Inodes(store.tree)
        self.invalidations = Invalidations(self.inodes)
        store.subscribe(self.invalidations.on_event)
        self.files = OpenFiles(store, self.invalidations)
        self._lookups: dict[int, int] = {}
        # Attributes of files the kernel knows, while unchanged: `find` and `ls -lR` ask
        # for every entry of every folder each time.
        self._file_attrs: dict[int, tuple[tuple, pyfuse3.EntryAttributes]] = {}
        # Per open folder: its inode, and the entries of the pass over it under way.
        self._listings: dict[int, tuple[int, list | None]] = {}
        self._next_dir_fh = 1

    # -- helpers -----------------------------------------------------------------------

    def _obj(self, ino: int) -> DirRef | FileNode:
        obj = self.inodes.objects.get(ino)
        if obj is None:
            raise _err(errno.ENOENT)
        return obj

    def _dir(self, ino: int) -> DirRef:
        obj = self._obj(ino)
        if isinstance(obj, FileNode):
            raise _err(errno.ENOTDIR)
        if not self.inodes.is_live(obj):
            raise _err(errno.ENOENT)
        return obj

    def _skill_dir(self, ino: int) -> DirRef:
        """A folder inside a skill: the only place files live."""
        ref = self._dir(ino)
        if ref.skill is None:
            raise _err(errno.EPERM)
        return ref

    @staticmethod
    def _join(ref: DirRef, name: str) -> str:
        return f"{ref.path}/{name}" if ref.path else name

    def _attrs(self, ino: int, obj: DirRef | FileNode) -> pyfuse3.EntryAttributes:
        if isinstance(obj, FileNode) and self.files.pending(obj) is None:
            stamp = (obj.id, obj.version, obj.size, obj.mtime_ns)
            known = self._file_attrs.get(ino)
            if known is None or known[0] != stamp:
                known = self._file_attrs[ino] = (stamp, self._new_attrs(ino, obj))
            return known[1]
        return self._new_attrs(ino, obj)

    def _new_attrs(self, ino: int, obj: DirRef | FileNode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.generation = 0
        a.entry_timeout = CACHE_TIMEOUT
        a.attr_timeout = CACHE_TIMEOUT
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_blksize = BLOCK
        if isinstance(obj, FileNode):
            a.st_mode = stat.S_IFREG | self.file_mode
            a.st_nlink = 1
            # While writers hold uncommitted changes, their size: O_APPEND writes arrive at
            # the offset the kernel believes is the end.
            a.st_size = self.files.size(obj)
            a.st_blocks = (a.st_size + 511) // 512
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = self.files.mtime_ns(obj)
            return a
        a.st_mode = stat.S_IFDIR | self.dir_mode
        a.st_size = BLOCK
        a.st_blocks = BLOCK // 512
        if obj.space is None:
            subdirs = len(self.tree.spaces)
            mtime = self.tree.root_mtime
        elif obj.skill is None:
            subdirs = self.inodes.entry_count(obj.space)
            mtime = self.inodes.space_mtime(obj.space)
        else:
            entries = obj.skill.children.get(obj.path, {})
            subdirs = sum(1 for v in entries.values() if v is None)
            mtime = obj.skill.mtime(obj.path)
        a.st_nlink = 2 + subdirs
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = mtime
        return a

    def _entry(self, ino: int) -> pyfuse3.EntryAttributes:
        self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return self._attrs(ino, self.inodes.objects[ino])

    # -- metadata ----------------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        ref = self._dir(parent_inode)
        text = _name(name)
        if text == ".":
            return self._entry(parent_inode)
        ino = self.inodes.lookup(ref, text)
        if ino is None:
            raise _err(errno.ENOENT)
        return self._entry(ino)

    async def getattr(self, inode, ctx=None):
        return self._attrs(inode, self._obj(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        obj = self._obj(inode)
        if fields.update_size:
            if not isinstance(obj, FileNode):
                raise _err(errno.EISDIR)
            await self.files.truncate(obj, attr.st_size, fh)
        # Modes, owners and times are not stored: accepting them keeps cp -p, touch and
        # editors working.
        return self._attrs(inode, obj)

    async def forget(self, inode_list):
        for ino, n in inode_list:
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
                continue
            self._lookups.pop(ino, None)
            self._file_attrs.pop(ino, None)
            self.inodes.release(ino)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        used = sum((n.size + BLOCK - 1) // BLOCK for n in self.tree.file_ids.values())
        s.f_bsize = s.f_frsize = BLOCK
        total = max(used * 2, 1 << 18)
        s.f_blocks = total
        s.f_bfree = s.f_bavail = total - used
        files = len(self.tree.file_ids)
        s.f_files = files + (1 << 20)
        s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = NAME_MAX
        return s

    # -- directories -------------------------------------------------------------------

    async def opendir(self, inode, ctx):
        self._dir(inode)
        fh = self._next_dir_fh
        self._next_dir_fh += 1
        self._listings[fh] = (inode, None)
        return fh

    async def readdir(self, fh, start_id, token):
        listing = self._listings.get(fh)
        if listing is None:
            raise _err(errno.EBADF)
        inode, entries = listing
        ref = self._dir(inode)
        if entries is None or start_id == 0:
            # One listing per pass: getdents(2) asks again until an empty answer, and
            # rewinddir(3) starts a new pass at 0.
            entries = self.inodes.children(ref, last=SKILL_MD)
            self._listings[fh] = (inode, entries)
        objects = self.inodes.objects
        for i in range(start_id, len(entries)):
            name, ino, _ = entries[i]
            obj = objects.get(ino)
            if obj is None:
                continue  # a file deleted since this pass began, already forgotten
            if not pyfuse3.readdir_reply(token, name.encode("utf-8", "surrogateescape"),
                                         self._attrs(ino, obj), i + 1):
                break
            self._lookups[ino] = self._lookups.get(ino, 0) + 1

    async def releasedir(self, fh):
        self._listings.pop(fh, None)

    async def mkdir(self, parent_inode, name, mode, ctx):
        ref = self._dir(parent_inode)
        text = _name(name)
        if ref.space is None:
            row = await self.store.spaces.create_space(text, author="fuse")
            return self._entry(self.inodes.space_ino(self.tree.spaces[row.id]))
        if ref.skill is None:
            check_skill_name(text)
            template = render(text, f"Describe what the {text} skill holds and when to use it.",
                              f"# {text}\n\nWrite this skill's rules here.")
            made = await self.store.spaces.create_skill(
                template, space_id=ref.space.id, author="fuse", reason="mkdir")
            return self._entry(self.inodes.dir_ino(ref.space, self.tree.skills[made.id], ""))
        path = self._join(ref, text)
        await self.store.files.make_dir(ref.skill.id, path, author="fuse")
        return self._entry(self.inodes.dir_ino(ref.space, ref.skill, path))

    async def rmdir(self, parent_inode, name, ctx):
        ref = self._dir(parent_inode)
        text = _name(name)
        ino = self.inodes.lookup(ref, text)
        if ino is None:
            raise _err(errno.ENOENT)
        if ref.space is None:
            space = self.tree.space_names[text]
            if self.inodes.entry_count(space):
                raise _err(errno.ENOTEMPTY)
            await self.store.spaces.delete_space(space.id, author="fuse")
        elif ref.skill is None:
            if not self.inodes.is_empty_folder(ref.space, text):
                raise _err(errno.ENOTEMPTY)  # a skill's folder holds its SKILL.md
            self.inodes.remove_empty_folder(ref.space, text, time.time_ns())
        else:
            if isinstance(self.inodes.objects[ino], FileNode):
                raise _err(errno.ENOTDIR)
            await self.store.files.remove_dir(ref.skill.id, self._join(ref, text),
                                              author="fuse")

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _err(errno.EINVAL)
        old_ref, new_ref = self._dir(parent_inode_old), self._dir(parent_inode_new)
        old, new = _name(name_old), _name(name_new)
        src = self.inodes.lookup(old_ref, old)
        if src is None:
            raise _err(errno.ENOENT)
        dst = self.inodes.lookup(new_ref, new)
        if dst is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise _err(errno.EEXIST)
        if old_ref.space is None and new_ref.space is None:
            space = self.tree.space_names[old]
            if dst is not None:
                raise _err(errno.EEXIST if self.tree.space_names[new].skills else errno.ENOTEMPTY)
            await self.store.spaces.update_space(space.id, name=new, author="fuse")
            return
        if old_ref.skill is None or new_ref.skill is None:
            raise _err(errno.EPERM)  # skills keep their names; spaces move only at the top
        if old_ref.skill is not new_ref.skill or old_ref.space is not new_ref.space:
            raise _err(errno.EXDEV)  # mv falls back to copy + delete
        skill = old_ref.skill
        old_path, new_path = self._join(old_ref, old), self._join(new_ref, new)
        src_obj = self.inodes.objects[src]
        if isinstance(src_obj, FileNode):
            if dst is not None and not isinstance(self.inodes.objects[dst], FileNode):
                raise _err(errno.EISDIR)
            await self.store.files.move_file(skill.id, old_path, new_path, author="fuse")
        else:
            if dst is not None and isinstance(self.inodes.objects[dst], FileNode):
                raise _err(errno.ENOTDIR)
            await self.store.files.move_dir(skill.id, old_path, new_path, author="fuse")

    # -- files -------------------------------------------------------------------------

    async def create(self, parent_inode, name, mode, flags, ctx):
        ref = self._skill_dir(parent_inode)
        path = self._join(ref, _name(name))
        assert ref.skill is not None  # _skill_dir refuses a folder outside a skill
        node = await self.store.files.reserve_file(ref.skill.id, path)
        fh = self.files.open_writer(node, truncate=False, append=bool(flags & os.O_APPEND),
                                    created=True)
        ino = self.inodes.file_ino(node)
        return self._writer_info(fh), self._entry(ino)

    async def unlink(self, parent_inode, name, ctx):
        ref = self._skill_dir(parent_inode)
        text = _name(name)
        ino = self.inodes.lookup(ref, text)
        if ino is None:
            raise _err(errno.ENOENT)
        if not isinstance(self.inodes.objects[ino], FileNode):
            raise _err(errno.EISDIR)
        assert ref.skill is not None  # _skill_dir refuses a folder outside a skill
        if ref.path or text != SKILL_MD:
            await self.store.files.delete_file(ref.skill.id, self._join(ref, text), author="fuse")
        else:
            await self._unlink_skill_md(ref, parent_inode)

    async def _unlink_skill_md(self, ref: DirRef, folder_ino: int) -> None:
        """The last entry of a skill's folder: the skill leaves this space with it."""
        space, skill = ref.space, ref.skill
        assert space is not None and skill is not None  # the folder of a skill
        others = sorted(set(skill.children[""]) - {SKILL_MD})
        if others:
            log.warning("unlink %s/%s/%s refused: the folder still holds %s; remove those "
                        "first (rm -rf removes SKILL.md last), or: skillfs skill delete %s "
                        "--space %s", space.name, skill.name, SKILL_MD,
                        ", ".join(others[:5]), skill.name, space.name)
            raise _err(errno.EBUSY)
        await self.store.spaces.remove_skill(space.id, skill.id, author="fuse")
        self.inodes.leave_empty_folder(space, skill, folder_ino)

    async def open(self, inode, flags, ctx):
        node = self._obj(inode)
        if not isinstance(node, FileNode):
            raise _err(errno.EISDIR)
        if node.deleted:
            raise _err(errno.ENOENT)
        if (flags & os.O_ACCMODE) == os.O_RDONLY:
            # A reader's close() needs no FLUSH round trip. Its cached pages stay right
            # while others write: see skillfs/openfiles.py.
            fh = self.files.open_reader(node)
            if noflush.ACTIVE:
                fh |= noflush.BIT
            return pyfuse3.FileInfo(fh=fh, keep_cache=True)
        fh = self.files.open_writer(node, truncate=bool(flags & os.O_TRUNC),
                                    append=bool(flags & os.O_APPEND))
        return self._writer_info(fh)

    @staticmethod
    def _writer_info(fh: int) -> pyfuse3.FileInfo:
        # Writes bypass the page cache (the kernel drops the pages they cover), so cached
        # pages only ever come from whole READ replies: a reader cannot put together
        # pages a writer left with pages read after the writer's next rewrite.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=True)

    async def read(self, fh, off, size):
        return await self.files.read(self.files.get(fh), off, size)

    async def write(self, fh, off, buf):
        return await self.files.write(self.files.get(fh), off, buf)

    async def flush(self, fh):
        await self.files.flush(self.files.get(fh), sync=False)

    async def fsync(self, fh, datasync):
        await self.files.flush(self.files.get(fh), sync=True)

    async def release(self, fh):
        await self.files.release(fh)

    # getxattr/listxattr are left unimplemented on purpose: the first ENOSYS makes the kernel
    # stop asking, and ls -l otherwise asks for ACLs of every file.


def mount_options(fsname: str, allow_other: bool) -> set[str]:
    opts = set(pyfuse3.default_options)
    opts.add(f"fsname={fsname}")
    opts.add("subtype=skillfs")
    if allow_other:
        # Other users get in only through the modes the mount reports, checked by the kernel.
        opts.update({"allow_other", "default_permissions"})
    return opts


__all__ = ["SkillFS", "mount_options", "ROOT_INO", "SKILL_MD"]
