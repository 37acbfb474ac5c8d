"""File versions are stored as splices of the version before: an append-only file costs what
was appended, and every version still reads back exactly as it was written. The tests taking
`database` run on DuckDB and on PostgreSQL (tests/storetier.py)."""

from __future__ import annotations

import os
import random
import re

import duckdb
import psycopg
import trio

from skillfs.schema import SCHEMA_VERSION, statements
from skillfs.store import Store, versions
from skillfs.store.postgres import translate
from skillfs.store.rows import sha256
from storetier import daemon_database


def _stored_bytes(store: Store) -> int:
    return store.db.con.execute("SELECT coalesce(sum(octet_length(content)), 0) "
                                "FROM file_versions").fetchone()[0]


def _read_back(store: Store, file_id: int, count: int) -> dict[int, bytes]:
    got = versions.read_contents(store.db.con, [(file_id, v) for v in range(1, count + 1)])
    return {v: got[(file_id, v)] for _, v in got}


def test_appends_through_the_mount_cost_what_was_appended(make_daemon):
    d = make_daemon("--learner", "off")
    os.mkdir(d.mnt / "alice")
    path = d.mnt / "alice" / "daily-logs" / "log.md"
    rng = random.Random(7)
    written: list[bytes] = []
    content = b""
    for _ in range(200):
        chunk = bytes(rng.choice(b"abcdefghijklmnop \n") for _ in range(1023)) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, chunk)
        finally:
            os.close(fd)
        content += chunk
        written.append(content)
    assert path.read_bytes() == content
    d.stop()
    store = Store(daemon_database(d))
    try:
        file_id, = store.db.con.execute("SELECT id FROM files WHERE path = 'log.md'").fetchone()
        stored = _stored_bytes(store)
        got = _read_back(store, file_id, 200)
    finally:
        store.close()
    total = len(content)
    # Whole copies of every version would be ~20 MB (quadratic); splices keep it linear.
    assert stored < 2 * total, (stored, total)
    assert len(got) == 200
    for v, expected in enumerate(written, start=1):
        assert got[v] == expected, f"version {v} differs"
    d.start()
    assert path.read_bytes() == content


def _write_all(store: Store, contents: list[bytes]) -> int:
    async def main():
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        node = None
        for data in contents:
            node = await store.write_file(skill.id, "f.md", data, author="api")
        return node.id
    return trio.run(main)


def test_edits_anywhere_read_back_and_chains_stay_short(database):
    """Edits at the start, middle and end, shrinking and growing, rewrites and deletions:
    every version reads back byte-identical, and no chain is longer than MAX_CHAIN."""
    rng = random.Random(3)
    text = bytearray(b"# notes\n")
    contents = []
    for i in range(400):
        at = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.5:
            text[at:at] = f"line {i} {rng.random()}\n".encode()
        elif op < 0.8:
            del text[at:at + rng.randrange(40)]
        elif op < 0.97:
            text[at:at + 10] = b"REPLACED"
        else:
            text = bytearray(os.urandom(300))  # a whole rewrite: stored whole
        contents.append(bytes(text))
    store = Store(database)
    file_id = _write_all(store, contents)

    async def reread():
        return await store.db.run(store.files.read_versions,
                               [(file_id, v) for v in range(1, len(contents) + 1)])
    got = trio.run(reread)
    store.close()
    assert [got[(file_id, v)] for v in range(1, len(contents) + 1)] == contents
    store = Store(database)  # what is stored, read afresh
    depth, = store.db.con.execute("SELECT max(delta_depth) FROM file_versions").fetchone()
    stored, = store.db.con.execute("SELECT sum(octet_length(content)) FROM file_versions "
                                   "WHERE file_id = ?", [file_id]).fetchone()
    store.close()
    assert 0 < depth <= versions.MAX_CHAIN
    assert stored < sum(len(c) for c in contents) / 4


def test_an_old_database_upgrades_in_place(database, store_backend):
    """Rows written before splices existed stay whole copies and read back; the versions
    written after them are splices."""
    con = _raw_connection(database, store_backend)
    execute = con.execute if store_backend == "duckdb" else \
        lambda sql, args=(): con.execute(translate(sql), args)
    execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in statements(1, store_backend):
        execute(stmt)
    execute("INSERT INTO schema_version VALUES (1)")
    md = b"---\nname: notes\ndescription: old notes\n---\nbody\n"
    old = b"old content\n" * 1000
    execute("INSERT INTO skills VALUES ('k1', 'notes', 'old notes', '{}', 1, 1, NULL)")
    execute("INSERT INTO files VALUES (1, 'k1', 'SKILL.md', 1, false, 1)")
    execute("INSERT INTO files VALUES (2, 'k1', 'a.md', 2, false, 1)")
    execute("INSERT INTO file_versions VALUES (1, 1, 'SKILL.md', ?, ?, ?, 'cli', '', "
            "NULL, NULL, 1, false)", [md, sha256(md), len(md)])
    for v, data in ((1, old[:5000]), (2, old)):
        execute("INSERT INTO file_versions VALUES (2, ?, 'a.md', ?, ?, ?, 'cli', '', "
                "NULL, NULL, 1, false)", [v, data, sha256(data), len(data)])
    con.close()

    store = Store(database)
    newer = old + b"appended\n"

    async def main():
        assert (await store.read_file("k1", "a.md")).content == old
        await store.write_file("k1", "a.md", newer, author="api")
        return await store.db.run(store.files.read_versions, [(2, 1), (2, 2), (2, 3)])
    got = trio.run(main)
    store.close()
    assert got == {(2, 1): old[:5000], (2, 2): old, (2, 3): newer}
    store = Store(database)
    rows = store.db.con.execute("SELECT version, delta_depth, octet_length(content) "
                                "FROM file_versions WHERE file_id = 2 ORDER BY version"
                                ).fetchall()
    assert store.db.con.execute("SELECT max(version) FROM schema_version"
                                ).fetchone()[0] == SCHEMA_VERSION
    store.close()
    assert rows[:2] == [(1, 0, 5000), (2, 0, len(old))]
    assert rows[2][1] == 1 and rows[2][2] < 100


def _raw_connection(database: str, backend: str):
    """A connection of the database's own driver, outside any store (autocommit)."""
    if backend == "duckdb":
        return duckdb.connect(database)
    return psycopg.connect(database, autocommit=True)


def test_revert_and_undelete_read_through_splices(daemon):
    os.mkdir(daemon.mnt / "alice")
    path = daemon.mnt / "alice" / "daily-logs" / "r.md"
    contents = [b"start\n" + b"".join(b"entry %d\n" % j for j in range(i)) for i in range(1, 30)]
    for data in contents:
        path.write_bytes(data)
    daemon.cli("revert", str(path), "5")
    assert path.read_bytes() == contents[4]
    os.unlink(path)
    daemon.cli("revert", str(path), "20")
    assert path.read_bytes() == contents[19]
    daemon.restart()
    assert path.read_bytes() == contents[19]


def test_import_tree_keeps_long_content_in_chunks(tmp_path, database):
    src = tmp_path / "src" / "alice" / "notes"
    src.mkdir(parents=True)
    (src / "SKILL.md").write_text("---\nname: notes\ndescription: imported\n---\nbody\n")
    big = os.urandom(100_000).hex().encode()
    (src / "big.md").write_bytes(big)
    store = Store(database, duckdb_memory=None)
    store.import_tree(str(tmp_path / "src"))
    store.close()
    store = Store(database)

    async def main():
        skill = store.space("alice").skills["notes"]
        return (await store.read_file(skill.id, "big.md")).content
    assert trio.run(main) == big
    chunks, = store.db.con.execute("SELECT count(*) FROM version_chunks").fetchone()
    store.close()
    assert chunks == -(-len(big) // versions.CHUNK)


def _chains_hold(con, file_id: int) -> None:
    """Every splice sits on the version before it, which is neither purged nor deleted."""
    rows = con.execute("SELECT version, delta_depth, purged_at_ns, deleted FROM file_versions "
                       "WHERE file_id = ? ORDER BY version", [file_id]).fetchall()
    by_version = {r[0]: r for r in rows}
    for version, depth, _, _ in rows:
        if depth:
            before = by_version[version - 1]
            assert before[1] == depth - 1, (version, depth, before)
            assert before[2] is None and not before[3], (version, before)


def test_purging_versions_rebases_the_splices_after_them(database):
    """Purged versions read as b"" and lose their chunks; every other version, splices of a
    purged one and long chains through one among them, reads back byte-identical."""
    rng = random.Random(5)
    text = bytearray(b"# log\n" + b"seed line\n" * 400)  # long: chunked when stored whole
    contents = []
    for i in range(120):
        if i % 40 == 39:
            text = bytearray(os.urandom(200).hex().encode())  # a rewrite: stored whole
        else:
            at = rng.randrange(len(text) + 1)
            text[at:at] = f"entry {i}\n".encode()
        contents.append(bytes(text))
    store = Store(database)
    file_id = _write_all(store, contents)
    doomed = {1, 2, 7, 39, 40, 41, 80, 119}
    store.db.tx(lambda con: versions.purge(con, file_id, doomed, ("tester", 1, "test")))
    every = [(file_id, v) for v in range(1, len(contents) + 1)]
    got = store.files.read_versions(every)
    for v in range(1, len(contents) + 1):
        expected = b"" if v in doomed else contents[v - 1]
        assert got[(file_id, v)] == expected, f"version {v} differs"
    _chains_hold(store.db.con, file_id)
    left, = store.db.con.execute(
        f"SELECT count(*) FROM version_chunks WHERE file_id = ? AND version IN "
        f"({','.join(map(str, doomed))})", [file_id]).fetchone()
    marked = store.db.con.execute(
        "SELECT version, purged_by, purge_reason, sha256 FROM file_versions "
        "WHERE purged_at_ns IS NOT NULL ORDER BY version").fetchall()
    store.close()
    assert left == 0
    assert marked == [(v, "tester", "test", "") for v in sorted(doomed)]


def test_purge_by_pattern_rewrites_the_current_content(database):
    """Versions that held the secret are purged; the current one is first written again
    without it, so the file reads the same but for the match; a new write still splices."""
    secret = b"sk-live-0123456789"
    contents = [b"notes\n", b"notes\nkey " + secret + b"\n",
                b"notes\nkey " + secret + b"\nmore\n", b"notes\nmore\n",
                b"notes\nmore\nagain " + secret + b"\n"]
    store = Store(database)
    file_id = _write_all(store, contents)

    async def main():
        skill = store.space("s").skills["daily-logs"]
        out = await store.purge_file(skill.id, "f.md", by="tester", why="leaked key",
                                     pattern=re.escape(secret.decode()))
        current = await store.read_file(skill.id, "f.md")
        await store.write_file(skill.id, "f.md", current.content + b"next\n", author="api")
        log = await store.file_log(skill.id, "f.md")
        return out, current, log
    out, current, log = trio.run(main)
    got = store.files.read_versions([(file_id, v) for v in range(1, 8)])
    _chains_hold(store.db.con, file_id)
    depth, = store.db.con.execute("SELECT delta_depth FROM file_versions WHERE file_id = ? "
                               "AND version = 7", [file_id]).fetchone()
    store.close()
    assert out.purged == [2, 3, 5] and out.rewritten == 6 and out.compacted
    assert current.version == 6 and current.content == b"notes\nmore\nagain [purged]\n"
    assert [got[(file_id, v)] for v in (1, 4)] == [contents[0], contents[3]]
    assert all(got[(file_id, v)] == b"" for v in (2, 3, 5))
    assert depth == 1  # the write after the purge is a splice of the rewritten version
    assert [(r.version, r.purged_by, r.purge_reason) for r in log if r.purged_at_ns] == [
        (2, "tester", "leaked key"), (3, "tester", "leaked key"), (5, "tester", "leaked key")]
    assert log[5].author == "tester" and log[5].reason == "purge: leaked key"
