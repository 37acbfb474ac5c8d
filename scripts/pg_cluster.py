"""A PostgreSQL cluster of its own in a directory: for the tests (tests/pgserver.py) and for
`scripts/bench --backend postgres`, never for a user's data.

Started from Debian's binaries (/usr/lib/postgresql/VER/bin; `scripts/setup` installs them
for the tests and the bench): `initdb`, then `pg_ctl start` listening on a Unix socket in
that directory only (no TCP port, so nothing clashes with another server). PostgreSQL refuses
to run as root: as root, the server runs as `nobody` (`runuser`). The tests' cluster trades
durability for speed (no fsync); the bench's keeps PostgreSQL's defaults, so its figures
compare with DuckDB's, which syncs its commits.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import subprocess
from pathlib import Path

import psycopg

SERVER_USER = "nobody"  # the server's own user when run as root
DB_USER = "skillfs"  # the database superuser initdb creates


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql: "
                           "run scripts/setup test")
    return Path(found[-1]).parent


class PgServer:
    """A PostgreSQL cluster in a directory of its own, reached on its own socket."""

    def __init__(self, root: Path, durable: bool = False) -> None:
        self.root = root
        self.durable = durable
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "server.log"
        self.bin = bin_dir()
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
        # the C locale, as bytes sort in DuckDB
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust",
                  "--no-locale", "-E", "UTF8", *([] if self.durable else ["--no-sync"]))
        self.start_again()

    def start_again(self) -> None:
        """Start the server (after `stop`: a server that was down, with its data)."""
        options = f"-k {self.socket_dir} -c listen_addresses='{self.tcp or ''}' " \
                  "-c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
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

    def size_mb(self, url: str) -> float:
        """How much disk `url`'s database takes."""
        with psycopg.connect(url) as con:
            row = con.execute("SELECT pg_database_size(current_database())").fetchone()
        return row[0] / 1e6 if row else 0.0

    def terminate(self, url: str) -> int:
        """End every session on `url`'s database, as a crash of their server processes
        would; how many."""
        database = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as con:
            return len(con.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", [database]).fetchall())
