"""The error boundary of the mount: no failure inside a FUSE handler ends the daemon.

A direct tier calls `SkillFS` on a real store (a temporary DuckDB file) without the kernel
and makes the store fail in ways it does not expect; an end-to-end test fills the disk under
a running daemon's database and writes through the mount.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import subprocess
from pathlib import Path

import pyfuse3
import pytest
import trio

from conftest import is_mounted
from skillfs.errors import StorageFull, Unavailable
from skillfs.fs import ROOT_INO, SkillFS
from skillfs.store import Store

FAILURES = [
    (RuntimeError("the database is gone"), errno.EIO, True),
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC, False),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.ENOSPC, False),
    (MemoryError(), errno.ENOMEM, False),
    (StorageFull("the disk is full"), errno.ENOSPC, False),
    (Unavailable("the database is being reopened"), errno.EIO, False),
]


def _run(tmp_path: Path, scenario) -> None:
    store = Store(str(tmp_path / "skillfs.duckdb"))
    try:
        trio.run(scenario, SkillFS(store), store)
    finally:
        store.close()


async def _skill_dir(fs: SkillFS, store: Store) -> int:
    await store.create_space("alice", author="api")
    space = (await fs.lookup(ROOT_INO, b"alice", None)).st_ino
    return (await fs.lookup(space, b"daily-logs", None)).st_ino


async def _new_file(fs: SkillFS, parent: int, name: bytes, body: bytes) -> int:
    info, entry = await fs.create(parent, name, 0o644, os.O_WRONLY, None)
    await fs.write(info.fh, 0, body)
    await fs.flush(info.fh)
    await fs.release(info.fh)
    return entry.st_ino


async def _read_all(fs: SkillFS, ino: int) -> bytes:
    info = await fs.open(ino, os.O_RDONLY, None)
    try:
        return await fs.read(info.fh & ~(1 << 62), 0, 1 << 20)
    finally:
        await fs.release(info.fh & ~(1 << 62))


async def _errno_of(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        await call
    return e.value.errno


def test_every_handler_is_behind_the_boundary():
    handlers = [name for name, member in vars(SkillFS).items()
                if hasattr(pyfuse3.Operations, name) and inspect.iscoroutinefunction(member)]
    assert {"lookup", "getattr", "read", "write", "flush", "release", "create", "rename",
            "forget", "setattr"} <= set(handlers)
    for name in handlers:
        assert hasattr(getattr(SkillFS, name), "__wrapped__"), name


@pytest.mark.parametrize("exc,code,traceback", FAILURES,
                         ids=[type(f[0]).__name__ + str(f[1]) for f in FAILURES])
def test_a_failing_read_answers_its_errno_and_the_next_read_works(
        tmp_path, monkeypatch, caplog, exc, code, traceback):
    async def scenario(fs: SkillFS, store: Store):
        ino = await _new_file(fs, await _skill_dir(fs, store), b"a.md", b"hello\n")

        async def failing(node):
            raise exc
        with monkeypatch.context() as m:
            m.setattr(store.cache, "get", lambda key, touch=True: None)
            m.setattr(store.files, "content", failing)
            info = await fs.open(ino, os.O_RDONLY, None)
            fh = info.fh & ~(1 << 62)
            assert await _errno_of(fs.read(fh, 0, 4096)) == code
        assert await fs.read(fh, 0, 4096) == b"hello\n"
        await fs.release(fh)

    with caplog.at_level(logging.INFO, logger="skillfs.fs"):
        _run(tmp_path, scenario)
    logged = [r for r in caplog.records if r.name == "skillfs.fs" and r.exc_info]
    assert bool(logged) == traceback


@pytest.mark.parametrize("exc,code,traceback", FAILURES,
                         ids=[type(f[0]).__name__ + str(f[1]) for f in FAILURES])
def test_a_failing_commit_keeps_the_old_version_and_tells_the_writer(
        tmp_path, monkeypatch, exc, code, traceback):
    async def scenario(fs: SkillFS, store: Store):
        ino = await _new_file(fs, await _skill_dir(fs, store), b"a.md", b"old\n")

        async def failing(*args, **kw):
            raise exc
        info = await fs.open(ino, os.O_WRONLY | os.O_TRUNC, None)
        await fs.write(info.fh, 0, b"new content\n")
        assert (await fs.getattr(ino, None)).st_size == len(b"new content\n")
        with monkeypatch.context() as m:
            m.setattr(store.files, "write_file", failing)
            assert await _errno_of(fs.flush(info.fh)) == code
        # the handle keeps saying so; the file is its committed version again
        assert await _errno_of(fs.write(info.fh, 0, b"more")) == code
        assert await _errno_of(fs.flush(info.fh)) == code
        await fs.release(info.fh)
        assert await _read_all(fs, ino) == b"old\n"
        assert (await fs.getattr(ino, None)).st_size == len(b"old\n")
        # and the next writer is not affected
        info = await fs.open(ino, os.O_WRONLY | os.O_TRUNC, None)
        await fs.write(info.fh, 0, b"new\n")
        await fs.flush(info.fh)
        await fs.release(info.fh)
        assert await _read_all(fs, ino) == b"new\n"

    _run(tmp_path, scenario)


def test_a_failure_at_release_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    async def scenario(fs: SkillFS, store: Store):
        parent = await _skill_dir(fs, store)

        async def failing(*args, **kw):
            raise RuntimeError("the database is gone")
        info, _ = await fs.create(parent, b"n.md", 0o644, os.O_WRONLY, None)
        with monkeypatch.context() as m:
            m.setattr(store.files, "write_file", failing)
            await fs.release(info.fh)  # a new file never written: committed at release
        # it never committed, so it is gone
        assert await _errno_of(fs.lookup(parent, b"n.md", None)) == errno.ENOENT

    with caplog.at_level(logging.INFO, logger="skillfs.fs"):
        _run(tmp_path, scenario)
    assert any(r.name == "skillfs.fs" and r.exc_info for r in caplog.records)


def test_failures_in_metadata_handlers_and_forget(tmp_path, monkeypatch, caplog):
    async def scenario(fs: SkillFS, store: Store):
        parent = await _skill_dir(fs, store)
        ino = await _new_file(fs, parent, b"a.md", b"x")

        def boom(*args, **kw):
            raise RuntimeError("a bug")
        with monkeypatch.context() as m:
            m.setattr(fs.files, "size", boom)
            assert await _errno_of(fs.getattr(ino, None)) == errno.EIO
            assert await _errno_of(fs.lookup(parent, b"a.md", None)) == errno.EIO
        with monkeypatch.context() as m:
            m.setattr(fs.inodes, "release", boom)
            # every lookup forgotten; forget has no reply to give: logged only
            assert await fs.forget([(ino, 1000)]) is None
        with monkeypatch.context() as m:
            m.setattr(store.spaces, "create_space", boom)
            assert await _errno_of(fs.mkdir(ROOT_INO, b"bob", 0o755, None)) == errno.EIO
        assert (await fs.getattr(ino, None)).st_size == 1
        assert await _errno_of(fs.lookup(parent, b"x" * 256, None)) == errno.ENAMETOOLONG
        assert await _errno_of(fs.getattr(10 ** 9, None)) == errno.ENOENT  # FUSEError as is

    with caplog.at_level(logging.INFO, logger="skillfs.fs"):
        _run(tmp_path, scenario)
    assert sum(1 for r in caplog.records if r.name == "skillfs.fs" and r.exc_info) == 4


@pytest.mark.duckdb_file
def test_disk_full_under_the_database_keeps_the_mount_serving(make_daemon, tmp_path):
    """The database's own disk fills up while a file is written through the mount: the
    writer gets an error, the daemon keeps serving what it has."""
    root = tmp_path / "full"
    daemon = make_daemon("--learner", "off", start=False, root=root)
    daemon.home.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(daemon.home)],
                   check=True)
    filler = daemon.home / "filler"
    try:
        daemon.start()
        os.mkdir(daemon.mnt / "alice")
        kept = daemon.mnt / "alice" / "daily-logs" / "kept.md"
        kept.write_text("still here\n")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                       capture_output=True, check=False)  # until the disk is full
        big = daemon.mnt / "alice" / "daily-logs" / "big.md"
        with pytest.raises(OSError) as e, open(big, "wb") as fh:
            fh.write(os.urandom(900 << 10))
        assert e.value.errno in (errno.ENOSPC, errno.EIO)
        # the daemon is alive and serving
        assert is_mounted(daemon.mnt)
        assert Path(f"/proc/{daemon.pid}").exists()
        assert kept.read_text() == "still here\n"
        assert "kept.md" in os.listdir(kept.parent)
        assert not big.exists()
        # once there is room again, writes go through
        filler.unlink()
        big.write_bytes(b"after\n")
        assert big.read_bytes() == b"after\n"
    finally:
        filler.unlink(missing_ok=True)
        try:
            daemon.cleanup()
        finally:
            subprocess.run(["umount", "-l", str(daemon.home)], check=False)
