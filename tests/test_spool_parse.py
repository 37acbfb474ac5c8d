"""Unit tests: message normalisation, spool parsing, rejection, and the ingester on a fake store."""

import json
import os
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from skillfs.errors import Invalid
from skillfs.messages import Control, InvalidMessage, Message, detect_format, normalize
from skillfs.spool import (
    Rejected,
    SpoolIngester,
    SpoolReject,
    check_spool_path,
    file_sha256,
    open_spool,
    parse_spool_bytes,
)

# --- messages ------------------------------------------------------------------------------

OPENAI_ASSISTANT = {
    "role": "assistant",
    "content": None,
    "refusal": None,
    "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "read_file", "arguments": "{\"path\": \"a.md\"}"}},
        {"id": "call_2", "type": "function",
         "function": {"name": "shell", "arguments": "not json"}},
    ],
}

ANTHROPIC_ASSISTANT = {
    "role": "assistant",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "grep", "input": {"q": "x"}},
    ],
}

ANTHROPIC_RESULTS = {
    "role": "user",
    "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": [{"type": "text", "text": "found 3"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "nothing", "is_error": True},
    ],
}

ACONTEXT_ASSISTANT = {
    "role": "assistant",
    "parts": [
        {"type": "text", "text": "Calling.", "meta": None, "file_field": None},
        {"type": "tool-call", "meta": {"id": "c9", "name": "search", "arguments": "{\"k\": 2}"}},
    ],
    "meta": {"source": "test"},
}


def test_openai_user_text():
    m = normalize({"role": "user", "content": "Use tabs, please."})
    assert (m.format, m.role, m.text) == ("openai", "user", "Use tabs, please.")
    assert m.original == {"role": "user", "content": "Use tabs, please."}


def test_openai_parts_and_developer_role():
    m = normalize({"role": "developer", "content": [{"type": "text", "text": "be brief"}]})
    assert (m.role, m.text) == ("system", "be brief")
    m = normalize({"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "http://x"}}]})
    assert m.text == "see\n[image]"


def test_openai_tool_calls_and_result():
    m = normalize(OPENAI_ASSISTANT)
    assert m.role == "assistant" and m.text == ""
    assert [(c.id, c.name, c.arguments) for c in m.tool_calls] == [
        ("call_1", "read_file", {"path": "a.md"}), ("call_2", "shell", "not json")]
    out = m.to_openai()
    assert out["tool_calls"][0]["function"]["arguments"] == json.dumps({"path": "a.md"})
    assert out["tool_calls"][1]["function"]["arguments"] == "not json"
    r = normalize({"role": "tool", "tool_call_id": "call_1", "content": "# A"})
    assert (r.role, r.tool_call_id, r.text) == ("tool", "call_1", "# A")
    assert r.to_openai() == {"role": "tool", "tool_call_id": "call_1", "content": "# A"}


def test_anthropic_forms():
    m = normalize(ANTHROPIC_ASSISTANT)
    assert m.format == "anthropic" and m.role == "assistant"
    assert m.text == "Let me look."  # thinking is not conversation
    assert [(c.id, c.name, c.arguments) for c in m.tool_calls] == [("toolu_1", "grep", {"q": "x"})]
    r = normalize(ANTHROPIC_RESULTS)
    assert r.role == "tool" and r.text == "found 3\nnothing" and r.tool_call_id is None
    assert r.to_openai_messages() == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found 3"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "nothing"},
    ]
    one = normalize({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "ok"},
        {"type": "text", "text": "and?"}]})
    assert one.role == "user" and one.text == "ok\nand?" and one.tool_call_id == "t"
    assert one.to_openai_messages()[-1] == {"role": "user", "content": "and?"}


def test_acontext_forms():
    m = normalize(ACONTEXT_ASSISTANT)
    assert (m.format, m.role, m.text) == ("acontext", "assistant", "Calling.")
    assert [(c.id, c.name, c.arguments) for c in m.tool_calls] == [("c9", "search", {"k": 2})]
    r = normalize({"role": "user", "parts": [
        {"type": "tool-result", "text": "two hits", "meta": {"tool_call_id": "c9"}}]})
    assert (r.role, r.tool_call_id, r.text) == ("tool", "c9", "two hits")
    old = normalize({"role": "assistant", "parts": [
        {"type": "tool-call", "meta": {"tool_name": "x", "arguments": {"a": 1}}}]})
    assert old.tool_calls[0].name == "x" and old.tool_calls[0].arguments == {"a": 1}


def test_explicit_format_and_roundtrip():
    m = normalize({"role": "user", "content": "hi"}, format="anthropic")
    assert m.format == "anthropic"
    again = Message.model_validate(json.loads(m.model_dump_json()))
    assert again == m


@pytest.mark.parametrize("obj, field", [
    ([1, 2], None),
    ({"content": "x"}, "role"),
    ({"role": 7, "content": "x"}, "role"),
    ({"role": "boss", "content": "x"}, "role"),
    ({"role": "user", "content": 5}, "content"),
    ({"role": "user"}, "content"),
    ({"role": "user", "content": [{"type": "text", "text": 3}]}, "content[0].text"),
    ({"role": "user", "content": ["plain"]}, "content[0]"),
    ({"role": "tool", "content": "x"}, "tool_call_id"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
     "tool_calls[0].id"),
    ({"role": "assistant", "tool_calls": "f()"}, "tool_calls"),
    ({"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": []}]},
     "content[0].input"),
    ({"role": "user", "parts": [{"type": "tool-call", "meta": {"name": "f"}}]},
     "parts[0].meta.arguments"),
    ({"role": "user", "parts": "hello"}, "parts"),
    ({"role": "user", "parts": [], "content": "x"}, "parts"),
])
def test_garbage_is_rejected(obj, field):
    with pytest.raises(InvalidMessage) as exc:
        normalize(obj)
    assert isinstance(exc.value, Invalid)
    assert exc.value.field == field


def test_detect_format():
    assert detect_format({"role": "user", "content": "x"}) == "openai"
    assert detect_format(ANTHROPIC_RESULTS) == "anthropic"
    assert detect_format(ACONTEXT_ASSISTANT) == "acontext"
    with pytest.raises(InvalidMessage):
        detect_format({"role": "assistant", "tool_calls": [{"id": "x"}],
                       "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]})


# --- parsing -------------------------------------------------------------------------------

def _jsonl(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def test_parse_jsonl_keeps_order_and_controls():
    data = _jsonl({"role": "user", "content": "one"}, ANTHROPIC_ASSISTANT) + b"\n  \n" + \
        _jsonl(ACONTEXT_ASSISTANT, {"event": "flush"}, {"event": "end"})
    recs = parse_spool_bytes(data, ".jsonl")
    assert [type(r).__name__ for r in recs] == ["Message", "Message", "Message", "Control",
                                                "Control"]
    assert [r.format for r in recs[:3]] == ["openai", "anthropic", "acontext"]
    assert recs[3] == Control(event="flush", original={"event": "flush"}) and recs[4].event == "end"


def test_parse_json_object_and_array():
    one = parse_spool_bytes(b'{"role": "user", "content": "a"}', ".json")
    assert len(one) == 1 and one[0].text == "a"
    many = parse_spool_bytes(
        json.dumps([{"role": "user", "content": "a"}, {"event": "end"}]).encode(), "json")
    assert [type(r) for r in many] == [Message, Control]
    crlf = parse_spool_bytes(b'\xef\xbb\xbf{"role":"user","content":"a"}\r\n', ".jsonl")
    assert crlf[0].text == "a"


@pytest.mark.parametrize("data, suffix, line, field, words", [
    (b'{"role":"user","content":"a"}\n{"role": "user", content}\n', ".jsonl", 2, None,
     "malformed JSON"),
    (b'{"role":"user","content":"a"}\n\n{"role":"user","content":"\xff"}\n', ".jsonl", 3, None,
     "UTF-8"),
    (b'[1, 2]\n', ".jsonl", 1, None, "expected a JSON object, got array"),
    (b'{"event": "stop"}\n', ".jsonl", 1, "event", "unknown event"),
    (b'{"event": "end", "role": "user"}\n', ".jsonl", 1, "event", "not both"),
    (b'{"role": "user", "content": NaN}\n', ".jsonl", 1, None, "NaN"),
    (b'{"role":"user","content":"a"}\n{"content":"x"}\n', ".jsonl", 2, "role", "missing"),
    (b'', ".jsonl", None, None, "empty"),
    (b'\n \n', ".jsonl", None, None, "empty"),
    (b'[]', ".json", None, None, "empty"),
    (b'[\n {"role": "user", "content": "a"},\n\n {"role": "user", "content": 1}\n]', ".json", 4,
     "[1].content", "expected"),
    (b'{"role": "user",\n "content": }', ".json", 2, None, "malformed JSON"),
    (b'{"role":"user","content":"a"}', ".txt", None, None, "suffix"),
])
def test_parse_rejects(data, suffix, line, field, words):
    with pytest.raises(SpoolReject) as exc:
        parse_spool_bytes(data, suffix)
    e = exc.value
    assert (e.line, e.field) == (line, field), str(e)
    assert words in e.reason


def test_caps():
    line = json.dumps({"role": "user", "content": "x" * 2000}).encode()
    ok = b'{"role":"user","content":"a"}\n'
    with pytest.raises(SpoolReject) as exc:
        parse_spool_bytes(ok + line + b"\n", ".jsonl", max_line_bytes=1000)
    assert exc.value.line == 2 and "cap" in exc.value.reason
    with pytest.raises(SpoolReject) as exc:
        parse_spool_bytes(ok * 100, ".jsonl", max_file_bytes=1000)
    assert exc.value.line is None and "cap" in exc.value.reason


def test_check_spool_path():
    assert check_spool_path("sp/se/001.jsonl").session == "se"
    for ignored in (".rejected/x", "sp/.se/1.jsonl", "sp/se/.1.jsonl", "sp/se/1.jsonl.tmp", ".x"):
        assert check_spool_path(ignored) is None
    for bad in ("x.jsonl", "sp/x.jsonl", "sp/se/sub/1.jsonl", "sp/se/1.txt"):
        with pytest.raises(SpoolReject):
            check_spool_path(bad)


def test_reject_moves_and_explains(tmp_path):
    d = tmp_path / "sp" / "se"
    d.mkdir(parents=True)
    root = open_spool(tmp_path)
    session = root.open_folder("sp").open_folder("se")
    for i in range(2):
        (d / "a.jsonl").write_bytes(b"junk %d" % i)
        dst = tmp_path / ".rejected" / Rejected(root).move(
            session, "a.jsonl", SpoolReject(3, "role", "missing"))
        assert not (d / "a.jsonl").exists() and dst.read_bytes() == b"junk %d" % i
        side = json.loads(Path(str(dst) + ".error.json").read_text())
        assert side["path"] == "sp/se/a.jsonl" and (side["line"], side["field"]) == (3, "role")
        assert side["reason"] == "missing" and side["at"]
    names = sorted(p.name for p in (tmp_path / ".rejected").iterdir())
    assert names == ["sp__se__a.1.jsonl", "sp__se__a.1.jsonl.error.json",
                     "sp__se__a.jsonl", "sp__se__a.jsonl.error.json"]


# --- the ingester --------------------------------------------------------------------------

class FakeStore:
    def __init__(self):
        self.ledger: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, str, list]] = []
        self.fail: list[Exception] = []  # raised, one per call, before committing

    async def ingest_spool_files(self, space_name, session_name, files):
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise self.fail.pop(0)
        results = []
        for f in files:
            if (f.rel_path, f.digest) in self.ledger:
                results.append(None)
                continue
            self.ledger.add((f.rel_path, f.digest))
            self.calls.append((space_name, session_name, f.rel_path, f.records))
            results.append({"messages": len(f.records)})
        return results

    def texts(self, session):
        return [r.text if isinstance(r, Message) else r.event
                for _sp, se, _p, recs in self.calls if se == session for r in recs]


def _put(spool: Path, rel: str, data: bytes) -> Path:
    path = spool / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)
    return path


def _msg(text: str) -> bytes:
    return _jsonl({"role": "user", "content": text})


def _sidecars(spool: Path) -> dict[str, dict]:
    rej = spool / ".rejected"
    if not rej.exists():
        return {}
    return {p.name[: -len(".error.json")]: json.loads(p.read_text())
            for p in rej.iterdir() if p.name.endswith(".error.json")}


def test_scan_ingests_in_order_ignores_wip_and_rejects_bad(tmp_path):
    spool = tmp_path / "spool"
    for name, text in [("003.jsonl", "three"), ("001.jsonl", "one"), ("002.json", "two")]:
        _put(spool, f"work/s1/{name}", _msg(text))
    _put(spool, "work/s2/a.jsonl", _jsonl(ANTHROPIC_ASSISTANT, {"event": "end"}))
    _put(spool, "work/s1/004.jsonl", _msg("four") + b"{oops\n")
    _put(spool, "work/s1/005.jsonl", b"")
    _put(spool, "work/s1/006.jsonl", b'{"role":"user","content":"\xfe"}\n')
    _put(spool, "work/s1/007.jsonl", b'{"role": "user", "content": "' + b"x" * 5000 + b'"}\n')
    _put(spool, "work/s1/008.jsonl", b'{"event": "end"}\n')
    _put(spool, "work/s1/notes.txt", b"hello")
    _put(spool, "work/stray.jsonl", _msg("stray"))
    (spool / "work/s1/009.jsonl.tmp").write_bytes(_msg("in progress"))
    (spool / "work/s1/.010.jsonl").write_bytes(_msg("hidden"))
    (spool / ".hidden/s/1.jsonl").parent.mkdir(parents=True)
    (spool / ".hidden/s/1.jsonl").write_bytes(_msg("hidden dir"))

    store = FakeStore()
    ing = SpoolIngester(store, spool, max_line_bytes=1000)
    trio.run(ing.scan_once)

    assert store.texts("s1") == ["one", "two", "three", "end"]
    assert store.texts("s2") == ["Let me look.", "end"]
    assert all(c[0] == "work" for c in store.calls)
    assert store.calls[0][2] == "work/s1/001.jsonl"
    side = _sidecars(spool)
    assert side["work__s1__004.jsonl"]["line"] == 2
    assert "malformed JSON" in side["work__s1__004.jsonl"]["reason"]
    assert "empty" in side["work__s1__005.jsonl"]["reason"]
    assert side["work__s1__006.jsonl"]["line"] == 1
    assert "UTF-8" in side["work__s1__006.jsonl"]["reason"]
    assert side["work__s1__007.jsonl"]["line"] == 1
    assert "cap" in side["work__s1__007.jsonl"]["reason"]
    assert side["work__s1__notes.txt"]["path"] == "work/s1/notes.txt"
    assert side["work__stray.jsonl"]["path"] == "work/stray.jsonl"
    left = sorted(str(p.relative_to(spool)) for p in spool.rglob("*")
                  if p.is_file() and ".rejected" not in p.parts)
    assert left == [".hidden/s/1.jsonl", "work/s1/.010.jsonl", "work/s1/009.jsonl.tmp"]
    assert ing.backlog() == 0
    assert ing.stats["ingested"] == 5 and ing.stats["rejected"] == 6


def test_seen_file_is_deleted_not_reingested(tmp_path):
    spool = tmp_path / "spool"
    data = _msg("already done")
    path = _put(spool, "sp/se/1.jsonl", data)
    store = FakeStore()
    store.ledger.add(("sp/se/1.jsonl", file_sha256(data)))
    ing = SpoolIngester(store, spool)
    trio.run(ing.scan_once)
    assert not path.exists() and store.calls == [] and ing.stats["duplicates"] == 1


def test_store_errors_retry_or_reject(tmp_path):
    spool = tmp_path / "spool"
    _put(spool, "sp/se/1.jsonl", _msg("first"))
    _put(spool, "sp/se/2.jsonl", _msg("second"))
    store = FakeStore()
    store.fail = [RuntimeError("database is busy")]
    ing = SpoolIngester(store, spool)

    async def main():
        await ing.scan_once()
        # The failed file stays, and holds back the later file of its session.
        assert store.calls == [] and (spool / "sp/se/1.jsonl").exists()
        assert ing.backlog() == 2
        await ing.scan_once()
        assert store.texts("se") == ["first", "second"] and ing.backlog() == 0
        store.fail = [Invalid("session se already learns into another space")]
        _put(spool, "sp/se/3.jsonl", _msg("third"))
        await ing.scan_once()

    trio.run(main)
    side = _sidecars(spool)
    assert "another space" in side["sp__se__3.jsonl"]["reason"]
    assert list((spool / "sp/se").iterdir()) == []


def test_bad_session_name_is_rejected(tmp_path):
    spool = tmp_path / "spool"
    _put(spool, "sp/se/1.jsonl", _msg("ok"))
    bad = os.path.join(os.fsencode(spool), b"sp", b"\xff")
    os.makedirs(bad)
    with open(os.path.join(bad, b"1.jsonl"), "wb") as f:
        f.write(_msg("x"))
    store = FakeStore()
    trio.run(SpoolIngester(store, spool).scan_once)
    assert [c[1] for c in store.calls] == ["se"]
    [(name, side)] = _sidecars(spool).items()
    assert side["field"] == "session" and "UTF-8" in side["reason"]
    assert side["path"] == "sp/\\xff" and name == "sp__\\xff"
    # the folder went whole, under a name that is valid UTF-8
    assert not os.path.lexists(bad)
    assert os.listdir(spool / ".rejected" / name) == ["1.jsonl"]


def test_watcher_picks_up_new_files_quickly(tmp_path):
    spool = tmp_path / "spool"
    _put(spool, "sp/early/1.jsonl", _msg("before start"))
    store = FakeStore()
    seen = []
    ing = SpoolIngester(store, spool, on_ingested=seen.append)

    async def wait_for(cond, timeout=5.0):
        with trio.fail_after(timeout):
            while not cond():
                await trio.sleep(0.01)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(ing.run)
            # Files present at start are in before run reports started.
            assert store.texts("early") == ["before start"]
            t0 = trio.current_time()
            _put(spool, "sp/late/1.jsonl", _msg("while running"))
            await wait_for(lambda: store.texts("late") == ["while running"])
            assert trio.current_time() - t0 < 2.0
            # A whole session folder moved into place at once.
            staging = tmp_path / "staging"
            _put(staging, "sess/1.jsonl", _msg("a"))
            _put(staging, "sess/2.jsonl", _msg("b"))
            (spool / "sp2").mkdir()
            os.rename(staging / "sess", spool / "sp2" / "moved")
            await wait_for(lambda: store.texts("moved") == ["a", "b"])
            _put(spool, "sp/late/2.jsonl", b"{not json\n")
            await wait_for(lambda: (spool / ".rejected" / "sp__late__2.jsonl.error.json").exists())
            t1 = trio.current_time()
            nursery.cancel_scope.cancel()
        # Shutdown does not wait for the watcher's own timeout.
        assert trio.current_time() - t1 < 2.0

    trio.run(main)
    assert [i.rel_path for i in seen] == ["sp/early/1.jsonl", "sp/late/1.jsonl",
                                          "sp2/moved/1.jsonl", "sp2/moved/2.jsonl"]
    assert seen[0].result == {"messages": 1} and seen[0].space == "sp"


def test_run_retries_after_store_error(tmp_path):
    spool = tmp_path / "spool"
    store = FakeStore()
    store.fail = [RuntimeError("disk full"), RuntimeError("disk full")]
    done = []

    async def on_ingested(info):
        await trio.lowlevel.checkpoint()
        done.append(info.rel_path)

    ing = SpoolIngester(store, spool, on_ingested=on_ingested, retry_base=0.02)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(ing.run)
            _put(spool, "sp/se/1.jsonl", _msg("eventually"))
            with trio.fail_after(5):
                while not done:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert done == ["sp/se/1.jsonl"] and store.texts("se") == ["eventually"]
    assert ing.stats["errors"] == 2 and ing.backlog() == 0


def test_symlinks_and_fifos_are_rejected_not_read(tmp_path):
    spool = tmp_path / "spool"
    _put(spool, "sp/se/1.jsonl", _msg("real"))
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(_msg("via link"))
    os.symlink(target, spool / "sp/se/2.jsonl")
    os.mkfifo(spool / "sp/se/3.jsonl")  # reading it would block forever
    store = FakeStore()
    trio.run(SpoolIngester(store, spool).scan_once)
    assert store.texts("se") == ["real"]
    side = _sidecars(spool)
    assert {k: v["reason"] for k, v in side.items()} == {
        "sp__se__2.jsonl": "a symbolic link (links are not followed)",
        "sp__se__3.jsonl": "not a regular file (a FIFO, socket or device)"}
    assert os.path.islink(spool / ".rejected" / "sp__se__2.jsonl"), "the link itself is moved"
    assert target.read_bytes() == _msg("via link")



def test_vanished_retry_is_forgotten(tmp_path):
    spool = tmp_path / "spool"
    path = _put(spool, "sp/se/1.jsonl", _msg("x"))
    store = FakeStore()
    store.fail = [RuntimeError("busy")]
    ing = SpoolIngester(store, spool, retry_base=0.01)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(ing.run)
            assert ing.backlog() == 1
            path.unlink()  # the agent took it back
            with trio.fail_after(5):
                while ing.backlog():
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert store.calls == [] and ing._retry == {}


def test_plain_messages_take_the_fast_path_with_the_same_result():
    from skillfs.messages import Message, normalize
    for obj in ({"role": "user", "content": "Deploy API v2"},
                {"role": "assistant", "content": ""},
                {"role": "system", "content": "be brief\nand kind"}):
        fast = normalize(obj)
        slow = Message(role=obj["role"], text=obj["content"], format="openai", original=obj)
        assert fast.model_dump() == slow.model_dump()
        assert normalize(obj, "openai").model_dump() == slow.model_dump()
        assert Message.model_validate(fast.model_dump()).model_dump() == slow.model_dump()
    # anything else still gets the full checks
    with pytest.raises(InvalidMessage):
        normalize({"role": "robot", "content": "beep"})


# --- lone surrogates and big messages --------------------------------------------------------

@pytest.mark.parametrize("data, suffix, line, field", [
    (b'{"role": "user", "content": "a\\ud800b"}\n', ".jsonl", 1, "content"),
    (_jsonl({"role": "user", "content": "ok"})
     + b'{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}\n', ".jsonl", 2,
     "content[0].text"),
    (b'[{"role": "user", "content": "ok"},\n {"role": "user", "content": "x\\uDBFF"}]', ".json",
     2, "[1].content"),
    (b'{"role": "user", "content": "x", "meta": {"\\ud800": 1}}', ".json", 1, "meta.\\ud800"),
])
def test_lone_surrogates_are_rejected_with_line_and_field(data, suffix, line, field):
    with pytest.raises(SpoolReject) as e:
        parse_spool_bytes(data, suffix)
    assert (e.value.line, e.value.field) == (line, field)
    assert "surrogate" in e.value.reason
    json.dumps(e.value.field).encode("utf-8")  # the sidecar can say it


def test_surrogate_pairs_and_escaped_backslashes_are_fine():
    [m] = parse_spool_bytes(b'{"role": "user", "content": "\\ud83d\\ude00 \\\\ud800"}\n', ".jsonl")
    assert m.text == "\U0001f600 \\ud800"


def test_one_message_over_the_message_cap_is_rejected_and_under_it_taken():
    big = json.dumps({"role": "user", "content": "x" * (3 << 20)}).encode()
    [m] = parse_spool_bytes(big, ".json")
    assert len(m.text) == 3 << 20
    with pytest.raises(SpoolReject, match="cap for one message"):
        parse_spool_bytes(big, ".json", max_message_bytes=1 << 20)
    many = json.dumps([{"role": "user", "content": "y" * 1000}] * 3000).encode()
    assert len(parse_spool_bytes(many, ".json", max_message_bytes=1 << 20)) == 3000
