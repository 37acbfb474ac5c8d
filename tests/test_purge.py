"""Purging: what a purge takes is gone from every read and from the database's bytes on disk,
and everything else reads as before.

Files are written through the mount, purges go through the CLI and HTTP on the socket, and
the database file itself is scanned, before the purge (the secret is there) and after it.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from pathlib import Path

import pytest
import trio
from conftest import Daemon, wait_for

from skillfs.messages import Message
from skillfs.store import Store

SECRET = b"sk-live-7f3a9c2e5b1d4086"


def _on_disk(d: Daemon, secret: bytes) -> list[str]:
    """The files of the database (and its spill folder) that hold `secret`."""
    paths = [d.db, Path(f"{d.db}.wal"), Path(f"{d.db}.compact")]
    paths += [p for p in (d.home / "duckdb.tmp").rglob("*") if p.is_file()]
    return [p.name for p in paths if p.is_file() and secret in p.read_bytes()]


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    assert path.read_bytes() == data


def _versions(base: bytes) -> list[bytes]:
    """A long file (stored in chunks) that gains the secret in v2, loses it in v3 and grows
    by appends after that: v3 on is a chain of splices through v2."""
    leaked = base + b"token: " + SECRET + b"\n"
    out = [base, leaked, base + b"token: (moved to the vault)\n"]
    for i in range(4):
        out.append(out[-1] + f"entry {i}\n".encode())
    return out


def test_purging_one_version_keeps_the_others(daemon, space):
    path = space / "daily-logs" / "keys.md"
    contents = _versions(b"# keys\n" + b"a line that is long enough to be chunked\n" * 100)
    for data in contents:
        _write(path, data)
    r = daemon.cli("purge", str(path), "--version", "2", "--why", "leaked key")
    assert "purged v2" in r.stdout
    for v, data in enumerate(contents, start=1):
        if v != 2:
            assert daemon.cli("show", f"{path}@{v}").stdout.encode() == data, f"v{v}"
    shown = daemon.cli("show", f"{path}@2", check=False)
    assert shown.returncode != 0 and SECRET.decode() not in shown.stdout + shown.stderr
    assert f"was purged by {getpass.getuser()} at " in shown.stderr
    assert ": leaked key" in shown.stderr
    api = daemon.api("GET", "/skillfs/v1/files",
                     params={"path": "alice/daily-logs/keys.md", "version": 2})
    assert api.status_code == 422 and "purged by" in api.json()["error"]
    log = daemon.cli("log", str(path)).stdout.splitlines()
    assert "purged" in log[1] and "leaked key" in log[1] and "purged" not in log[2]
    rows = json.loads(daemon.cli("log", str(path), "--json").stdout)
    assert rows[1]["purged_by"] == getpass.getuser() and rows[1]["purge_reason"] == "leaked key"
    assert len(rows) == len(contents)  # the purge keeps the row and writes no version
    # the same again: nothing left to purge
    assert "nothing to purge" in daemon.cli("purge", str(path), "--version", "2",
                                            "--why", "again").stdout
    assert "+token: (moved" in daemon.cli("diff", str(path), "1", "3").stdout
    daemon.restart()
    assert path.read_bytes() == contents[-1]
    assert daemon.cli("show", f"{path}@3").stdout.encode() == contents[2]
    _write(path, contents[-1] + b"after the purge\n")
    assert daemon.cli("show", f"{path}@{len(contents)}").stdout.encode() == contents[-1]


def test_the_current_version_is_refused_by_number(daemon, space):
    path = space / "daily-logs" / "now.md"
    _write(path, b"one\n")
    _write(path, b"two " + SECRET + b"\n")
    r = daemon.cli("purge", str(path), "--version", "2", "--why", "x", check=False)
    assert r.returncode != 0 and "current content" in r.stderr
    assert "--all-matching" in r.stderr
    assert path.read_bytes() == b"two " + SECRET + b"\n"


@pytest.mark.duckdb_file
def test_all_matching_purges_every_holder_and_the_bytes_leave_the_file(daemon, space):
    path = space / "daily-logs" / "notes.md"
    filler = b"".join(b"note %d: nothing secret here\n" % i for i in range(200))
    contents = [filler, filler + b"key=" + SECRET + b"\n", filler + b"key=rotated\n",
                filler + b"key=rotated\nold key was " + SECRET + b", do not use\n"]
    for data in contents:
        _write(path, data)
    daemon.restart()  # checkpointed: the secret is in the database file itself
    assert daemon.db.name in _on_disk(daemon, SECRET)
    r = daemon.api("POST", "/skillfs/v1/files/purge", json={
        "path": "alice/daily-logs/notes.md", "all_matching": r"sk-live-[0-9a-f]{16}",
        "why": "leaked API key", "who": "security"})
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "alice/daily-logs/notes.md", "purged": [2, 4],
                        "rewritten": 5, "compacted": True}
    expected = filler + b"key=rotated\nold key was [purged], do not use\n"
    assert path.read_bytes() == expected
    for v in (1, 3):
        assert daemon.cli("show", f"{path}@{v}").stdout.encode() == contents[v - 1]
    rows = json.loads(daemon.cli("log", str(path), "--json").stdout)
    assert [r["version"] for r in rows if r["purged_by"] == "security"] == [2, 4]
    assert rows[4]["author"] == "security" and rows[4]["reason"] == "purge: leaked API key"
    assert _on_disk(daemon, SECRET) == []  # compacted while the daemon runs
    daemon.stop()
    assert _on_disk(daemon, SECRET) == []
    logged = (daemon.home / "skillfs.log").read_text()
    assert "purged daily-logs/notes.md versions [2, 4]" in logged and "leaked API key" in logged
    assert SECRET.decode() not in logged
    daemon.start()
    assert path.read_bytes() == expected


def _ingested(d: Daemon, session: str, count: int):
    def done():
        r = d.api("GET", f"/skillfs/v1/sessions/{session}")
        return r.status_code == 200 and len(r.json()["messages"]) == count and r.json()
    return wait_for(done, what=f"{count} messages in {session}")


@pytest.mark.duckdb_file
def test_session_purge_keeps_rows_and_exactly_once(make_daemon):
    d = make_daemon("--learner", "off", start=False)
    line = json.dumps({"role": "user", "content": f"my card is {SECRET.decode()}"})
    reply = json.dumps({"role": "assistant", "content": "noted"})
    spooled = d.write_spool("alice/chat-1/001.jsonl", f"{line}\n{reply}\n")
    # Append-only: the daemon commits the file but cannot delete it, as after a crash
    # between the two; the file stays, as if dropped again, until the flag goes.
    subprocess.run(["chattr", "+a", str(spooled.parent)], check=True)
    try:
        d.start()
        before = _ingested(d, "chat-1", 2)
        assert SECRET.decode() in before["messages"][0]["text"]
        d.restart()
        assert d.db.name in _on_disk(d, SECRET)
        r = d.cli("session", "purge", "chat-1", "--why", "card number")
        assert "purged 2 messages" in r.stdout
        assert spooled.exists()
    finally:
        subprocess.run(["chattr", "-a", str(spooled.parent)], check=True)
    after = _ingested(d, "chat-1", 2)
    assert [m["text"] for m in after["messages"]] == ["", ""]
    assert [m["role"] for m in after["messages"]] == ["user", "assistant"]
    assert _on_disk(d, SECRET) == []
    # taken in again it is not: its ledger row stayed, so it is only deleted
    wait_for(lambda: not spooled.exists(), timeout=40, what="the spool file to be deleted")
    again = _ingested(d, "chat-1", 2)
    assert [m["text"] for m in again["messages"]] == ["", ""]
    for form in ("openai", "anthropic", "acontext"):
        sdk = d.api("GET", f"/api/v1/session/{after['id']}/messages", params={"format": form})
        assert sdk.status_code == 200, sdk.text
        assert len(sdk.json()["data"]["items"]) == 2 and SECRET.decode() not in sdk.text
    d.stop()
    assert _on_disk(d, SECRET) == []
    assert SECRET.decode() not in (d.home / "skillfs.log").read_text()


def test_bad_requests_say_what_is_wrong(daemon, space):
    path = space / "daily-logs" / "a.md"
    _write(path, b"one\n")
    _write(path, b"two\n")
    r = daemon.cli("purge", str(path), "--all-matching", "key=(", "--why", "x", check=False)
    assert r.returncode != 0 and "not a regular expression" in r.stderr and "HTTP 400" in r.stderr
    api = daemon.api("POST", "/skillfs/v1/files/purge", json={
        "path": "alice/daily-logs/a.md", "all_matching": "[", "why": "x"})
    assert api.status_code == 400 and "not a regular expression" in api.json()["error"]
    r = daemon.cli("purge", str(path), "--all-matching", "x*", "--why", "x", check=False)
    assert r.returncode != 0 and "empty string" in r.stderr
    r = daemon.cli("purge", str(path), "--why", "x", check=False)
    assert r.returncode == 2 and "--version N or --all-matching REGEX" in r.stderr
    r = daemon.cli("purge", str(path), "--version", "1", check=False)
    assert r.returncode == 2 and "--why" in r.stderr
    api = daemon.api("POST", "/skillfs/v1/files/purge", json={
        "path": "alice/daily-logs/a.md", "version": 1, "why": "  "})
    assert api.status_code == 400 and "why" in api.json()["error"]
    r = daemon.cli("purge", str(path), "--version", "9", "--why", "x", check=False)
    assert r.returncode != 0 and "has no version 9" in r.stderr and "HTTP 404" in r.stderr
    r = daemon.cli("purge", str(space / "daily-logs" / "none.md"), "--version", "1",
                   "--why", "x", check=False)
    assert r.returncode != 0 and "no history" in r.stderr and "HTTP 404" in r.stderr
    r = daemon.cli("session", "purge", "nobody", "--why", "x", check=False)
    assert r.returncode != 0 and "HTTP 404" in r.stderr
    os.unlink(path)
    r = daemon.cli("purge", str(path), "--version", "3", "--why", "x", check=False)
    assert r.returncode != 0 and "deletion" in r.stderr
    assert daemon.cli("purge", str(path), "--version", "2", "--why", "x").returncode == 0
    assert "nothing to purge" in daemon.cli("purge", "alice/daily-logs/a.md", "--all-matching",
                                            "zzz", "--why", "x").stdout


@pytest.mark.duckdb_file
def test_a_failed_compaction_is_reported_and_the_next_purge_finishes_it(daemon, space):
    path = space / "daily-logs" / "k.md"
    _write(path, b"key " + SECRET + b"\n")
    _write(path, b"key rotated\n")
    daemon.restart()
    blocker = Path(f"{daemon.db}.compact")
    blocker.mkdir()  # where the copy would go: the compaction fails
    r = daemon.cli("purge", str(path), "--version", "1", "--why", "leak", check=False)
    assert r.returncode == 1 and "purged v1" in r.stdout
    assert "compacting the database failed" in r.stderr
    assert daemon.db.name in _on_disk(daemon, SECRET)  # purged, but not yet out of the file
    assert "was purged by" in daemon.cli("show", f"{path}@1", check=False).stderr
    assert daemon.cli("diff", str(path)).stdout == ""  # no version to compare v2 with
    blocker.rmdir()
    r = daemon.cli("purge", str(path), "--version", "1", "--why", "leak")
    assert "nothing to purge" in r.stdout
    assert _on_disk(daemon, SECRET) == []
    assert path.read_bytes() == b"key rotated\n"


@pytest.mark.duckdb_file
def test_what_an_interrupted_compaction_left_is_removed_at_start(daemon, space):
    daemon.stop()
    left = Path(f"{daemon.db}.compact")
    left.write_bytes(b"half a copy holding " + SECRET)
    daemon.start()
    assert not left.exists()
    assert (space / "daily-logs" / "SKILL.md").exists()


def test_a_long_message_leaves_the_file_too(tmp_path):
    """A message of 1 MiB (its body built outside DuckDB, a long string in its row group)."""
    db = tmp_path / "m.duckdb"
    store = Store(str(db), temp_dir=tmp_path / "duckdb.tmp")
    text = ("lorem ipsum " * 90_000) + SECRET.decode()
    message = Message(role="user", text=text, format="openai",
                      original={"role": "user", "content": text})

    async def main():
        session = await store.create_session(name="long")
        await store.add_messages(session.id, [message])
        await store.checkpoint()
        before = SECRET in db.read_bytes()
        count, compacted = await store.purge_session(session.id, by="tester", why="test")
        return before, count, compacted, await store.get_messages(session.id)
    before, count, compacted, stored = trio.run(main)
    store.close()
    assert before and count == 1 and compacted
    assert stored[0].body["text"] == "" and stored[0].original == {"role": "user", "content": ""}
    assert SECRET not in db.read_bytes()
