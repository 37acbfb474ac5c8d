"""The daemon: one process, one trio loop, one DuckDB file, one FUSE mount.

Start-up order matters: take the database's lock file, open the store (which loads the
tree), mount, start the API, the spool and the learner, and only then say "ready" (to the
parent that detached us, and to systemd).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import noflush  # noqa: F401  (before pyfuse3)

import pyfuse3  # noqa: E402
import trio

from .config import Config
from .errors import SkillfsError
from .fs import SkillFS, mount_options
from .invalidate import KernelInvalidator
from .store import Store

log = logging.getLogger("skillfs")

FSNAME_PREFIX = "skillfs:"  # the mount's source is "skillfs:<database path>"


class StartupError(SkillfsError):
    pass


def _mount_entries() -> list[tuple[str, str]]:
    """(source, mountpoint) of every mount, unescaped."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            out.append(tuple(x.encode().decode("unicode_escape") for x in fields[:2]))
    return out


def daemon_pid(mountpoint: Path) -> int | None:
    """The pid of the daemon serving `mountpoint`: its mount source names the database, and
    the database's lock file names the daemon."""
    target = os.path.abspath(mountpoint)
    for source, where in _mount_entries():
        if where == target and source.startswith(FSNAME_PREFIX):
            try:
                text = Path(source[len(FSNAME_PREFIX):] + ".lock").read_text().strip()
                return int(text) if text else None
            except (OSError, ValueError):
                return None
    return None


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


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())


class DbLock:
    """An exclusive lock beside the database, naming the holder, so a second daemon can say
    who has it instead of failing deep inside DuckDB."""

    def __init__(self, db: Path):
        self.path = Path(str(db) + ".lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartupError(
                f"another skillfs daemon (pid {holder}) is already using {self.path.name[:-5]}; "
                "stop it first (skillfs umount MOUNTPOINT)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Daemon:
    def __init__(self, config: Config, mountpoint: Path):
        self.config = config
        self.mountpoint = Path(mountpoint).resolve()
        self.store: Store | None = None
        self.spool = None
        self.learner = None
        self.learner_backend = "off"
        self.started_at = time.time()
        self._cancel: trio.CancelScope | None = None
        self._lock = DbLock(config.db)

    def spool_backlog(self) -> int:
        return self.spool.backlog() if self.spool is not None else 0

    async def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def prepare(self) -> None:
        """Checks that need no event loop; raise StartupError with a clear message."""
        c = self.config
        for d in (c.home, c.db.parent, c.spool, c.socket.parent):
            d.mkdir(parents=True, exist_ok=True)
        state = mount_state(self.mountpoint)
        if state == "missing":
            raise StartupError(f"mountpoint {self.mountpoint} does not exist")
        if state == "stale":
            log.warning("%s is a stale mount (transport endpoint is not connected); "
                        "cleaning it up", self.mountpoint)
            if not unmount(self.mountpoint, lazy=True):
                raise StartupError(f"could not clean up the stale mount at {self.mountpoint}")
        elif state == "mounted":
            raise StartupError(f"{self.mountpoint} is already a mount point")
        if not self.mountpoint.is_dir():
            raise StartupError(f"mountpoint {self.mountpoint} is not a directory")
        self._lock.acquire()

    async def run(self, on_ready=None) -> None:
        from .api.app import BearerAuth, build_app
        from .spool import SpoolIngester

        c = self.config
        try:
            self.store = store = Store(str(c.db), max_file_size=c.max_file_size,
                                       cache_bytes=c.cache_bytes,
                                       duckdb_memory=c.duckdb_memory,
                                       checkpoint_memory=c.duckdb_checkpoint_memory,
                                       temp_dir=c.duckdb_temp,
                                       duckdb_threads=c.duckdb_threads)
        except SkillfsError as e:
            raise StartupError(e.message) from None
        # The tree is long-lived: keep the cyclic collector from walking it again and again
        # (hundreds of thousands of objects at 100,000 files).
        gc.freeze()
        fs = SkillFS(store)
        invalidator = KernelInvalidator()
        app = build_app(self)
        self.spool = SpoolIngester(store, c.spool)
        self._start_learner(store)
        mounted = False
        try:
            pyfuse3.init(fs, str(self.mountpoint),
                         mount_options(f"{FSNAME_PREFIX}{c.db}", c.allow_other))
            mounted = True
            invalidator.start()
            store.kernel = invalidator
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._fuse_main)
                nursery.start_soon(self._signals)
                nursery.start_soon(store.db.supervise)
                await nursery.start(self._serve, app, f"unix:{c.socket}")
                if c.listen:
                    await nursery.start(self._serve, BearerAuth(app, c.tokens), c.listen)
                # The spool's backlog is worked through after start-up, not before it.
                nursery.start_soon(self.spool.run)
                if self.learner is not None:
                    await nursery.start(self.learner.run)
                nursery.start_soon(self._preload)
                log.info("skillfs ready: %s mounted at %s", c.db, self.mountpoint)
                sd_notify("READY=1")
                if on_ready is not None:
                    on_ready()
        finally:
            sd_notify("STOPPING=1")
            invalidator.stop()
            store.kernel = None
            if mounted:
                pyfuse3.close(unmount=True)
            try:
                await store.checkpoint()
            except Exception:
                log.exception("checkpoint at shutdown failed")
            store.close()
            try:
                os.unlink(c.socket)
            except FileNotFoundError:
                pass
            self._lock.release()
            log.info("skillfs stopped")

    def _start_learner(self, store: Store) -> None:
        from .learner import Learner, choose_backend

        backend = choose_backend(self.config.learner)
        self.learner_backend = backend
        if backend == "off":
            return
        self.learner = Learner(store, self.config.learner, backend=backend)
        store.subscribe(self.learner.on_store_event)

    async def _preload(self) -> None:
        t0 = time.monotonic()
        try:
            n = await self.store.preload()
        except Exception:
            # Only a head start: reads fetch what they need themselves.
            log.exception("preloading the content cache failed; files are read on demand")
            return
        log.info("preloaded %d files into the content cache in %.2f s", n, time.monotonic() - t0)

    async def _fuse_main(self) -> None:
        await pyfuse3.main()
        # The kernel connection ended (someone ran fusermount -u): nothing left to serve.
        log.info("the mount went away; stopping")
        await self.stop()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("got %s; unmounting", signal.Signals(signum).name)
                await self.stop()
                return

    async def _serve(self, app, bind: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HConfig
        from hypercorn.trio import serve

        if bind.startswith("unix:"):
            path = bind[5:]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        hc = HConfig()
        hc.bind = [bind]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("skillfs.http")
        hc.graceful_timeout = 1.0
        hc.keep_alive_timeout = 30
        if bind.startswith("unix:"):
            hc.unix_permissions = 0o600
        await serve(app, hc, task_status=task_status, mode="asgi")
