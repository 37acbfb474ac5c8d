"""The PostgreSQL backend's own ways, on the tests' real server (tests/pgserver.py): the SQL
translation, text sorting by bytes, a group commit whose failing function is rolled back
alone, connections the server drops, a server that is down, a full disk, purge's
compaction, and a daemon mounted with `--db postgresql://…`."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from conftest import wait_for
from test_faults import _fill
from pgserver import PgServer
from skillfs.errors import StorageFull, Unavailable
from skillfs.schema import SCHEMA_VERSION
from skillfs.store import Store
from skillfs.store import postgres, versions
from skillfs.store.postgres import translate

pytestmark = pytest.mark.anyio


def test_a_url_is_shown_without_its_password() -> None:
    assert postgres.without_password("postgresql://me:s3cret@db.example:5432/skillfs") == \
        "postgresql://me:***@db.example:5432/skillfs"
    assert postgres.without_password("postgresql://me@/skillfs?host=/run&password=x") == \
        "postgresql://me@/skillfs?host=/run&password=***"


def test_translate_leaves_quoted_text_alone() -> None:
    assert translate("SELECT json_object('a?', x), '%' FROM t WHERE \"b?\" = ? AND c LIKE 'x%'"
                     ) == ("SELECT json_build_object('a?', x), '%%' FROM t "
                           "WHERE \"b?\" = %s AND c LIKE 'x%%'")
    assert translate("SELECT unnest(?::BLOB[]), 5 % 2") == \
        "SELECT unnest(%s::BYTEA[]), 5 %% 2"


def test_text_compares_by_bytes_as_in_duckdb(pg_url: str) -> None:
    """Text columns have the C collation, whatever the database's locale: 'B' sorts before
    'a', as in DuckDB."""
    store = Store(pg_url)
    try:
        collations = set(store.db.con.execute(
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = 'text'").fetchall())
        assert collations == {("C",)}
        store.db.con.execute("INSERT INTO skill_dirs VALUES ('k', 'a', 1), ('k', 'B', 1)")
        assert store.db.con.execute("SELECT path FROM skill_dirs ORDER BY path").fetchall() \
            == [("B",), ("a",)]
    finally:
        store.close()


async def test_a_failing_write_in_a_group_fails_alone(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]

        def insert(n: int):
            def fn(con):
                con.execute("INSERT INTO trash VALUES ('space', ?, 'n', '{}', '[]', 'a', 1)",
                            [f"id{n}"])
                if n == 3:
                    con.execute("SELECT CAST('x' AS INTEGER)")  # fails after its insert
                return n
            return fn
        results: dict[int, object] = {}

        async def one(n: int) -> None:
            try:
                results[n] = await store.db.write(insert(n))
            except Exception as e:
                results[n] = type(e).__name__
        before = dict(store.db.group_totals)
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(one, n)
        assert results == {0: 0, 1: 1, 2: 2, 3: "SkillfsError", 4: 4, 5: 5}
        assert store.db.group_totals["groups"] - before["groups"] < 6  # they were grouped
        ids = {i for (i,) in store.db.con.execute("SELECT id FROM trash").fetchall()}
        assert ids == {"id0", "id1", "id2", "id4", "id5"}  # the failed one's insert is gone
        await store.write_file(skill.id, "a.md", b"after\n", author="api")
    finally:
        store.close()


async def test_connections_the_server_ended_are_replaced(pg_server: PgServer,
                                                         pg_url: str) -> None:
    """Every connection ended under the store (its server processes killed): the pool
    checks a connection before handing it out, so the next reads and writes get new ones."""
    store = Store(pg_url)
    try:
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        await store.write_file(skill.id, "a.md", b"before\n", author="api")
        versions = (await store.counts())["file_versions"]
        assert pg_server.terminate(pg_url) >= 2  # the main connection and the pool's
        await store.write_file(skill.id, "b.md", b"after\n", author="api")
        assert (await store.counts())["file_versions"] == versions + 1
        assert store.health()["healthy"]
    finally:
        store.close()


async def test_a_server_that_is_down_is_refused_then_reached_again(
        pg_server: PgServer, pg_url: str, monkeypatch) -> None:
    """The server stops: the write that meets it fails with Unavailable, later ones are
    refused at once, reads from the tree and the cache go on; once the server is back the
    supervisor reaches it and writes work again. Nothing committed is lost."""
    monkeypatch.setattr(postgres, "PROBE_FIRST_DELAY", 0.05)
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 1)
    store = Store(pg_url)
    try:
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        await store.write_file(skill.id, "a.md", b"before\n", author="api")
        async with trio.open_nursery() as nursery:
            pg_server.stop()
            try:
                with pytest.raises(Unavailable):
                    await store.write_file(skill.id, "b.md", b"refused\n", author="api")
                health = store.health()
                assert not health["healthy"] and health["invalidated"], health
                with trio.fail_after(0.5), pytest.raises(Unavailable):  # at once
                    await store.write_file(skill.id, "b.md", b"refused\n", author="api")
                assert "b.md" not in store.skill(skill.id).files
                assert (await store.read_file(skill.id, "a.md")).content == b"before\n"
                nursery.start_soon(store.db.supervise)
                await trio.sleep(0.3)  # a probe or two fail meanwhile
                assert not store.health()["healthy"]
            finally:
                pg_server.start_again()
            with trio.fail_after(20):
                while not store.health()["healthy"]:
                    await trio.sleep(0.02)
            await store.write_file(skill.id, "b.md", b"after\n", author="api")
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    again = Store(pg_url)
    try:
        assert sorted(again.skill(skill.id).files) == ["SKILL.md", "a.md", "b.md"]
        assert (await again.read_file(skill.id, "b.md")).content == b"after\n"
    finally:
        again.close()


def test_a_daemon_mounted_on_postgres_keeps_its_files_there(make_daemon, pg_url: str,
                                                            pg_server: PgServer) -> None:
    """`skillfs mount --db postgresql://…`: what is written through the mount is in that
    database (no DuckDB file is made) and is there again after a restart."""
    d = make_daemon("--learner", "off", "--db", pg_url)
    os.mkdir(d.mnt / "alice")
    (d.mnt / "alice" / "daily-logs" / "today.md").write_text("on postgres\n")
    status = d.api("GET", "/skillfs/v1/status").json()
    assert status["database"]["backend"] == "postgresql"
    assert status["db"] == pg_url
    with psycopg.connect(pg_url) as con:
        paths = {p for (p,) in con.execute("SELECT path FROM files").fetchall()}
    assert "today.md" in paths
    assert not d.db.exists()
    d.restart()
    assert (d.mnt / "alice" / "daily-logs" / "today.md").read_text() == "on postgres\n"


async def test_a_purged_version_leaves_the_table_files(pg_server: PgServer,
                                                       pg_url: str) -> None:
    """Purge's compaction on PostgreSQL is VACUUM FULL: the purged bytes, still in the
    table's file as a dead row after the purge's UPDATE, are gone from it afterwards."""
    secret = os.urandom(16).hex().encode()
    store = Store(pg_url)
    try:
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        await store.write_file(skill.id, "a.md", b"key " + secret + b"\n", author="api")
        await store.write_file(skill.id, "a.md", b"clean\n", author="api")
        assert _in_table_files(pg_server, pg_url, secret)
        async with store.ctx.lock:  # the purge without its compaction: a dead row is left
            await store.db.write(lambda con: versions.purge(
                con, store.skill(skill.id).files["a.md"].id, {1}, ("tester", 1, "test")))
        assert _in_table_files(pg_server, pg_url, secret)
        out = await store.purge_file(skill.id, "a.md", by="tester", why="leak", version=1)
        assert out.compacted
        assert not _in_table_files(pg_server, pg_url, secret)
        assert (await store.read_file(skill.id, "a.md")).content == b"clean\n"
    finally:
        store.close()


def _in_table_files(server: PgServer, url: str, needle: bytes) -> bool:
    """Whether the files of file_versions (and its TOAST table) hold `needle`, once the
    server wrote what it holds in memory to them."""
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CHECKPOINT")
        paths = con.execute(
            "SELECT pg_relation_filepath(oid), pg_relation_filepath(reltoastrelid) "
            "FROM pg_class WHERE relname = 'file_versions'").fetchone()
    return any(needle in (server.data / path).read_bytes() for path in paths if path)


@pytest.fixture
def small_pg_server() -> Iterator[PgServer]:
    """A server of the test's own, its data on a 96 MB tmpfs (initdb takes about 40)."""
    root = Path(tempfile.mkdtemp(prefix="skillfs-pgsmall-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0755", "tmpfs", str(root)],
                   check=True)
    server = PgServer(root)
    try:
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
        os.rmdir(root)


async def test_a_full_disk_is_storage_full_and_passes(small_pg_server: PgServer,
                                                      monkeypatch) -> None:
    """The server's disk fills up: writes fail with StorageFull (or Unavailable, if the
    server had to restart), the store never dies of it, reads go on from memory, and once
    there is room again writes work and nothing committed is lost."""
    monkeypatch.setattr(postgres, "PROBE_FIRST_DELAY", 0.05)
    url = small_pg_server.fresh_database()
    store = Store(url)
    try:
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        await store.write_file(skill.id, "kept.md", b"kept\n", author="api")
        filler = _fill(small_pg_server.root)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.db.supervise)
            with pytest.raises((StorageFull, Unavailable)) as refused:
                for n in range(200):  # until the table needs a page the disk cannot give
                    await store.write_file(skill.id, f"f{n}.md", os.urandom(200_000).hex()
                                           .encode()[:300_000], author="api")
            assert "f199.md" not in store.skill(skill.id).files
            print(f"refused as {type(refused.value).__name__}: {refused.value}")
            assert not store.health()["healthy"]
            assert (await store.read_file(skill.id, "kept.md")).content == b"kept\n"
            filler.unlink()
            with trio.fail_after(30):
                while True:
                    try:
                        await store.write_file(skill.id, "after.md", b"room\n", author="api")
                        break
                    except (StorageFull, Unavailable):
                        await trio.sleep(0.1)
            assert store.health()["healthy"]
            nursery.cancel_scope.cancel()
        written = sorted(store.skill(skill.id).files)
    finally:
        store.close()
    again = Store(url)
    try:
        assert sorted(again.skill(skill.id).files) == written
        assert (await again.read_file(skill.id, "after.md")).content == b"room\n"
    finally:
        again.close()


def test_a_database_that_cannot_be_reached_stops_the_mount_with_why(
        make_daemon, pg_server: PgServer) -> None:
    d = make_daemon("--learner", "off", "--db", pg_server.url("no_such_database"),
                    start=False)
    with pytest.raises(AssertionError, match='cannot reach the database.*"no_such_database"'
                                             ' does not exist'):
        d.start()
    assert not d.db.exists()


def test_stores_opened_at_once_on_a_new_database_migrate_it_once(pg_url: str) -> None:
    """Daemons starting together on one new database: one migrates, the others wait for
    it and find the schema done."""
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(Store(pg_url))
        except BaseException as e:
            errors.append(e)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 4
        applied = stores[0].db.con.execute("SELECT version FROM schema_version "
                                           "ORDER BY version").fetchall()
        assert applied == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for store in stores:
            store.close()


def test_through_the_mount_a_server_that_is_down_fails_writes_not_reads(
        make_daemon, pg_url: str, pg_server: PgServer) -> None:
    """The database server stops under a running daemon: files read through the mount as
    before, a write fails with EIO, and once the server is back writes work again."""
    d = make_daemon("--learner", "off", "--db", pg_url)
    os.mkdir(d.mnt / "alice")
    skill = d.mnt / "alice" / "daily-logs"
    (skill / "a.md").write_text("before\n")
    pg_server.stop()
    try:
        assert (skill / "a.md").read_text() == "before\n"
        with pytest.raises(OSError) as refused:
            (skill / "b.md").write_text("refused\n")
        assert refused.value.errno == errno.EIO
        assert (skill / "a.md").read_text() == "before\n"
        assert not (skill / "b.md").exists()
    finally:
        pg_server.start_again()
    wait_for(lambda: d.api("GET", "/skillfs/v1/status").json()["database"]["healthy"],
             timeout=40, what="the daemon to reach the database again")
    (skill / "b.md").write_text("after\n")
    d.restart()
    assert (skill / "b.md").read_text() == "after\n"
