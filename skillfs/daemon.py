"""The daemon: one process, one trio loop, one DuckDB file, one FUSE mount.

Start-up order matters: take the database's lock file, open the store (which loads the
tree), mount, start the API, the spool and the learner, and only then say "ready" (to the
parent that detached us, and to systemd).
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import noflush  # noqa: F401  (before pyfuse3)

import pyfuse3  # noqa: E402
import trio

from .config import ResolvedConfig
from .errors import SkillfsError
from .fs import SkillFS, mount_options
from .invalidate import KernelInvalidator
from .mounts import FSNAME_PREFIX, daemon_pid, mount_state, unmount  # noqa: F401
from .store import Store

if TYPE_CHECKING:  # run() and _start_learner() import them; here only their types
    from .learner import Learner
    from .spool import SpoolIngester

log = logging.getLogger("skillfs")


class StartupError(SkillfsError):
    pass


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


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    import grp
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StartupError(f"mount_group {group!r}: no such group") from None


def make_private(paths: list[Path]) -> None:
    """Take group and other access away from files a daemon of an older skillfs (or a
    permissive umask) left readable: the database holds every message and file."""
    for p in paths:
        try:
            mode = os.stat(p, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077 and not os.path.islink(p):
            os.chmod(p, mode & 0o700)


class DbLock:
    """An exclusive lock beside a resource only one daemon may use (the database, the control
    socket, the spool), naming the holder, so a second daemon can say who has it instead of
    failing deep inside DuckDB or silently taking over the first one's socket."""

    def __init__(self, resource: Path, lock_path: Path | None = None):
        self.resource = resource
        self.path = lock_path or Path(str(resource) + ".lock")
        self.fd: int | None = None

    def acquire(self, note: str = "") -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartupError(
                f"another skillfs daemon (pid {holder}) is already using {self.resource}; "
                "stop it first (skillfs umount MOUNTPOINT)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{note}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Daemon:
    def __init__(self, config: ResolvedConfig, mountpoint: Path, nonempty: bool = False):
        self.config = config
        self.nonempty = nonempty
        self.mountpoint = Path(mountpoint).resolve()
        self.store: Store | None = None
        self.spool: SpoolIngester | None = None
        self.learner: Learner | None = None
        self.learner_backend = "off"
        self.started_at = time.time()
        self._cancel: trio.CancelScope | None = None
        # The spool's lock is a dotfile inside it: the spool ignores dotfiles.
        self._locks = [DbLock(config.db), DbLock(config.socket),
                       DbLock(config.spool, config.spool / ".skillfs.lock")]

    def spool_backlog(self) -> int:
        return self.spool.backlog() if self.spool is not None else 0

    async def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def prepare(self) -> None:
        """Checks that need no event loop; raise StartupError with a clear message."""
        c = self.config
        # New folders are private; an existing one keeps the mode its owner gave it (a
        # spool may be shared with a group of writers on purpose).
        for d in (c.home, c.db.parent, c.spool, c.socket.parent):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private([c.db, Path(f"{c.db}.wal"), Path(f"{c.db}.lock"), c.log_file])
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
        if not self.nonempty and any(os.scandir(self.mountpoint)):
            raise StartupError(f"mountpoint {self.mountpoint} is not empty: the mount would hide "
                               "what is in it (empty it, or pass --nonempty)")
        taken: list[DbLock] = []
        try:
            for lock in self._locks:
                # the database's lock also tells clients which socket answers for the mount
                lock.acquire(str(self.config.socket) if lock is self._locks[0] else "")
                taken.append(lock)
        except StartupError:
            for lock in taken:
                lock.release()
            raise

    async def run(self, on_ready=None) -> None:
        from .api.app import BearerAuth, build_app
        from .spool import SpoolIngester

        c = self.config
        try:
            self.store = store = Store(c.database(), max_file_size=c.max_file_size,
                                       cache_bytes=c.cache_bytes,
                                       duckdb_memory=c.duckdb_memory,
                                       checkpoint_memory=c.duckdb_checkpoint_memory,
                                       temp_dir=c.duckdb_temp,
                                       duckdb_threads=c.duckdb_threads, host=c.host)
        except SkillfsError as e:
            raise StartupError(e.message) from None
        # The tree is long-lived: keep the cyclic collector from walking it again and again
        # (hundreds of thousands of objects at 100,000 files).
        gc.freeze()
        fs = SkillFS(store, gid=_group_id(c.mount_group), shared=c.allow_other,
                     group_write=c.group_write)
        invalidator = KernelInvalidator()
        app = build_app(self)
        self.spool = SpoolIngester(store.sessions, c.spool)
        self._start_learner(store)
        mounted = False
        try:
            pyfuse3.init(fs, str(self.mountpoint),
                         mount_options(f"{FSNAME_PREFIX}{c.db}", c.allow_other))
            mounted = True
            invalidator.start()
            fs.invalidations.kernel = invalidator
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._fuse_main)
                nursery.start_soon(self._signals)
                nursery.start_soon(store.db.supervise)
                if store.feed is not None:  # other daemons' changes, on a shared database
                    nursery.start_soon(store.feed.run)
                nursery.start_soon(app.state.mcp.run)
                await nursery.start(self._serve, app, f"unix:{c.socket}")
                if c.listen:
                    await nursery.start(self._serve, BearerAuth(app, c.tokens), c.listen)
                # The spool's backlog is worked through after start-up, not before it.
                nursery.start_soon(self.spool.run)
                if self.learner is not None:
                    await nursery.start(self.learner.run)
                nursery.start_soon(self._preload, store)
                nursery.start_soon(trio.to_thread.run_sync, self._rebind_sandboxes)
                log.info("skillfs ready: mount %s, database %s, spool %s, socket %s",
                         self.mountpoint, store.health().get("database", c.db), c.spool,
                         c.socket)
                sd_notify("READY=1")
                if on_ready is not None:
                    on_ready()
        finally:
            sd_notify("STOPPING=1")
            invalidator.stop()
            fs.invalidations.kernel = None
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
            for lock in self._locks:
                lock.release()
            log.info("skillfs stopped")

    def _start_learner(self, store: Store) -> None:
        backend = self.config.learner.chosen_backend()
        self.learner_backend = backend
        if backend == "off":
            return  # the learner's modules (and their regexes) take a second to import
        from .learner import Learner

        self.learner = Learner(store, self.config.learner)
        store.subscribe(self.learner.on_store_event)

    def _rebind_sandboxes(self) -> None:
        """Bind-mounts made by `skillfs sandbox bind` died with the previous daemon: make
        them again where this process may mount; say which it could not."""
        from . import sandbox

        for b in sandbox.load(self.config.home):
            try:
                log.info("sandbox %s: %s", b.dir, sandbox.bind(self.mountpoint, b))
            except (sandbox.BindError, OSError) as e:
                log.warning("sandbox %s not bound again (%s); run `skillfs sandbox rebind` as "
                            "a user allowed to mount", b.dir, e)

    async def _preload(self, store: Store) -> None:
        t0 = time.monotonic()
        try:
            n = await store.files.preload()
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
            hc.umask = 0o177  # the socket is made 0600
        await serve(app, hc, task_status=task_status, mode="asgi")
