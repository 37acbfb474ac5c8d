"""Group commit: many small writes (spool files, API messages) share one transaction, each
writer is told only after its own change committed, and a failure stays with its writer.

The first tests drive the Database part on a real DuckDB file; the rest go through a real
daemon: a burst of spool files with a kill -9 in the middle, concurrent API messages over
the Unix socket, a message refused by a full disk.
"""

from __future__ import annotations

import json
import os
import threading
import time

import duckdb
import pytest
import trio

from conftest import wait_for
from skillfs.errors import SkillfsError
from skillfs.store import database
from skillfs.store.database import Database
from test_faults import _fill, _health, small_disk  # noqa: F401  (small_disk: a fixture)
from test_spool import messages, pending, session_by_name


def _db(tmp_path) -> Database:
    db = Database(str(tmp_path / "db.duckdb"), memory_limit="64MB", checkpoint_memory="256MB")
    db.con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return db


def _rows(db: Database) -> list[int]:
    return [r[0] for r in db.con.execute("SELECT x FROM t ORDER BY x").fetchall()]


def _insert(x: int, pause: float = 0.0):
    def sql(con) -> int:
        time.sleep(pause)  # holds the worker thread, so the writes after it queue up
        con.execute("INSERT INTO t VALUES (?)", [x])
        return x
    return sql


def test_concurrent_writes_commit_in_groups_and_a_failure_stays_with_its_writer(tmp_path):
    db = _db(tmp_path)
    results: dict[str, object] = {}

    async def write(key: str, fn) -> None:
        try:
            results[key] = await db.write(fn)
        except Exception as e:
            results[key] = e

    def boom(_con):
        raise ValueError("not this one")

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "first", _insert(-1, 0.2))
            await trio.sleep(0.05)
            for x in range(300):
                nursery.start_soon(write, f"w{x}", _insert(x))
                if x == 100:
                    nursery.start_soon(write, "duplicate", _insert(-1))  # committed already
                if x == 200:
                    nursery.start_soon(write, "raises", boom)

    trio.run(main)
    assert _rows(db) == [-1, *range(300)]
    assert all(results[f"w{x}"] == x for x in range(300))
    assert isinstance(results["duplicate"], SkillfsError), results["duplicate"]
    assert "constraint" in str(results["duplicate"]).lower()
    assert isinstance(results["raises"], ValueError)
    # the first runs alone, the rest queue behind it and share a commit
    assert db.group_totals == {"groups": 2, "writes": 303}
    assert db.healthy
    db.close()


def test_groups_are_capped_by_count_and_bytes(tmp_path):
    db = _db(tmp_path)

    many = 2 * database.GROUP_MAX_WRITES + 1
    big = database.GROUP_MAX_BYTES // 2 + 1  # two never fit in one group

    async def queued_behind_a_slow_one(writes: list) -> dict[str, int]:
        before = dict(db.group_totals)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.write, _insert(-1 - len(_rows(db)), 0.2))
            await trio.sleep(0.05)
            for fn, size in writes:
                nursery.start_soon(db.write, fn, size)
        return {k: db.group_totals[k] - before[k] for k in before}

    async def main():
        by_count = await queued_behind_a_slow_one([(_insert(x), 0) for x in range(many)])
        by_bytes = await queued_behind_a_slow_one([(_insert(many + x), big) for x in range(4)])
        return by_count, by_bytes

    by_count, by_bytes = trio.run(main)
    assert by_count == {"groups": 1 + 3, "writes": 1 + many}
    assert by_bytes == {"groups": 1 + 4, "writes": 1 + 4}
    assert len(_rows(db)) == many + 4 + 2
    db.close()


def test_a_writer_cancelled_while_waiting_still_learns_nothing_was_lost(tmp_path):
    db = _db(tmp_path)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.write, _insert(0, 0.2))
            await trio.sleep(0.05)
            nursery.start_soon(db.write, _insert(2))
            with trio.move_on_after(0.01):
                await db.write(_insert(1))  # queued behind the first, then cancelled

    trio.run(main)
    # a cancelled writer's change is not torn out of its group: it committed like the rest
    assert _rows(db) == [0, 1, 2]
    db.close()


def test_a_dead_connection_fails_the_whole_group_and_the_database_says_so(tmp_path):
    db = _db(tmp_path)

    def dies(con):
        con.close()  # what an invalidated database does to every later call
        raise duckdb.ConnectionException("Connection already closed!")

    async def main():
        errors = []

        async def write(fn):
            try:
                await db.write(fn)
            except Exception as e:
                errors.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, _insert(0, 0.2))
            await trio.sleep(0.05)
            for fn in (_insert(1), dies, _insert(2)):
                nursery.start_soon(write, fn)
        return errors

    errors = trio.run(main)
    # the group of three failed as one (no function can run alone on a dead connection);
    # the first, alone before it, committed
    assert len(errors) == 3 and all(isinstance(e, SkillfsError) for e in errors), errors
    assert db.invalidated and not db.healthy
    with pytest.raises(SkillfsError, match="unavailable"):
        trio.run(db.write, _insert(3))


# --- through the daemon ----------------------------------------------------------------

def _message_line(text: str) -> bytes:
    return json.dumps({"role": "user", "content": text}).encode() + b"\n"


def test_a_burst_of_one_message_files_is_ingested_once_in_order_through_a_kill9(make_daemon):
    """Files renamed in one by one, the sessions interleaved, while the daemon takes them in
    (a listing can then show a file and miss the one renamed just before it); a kill -9
    part of the way, the rest renamed in while it is down."""
    d = make_daemon("--learner", "off")
    sessions, per_session = 4, 500
    stage = d.root / "stage"
    for s in range(sessions):
        (stage / f"s{s}").mkdir(parents=True)
        (d.spool / f"burst/s{s}").mkdir(parents=True)
        for i in range(per_session):
            (stage / f"s{s}/{i:05}.jsonl").write_bytes(_message_line(f"s{s}-{i}"))
    arrivals = [f"s{s}/{i:05}.jsonl" for i in range(per_session) for s in range(sessions)]
    half = len(arrivals) // 2
    for rel in arrivals[:half]:
        os.rename(stage / rel, d.spool / "burst" / rel)
    wait_for(lambda: len(pending(d)) < half, timeout=30, interval=0.002,
             what="the burst to start going in")
    d.kill9()
    left = len(pending(d))
    for rel in arrivals[half:]:
        os.rename(stage / rel, d.spool / "burst" / rel)
    d.start()
    wait_for(lambda: not pending(d), timeout=60, what="the spool to drain")
    for s in range(sessions):
        texts = [m["text"] for m in messages(d, session_by_name(d, f"s{s}")["id"])]
        assert texts == [f"s{s}-{i}" for i in range(per_session)], (s, len(texts), left)
    assert not (d.spool / ".rejected").exists()


def _post(d, session_id: str, texts: list[str]) -> None:
    with d.http() as c:
        for text in texts:
            r = c.post(f"/api/v1/session/{session_id}/messages",
                       json={"blob": {"role": "user", "content": text}})
            assert r.status_code == 201, r.text


def test_concurrent_api_messages_share_commits_and_keep_each_writers_order(daemon):
    shared = daemon.api("POST", "/api/v1/session", json={}).json()["data"]["id"]
    writers, each = 8, 40
    before = _health(daemon)["group_commit"]
    threads = [threading.Thread(target=_post, args=(
        daemon, shared, [f"w{w}-{i}" for i in range(each)])) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _health(daemon)["group_commit"]
    texts = [m["text"] for m in messages(daemon, shared)]
    assert sorted(texts) == sorted(f"w{w}-{i}" for w in range(writers) for i in range(each))
    for w in range(writers):  # each writer waited for its message: its order holds
        mine = [t for t in texts if t.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(each)]
    seqs = [m["seq"] for m in daemon.api(
        "GET", f"/skillfs/v1/sessions/{shared}").json()["messages"]]
    assert seqs == list(range(writers * each))
    writes = after["writes"] - before["writes"]
    assert writes >= writers * each
    assert after["groups"] - before["groups"] < writes, (before, after)


@pytest.mark.duckdb_file
def test_a_message_refused_for_a_full_disk_gives_its_sequence_number_back(small_disk,  # noqa: F811
                                                                         make_daemon):
    d = make_daemon("--learner", "off", root=small_disk)
    session = d.api("POST", "/api/v1/session", json={}).json()["data"]["id"]
    url = f"/api/v1/session/{session}/messages"
    filler = _fill(small_disk)
    sent = 0
    with d.http() as c:
        for sent in range(200):  # DuckDB may have room left in blocks it already holds
            r = c.post(url, json={"blob": {"role": "user", "content": f"m{sent} " * 2000}})
            if r.status_code != 201:
                break
        assert r.status_code in (503, 507), r.text
    assert not _health(d)["healthy"]
    filler.unlink()

    def post_again() -> bool:
        r = d.api("POST", url, json={"blob": {"role": "user", "content": "after"}})
        return r.status_code == 201

    wait_for(post_again, timeout=60, interval=0.5, what="a message to be taken again")
    stored = d.api("GET", f"/skillfs/v1/sessions/{session}").json()["messages"]
    assert [m["seq"] for m in stored] == list(range(len(stored)))
    assert [m["text"] for m in stored][-1] == "after"
    assert len(stored) == sent + 1  # the refused message left no row and no gap
