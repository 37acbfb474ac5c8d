"""The database failing under the daemon: a full disk, a tiny memory limit, a dead
connection. The daemon keeps serving what it has in memory, refuses writes with the right
error, and works again without a restart once the cause is gone."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import trio

from conftest import wait_for
from skillfs.errors import Unavailable
from skillfs.store import Store, database


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs for the daemon's data directory."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(root)],
                   check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def _health(d) -> dict:
    return d.api("GET", "/skillfs/v1/status").json()["database"]


@pytest.mark.duckdb_file
def test_disk_full_refuses_writes_and_recovers_once_space_is_freed(small_disk, make_daemon):
    d = make_daemon("--learner", "off", root=small_disk)
    os.mkdir(d.mnt / "alice")
    folder = d.mnt / "alice" / "daily-logs"
    kept = {f"kept-{i}.md": os.urandom(20_000).hex().encode() for i in range(5)}
    for name, data in kept.items():
        (folder / name).write_bytes(data)

    filler = _fill(small_disk)
    with pytest.raises(OSError) as refused:
        for i in range(20):  # DuckDB may have room left in blocks it already holds
            (folder / f"refused-{i}.md").write_bytes(os.urandom(200_000).hex().encode())
    assert refused.value.errno == errno.ENOSPC, refused.value
    assert Path(f"/proc/{d.pid}").exists(), "the daemon died of a full disk"
    assert sorted(p for p in os.listdir(folder) if p.startswith("kept")) == sorted(kept)
    for name, data in kept.items():
        assert (folder / name).read_bytes() == data
    assert not _health(d)["healthy"]
    status = d.cli("--socket", str(d.socket), "status").stdout
    assert "UNHEALTHY" in status and "disk full" in status, status

    filler.unlink()
    after = b"written after space came back\n"

    def write_again():
        try:
            (folder / "after.md").write_bytes(after)
            return True
        except OSError as e:
            assert e.errno in (errno.ENOSPC, errno.EIO), e
            return False
    wait_for(write_again, timeout=60, interval=0.5, what="a write to work again")
    wait_for(lambda: _health(d)["healthy"], timeout=10, what="the database to be healthy")
    d.restart()
    for name, data in {**kept, "after.md": after}.items():
        assert (folder / name).read_bytes() == data
    written = set(os.listdir(folder))
    for name in written - set(kept) - {"after.md", "SKILL.md"}:
        # a refused file is either absent or whole: never a torn version
        assert name.startswith("refused-") and len((folder / name).read_bytes()) == 400_000


@pytest.mark.long
@pytest.mark.duckdb_file
def test_tiny_memory_limit_under_sustained_load(make_daemon, tmp_path):
    """16 MB for DuckDB, the rules learner, a stream of spool files, many versions of a
    700 KB file and eight parallel writers at once: nothing crashes, everything reads back,
    and a restart works."""
    root = tmp_path / "tiny"
    (root / "home").mkdir(parents=True)
    (root / "home" / "config.toml").write_text('duckdb_memory = "16MB"\n')
    d = make_daemon("--learner", "rules", root=root)
    os.mkdir(d.mnt / "alice")
    big = d.mnt / "alice" / "daily-logs" / "big.md"
    base = os.urandom(350_000).hex().encode()  # 700 KB
    drops = []
    last = b""
    writers = [threading.Thread(target=_rewrite, args=(d.mnt / "alice" / "daily-logs" /
                                                       f"w{k}.md",)) for k in range(8)]
    for w in writers:
        w.start()
    for i in range(40):
        for j in range(15):
            n = i * 15 + j
            recs = [{"role": "user", "content": f"I always use pytest. Please fix bug {n}"},
                    {"role": "assistant", "content": f"fixed bug {n}: " + "y" * 300},
                    {"role": "user", "content": "thanks"}]
            if j == 14:
                recs.append({"event": "end"})
            drops.append(d.write_spool(f"alice/s{i:03d}/{j:03d}.jsonl",
                                       "".join(json.dumps(r) + "\n" for r in recs)))
        last = base[i * 1000:] + base[:i * 1000] + f"\nversion {i}\n".encode()
        big.write_bytes(last)
    for w in writers:
        w.join()
    wait_for(lambda: not any(p.exists() for p in drops), timeout=240, interval=0.5,
             what="the spool to drain")
    assert Path(f"/proc/{d.pid}").exists()
    for k in range(8):
        assert (d.mnt / "alice" / "daily-logs" / f"w{k}.md").read_bytes() == _rewritten(19)
    assert big.read_bytes() == last
    health = _health(d)
    assert health["healthy"] and health["memory_limit"] == "16MB", health
    peak_kb = next(int(line.split()[1]) for line in open(f"/proc/{d.pid}/status")
                   if line.startswith("VmHWM:"))
    assert peak_kb < 400_000, f"the daemon's memory peaked at {peak_kb // 1024} MB"
    assert not (d.spool / ".rejected").exists()
    d.restart()
    assert big.read_bytes() == last
    log = d.cli("--socket", str(d.socket), "log", str(big), "--json").stdout
    assert len(json.loads(log)) == 40
    assert "preloading the content cache failed" not in (d.home / "skillfs.log").read_text()


def _rewritten(i: int) -> bytes:
    return b"".join(b"line %d of a file rewritten again and again\n" % j for j in range(i * 60))


def _rewrite(path: Path) -> None:
    for i in range(20):
        path.write_bytes(_rewritten(i))


def test_a_dead_connection_is_refused_then_reopened(tmp_path, monkeypatch):
    """Close the connection under the store: writes get Unavailable, reads from the tree and
    the content cache go on, and the supervisor reopens it without a restart."""
    monkeypatch.setattr(database, "REOPEN_FIRST_DELAY", 0.05)
    store = Store(str(tmp_path / "s.duckdb"))

    async def main():
        space = await store.create_space("s")
        skill = store.space(space.id).skills["daily-logs"]
        await store.write_file(skill.id, "a.md", b"before\n", author="api")
        async with trio.open_nursery() as nursery:
            store.db.con.close()
            with pytest.raises(Unavailable):
                await store.write_file(skill.id, "b.md", b"refused\n", author="api")
            health = store.health()
            assert not health["healthy"] and health["invalidated"], health
            assert "b.md" not in skill.files
            # refused at once while it is down, without touching DuckDB
            with pytest.raises(Unavailable):
                await store.write_file(skill.id, "b.md", b"refused\n", author="api")
            assert (await store.read_file(skill.id, "a.md")).content == b"before\n"
            assert (await store.counts())["files"] == 3
            nursery.start_soon(store.db.supervise)
            with trio.fail_after(10):
                while not store.health()["healthy"]:
                    await trio.sleep(0.02)
            await store.write_file(skill.id, "b.md", b"after\n", author="api")
            assert (await store.counts())["file_versions"] == 4
            nursery.cancel_scope.cancel()
        return skill.id
    skill_id = trio.run(main)
    store.close()
    again = Store(str(tmp_path / "s.duckdb"))
    try:
        assert sorted(again.skill(skill_id).files) == ["SKILL.md", "a.md", "b.md"]
    finally:
        again.close()


def test_a_database_that_cannot_be_reopened_stops_the_supervisor(tmp_path, monkeypatch):
    monkeypatch.setattr(database, "REOPEN_FIRST_DELAY", 0.01)
    monkeypatch.setattr(database, "REOPEN_MAX_DELAY", 0.02)
    monkeypatch.setattr(database, "REOPEN_ATTEMPTS", 3)
    path = tmp_path / "s.duckdb"
    store = Store(str(path))

    async def main():
        store.db.con.close()
        os.rename(path, tmp_path / "moved.duckdb")
        path.write_bytes(b"not a database" * 1000)
        with pytest.raises(Unavailable):
            await store.create_space("s")
        with pytest.raises(database.DatabaseLost, match="could not be reopened"):
            with trio.fail_after(10):
                await store.db.supervise()
    trio.run(main)


@pytest.mark.duckdb_file
def test_a_checkpoint_that_hits_a_full_disk_invalidates_then_reopens(small_disk, make_daemon):
    """A commit that fits but whose checkpoint does not: DuckDB invalidates the database.
    The daemon stays up, refuses writes, serves reads, and reopens it once there is room."""
    home = small_disk / "home"
    home.mkdir()
    (home / "config.toml").write_text('duckdb_memory = "8MB"\n')  # checkpoint at 1 MB of log
    d = make_daemon("--learner", "off", root=small_disk)
    os.mkdir(d.mnt / "alice")
    folder = d.mnt / "alice" / "daily-logs"
    kept = {f"kept-{i}.md": os.urandom(75_000).hex().encode() for i in range(4)}  # 600 KB
    for name, data in kept.items():
        (folder / name).write_bytes(data)
    spacer = small_disk / "spacer"
    spacer.write_bytes(b"\0" * 700_000)
    filler = _fill(small_disk)
    spacer.unlink()
    last = os.urandom(225_000).hex().encode()  # its log entry fits, the checkpoint does not
    (folder / "last.md").write_bytes(last)
    wait_for(lambda: _health(d)["invalidated"], timeout=10, what="the database to fail")
    assert Path(f"/proc/{d.pid}").exists()
    with pytest.raises(OSError) as refused:
        (folder / "refused.md").write_bytes(b"no room\n")
    assert refused.value.errno in (errno.ENOSPC, errno.EIO)
    for name, data in {**kept, "last.md": last}.items():
        assert (folder / name).read_bytes() == data
    assert "UNHEALTHY" in d.cli("--socket", str(d.socket), "status").stdout

    filler.unlink()
    wait_for(lambda: _health(d)["healthy"], timeout=60, interval=0.5,
             what="the database to be reopened")
    (folder / "after.md").write_bytes(b"after\n")
    d.restart()
    for name, data in {**kept, "last.md": last, "after.md": b"after\n"}.items():
        assert (folder / name).read_bytes() == data


def test_long_messages_checkpoint_under_a_small_limit(tmp_path):
    """30 MB of 20 KB messages (text and original) under a 16 MB limit: DuckDB holds a row
    group's long strings in memory to checkpoint it, so checkpoints (and the log's replay
    at the next open) get a limit of their own and never fail."""
    from skillfs.messages import Message

    path = str(tmp_path / "m.duckdb")
    store = Store(path, duckdb_memory="16MB", temp_dir=tmp_path / "spill")
    texts = [os.urandom(5_000).hex() for _ in range(1500)]

    async def main():
        space = await store.create_space("s")
        session = await store.create_session(space_id=space.id)
        for i in range(0, len(texts), 10):  # ten a transaction, as a spool file brings them
            await store.add_messages(session.id, [Message.model_validate(
                {"role": "assistant", "text": text, "format": "openai",
                 "original": {"role": "assistant", "content": text}}) for text in texts[i:i + 10]])
        assert store.health()["healthy"], store.health()
        return session.id
    session_id = trio.run(main)
    store.close()
    store = Store(path, duckdb_memory="16MB", temp_dir=tmp_path / "spill")
    try:
        got = trio.run(store.get_messages, session_id, 1489)
        assert [m.body["text"] for m in got] == texts[-10:]
        assert trio.run(store.counts)["messages"] == len(texts)
    finally:
        store.close()
