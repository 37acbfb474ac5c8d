"""Who can reach the memory: the mount is private unless shared with a group, the data files
are the daemon's user's alone, and a sandbox without CAP_DAC_READ_SEARCH cannot open files of
other spaces by handle through its bind mount."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import run

NOBODY = 65534


def as_user(uid: int, gid: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           *cmd], capture_output=True, text=True, timeout=30)


@pytest.fixture
def open_root():
    """A daemon root other users can walk to (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="skillfs-access-"))
    root.chmod(0o755)
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def test_mount_and_data_files_are_private_by_default(open_root, make_daemon):
    d = make_daemon("--learner", "off", root=open_root)
    os.mkdir(d.mnt / "alice")
    (d.mnt / "alice" / "daily-logs" / "note.md").write_text("private\n")
    r = as_user(NOBODY, NOBODY, "cat", str(d.mnt / "alice" / "daily-logs" / "note.md"))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert stat.S_IMODE(os.stat(d.mnt / "alice" / "daily-logs" / "note.md").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d.mnt / "alice").st_mode) == 0o700
    files = [Path(f"{d.db}.lock"), d.home / "skillfs.log", d.home, d.spool]
    for p in files + ([d.db] if d.on_duckdb else []):
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o600


@pytest.mark.duckdb_file
def test_data_files_left_readable_are_made_private_at_start(open_root, make_daemon):
    d = make_daemon("--learner", "off", root=open_root)
    d.stop()
    d.db.chmod(0o644)
    (d.home / "skillfs.log").chmod(0o644)
    d.start()
    assert stat.S_IMODE(os.stat(d.db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d.home / "skillfs.log").st_mode) == 0o600


def test_allow_other_lets_the_mount_group_read_and_nobody_else(open_root, make_daemon):
    d = make_daemon("--learner", "off", "--allow-other", "--mount-group", str(NOBODY),
                    root=open_root)
    os.mkdir(d.mnt / "alice")
    note = d.mnt / "alice" / "daily-logs" / "note.md"
    note.write_text("shared\n")
    assert stat.S_IMODE(os.stat(note).st_mode) == 0o640
    assert os.stat(note).st_gid == NOBODY
    r = as_user(NOBODY, NOBODY, "cat", str(note))
    assert r.returncode == 0 and r.stdout == "shared\n"
    r = as_user(NOBODY, NOBODY, "sh", "-c", f"echo x >> {note}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_user(4321, 4321, "cat", str(note))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert note.read_text() == "shared\n"


# name_to_handle_at + open_by_handle_at through ctypes: what a process holding
# CAP_DAC_READ_SEARCH can do to reach files outside the folder bound into its sandbox.
HANDLE_TOOL = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    class FH(ctypes.Structure):
        _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int),
                    ("data", ctypes.c_ubyte * 128)]
    if sys.argv[1] == "get":
        fh, mnt_id = FH(128, 0), ctypes.c_int()
        if libc.name_to_handle_at(-100, sys.argv[2].encode(), ctypes.byref(fh),
                                  ctypes.byref(mnt_id), 0):
            sys.exit("name_to_handle_at: " + os.strerror(ctypes.get_errno()))
        print(fh.type, bytes(fh.data[:fh.bytes]).hex())
    else:
        kind, data = int(sys.argv[3]), bytes.fromhex(sys.argv[4])
        fh = FH(len(data), kind)
        ctypes.memmove(fh.data, data, len(data))
        mfd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
        fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
        if fd < 0:
            print("ERR", os.strerror(ctypes.get_errno()))
        else:
            print("READ", os.read(fd, 100).decode())
""")


def test_sandbox_recipe_blocks_open_by_handle(open_root, make_daemon):
    d = make_daemon("--learner", "off", root=open_root)
    os.mkdir(d.mnt / "alice")
    os.mkdir(d.mnt / "beta")
    secret = d.mnt / "beta" / "user-general-facts" / "secret.md"
    secret.write_text("beta's secret\n")
    secret.read_text()  # the kernel now knows the inode
    got = run(sys.executable, "-c", HANDLE_TOOL, "get", str(secret)).stdout.split()
    sandbox = open_root / "sandbox"
    sandbox.mkdir()
    run("mount", "--bind", str(d.mnt / "alice"), str(sandbox))
    try:
        run("mount", "-o", "remount,ro,bind", str(sandbox))
        # Holding the capability, a process reaches beta through alice's bind mount: this is
        # why the recipe drops it.
        full = run(sys.executable, "-c", HANDLE_TOOL, "open", str(sandbox), *got).stdout
        assert full.strip() == "READ beta's secret"
        # The recipe in daemon/sandbox.md: drop CAP_DAC_READ_SEARCH and CAP_SYS_ADMIN.
        dropped = run("setpriv", "--bounding-set=-dac_read_search,-sys_admin",
                      "--inh-caps=-dac_read_search,-sys_admin", "--",
                      sys.executable, "-c", HANDLE_TOOL, "open", str(sandbox), *got).stdout
        assert dropped.strip() == "ERR Operation not permitted"
        r = subprocess.run(["setpriv", "--bounding-set=-dac_read_search,-sys_admin", "--",
                            "cat", str(sandbox / "daily-logs" / "SKILL.md")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "name: daily-logs" in r.stdout
    finally:
        run("umount", str(sandbox), check=False)
