#!/usr/bin/env python3
"""floorfs: the smallest useful pyfuse3 filesystem, as a performance floor.

Serves a directory tree read-only from Python dicts loaded at start, with the
kernel cache settings skillfs is meant to use: entry and attribute timeouts of
300 s, keep_cache on open, and `flush` answering ENOSYS so that the kernel
stops sending it. Nothing a real filesystem needs (writes, invalidation,
lookup counting) is here, so whatever skillfs costs beyond this is its own.

Usage: floorfs.py SOURCE MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 300.0


def _attr(ino: int, st: os.stat_result, size: int) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_ino = ino
    a.generation = 0
    a.entry_timeout = TIMEOUT
    a.attr_timeout = TIMEOUT
    a.st_mode = st.st_mode
    a.st_nlink = st.st_nlink
    a.st_uid = st.st_uid
    a.st_gid = st.st_gid
    a.st_rdev = 0
    a.st_size = size
    a.st_blksize = 4096
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = st.st_atime_ns
    a.st_mtime_ns = st.st_mtime_ns
    a.st_ctime_ns = st.st_ctime_ns
    return a


class FloorFS(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.data: dict[int, bytes] = {}
        # Per directory: {name: inode} for lookup, sorted [(name, inode)] for readdir.
        self.children: dict[int, dict[bytes, int]] = {}
        self.listing: dict[int, list[tuple[bytes, int]]] = {}
        self._load(source)

    def _load(self, source: str) -> None:
        next_ino = pyfuse3.ROOT_INODE + 1
        todo = [(pyfuse3.ROOT_INODE, source)]
        self.attrs[pyfuse3.ROOT_INODE] = _attr(pyfuse3.ROOT_INODE, os.stat(source), 4096)
        while todo:
            ino, path = todo.pop()
            kids: dict[bytes, int] = {}
            with os.scandir(path) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    child = next_ino
                    next_ino += 1
                    kids[os.fsencode(e.name)] = child
                    if stat.S_ISDIR(st.st_mode):
                        self.attrs[child] = _attr(child, st, 4096)
                        todo.append((child, e.path))
                    elif stat.S_ISREG(st.st_mode):
                        with open(e.path, "rb") as f:
                            self.data[child] = f.read()
                        self.attrs[child] = _attr(child, st, len(self.data[child]))
            self.children[ino] = kids
            self.listing[ino] = sorted(kids.items())

    async def lookup(self, parent_inode, name, ctx=None):
        try:
            return self.attrs[self.children[parent_inode][name]]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def getattr(self, inode, ctx=None):
        return self.attrs[inode]

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        entries = self.listing[fh]
        attrs = self.attrs
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, attrs[ino], i + 1):
                break

    async def releasedir(self, fh):
        pass

    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        return self.data[fh][off : off + size]

    async def flush(self, fh):
        # ENOSYS once and the kernel never sends flush again: one round trip
        # fewer per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh):
        pass

    async def getxattr(self, inode, name, ctx):
        # ENOSYS disables xattr requests for the mount (ls -l asks for ACLs).
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def listxattr(self, inode, ctx):
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_files = len(self.attrs)
        s.f_namemax = 255
        return s


def main() -> None:
    source, mountpoint = sys.argv[1], sys.argv[2]
    ops = FloorFS(source)
    options = set(pyfuse3.default_options)
    options |= {"fsname=skillfs-floor", "ro"}
    pyfuse3.init(ops, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
