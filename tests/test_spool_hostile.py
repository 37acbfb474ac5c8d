"""Hostile and odd spool contents through the running daemon: symlinks at every level and
swapped in while it works, lone surrogates, a 3 MiB message, names that are not UTF-8, FIFOs,
sockets and device nodes. Nothing outside the spool is read, moved or deleted, what the daemon
creates is private, and a good file dropped afterwards is still taken promptly."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for


def lines(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def msg(text: str) -> str:
    return lines({"role": "user", "content": text})


def all_texts(daemon) -> list[str]:
    texts = []
    r = daemon.api("GET", "/skillfs/v1/sessions")
    assert r.status_code == 200, r.text
    for s in r.json():
        r = daemon.api("GET", f"/skillfs/v1/sessions/{s['id']}")
        assert r.status_code == 200, r.text
        texts += [m["text"] for m in r.json()["messages"]]
    return texts


def session_texts(daemon, name: str) -> list[str]:
    found = [s for s in daemon.api("GET", "/skillfs/v1/sessions").json() if s["name"] == name]
    if not found:
        return []
    return [m["text"] for m in
            daemon.api("GET", f"/skillfs/v1/sessions/{found[0]['id']}").json()["messages"]]


def sidecars(daemon) -> dict[str, dict]:
    rejected = daemon.spool / ".rejected"
    if not rejected.exists():
        return {}
    return {p.name[: -len(".error.json")]: json.loads(p.read_text())
            for p in rejected.glob("*.error.json")}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_private(daemon) -> None:
    rejected = daemon.spool / ".rejected"
    assert stat.S_IMODE(os.lstat(rejected).st_mode) == 0o700
    for side in rejected.glob("*.error.json"):
        assert stat.S_IMODE(os.lstat(side).st_mode) == 0o600, side


@pytest.fixture
def outside(tmp_path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim.jsonl").write_text(msg("SECRET from outside"))
    (out / "other.json").write_text(json.dumps({"role": "user", "content": "SECRET too"}))
    (out / "private.txt").write_text("not for the spool")
    return out


def test_spool_root_is_created_private(daemon):
    assert stat.S_IMODE(os.stat(daemon.spool).st_mode) == 0o700


def test_symlinks_at_every_level_are_rejected_as_links(daemon, outside):
    before = snapshot(outside)
    os.symlink(outside, daemon.spool / "evil")
    os.makedirs(daemon.spool / "alice" / "s")
    os.symlink(outside, daemon.spool / "alice" / "linked")
    os.symlink(outside / "victim.jsonl", daemon.spool / "alice" / "s" / "000.jsonl")
    daemon.write_spool("alice/s/001.jsonl", msg("mine"))
    wait_for(lambda: session_texts(daemon, "s") == ["mine"], timeout=20, what="the good file")
    wait_for(lambda: len(sidecars(daemon)) == 3, timeout=20, what="three rejections")
    side = sidecars(daemon)
    assert set(side) == {"evil", "alice__linked", "alice__s__000.jsonl"}
    for name, info in side.items():
        assert "symbolic link" in info["reason"]
        assert os.path.islink(daemon.spool / ".rejected" / name)
    assert snapshot(outside) == before
    assert not any("SECRET" in t for t in all_texts(daemon))
    assert_private(daemon)


def test_session_folder_swapped_for_a_link_while_ingesting(daemon, outside, tmp_path):
    """A writer swaps its session folder for a link to an outside folder as fast as it can
    while the daemon takes files from it: whatever the timing, nothing outside is touched."""
    before = snapshot(outside)
    session = daemon.spool / "alice" / "race"
    stop = threading.Event()
    swaps = 0

    def swapper():
        nonlocal swaps
        parked = tmp_path / "parked"
        while not stop.is_set():
            try:
                os.rename(session, parked)
                os.symlink(outside, session)
                time.sleep(0.0005)
                os.unlink(session)
                os.rename(parked, session)
                swaps += 1
            except FileNotFoundError:
                time.sleep(0.0005)  # the daemon moved the link away: put the folder back
                if not os.path.lexists(session) and parked.exists():
                    os.rename(parked, session)

    for i in range(40):
        daemon.write_spool(f"alice/race/{i:03}.jsonl", msg(f"m{i}"))
    t = threading.Thread(target=swapper)
    t.start()
    try:
        time.sleep(4)
    finally:
        stop.set()
        t.join()
    assert swaps > 10
    assert snapshot(outside) == before
    assert not any("SECRET" in t for t in all_texts(daemon))
    for info in sidecars(daemon).values():
        assert "SECRET" not in json.dumps(info)
    for name, info in sidecars(daemon).items():
        assert info["path"] == "alice/race", info  # only ever the link, never a file
        assert os.path.islink(daemon.spool / ".rejected" / name)
    if sidecars(daemon):
        assert_private(daemon)
    # and the session's own files all went in, once each, in order
    wait_for(lambda: session_texts(daemon, "race") == [f"m{i}" for i in range(40)],
             timeout=40, what="all files of the raced session")


def test_lone_surrogate_is_rejected_and_the_next_file_taken(daemon):
    daemon.write_spool("alice/s/001.jsonl",
                       msg("before") + '{"role": "user", "content": "a\\ud800b"}\n')
    daemon.write_spool("alice/s/002.jsonl", msg("after"))
    wait_for(lambda: session_texts(daemon, "s") == ["after"], timeout=10, what="the next file")
    info = sidecars(daemon)["alice__s__001.jsonl"]
    assert (info["line"], info["field"]) == (2, "content")
    assert "surrogate" in info["reason"]
    assert_private(daemon)


def test_3_mib_messages_in_json_files_are_ingested_and_bigger_ones_rejected(daemon):
    # One big message per session: reading a session back loads all its messages at once,
    # and several of this size do not fit DuckDB's 32 MB pool together.
    texts = [c * (3 << 20) for c in "xyz"]
    for i, text in enumerate(texts):
        daemon.write_spool(f"alice/big{i}/001.json", json.dumps({"role": "user", "content": text}))
    daemon.write_spool("alice/big0/002.json", json.dumps([{"role": "user", "content": "small"}]))
    daemon.write_spool("alice/big0/003.json",
                       json.dumps({"role": "user", "content": "w" * (4 << 20)}))
    daemon.write_spool("alice/big0/004.json", json.dumps({"role": "user", "content": "after"}))
    wait_for(lambda: len(session_texts(daemon, "big0")) == 3, timeout=30, what="the big messages")
    assert session_texts(daemon, "big0") == [texts[0], "small", "after"]
    for i in (1, 2):
        assert session_texts(daemon, f"big{i}") == [texts[i]]
    [(name, info)] = sidecars(daemon).items()
    assert name == "alice__big0__003.json"
    assert "over the 3211264-byte cap for one message" in info["reason"]


def test_names_that_are_not_utf8_do_not_stop_the_watcher(daemon):
    spool = os.fsencode(daemon.spool)
    os.makedirs(os.path.join(spool, b"alice", b"s"))
    with open(os.path.join(spool, b"alice", b"s", b"\xff.jsonl"), "wb") as f:
        f.write(msg("bad file name").encode())
    os.makedirs(os.path.join(spool, b"alice", b"\xfe"))
    with open(os.path.join(spool, b"alice", b"\xfe", b"1.jsonl"), "wb") as f:
        f.write(msg("bad folder name").encode())
    wait_for(lambda: len(sidecars(daemon)) == 2, timeout=10, what="both rejections")
    t0 = time.monotonic()
    daemon.write_spool("alice/s/good.jsonl", msg("good"))
    wait_for(lambda: session_texts(daemon, "s") == ["good"], timeout=10, what="the good file")
    assert time.monotonic() - t0 < 3.0
    side = sidecars(daemon)
    assert set(side) == {"alice__s__\\xff.jsonl", "alice__\\xfe"}
    assert side["alice__\\xfe"]["field"] == "session"
    assert "UTF-8" in side["alice__s__\\xff.jsonl"]["reason"]
    for name in os.listdir(daemon.spool / ".rejected"):
        name.encode("utf-8")
    assert_private(daemon)
    # again, now that the watcher has failed once
    daemon.write_spool("alice/s/good2.jsonl", msg("good2"))
    with open(os.path.join(spool, b"alice", b"s", b"\xfd.jsonl"), "wb") as f:
        f.write(msg("bad again").encode())
    daemon.write_spool("alice/s/good3.jsonl", msg("good3"))
    wait_for(lambda: session_texts(daemon, "s") == ["good", "good2", "good3"], timeout=10,
             what="files after a second bad name")


def test_fifo_socket_and_device_do_not_block_the_daemon(daemon):
    session = daemon.spool / "alice" / "s"
    os.makedirs(session)
    os.mkfifo(session / "001.jsonl")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(session / "002.jsonl"))
    specials = {"alice__s__001.jsonl", "alice__s__002.jsonl"}
    if os.geteuid() == 0:
        os.mknod(session / "003.jsonl", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        specials.add("alice__s__003.jsonl")
    daemon.write_spool("alice/s/004.jsonl", msg("after the specials"))
    try:
        wait_for(lambda: session_texts(daemon, "s") == ["after the specials"], timeout=10,
                 what="the file after the special ones")
    finally:
        sock.close()
    side = sidecars(daemon)
    assert set(side) == specials
    for info in side.values():
        assert "not a regular file" in info["reason"]
    assert_private(daemon)
