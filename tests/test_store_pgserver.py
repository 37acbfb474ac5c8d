"""The tests' PostgreSQL server itself (tests/pgserver.py): it runs, not as root, on a
socket of its own, and each test's database is new and empty."""

from __future__ import annotations

import psycopg

from pgserver import PgServer


def test_fresh_databases_are_empty_and_apart(pg_server: PgServer) -> None:
    first, second = pg_server.fresh_database(), pg_server.fresh_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as con:
        con.execute("CREATE TABLE mine (x INTEGER)")
    with psycopg.connect(second, autocommit=True) as con:
        tables = con.execute("SELECT count(*) FROM information_schema.tables "
                             "WHERE table_schema = 'public'").fetchone()
        assert tables == (0,)
        user = con.execute("SELECT usename FROM pg_stat_activity "
                           "WHERE pid = pg_backend_pid()").fetchone()
        assert user == ("skillfs",)
        port = con.execute("SHOW listen_addresses").fetchone()
        assert port == ("",)  # a socket of its own, no TCP port


def test_the_server_runs_as_an_unprivileged_user(pg_server: PgServer) -> None:
    pid = int((pg_server.data / "postmaster.pid").read_text().split()[0])
    with open(f"/proc/{pid}/status") as f:
        uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    assert uid != 0
