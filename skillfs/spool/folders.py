"""The spool's folders and files, reached only through directory descriptors.

The spool's contents belong to its writers, who may be other local users, and the daemon may
run as root. A path resolved again after its folder was listed can lead wherever a symlink
swapped in meanwhile points, so nothing here resolves a path below the spool root: every
folder is opened by name relative to its parent's descriptor without following links
(``O_NOFOLLOW|O_DIRECTORY``), files likewise (``O_NOFOLLOW|O_NONBLOCK``, so a FIFO cannot
block) and checked on the open descriptor, and moves and deletes are made relative to the
descriptor of the folder that was listed. A symlink is never followed; it is moved to
``.rejected/`` as the link itself.

Everything the daemon creates in the spool is private to its user: ``.rejected/`` is 0700
(made so if it exists with a wider mode) and sidecars are 0600. A new spool root is 0700; an
existing one keeps the mode its owner chose.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime

from .parse import SpoolReject, shown

log = logging.getLogger("skillfs.spool")

REJECTED_DIR = ".rejected"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_READ_CHUNK = 1 << 20


class Unstable(Exception):
    """The file changed while it was read: someone is writing it in place."""


class Changed(Exception):
    """The entry to reject was replaced by another under the same name while it was moved;
    the other was put back for the next scan to judge."""


_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, src_dir_fd: int, dst: str, dst_dir_fd: int) -> None:
    """rename(2) relative to two folders that fails with EEXIST rather than replace `dst`."""
    if _libc.renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst),
                       _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), src)
    # A file system without RENAME_NOREPLACE: check, then rename.
    if _exists(dst, dst_dir_fd):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def file_key(st: os.stat_result) -> str:
    """What tells this file from a later one with the same name and content."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


def kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "special"


WHY_NOT = {
    "link": "a symbolic link (links are not followed)",
    "special": "not a regular file (a FIFO, socket or device)",
    "folder": "a folder where a spool file belongs",
}


@dataclass
class Folder:
    """An open folder of the spool; `rel` is its path from the spool root ("" for the root)."""

    fd: int
    rel: str

    def child(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def settled_names(self) -> list[str]:
        """The names, sorted, with no gap before the last: a listing taken while files are
        renamed in may show a file and miss one renamed in just before it (a directory is
        read in hash order), while a second listing has every file there when it began.
        Writers add a session's files in name order, so names up to the first listing's
        last are then complete; later ones wait for the next pass."""
        first = self.names()
        if not first:
            return first
        return [n for n in self.names() if n <= first[-1]]

    def lstat(self, name: str) -> os.stat_result | None:
        """What `name` is, without following it; None if it is gone."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_folder(self, name: str) -> Folder:
        """SpoolReject if `name` is not a folder (a link swapped in after listing, say)."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SpoolReject(None, None, "not a folder (a symbolic link or a file)") from None
            raise
        return Folder(fd, self.child(name))

    def read(self, name: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
        """The bytes of regular file `name` and its stat; SpoolReject if it may not be read."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SpoolReject(None, None, WHY_NOT["link"]) from None
            if e.errno == errno.EISDIR:
                raise SpoolReject(None, None, WHY_NOT["folder"]) from None
            raise
        try:
            return _read_checked(fd, max_bytes)
        finally:
            os.close(fd)

    def unlink_if_same(self, name: str, st: os.stat_result) -> None:
        """Delete `name` if it is still the file `st` describes (not one renamed over it)."""
        try:
            now = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(name, dir_fd=self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _read_checked(fd: int, max_bytes: int) -> tuple[bytes, os.stat_result]:
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        raise SpoolReject(None, None, WHY_NOT[kind_of(before.st_mode)])
    if before.st_nlink > 1:
        # A hard link can make another file's content look like a spool file.
        raise SpoolReject(None, None, "a file with several hard links")
    if before.st_size > max_bytes:
        raise SpoolReject(None, None,
                          f"file is {before.st_size} bytes, over the {max_bytes}-byte cap")
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes and (chunk := os.read(fd, _READ_CHUNK)):
        chunks.append(chunk)
        size += len(chunk)
    after = os.fstat(fd)
    if size != before.st_size or (after.st_size, after.st_mtime_ns) != (
            before.st_size, before.st_mtime_ns):
        raise Unstable()
    return b"".join(chunks), after


def open_spool(path: str | os.PathLike) -> Folder:
    """The spool root, created 0700 if missing (the only path resolved by name)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    return Folder(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "")


class Rejected:
    """SPOOL/.rejected/: files that cannot be taken, each beside a sidecar saying why."""

    def __init__(self, root: Folder):
        self.root = root
        self._fd: int | None = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def move(self, folder: Folder, name: str, err: SpoolReject,
             expect: os.stat_result | None = None) -> str:
        """Move `name` (whatever it is; a link is moved as the link) out of `folder` into
        .rejected/ and write its sidecar; returns the new name. `expect` is the entry the
        decision was about: if a writer swapped another in under its name meanwhile, that
        one is put back (Changed). The entry moves before the sidecar is written, so a
        failure writing the sidecar never loses it."""
        rel = folder.child(name)
        if expect is None and (expect := folder.lstat(name)) is None:
            raise FileNotFoundError(errno.ENOENT, "gone", shown(rel))
        rejected = self._open()
        dest = self._free_name(_rejected_base(rel))
        rename_noreplace(name, folder.fd, dest, rejected)
        moved = os.stat(dest, dir_fd=rejected, follow_symlinks=False)
        if (moved.st_dev, moved.st_ino) != (expect.st_dev, expect.st_ino):
            try:
                rename_noreplace(dest, rejected, name, folder.fd)
                raise Changed()
            except FileExistsError:
                err = SpoolReject(err.line, err.field, f"{err.reason} (the entry was replaced "
                                                       "while it was moved here)")
        body = {
            "path": shown(rel),
            "line": err.line,
            "field": err.field,
            "reason": err.reason,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        try:
            self._write_private(dest + ".error.json", json.dumps(body, indent=2) + "\n")
        except OSError:
            log.exception("spool: could not write the sidecar of %s/%s", REJECTED_DIR, dest)
        log.warning("spool: rejected %s: %s", shown(rel), err)
        return dest

    def _open(self) -> int:
        if self._fd is None:
            self._fd = self._open_private()
        return self._fd

    def _open_private(self) -> int:
        """.rejected/ as a folder of our own, mode 0700. Anything else under that name (a
        symlink planted by a writer, a folder of another user) is renamed aside first."""
        root = self.root.fd
        for _ in range(3):
            try:
                os.mkdir(REJECTED_DIR, 0o700, dir_fd=root)
            except FileExistsError:
                pass
            try:
                fd = os.open(REJECTED_DIR, _DIR_FLAGS, dir_fd=root)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            else:
                st = os.fstat(fd)
                if st.st_uid == os.geteuid():
                    if stat.S_IMODE(st.st_mode) != 0o700:
                        os.fchmod(fd, 0o700)
                    return fd
                os.close(fd)
            aside = f"{REJECTED_DIR}.untrusted-{datetime.now(UTC):%Y%m%dT%H%M%S.%f}"
            log.warning("spool: %s is not a private folder of ours; renamed it to %s",
                        REJECTED_DIR, aside)
            os.rename(REJECTED_DIR, aside, src_dir_fd=root, dst_dir_fd=root)
        raise OSError(errno.EEXIST, f"cannot make a private {REJECTED_DIR}/ in the spool")

    def _free_name(self, base: str) -> str:
        fd = self._open()
        stem, ext = os.path.splitext(base)
        n = 0
        while True:
            name = base if n == 0 else f"{stem}.{n}{ext}"
            if not _exists(name, fd) and not _exists(name + ".error.json", fd):
                return name
            n += 1

    def _write_private(self, name: str, text: str) -> None:
        fd = self._open()
        tmp = name + ".tmp"
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=fd)
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(out, data):]
        finally:
            os.close(out)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _rejected_base(rel: str) -> str:
    """One valid UTF-8 name for `rel` in .rejected/, short enough for a counter and a suffix."""
    base = "__".join(shown(rel).split("/"))
    if len(base.encode()) > 200:
        # Keep room for a counter and ".error.json" under NAME_MAX; the sidecar keeps the path.
        digest = hashlib.sha256(base.encode()).hexdigest()[:16]
        tail = base.encode()[-120:].decode("utf-8", "ignore")
        base = f"{digest}__{tail}"
    return base
