"""A spool file that fails for reasons other than its content: retried with backoff, a
bounded number of times, then rejected; it never holds its session back for longer. The
database unavailable is the exception: the file waits, however long, and is then ingested.

A real Store on a temporary DuckDB file; the failure is the store raising Unavailable (what it
raises while its database cannot take changes) for the first calls.
"""

import itertools
import json
import os
import time
from pathlib import Path

import trio

from skillfs.errors import OutOfMemory, Unavailable
from skillfs.spool import SpoolIngester
from skillfs.store import Store


def _put(spool: Path, rel: str, text: str) -> None:
    path = spool / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".tmp").write_text(json.dumps({"role": "user", "content": text}))
    os.rename(path.with_name(path.name + ".tmp"), path)


def _failing_first(store: Store, times: int) -> list[float]:
    """Make the store's ingest raise Unavailable `times` times; returns when each call came."""
    calls: list[float] = []
    real = store.ingest_spool_files

    async def ingest(*args, **kw):
        calls.append(trio.current_time())
        if len(calls) <= times:
            raise Unavailable("the database is being reopened")
        return await real(*args, **kw)

    store.ingest_spool_files = ingest
    return calls


async def _texts(store: Store, session: str) -> list[str]:
    sessions = [s for s in await store.list_sessions() if s.name == session]
    if not sessions:
        return []
    return [m.body["text"] for m in await store.get_messages(sessions[0].id)]


async def _run_until(ing: SpoolIngester, done, timeout: float = 10.0) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(ing.run)
        with trio.fail_after(timeout):
            while not await done():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def test_transient_failure_is_retried_with_backoff_then_ingested(tmp_path):
    spool = tmp_path / "spool"
    store = Store(str(tmp_path / "db.duckdb"))
    calls = _failing_first(store, 3)
    _put(spool, "sp/se/1.json", "first")
    _put(spool, "sp/se/2.json", "second")
    ing = SpoolIngester(store, spool, retry_base=0.05, retry_tries=6)

    async def done():
        return await _texts(store, "se") == ["first", "second"]

    trio.run(_run_until, ing, done)
    gaps = [b - a for a, b in itertools.pairwise(calls[:4])]
    # at least 0.05, 0.1, 0.2 s apart: the wait doubles (only lower bounds: a loaded machine
    # stretches any gap, and a ratio of two measured gaps then fails for no fault here)
    assert all(g >= d * 0.9 for g, d in zip(gaps, [0.05, 0.1, 0.2], strict=True)), gaps
    assert ing.stats["errors"] == 3 and ing.stats["ingested"] == 2
    assert not (spool / ".rejected").exists() and ing.backlog() == 0
    store.close()


def test_always_failing_file_is_rejected_after_bounded_tries_and_the_session_goes_on(tmp_path):
    spool = tmp_path / "spool"
    store = Store(str(tmp_path / "db.duckdb"))
    _put(spool, "sp/se/1.json", "doomed")
    _put(spool, "sp/se/2.json", "next")
    ing = SpoolIngester(store, spool, retry_base=0.02, retry_tries=4)
    real = store.ingest_spool_files

    async def ingest(space, session, files):
        if files[0].rel_path.endswith("1.json"):
            raise OutOfMemory("the database is out of memory")
        return await real(space, session, files)

    store.ingest_spool_files = ingest

    async def done():
        return await _texts(store, "se") == ["next"]

    t0 = time.monotonic()
    trio.run(_run_until, ing, done)
    # 0.02 + 0.04 + 0.08 s of backoff: the next file waited about that long, not forever
    assert time.monotonic() - t0 < 3.0
    side = json.loads((spool / ".rejected" / "sp__se__1.json.error.json").read_text())
    assert side["path"] == "sp/se/1.json"
    assert "gave up after 4 tries" in side["reason"]
    assert "out of memory" in side["reason"]
    assert (spool / ".rejected" / "sp__se__1.json").exists()
    assert ing.stats["errors"] == 4 and ing.backlog() == 0
    store.close()


def test_a_file_waits_for_the_database_however_many_tries_it_takes(tmp_path):
    spool = tmp_path / "spool"
    store = Store(str(tmp_path / "db.duckdb"))
    calls = _failing_first(store, 8)  # twice the tries after which another error gives up
    _put(spool, "sp/se/1.json", "waited")
    ing = SpoolIngester(store, spool, retry_base=0.01, retry_max=0.05, retry_tries=4)

    async def done():
        return await _texts(store, "se") == ["waited"]

    trio.run(_run_until, ing, done)
    assert len(calls) == 9 and ing.stats["ingested"] == 1
    assert not (spool / ".rejected").exists() and ing.backlog() == 0
    store.close()
