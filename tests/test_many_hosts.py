"""Several daemons, each with its own mountpoint, home and spool, sharing one PostgreSQL
database, as daemons on many hosts would: an edit through one mount is seen through the
others (content and listings, the kernel's caches told), concurrent writes of one file lose
nothing silently, every host's spool is ingested once, a daemon that was away catches up,
and a database server restarted under load loses nothing.

Real daemons (tests/conftest.py `make_daemon`), a real server (tests/pgserver.py), real os
calls on the mounts. Most daemons reach the server on its Unix socket; one test puts a
daemon in a network namespace of its own (`ip netns`, a veth pair), reaching the server over
TCP as another host would (`nsenter --net`: the namespace's network only, so its FUSE mount
is seen from here).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import Daemon, wait_for
from pgserver import PgServer

pytestmark = pytest.mark.postgres_only


def _daemons(make_daemon, url: str, count: int) -> list[Daemon]:
    return [make_daemon("--learner", "off", "--db", url, "-o", f"host=host{i}")
            for i in range(count)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _seen(daemons: list[Daemon], rel: str, text: str | None, what: str) -> None:
    for d in daemons:
        wait_for(lambda d=d: _read(d.mnt / rel) == text, timeout=10, what=f"{what} on {d.mnt}")


def _listed(d: Daemon, rel: str) -> set[str]:
    try:
        return set(os.listdir(d.mnt / rel))
    except FileNotFoundError:
        return set()


def test_an_edit_through_one_mount_is_seen_through_the_others(make_daemon, pg_url: str):
    a, b, c = _daemons(make_daemon, pg_url, 3)
    os.mkdir(a.mnt / "team")  # a space
    for d in (b, c):
        wait_for(lambda d=d: "daily-logs" in _listed(d, "team"), what="the new space")
    (a.mnt / "team/daily-logs/x.md").write_text("one\n")
    _seen([b, c], "team/daily-logs/x.md", "one\n", "a new file")
    # the same size again: only an invalidation of the kernel's pages shows it
    (a.mnt / "team/daily-logs/x.md").write_text("two\n")
    _seen([b, c], "team/daily-logs/x.md", "two\n", "a new version")
    os.rename(a.mnt / "team/daily-logs/x.md", a.mnt / "team/daily-logs/y.md")
    _seen([b, c], "team/daily-logs/y.md", "two\n", "a renamed file")
    assert "x.md" not in _listed(b, "team/daily-logs") | _listed(c, "team/daily-logs")
    os.unlink(b.mnt / "team/daily-logs/y.md")
    _seen([a, c], "team/daily-logs/y.md", None, "an unlinked file")
    os.mkdir(c.mnt / "team/checklists")  # a skill
    for d in (a, b):
        wait_for(lambda d=d: "SKILL.md" in _listed(d, "team/checklists"), what="a new skill")
    os.mkdir(c.mnt / "team/checklists/sub")
    (c.mnt / "team/checklists/sub/n.md").write_text("nested\n")
    _seen([a, b], "team/checklists/sub/n.md", "nested\n", "a file in a new folder")
    assert a.api("DELETE", "/skillfs/v1/spaces/team").status_code < 300
    for d in (b, c):
        wait_for(lambda d=d: "team" not in _listed(d, ""), what="the space deleted")
        assert not (d.mnt / "team/daily-logs").exists()


def test_edit_to_visible_across_daemons(make_daemon, pg_url: str):
    """The time from a close() through one mount to the new content read through another."""
    a, b = _daemons(make_daemon, pg_url, 2)
    os.mkdir(a.mnt / "lat")
    wait_for(lambda: "daily-logs" in _listed(b, "lat"), what="the space")
    src, dst = a.mnt / "lat/daily-logs/f.md", b.mnt / "lat/daily-logs/f.md"
    delays = []
    for i in range(60):
        text = f"edit {i:04d}\n"
        src.write_text(text)
        t0 = time.monotonic()
        while _read(dst) != text:
            assert time.monotonic() - t0 < 5, f"edit {i} not seen"
            time.sleep(0.0005)
        delays.append(time.monotonic() - t0)
    delays.sort()
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    print(f"edit-to-visible across daemons: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.5  # the target is 100 ms on an idle machine; this one is shared


def _versions(url: str, path: str) -> list[str]:
    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute(
            "SELECT sha256 FROM file_versions WHERE path = %s ORDER BY version", [path])]


def test_concurrent_writes_of_one_file_lose_nothing_silently(make_daemon, pg_url: str):
    """Two mounts write the same file at once, round after round: each close either
    returned and its content is a version of the file, or failed with an error."""
    a, b = _daemons(make_daemon, pg_url, 2)
    os.mkdir(a.mnt / "race")
    wait_for(lambda: "daily-logs" in _listed(b, "race"), what="the space")
    (a.mnt / "race/daily-logs/f.md").write_text("start\n")
    _seen([b], "race/daily-logs/f.md", "start\n", "the file")
    written: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()

    def write(d: Daemon, n: int) -> None:
        text = f"{d.mnt.parent.name} round {n}\n" * 20
        try:
            with open(d.mnt / "race/daily-logs/f.md", "w") as f:
                f.write(text)
        except OSError as e:
            with lock:
                refused.append(e.errno)
            return
        with lock:
            written.append(text)

    for n in range(30):
        threads = [threading.Thread(target=write, args=(d, n)) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stored = set(_versions(pg_url, "f.md"))
    lost = [t for t in written if hashlib.sha256(t.encode()).hexdigest() not in stored]
    assert not lost, f"{len(lost)} writes returned but are not stored"
    assert set(refused) <= {errno.ESTALE}, refused
    assert len(written) + len(refused) == 60
    print(f"concurrent writes: {len(written)} stored, {len(refused)} refused (ESTALE)")
    # both mounts end on the same content, the last version
    final = _read(a.mnt / "race/daily-logs/f.md")
    _seen([b], "race/daily-logs/f.md", final, "the last version")


def _spool_line(text: str) -> str:
    return json.dumps({"role": "user", "content": text}) + "\n"


def _message_count(url: str) -> int:
    with psycopg.connect(url) as con:
        return con.execute("SELECT count(*) FROM messages").fetchall()[0][0]


def test_spool_files_dropped_on_every_host_are_all_ingested_once(make_daemon, pg_url: str):
    daemons = _daemons(make_daemon, pg_url, 3)
    per_host = 1000
    t0 = time.monotonic()
    for d in daemons:  # the same names on every host
        for i in range(per_host):
            d.write_spool(f"alice/s{i % 4}/{i:05d}.jsonl", _spool_line(f"{d.mnt} {i}"))
    total = per_host * len(daemons)
    wait_for(lambda: _message_count(pg_url) >= total, timeout=120, what="every spool file")
    took = time.monotonic() - t0
    print(f"spool on PostgreSQL: {total} files from {len(daemons)} hosts in {took:.2f} s, "
          f"{total / took:.0f} files/s")
    for d in daemons:
        wait_for(lambda d=d: not any(p.is_file() for p in (d.spool / "alice").rglob("*")),
                 what="the spool emptied")
    assert _message_count(pg_url) == total
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM (SELECT session_id, seq FROM messages "
                           "GROUP BY 1, 2 HAVING count(*) > 1) d").fetchall()[0][0] == 0
        # the same session names on every host: one session each, not one per host
        assert con.execute("SELECT count(*) FROM sessions").fetchall()[0][0] == 4
        hosts = con.execute("SELECT host, count(*) FROM spool_ledger GROUP BY host "
                            "ORDER BY host").fetchall()
    assert hosts == [(f"host{i}", per_host) for i in range(len(daemons))]


def test_a_daemon_that_was_away_catches_up(make_daemon, pg_url: str, pg_server: PgServer):
    a, b = _daemons(make_daemon, pg_url, 2)
    os.mkdir(a.mnt / "away")
    wait_for(lambda: "daily-logs" in _listed(b, "away"), what="the space")
    (b.mnt / "away/daily-logs/seen.md").write_text("cached\n")
    _seen([a], "away/daily-logs/seen.md", "cached\n", "the file")
    b.stop()
    (a.mnt / "away/daily-logs/seen.md").write_text("changed while b was down\n")
    (a.mnt / "away/daily-logs/new.md").write_text("new\n")
    b.start()
    _seen([b], "away/daily-logs/seen.md", "changed while b was down\n", "a change missed")
    _seen([b], "away/daily-logs/new.md", "new\n", "a file missed")
    # every connection ended at once: the listener's too; what comes meanwhile is not lost
    pg_server.terminate(pg_url)
    for i in range(5):
        path = a.mnt / f"away/daily-logs/after{i}.md"
        wait_for(lambda path=path, i=i: _written(path, f"{i}\n"), what="a write after")
    for i in range(5):
        _seen([b], f"away/daily-logs/after{i}.md", f"{i}\n", "a write after the cut")


def _written(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError as e:
        assert e.errno == errno.EIO, e
        return False


def _healthy(d: Daemon) -> bool:
    return d.api("GET", "/skillfs/v1/status").json()["database"]["healthy"]


def test_the_database_restarted_under_load_loses_nothing(make_daemon, pg_url: str,
                                                         pg_server: PgServer):
    a, b = _daemons(make_daemon, pg_url, 2)
    os.mkdir(a.mnt / "load")
    wait_for(lambda: "daily-logs" in _listed(b, "load"), what="the space")
    skill_a, skill_b = a.mnt / "load/daily-logs", b.mnt / "load/daily-logs"
    (skill_a / "kept.md").write_text("kept\n")
    _seen([b], "load/daily-logs/kept.md", "kept\n", "the file")
    stop = threading.Event()
    stored: list[str] = []
    refused: list[int] = []

    def load() -> None:  # writes through a, as fast as they go, while the server goes away
        n = 0
        while not stop.is_set():
            try:
                (skill_a / f"w{n}.md").write_text(f"{n}\n")
                stored.append(f"w{n}.md")
            except OSError as e:
                refused.append(e.errno)
                time.sleep(0.05)
            n += 1

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: len(stored) >= 10, what="writes before the stop")
        pg_server.stop()
        for d in (a, b):  # the same name on both hosts: two files
            d.write_spool("load/s/0001.jsonl", _spool_line(f"while down, {d.mnt}"))
            assert (d.mnt / "load/daily-logs/kept.md").read_text() == "kept\n"
        with pytest.raises(OSError) as e:
            (skill_b / "refused.md").write_text("no\n")
        assert e.value.errno == errno.EIO
        wait_for(lambda: refused, what="writes refused while the server is down")
        time.sleep(2)  # longer than the spool's first retries
        for d in (a, b):
            assert (d.spool / "load/s/0001.jsonl").exists()  # waiting, not rejected
    finally:
        pg_server.start_again()
    for d in (a, b):
        wait_for(lambda d=d: _healthy(d), timeout=40, what="the database reached again")
    n = len(stored)
    wait_for(lambda: len(stored) >= n + 10, timeout=30, what="writes after the restart")
    stop.set()
    writer.join()
    assert set(refused) == {errno.EIO}
    wait_for(lambda: _message_count(pg_url) == 2, timeout=40, what="the waiting spool files")
    assert not (a.spool / ".rejected").exists() and not (b.spool / ".rejected").exists()
    for name in stored:  # every write that returned, through both mounts
        _seen([a, b], f"load/daily-logs/{name}", f"{name[1:-3]}\n", f"{name}")


@pytest.fixture
def other_host(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A network namespace joined to this one by a veth pair, the server listening on this
    side's address: (the namespace's name, its end of the pair)."""
    tag = os.getpid() % 10000
    name, outside, inside = f"skfs{tag}", f"skfs{tag}o", f"skfs{tag}i"
    net = f"10.{200 + tag % 50}.{tag % 250}"
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
             ["ip", "link", "set", inside, "netns", name],
             ["ip", "addr", "add", f"{net}.1/24", "dev", outside],
             ["ip", "link", "set", outside, "up"],
             ["ip", "netns", "exec", name, "ip", "addr", "add", f"{net}.2/24", "dev", inside],
             ["ip", "netns", "exec", name, "ip", "link", "set", inside, "up"],
             ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)
        pg_server.listen_tcp(f"{net}.1", clients=f"{net}.0/24")
        yield name, inside
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if pg_server.tcp is not None:
            pg_server.listen_tcp(None)


def test_a_daemon_on_another_network_follows_over_tcp(make_daemon, pg_url: str,
                                                      pg_server: PgServer, other_host):
    namespace, inside = other_host
    here = make_daemon("--learner", "off", "--db", pg_url, "-o", "host=here")
    there = make_daemon("--learner", "off", "--db", pg_server.tcp_url(pg_url), "-o",
                        "host=there", start=False)
    there.wrap = ["nsenter", f"--net=/run/netns/{namespace}"]
    there.start()
    status = there.api("GET", "/skillfs/v1/status").json()["database"]
    assert status["database"].startswith("postgresql://skillfs@10.")
    os.mkdir(here.mnt / "net")
    wait_for(lambda: "daily-logs" in _listed(there, "net"), what="the space over TCP")
    delays = []
    for i in range(30):
        src, dst = (here, there) if i % 2 == 0 else (there, here)
        text = f"hop {i}\n"
        (src.mnt / "net/daily-logs/f.md").write_text(text)
        t0 = time.monotonic()
        _seen([dst], "net/daily-logs/f.md", text, f"hop {i}")
        delays.append(time.monotonic() - t0)
    delays.sort()
    print(f"edit-to-visible across a veth pair: p50 {statistics.median(delays) * 1000:.1f} ms,"
          f" max {delays[-1] * 1000:.1f} ms")
    there.write_spool("net/s/0001.jsonl", _spool_line("from the other host"))
    here.write_spool("net/s/0001.jsonl", _spool_line("from this host"))
    wait_for(lambda: _message_count(pg_url) == 2, what="both hosts' spool files")

    # the other host's network goes silent: its writes fail within bounds, reads go on
    link = ["ip", "netns", "exec", namespace, "ip", "link", "set", inside]
    subprocess.run([*link, "down"], check=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError) as cut:
            (there.mnt / "net/daily-logs/cut.md").write_text("cut off\n")
        assert cut.value.errno == errno.EIO and time.monotonic() - t0 < 30
        assert (there.mnt / "net/daily-logs/f.md").read_text() == "hop 29\n"
        (here.mnt / "net/daily-logs/f.md").write_text("while apart\n")
    finally:
        subprocess.run([*link, "up"], check=True)
    wait_for(lambda: _healthy(there), timeout=60, what="the other host back")
    _seen([there], "net/daily-logs/f.md", "while apart\n", "what came while apart")
    wait_for(lambda: _written(there.mnt / "net/daily-logs/back.md", "back\n"), timeout=30,
             what="a write from the other host again")
    _seen([here], "net/daily-logs/back.md", "back\n", "the other host's write")


def test_a_daemon_killed_while_it_writes_leaves_nothing_half_done(make_daemon, pg_url: str):
    """kill -9 of a daemon in the middle of its writes: what it committed is seen through
    the other mount whole, its transaction in flight is gone with it (its lock too: the
    other daemon writes on), and once restarted both mounts show the same."""
    a, b = _daemons(make_daemon, pg_url, 2)
    os.mkdir(a.mnt / "kill")
    wait_for(lambda: "daily-logs" in _listed(b, "kill"), what="the space")
    body = "".join(f"line {i}\n" for i in range(50))
    returned: list[int] = []

    def load() -> None:
        for n in range(10_000):
            try:
                (a.mnt / f"kill/daily-logs/k{n}.md").write_text(f"{n}\n{body}")
            except OSError:
                return  # the daemon is gone
            returned.append(n)

    writer = threading.Thread(target=load)
    writer.start()
    wait_for(lambda: len(returned) >= 30, what="writes under way")
    a.kill9()
    writer.join()
    (b.mnt / "kill/daily-logs/after.md").write_text("b goes on\n")
    for n in returned:
        _seen([b], f"kill/daily-logs/k{n}.md", f"{n}\n{body}", f"k{n}.md")
    for name in _listed(b, "kill/daily-logs"):  # nothing half-written, whatever made it
        if name.startswith("k"):
            assert _read(b.mnt / f"kill/daily-logs/{name}") == f"{name[1:-3]}\n{body}"
    subprocess.run(["fusermount3", "-u", "-z", str(a.mnt)], check=False)
    a.start()
    assert _listed(a, "kill/daily-logs") == _listed(b, "kill/daily-logs")
    _seen([a], "kill/daily-logs/after.md", "b goes on\n", "b's write")
