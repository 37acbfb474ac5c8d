"""The mount table, read by the daemon (is the mountpoint free?) and by the CLI (which daemon
serves this path?) without importing pyfuse3.

A skillfs mount's source is "skillfs:<database path>"; the database's lock file beside it
holds the daemon's pid and its control socket, so a path under a mount leads to the daemon
that serves it.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

FSNAME_PREFIX = "skillfs:"
# The kernel writes space, tab, newline and backslash in a mount's fields as \ooo, and every
# other byte as it is (so a UTF-8 name reads back as itself).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mount_entries() -> list[tuple[str, str]]:
    """(source, mountpoint) of every mount, unescaped."""
    out = []
    # surrogateescape: a name that is not UTF-8 compares equal to os.fsdecode's form of it
    with open("/proc/self/mounts", errors="surrogateescape") as f:
        for line in f:
            source, mountpoint = line.split()[:2]
            out.append((_unescape(source), _unescape(mountpoint)))
    return out


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def _lock_lines(source: str) -> list[str]:
    try:
        return Path(source[len(FSNAME_PREFIX):] + ".lock").read_text().splitlines()
    except OSError:
        return []


def daemon_pid(mountpoint: Path) -> int | None:
    """The pid of the daemon serving `mountpoint`."""
    target = os.path.abspath(mountpoint)
    for source, where in _mount_entries():
        if where == target and source.startswith(FSNAME_PREFIX):
            lines = _lock_lines(source)
            try:
                return int(lines[0]) if lines and lines[0].strip() else None
            except ValueError:
                return None
    return None


def daemon_for_path(path: str | os.PathLike) -> tuple[Path, Path] | None:
    """(mountpoint, control socket) of the skillfs mount that holds `path`, if any."""
    p = os.path.abspath(path)
    best: tuple[Path, Path] | None = None
    for source, where in _mount_entries():
        if not source.startswith(FSNAME_PREFIX):
            continue
        if p != where and not p.startswith(where.rstrip("/") + "/"):
            continue
        lines = _lock_lines(source)
        if len(lines) > 1 and lines[1] and (best is None or len(where) > len(str(best[0]))):
            best = (Path(where), Path(lines[1]))
    return best


def mount_state(path: Path) -> str:
    """'free', 'mounted', 'stale' (a dead FUSE daemon's mount) or 'missing'."""
    path = Path(os.path.abspath(path))
    if str(path) not in {where for _, where in _mount_entries()}:
        return "free" if path.exists() else "missing"
    try:
        # statfs always reaches the daemon; stat may be answered from the kernel's cache
        os.statvfs(path)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return "stale"
        raise
    return "mounted"


def unmount(path: Path, lazy: bool = False) -> bool:
    for cmd in (["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(path)],
                ["umount"] + (["-l"] if lazy else []) + [str(path)]):
        try:
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return True
        except FileNotFoundError:
            continue
    return False
