"""The daemon fixture: a real skillfs process on a temporary mountpoint, database and spool.

Tests talk to it the way users do: through the mount with os calls and real tools, through
spool files, through the CLI and over HTTP on its Unix socket. A test fails if the daemon
leaves its mount behind. FUSE must work here: if the mount fails, the test fails.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skillfs.mounts import daemon_pid

# the store tier's fixtures (store, fs, kernel, consistent …): tests/storetier.py; the
# PostgreSQL server (pg_server, pg_url) and --backend: tests/pgserver.py
pytest_plugins = ["storetier", "pgserver"]

SKILLFS = str(Path(sys.executable).with_name("skillfs"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Modules holding a test marked `long` start first: started last, such a test would
    run on alone at the end of the parallel run. A module stays in one piece, so that its
    module-scoped fixtures are made once."""
    long_modules = {item.module for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.module not in long_modules)
    # After xdist's own hook: a group it did not apply would silently cost a module
    # fixture per worker (pytest-xdist 3.8 cannot apply them under pytest 9.2).
    if config.getoption("dist", "no") == "loadgroup" and "PYTEST_XDIST_WORKER" in os.environ:
        ungrouped = [item.nodeid for item in items
                     if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if ungrouped:
            raise pytest.UsageError(f"xdist_group was not applied to {ungrouped[0]} …")


class lazy_import:  # noqa: N801  (stands in for a module)
    """The module `name`, imported at the first use of one of its attributes. Every xdist
    worker imports every test module to collect it; an SDK such as acontext's or mcp's takes
    seconds of CPU to import, which only a worker that runs its tests should pay. (Not
    importlib's LazyLoader: collection's isinstance checks on module attributes load that.)"""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):  # what collection asks of every module attribute
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


class Daemon:
    shared = False  # serves a whole module's tests (shared_daemon)

    def __init__(self, root: Path, args: list[str]):
        self.root = root
        self.home = root / "home"
        self.mnt = root / "mnt"
        self.spool = self.home / "spool"
        self.db = self.home / "skillfs.duckdb"
        # --backend postgres gives the daemon a database URL: then there is no DuckDB file
        self.on_duckdb = not any(a.startswith("postgresql://") for a in args)
        self.socket = self.home / "skillfs.sock"
        self.args = args
        self.wrap: list[str] = []  # a command the daemon starts under (e.g. nsenter)
        self.pid: int | None = None
        self.mnt.mkdir(parents=True, exist_ok=True)
        # none of the caller's settings (SKILLFS_*, OPENAI_*) reach the daemon
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SKILLFS_", "OPENAI_")) or k == "SKILLFS_NOFLUSH"}
        self.env["SKILLFS_HOME"] = str(self.home)

    def start(self, *extra: str) -> None:
        r = subprocess.run([*self.wrap, SKILLFS, "mount", str(self.mnt), *self.args, *extra],
                           env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            log = self.home / "skillfs.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f"skillfs mount failed ({r.returncode}): {r.stderr}\n{tail}")
        assert is_mounted(self.mnt), "skillfs mount returned but nothing is mounted"
        self.pid = daemon_pid(self.mnt)
        assert self.pid, "no daemon pid for the mount"

    def stop(self) -> None:
        r = self.cli("umount", str(self.mnt), check=False)
        assert r.returncode == 0, f"umount failed: {r.stderr}"
        assert not is_mounted(self.mnt), "the daemon left its mount behind"
        self.pid = None

    def restart(self, *extra: str) -> None:
        self.stop()
        self.start(*extra)

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{self.pid}").exists(), what="daemon to die")
        self.pid = None

    def cli(self, *args: str, check: bool = True, input: str | None = None):
        r = subprocess.run([SKILLFS, *args], env=self.env, capture_output=True, text=True,
                           timeout=120, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"skillfs {' '.join(args)} failed: {r.stderr}{r.stdout}")
        return r

    def http(self) -> httpx.Client:
        # A Unix socket has no TLS: without verify=False, httpx loads the CA bundle for the
        # client and for its transport (~50 ms of CPU each call, and tests poll with it).
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket), verify=False),
                            base_url="http://skillfs", timeout=60, verify=False)

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        with self.http() as c:
            return c.request(method, path, **kw)

    def write_spool(self, rel: str, data: bytes | str) -> Path:
        """Write a spool file the way agents should: a temp name, then rename."""
        path = self.spool / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.rename(tmp, path)
        return path

    def cleanup(self) -> None:
        if self.pid is not None and Path(f"/proc/{self.pid}").exists():
            self.stop()
        elif is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
            raise AssertionError("a mount was left behind by a dead daemon")


@pytest.fixture
def make_daemon(tmp_path, daemon_db):
    made: list[Daemon] = []

    def make(*args: str, start: bool = True, root: Path | None = None) -> Daemon:
        # the test's own --db, if it gives one, comes last and wins
        d = Daemon(root or tmp_path / f"d{len(made)}", [*daemon_db(), *args])
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    errors = []
    for d in made:
        try:
            d.cleanup()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("; ".join(errors))


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    """A daemon with the learner off, so files change only when a test changes them."""
    return make_daemon("--learner", "off")


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory, daemon_db) -> Iterator[Daemon]:
    """One daemon (learner off) for a module whose tests each work in a space of their own
    and neither restart it nor look at the whole mount: starting a daemon is most of such a
    test's cost. A module opts in by making `daemon` this one."""
    d = Daemon(tmp_path_factory.mktemp("shared"), [*daemon_db(), "--learner", "off"])
    d.shared = True
    d.start()
    yield d
    d.cleanup()


@pytest.fixture
def own_daemon(make_daemon) -> Daemon:
    """A daemon of the test's own, in a module that shares one: to restart or kill it."""
    return make_daemon("--learner", "off")


_space_numbers = itertools.count(1)


@pytest.fixture
def space(daemon) -> Path:
    """A new space: "alice" on a daemon of the test's own, a name of its own on a shared one."""
    name = f"s{next(_space_numbers)}" if daemon.shared else "alice"
    os.mkdir(daemon.mnt / name)
    return daemon.mnt / name


def run(*cmd: str, cwd=None, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=check,
                          timeout=60)


__all__ = ["Daemon", "wait_for", "is_mounted", "run", "shutil"]
