"""A real PostgreSQL server for the tests (a plugin of tests/conftest.py).

One server per test session, started from Debian's binaries (/usr/lib/postgresql/VER/bin,
installed by `scripts/setup test`) in a temporary directory of its own: `initdb`, then
`pg_ctl start` listening on a Unix socket in that directory only (no TCP port, so nothing
clashes with another server or another engineer's run). PostgreSQL refuses to run as root:
as root, the server runs as `nobody` (`runuser`). A test that needs a database gets a fresh
one (`fresh_database`, CREATE DATABASE: a copy of template1, a few milliseconds). A server
that cannot start fails the tests that asked for it; they are never skipped.

`--backend postgres` makes the daemon fixtures (tests/conftest.py) start daemons on a fresh
database of this server, so the end-to-end suite runs against PostgreSQL.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "nobody"  # the server's own user when the tests run as root
DB_USER = "skillfs"  # the database superuser initdb creates


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=("duckdb", "postgres"), default="duckdb",
                     help="the database the daemon fixtures start daemons on")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only: several daemons sharing one "
                            "PostgreSQL database; run by the postgres suite (--backend "
                            "postgres) only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The postgres-only tests leave the DuckDB suite: deselected, not skipped."""
    if config.getoption("--backend") == "postgres":
        return
    kept = [item for item in items if not item.get_closest_marker("postgres_only")]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql: "
                           "run scripts/setup test")
    return Path(found[-1]).parent


class PgServer:
    """A PostgreSQL cluster in a directory of its own, reached on its own socket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "server.log"
        self.bin = _bin_dir()
        self._names = itertools.count(1)
        self.tcp: str | None = None  # an address it also listens on, port 5432

    def _run(self, tool: str, *args: str) -> None:
        as_user = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        r = subprocess.run([*as_user, str(self.bin / tool), *args], capture_output=True,
                           text=True, timeout=120, cwd=self.root)
        if r.returncode != 0:
            tail = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({r.returncode}): {r.stderr}{r.stdout}\n{tail}")

    def start(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        # test data only: no fsync, and the C locale, as bytes sort in DuckDB
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust",
                  "--no-locale", "-E", "UTF8", "--no-sync")
        self.start_again()

    def start_again(self) -> None:
        """Start the server (after `stop`: a server that was down, with its data)."""
        options = f"-k {self.socket_dir} -c listen_addresses='{self.tcp or ''}' -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l",
                  str(self.log), "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def listen_tcp(self, address: str | None, clients: str = "") -> None:
        """Restart the server listening on TCP at `address` too (None: the socket only),
        trusting connections from the network `clients` (CIDR); its socket still serves."""
        if clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} trust\n")
        self.stop()
        self.tcp = address
        self.start_again()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@/{database}?host={self.socket_dir}"

    def tcp_url(self, url: str) -> str:
        """`url`'s database, reached over TCP."""
        assert self.tcp is not None
        database = url.split("?")[0].rsplit("/", 1)[1]
        return f"postgresql://{DB_USER}@{self.tcp}:5432/{database}"

    def fresh_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def terminate(self, url: str) -> int:
        """End every session on `url`'s database, as a crash of their server processes
        would; how many."""
        database = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as con:
            return len(con.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", [database]).fetchall())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not below pytest's temporary directory: as root that is 0700, closed to the server's
    # user; a short path also keeps the socket's path within its 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="skillfs-pg-"))
    server = PgServer(root)
    try:
        server.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh database of the session's server."""
    return pg_server.fresh_database()


@pytest.fixture(scope="session")
def daemon_db(request: pytest.FixtureRequest) -> Callable[[], list[str]]:
    """A new daemon's `--db` for the chosen backend: a fresh database's URL under
    `--backend postgres`, else nothing (the daemon's own DuckDB file)."""
    def args() -> list[str]:
        if request.config.getoption("--backend") != "postgres":
            return []
        return ["--db", request.getfixturevalue("pg_server").fresh_database()]
    return args
