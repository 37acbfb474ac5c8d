"""Spool ingestion through the running daemon: files in, messages committed exactly once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import wait_for


def pending(daemon) -> list[Path]:
    return [p for p in daemon.spool.rglob("*")
            if p.is_file() and ".rejected" not in p.parts and not p.name.startswith(".")
            and not p.name.endswith(".tmp")]


def drained(daemon, timeout=20.0) -> None:
    wait_for(lambda: not pending(daemon), timeout=timeout, what="the spool to drain")


def sessions(daemon, space=None) -> list[dict]:
    r = daemon.api("GET", "/skillfs/v1/sessions", params={"space": space} if space else {})
    assert r.status_code == 200, r.text
    return r.json()


def messages(daemon, session_id) -> list[dict]:
    r = daemon.api("GET", f"/skillfs/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def session_by_name(daemon, name) -> dict:
    found = [s for s in sessions(daemon) if s["name"] == name]
    assert len(found) == 1, found
    return found[0]


def lines(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_each_message_form_is_ingested_in_order(daemon):
    daemon.write_spool("alice/s1/001.jsonl", lines(
        {"role": "user", "content": "Deploy API v2 to staging"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "deploy", "arguments": "{\"env\": \"staging\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "deployed"},
    ))
    daemon.write_spool("alice/s1/002.json", json.dumps([
        {"role": "assistant", "content": [
            {"type": "text", "text": "Done, zero downtime."},
            {"type": "tool_use", "id": "t1", "name": "check", "input": {"url": "/health"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "ok"}]},
    ]))
    daemon.write_spool("alice/s1/003.jsonl", lines(
        {"role": "user", "parts": [{"type": "text", "text": "Thanks, that worked"}]},
        {"event": "end"},
    ))
    drained(daemon)
    s = session_by_name(daemon, "s1")
    assert s["ended"] is True
    msgs = messages(daemon, s["id"])
    assert [m["seq"] for m in msgs] == list(range(6))
    assert [m["format"] for m in msgs] == ["openai"] * 3 + ["anthropic"] * 2 + ["acontext"]
    assert msgs[0]["text"] == "Deploy API v2 to staging"
    assert msgs[3]["text"].startswith("Done, zero downtime.")
    assert msgs[5]["text"] == "Thanks, that worked"
    # the space named by the path was created, with its default skills, in the mount
    assert sorted(os.listdir(daemon.mnt / "alice")) == ["daily-logs", "user-general-facts"]


def test_temp_and_dot_files_are_left_alone(daemon):
    os.makedirs(daemon.spool / "alice" / "s1")
    (daemon.spool / "alice" / "s1" / "a.jsonl.tmp").write_text(
        lines({"role": "user", "content": "x"}))
    (daemon.spool / "alice" / "s1" / ".b.jsonl").write_text(lines({"role": "user", "content": "y"}))
    daemon.write_spool("alice/s1/c.jsonl", lines({"role": "user", "content": "z"}))
    drained(daemon)
    assert (daemon.spool / "alice" / "s1" / "a.jsonl.tmp").exists()
    assert (daemon.spool / "alice" / "s1" / ".b.jsonl").exists()
    assert [m["text"] for m in messages(daemon, session_by_name(daemon, "s1")["id"])] == ["z"]


def test_files_written_while_down_are_ingested_at_start(make_daemon):
    d = make_daemon("--learner", "off", start=False)
    for i in range(5):
        d.write_spool(f"bob/early/{i:03}.jsonl", lines({"role": "user", "content": f"m{i}"}))
    d.start()
    drained(d)
    assert [m["text"] for m in messages(d, session_by_name(d, "early")["id"])] == [
        f"m{i}" for i in range(5)]


def test_bad_files_are_rejected_with_a_reason_and_the_rest_ingested(daemon):
    good = lines({"role": "user", "content": "fine"})
    daemon.write_spool("alice/s/00-good.jsonl", good)
    daemon.write_spool("alice/s/01-malformed.jsonl",
                       lines({"role": "user", "content": "ok"}) + "{not json\n")
    daemon.write_spool("alice/s/02-shape.jsonl", lines({"role": "user", "content": "a"}, [1, 2]))
    daemon.write_spool("alice/s/03-utf8.jsonl", b'{"role": "user", "content": "\xff\xfe"}\n')
    daemon.write_spool("alice/s/04-empty.jsonl", b"")
    daemon.write_spool("alice/s/05-huge.jsonl",
                       json.dumps({"role": "user", "content": "x" * (2 << 20)}) + "\n")
    daemon.write_spool("alice/s/06-norole.json", json.dumps({"content": "who am i"}))
    daemon.write_spool("alice/s/07-good.jsonl",
                       lines({"role": "assistant", "content": "also fine"}))
    daemon.write_spool("stray.jsonl", good)
    daemon.write_spool("alice/not-a-session.jsonl", good)
    drained(daemon)
    rejected = daemon.spool / ".rejected"
    reasons = {}
    for side in rejected.glob("*.error.json"):
        info = json.loads(side.read_text())
        reasons[info["path"]] = info
        assert (rejected / side.name[:-len(".error.json")]).exists(), "the file itself is kept"
    assert set(reasons) == {
        "alice/s/01-malformed.jsonl", "alice/s/02-shape.jsonl", "alice/s/03-utf8.jsonl",
        "alice/s/04-empty.jsonl", "alice/s/05-huge.jsonl", "alice/s/06-norole.json",
        "stray.jsonl", "alice/not-a-session.jsonl"}
    assert reasons["alice/s/01-malformed.jsonl"]["line"] == 2
    assert reasons["alice/s/02-shape.jsonl"]["line"] == 2
    assert reasons["alice/s/03-utf8.jsonl"]["line"] == 1
    assert reasons["alice/s/06-norole.json"]["field"] == "role"
    for info in reasons.values():
        assert info["reason"]
    texts = [m["text"] for m in messages(daemon, session_by_name(daemon, "s")["id"])]
    assert texts == ["fine", "also fine"]
    # the daemon is still serving
    assert os.listdir(daemon.mnt) == ["alice"]


def test_kill9_during_ingestion_loses_and_duplicates_nothing(make_daemon):
    d = make_daemon("--learner", "off", start=False)
    files, per_file = 150, 40
    for i in range(files):
        d.write_spool(f"load/s/{i:04}.jsonl", lines(*[
            {"role": "user", "content": f"f{i}-m{j}"} for j in range(per_file)]))
    d.start()
    # let it get part of the way, then pull the plug
    wait_for(lambda: len(pending(d)) < files - 5, timeout=30, interval=0.005,
             what="ingestion to start")
    d.kill9()
    left = len(pending(d))
    d.start()
    drained(d, timeout=60)
    texts = [m["text"] for m in messages(d, session_by_name(d, "s")["id"])]
    assert len(texts) == files * per_file, (len(texts), left)
    assert len(set(texts)) == len(texts)
    assert texts == [f"f{i}-m{j}" for i in range(files) for j in range(per_file)]


def test_same_name_and_content_sent_twice_is_ingested_twice(daemon):
    for _ in range(2):
        daemon.write_spool("alice/s/flush.jsonl", lines({"role": "user", "content": "yes"}))
        drained(daemon)
        time.sleep(0.01)
    texts = [m["text"] for m in messages(daemon, session_by_name(daemon, "s")["id"])]
    assert texts == ["yes", "yes"]


def test_single_file_latency_is_small(daemon):
    os.makedirs(daemon.spool / "alice" / "s")
    drained(daemon)
    t0 = time.monotonic()
    daemon.write_spool("alice/s/one.jsonl", lines({"role": "user", "content": "hi"}))
    drained(daemon)
    assert time.monotonic() - t0 < 5.0
