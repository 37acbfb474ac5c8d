"""A real PostgreSQL server for the tests (a plugin of tests/conftest.py).

One server per test session (scripts/pg_cluster.py: Debian's binaries, a temporary directory
of its own, a Unix socket there and no TCP port, run as `nobody` when the tests run as root).
A test that needs a database gets a fresh one (`fresh_database`, CREATE DATABASE: a copy of
template1, a few milliseconds). A server
that cannot start fails the tests that asked for it; they are never skipped.

`--backend postgres` makes the daemon fixtures (tests/conftest.py) start daemons on a fresh
database of this server, so the end-to-end suite runs against PostgreSQL.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The cluster itself is scripts/pg_cluster.py, shared with scripts/bench.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pg_cluster import PgServer  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=("duckdb", "postgres"), default="duckdb",
                     help="the database the daemon fixtures start daemons on")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only: several daemons sharing one "
                            "PostgreSQL database; run by the postgres suite (--backend "
                            "postgres) only")
    config.addinivalue_line("markers", "duckdb_file: an end-to-end test of the daemon's "
                            "DuckDB file itself (its bytes, its compaction, its memory "
                            "limit); left out of the postgres suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each suite leaves out the other's own tests: deselected, not skipped."""
    other = "duckdb_file" if config.getoption("--backend") == "postgres" else "postgres_only"
    kept = [item for item in items if not item.get_closest_marker(other)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


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
