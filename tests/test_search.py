"""Search and glob: the engine on a store (line rules, patterns, scope, caps, the cache and
the database), then through the real daemon: the CLI and the control API, and a search
that runs while `cat` and a spool ingest go on."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import threading
import time

import pytest
import trio
from conftest import wait_for

from skillfs import errors, search
from skillfs.patterns import SearchError
from skillfs.store import Store, purging

SKILL = b"---\nname: notes\ndescription: what we noted\n---\nKeep notes.\n"

store_tier = pytest.mark.anyio


async def _notes(store: Store, space: str = "alice", files: dict | None = None) -> str:
    sp = await store.create_space(space)
    skill = await store.create_skill(SKILL, files or {}, space_id=sp.id)
    return skill.id


def _lines(found: search.Found) -> list[str]:
    return [f"{m.mount_path}:{m.line}:{m.text}" for m in found.matches]


@store_tier
async def test_lines_as_grep_reads_them(store: Store) -> None:
    await _notes(store, files={
        "a.md": b"alpha\nbeta gamma\n\nGamma ray\nlast gamma",
        "b/c.md": b"no match here\n",
        "bin.dat": b"gamma\0binary\n",
    })
    found = await search.search(store, "gamma", spaces=["alice"])
    assert _lines(found) == ["alice/notes/a.md:2:beta gamma", "alice/notes/a.md:5:last gamma",
                             "alice/notes/bin.dat:1:"]
    assert found.matches[-1].binary and not found.truncated and not found.timed_out
    # -i; ^ and $ at each line; a match never spans lines
    found = await search.search(store, "^gamma", ignore_case=True, glob="*.md")
    assert _lines(found) == ["alice/notes/a.md:4:Gamma ray"]
    assert _lines(await search.search(store, r"gamma$", glob="a.md")) == [
        "alice/notes/a.md:2:beta gamma", "alice/notes/a.md:5:last gamma"]
    assert _lines(await search.search(store, r"alpha\s+beta")) == []
    assert _lines(await search.search(store, r"^$", glob="a.md")) == ["alice/notes/a.md:3:"]
    # fixed: the pattern's characters are literal
    await store.write_file(store.get_space("alice").skills["notes"], "r.md",
                           b"a.b\naxb\n(a+)+\n", author="api")
    assert _lines(await search.search(store, "a.b", glob="r.md")) == [
        "alice/notes/r.md:1:a.b", "alice/notes/r.md:2:axb"]
    assert _lines(await search.search(store, "a.b", fixed=True)) == ["alice/notes/r.md:1:a.b"]
    assert _lines(await search.search(store, "(a+)+", fixed=True)) == [
        "alice/notes/r.md:3:(a+)+"]


@store_tier
async def test_bad_and_catastrophic_patterns(store: Store) -> None:
    await _notes(store, files={"long.md": b"a" * 200_000 + b"!\n"})
    for bad, why in [("(a)\\1", "backreferences"), ("(?=a)", "look-ahead"),
                     ("(", r"missing \)"), ("[z-a]", "range"), ("x" * 5000, "at most")]:
        with pytest.raises(SearchError, match=why):
            await search.search(store, bad)
    with pytest.raises(SearchError, match="not a glob relative"):
        await search.search(store, "a", glob="/etc/*")
    with pytest.raises(SearchError, match="too many globs"):  # 2**40 brace expansions
        await search.search(store, "a", glob="{a,b}" * 40)
    assert SearchError("x").http_status == 400
    t0 = time.monotonic()
    found = await search.search(store, "(a+)+$", skill="notes")
    assert found.matches == [] and time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    found = await search.search(store, r"(\w+\s?)+!$", skill="notes")
    assert [m.line for m in found.matches] == [1] and time.monotonic() - t0 < 1.0
    assert len(found.matches[0].text) == search.MAX_TEXT + 1  # cut, marked with …


@store_tier
async def test_scope_caps_and_versions(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(search, "SLICE_FILES", 7)  # slices that cut skills and span them
    alice = await _notes(store, "alice", {f"n{i:03}.md": b"hit\nhit\n" for i in range(300)})
    bob = await store.create_space("bob")
    await store.include_skill(bob.id, alice)
    found = await search.search(store, "hit", max_results=10)
    assert found.truncated and len(found.matches) == 10
    found = await search.search(store, "hit", max_results=1000)
    assert found.truncated and len(found.matches) == 1000
    found = await search.search(store, "hit", max_results=2000)
    # a skill in two spaces is found in both
    assert not found.truncated and len(found.matches) == 1200
    assert {m.space for m in found.matches} == {"alice", "bob"}
    assert len((await search.search(store, "hit", spaces=["bob"])).matches) == 600
    found = await search.search(store, "hit", spaces=["alice"], skill="notes",
                                glob="notes/n00?.md")
    assert len(found.matches) == 20
    with pytest.raises(errors.NotFound):
        await search.search(store, "hit", spaces=["nobody"])
    with pytest.raises(errors.NotFound):
        await search.search(store, "hit", skill="daily-logs-nope")
    # a deleted file is not found; a new version is found at once
    await store.delete_file(alice, "n000.md", author="api")
    await store.write_file(alice, "n001.md", b"fresh\n", author="api")
    assert (await search.search(store, "hit", glob="n00[01].md")).matches == []
    assert _lines(await search.search(store, "fresh", spaces=["alice"])) == [
        "alice/notes/n001.md:1:fresh"]
    # glob lists paths under the mount root
    paths = await search.glob(store, "notes/n00*.md", spaces=["alice"])
    assert paths == [f"alice/notes/n00{i}.md" for i in range(1, 10)]
    assert len(await search.glob(store, "*.md", max_results=7)) == 7
    assert await search.glob(store, "**/SKILL.md", skill="notes") == [
        "alice/notes/SKILL.md", "bob/notes/SKILL.md"]


@store_tier
async def test_reads_what_the_cache_does_not_hold(db_path) -> None:
    store = Store(str(db_path), cache_bytes=64 << 10)  # a small cache: most reads miss
    try:
        await _notes(store, files={f"f{i:03}.md": b"line\n" * 400 + f"needle {i}\n".encode()
                                   for i in range(200)})
        await _notes(store, "bob", files={"g.md": b"needle 200\n"})
        found = await search.search(store, r"needle \d+", max_results=500)
        assert [m.text for m in found.matches] == [f"needle {i}" for i in range(201)]
        assert {m.line for m in found.matches[:200]} == {401}
    finally:
        store.close()


@store_tier
async def test_searches_at_once_take_turns(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(search, "SLICE_FILES", 16)
    await _notes(store, files={f"f{i:04}.md": f"x {i}\n".encode() for i in range(300)})
    results: dict[int, search.Found] = {}

    async def one(n: int) -> None:
        results[n] = await search.search(store, r"x \d+", skill="notes", max_results=5000)

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(one, n)
    want = [f"x {i}" for i in range(300)]
    assert all([m.text for m in found.matches] == want for found in results.values())


@store_tier
async def test_time_cap(store: Store) -> None:
    await _notes(store, files={f"f{i}.md": b"x\n" * 1000 for i in range(50)})
    found = await search.search(store, "x", max_results=10**6, timeout=0.0)
    assert found.timed_out and len(found.matches) < 50_000


# -- through the daemon -------------------------------------------------------------------


def _mount_files(space) -> None:
    (space / "notes").mkdir()
    (space / "notes" / "SKILL.md").write_bytes(SKILL)
    (space / "notes" / "a.md").write_text("alpha\nThe Gamma ray\nbeta gamma\n")
    (space / "notes" / "deep").mkdir()
    (space / "notes" / "deep" / "b.md").write_text("a.b and axb\ngamma again\n")
    (space / "notes" / "long.md").write_text("a" * 100_000 + "!\n")


def test_cli_prints_grep_lines_under_the_mount_root(daemon, space):
    _mount_files(space)
    os.mkdir(daemon.mnt / "bob")
    r = daemon.cli("search", "gamma")
    assert r.stdout.splitlines() == ["alice/notes/a.md:3:beta gamma",
                                     "alice/notes/deep/b.md:2:gamma again"]
    for line in r.stdout.splitlines():  # `cat MOUNT/<path>` reads the file
        path, number, text = line.split(":", 2)
        assert (daemon.mnt / path).read_text().splitlines()[int(number) - 1] == text
    r = daemon.cli("search", "GAMMA", "-i", "--space", "alice", "--skill", "notes",
                   "--glob", "*.md")
    assert [line.split(":")[:2] for line in r.stdout.splitlines()] == [
        ["alice/notes/a.md", "2"], ["alice/notes/a.md", "3"], ["alice/notes/deep/b.md", "2"]]
    assert daemon.cli("search", "gamma", "--glob", "notes/*.md").stdout.splitlines() == [
        "alice/notes/a.md:3:beta gamma"]
    assert daemon.cli("search", "a.b", "--fixed").stdout.splitlines() == [
        "alice/notes/deep/b.md:1:a.b and axb"]
    assert daemon.cli("search", "gamma", "--space", "bob", check=False).returncode == 1
    out = json.loads(daemon.cli("search", "ray", "--json").stdout)
    assert out == {"matches": [{"file": "alice/notes/a.md", "space": "alice",
                                "skill": "notes", "path": "a.md", "line": 2,
                                "text": "The Gamma ray", "binary": False}],
                   "truncated": False, "timed_out": False}
    r = daemon.cli("search", "a", "--max-results", "2")
    assert len(r.stdout.splitlines()) == 2 and "--max-results" in r.stderr
    (daemon.mnt / "bob" / "daily-logs" / "b.md").write_text("gamma in bob\n")
    api = daemon.api("GET", "/skillfs/v1/search", params=[
        ("pattern", "gamma"), ("space", "bob"), ("space", "alice"), ("max_results", "2")])
    assert api.status_code == 200 and api.json()["truncated"]
    assert [m["file"] for m in api.json()["matches"]] == ["alice/notes/a.md",
                                                          "alice/notes/deep/b.md"]
    r = daemon.cli("--socket", str(daemon.home / "none.sock"), "search", "x", check=False)
    assert r.returncode == 2 and "not running" in r.stderr


def test_bad_patterns_exit_2_and_catastrophic_ones_answer_at_once(daemon, space):
    _mount_files(space)
    for bad, why in [("(a)\\1", "backreferences"), ("(?<=a)b", "look-ahead and look-behind"),
                     ("[", "missing ]")]:
        r = daemon.cli("search", bad, check=False)
        assert r.returncode == 2 and why in r.stderr and "HTTP 400" in r.stderr, r.stderr
    r = daemon.cli("search", "x", "--space", "nobody", check=False)
    assert r.returncode == 2 and "no learning space 'nobody'" in r.stderr
    t0 = time.monotonic()
    r = daemon.cli("search", "(a+)+$", "--glob", "long.md", check=False)
    assert r.returncode == 1 and time.monotonic() - t0 < 5
    t0 = time.monotonic()
    r = daemon.cli("search", r"(\w+\s?)+!$", "--skill", "notes")
    assert r.stdout.startswith("alice/notes/long.md:1:aaaa") and time.monotonic() - t0 < 5
    assert len(r.stdout.split(":", 2)[2]) == search.MAX_TEXT + 2  # the cut's … and \n
    api = daemon.api("GET", "/skillfs/v1/search", params={"pattern": "(?=x)"})
    assert api.status_code == 400 and "look-ahead" in api.json()["error"]
    for params, why in [({"pattern": "x", "max_results": 0}, "max_results"),
                        ({"pattern": "x", "max_results": 10**6}, "max_results"),
                        ({"pattern": "x", "timeout": 999}, "timeout"),
                        ({"pattern": "x", "glob": "/abs"}, "glob")]:
        api = daemon.api("GET", "/skillfs/v1/search", params=params)
        assert api.status_code == 400 and why in api.json()["error"], api.text
    api = daemon.api("GET", "/skillfs/v1/glob", params={"pattern": "a", "max_results": 0})
    assert api.status_code == 400
    # the purge's pattern is the same engine's, with its errors
    r = daemon.cli("purge", str(space / "notes" / "a.md"), "--all-matching", "(a)\\1",
                   "--why", "x", check=False)
    assert r.returncode != 0 and "backreferences" in r.stderr and "HTTP 400" in r.stderr


def test_deleted_files_go_and_new_versions_come_at_once(daemon, space):
    _mount_files(space)
    os.unlink(space / "notes" / "deep" / "b.md")
    assert daemon.cli("search", "again", check=False).returncode == 1
    (space / "notes" / "a.md").write_text("fresh words\n")
    assert daemon.cli("search", "fresh").stdout == "alice/notes/a.md:1:fresh words\n"
    assert daemon.cli("search", "gamma", check=False).returncode == 1
    r = daemon.api("PUT", "/skillfs/v1/files", params={"path": "alice/notes/c.md"},
                   content=b"through the API\n")
    assert r.status_code == 200
    assert daemon.cli("search", "API").stdout == "alice/notes/c.md:1:through the API\n"


def test_glob_lists_paths_under_the_mount_root(daemon, space):
    _mount_files(space)
    r = daemon.cli("glob", "notes/**/*.md")
    assert r.stdout.splitlines() == ["alice/notes/SKILL.md", "alice/notes/a.md",
                                     "alice/notes/deep/b.md", "alice/notes/long.md"]
    assert daemon.cli("glob", "b.md").stdout == "alice/notes/deep/b.md\n"
    assert daemon.cli("glob", "nothing-*", check=False).returncode == 1
    out = json.loads(daemon.cli("glob", "*/SKILL.md", "--skill", "notes", "--json").stdout)
    assert out == {"paths": ["alice/notes/SKILL.md"], "truncated": False}
    r = daemon.cli("glob", "**", "--max-results", "2")
    assert len(r.stdout.splitlines()) == 2 and "--max-results" in r.stderr
    r = daemon.cli("glob", "x", "--skill", "nope", check=False)
    assert r.returncode == 2 and "no skill 'nope'" in r.stderr


def _slow_corpus(root, files: int) -> None:
    """Text on which `(a|b)*a(a|b){12}c` is slow even for RE2 (its DFA gives way to the
    NFA): a search over it runs for seconds."""
    rng = random.Random(7)
    a_or_b = bytes(b"ab"[i % 2] for i in range(256))
    skill = root / "load" / "slow"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: slow\ndescription: slow text\n---\nSlow.\n")
    for i in range(files):
        text = rng.randbytes(7_000).translate(a_or_b)
        (skill / f"f{i:05}.md").write_bytes(b"\n".join(text[j:j + 70]
                                                      for j in range(0, len(text), 70)))


@pytest.mark.long
@pytest.mark.duckdb_file
def test_a_long_search_stalls_neither_cat_nor_ingestion(make_daemon, tmp_path):
    d = make_daemon("--learner", "off", start=False)
    _slow_corpus(tmp_path / "corpus", 2_500)
    d.cli("import-tree", str(tmp_path / "corpus"), "--db", str(d.db))
    d.start()
    (d.mnt / "load" / "slow" / "note.md").write_text("cat me\n")
    target = d.mnt / "load" / "slow" / "note.md"
    alone = _cat_times(target)
    with _searching(d) as searches:
        time.sleep(0.3)
        cats = _cat_times(target)
        i0 = time.monotonic()
        d.write_spool("load/s1/001.jsonl",
                      json.dumps({"role": "user", "content": "hi"}) + "\n")
        wait_for(lambda: not (d.spool / "load" / "s1" / "001.jsonl").exists(), timeout=20,
                 what="the spool file to be ingested")
        ingest = time.monotonic() - i0
    print(f"searches of {', '.join(f'{t:.2f}' for t, _ in searches)} s; cat during them: "
          f"median {_ms(cats, 0.5)}, max {_ms(cats, 1)}; alone: median {_ms(alone, 0.5)}, "
          f"max {_ms(alone, 1)}; a spool file ingested in {ingest:.2f} s; "
          f"load {os.getloadavg()[0]:.1f}")
    # nothing matches; on a busy machine the time cap may end one first
    assert searches and all(body == {"matches": [], "truncated": False, "timed_out": False}
                            or body["timed_out"] for _, body in searches), searches
    assert max(cats) < 1.0 and ingest < 5.0


@contextlib.contextmanager
def _searching(d):
    """Searches through the API, one after another, until the block ends: (seconds, body)
    of each, the one running then included."""
    done: list[tuple[float, dict]] = []
    stop = threading.Event()

    def search_on() -> None:
        with d.http() as http:
            while not stop.is_set():
                t0 = time.monotonic()
                r = http.get("/skillfs/v1/search", params={
                    "pattern": "(a|b)*a(a|b){12}c", "timeout": 30})
                done.append((time.monotonic() - t0, r.json()))

    searcher = threading.Thread(target=search_on)
    searcher.start()
    try:
        yield done
    finally:
        stop.set()
        searcher.join(timeout=120)


def _cat_times(path, count: int = 40) -> list[float]:
    """Seconds each `cat` of path takes (the process's start included)."""
    took = []
    for _ in range(count):
        t0 = time.monotonic()
        assert subprocess.run(["cat", str(path)], capture_output=True).stdout == b"cat me\n"
        took.append(time.monotonic() - t0)
        time.sleep(0.01)
    return took


def _ms(samples: list[float], q: float) -> str:
    return f"{sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] * 1e3:.0f} ms"


@store_tier
async def test_skill_in_no_space_and_the_purge_pattern(store: Store, monkeypatch) -> None:
    loose = await store.create_skill(SKILL, {"a.md": b"key sk-1\n"})
    found = await search.search(store, "sk-", skill=loose.id)
    assert [(m.space, m.skill, m.path) for m in found.matches] == [("", "notes", "a.md")]
    with pytest.raises(SearchError, match="backreferences"):
        await store.purge_file(loose.id, "a.md", by="t", why="x", pattern=r"(k)\1")
    with pytest.raises(SearchError, match="empty string"):
        await store.purge_file(loose.id, "a.md", by="t", why="x", pattern="^")
    monkeypatch.setattr(purging, "MATCH_SECONDS", -1.0)
    with pytest.raises(SearchError, match="nothing was purged"):
        await store.purge_file(loose.id, "a.md", by="t", why="x", pattern="sk-[0-9]")
    monkeypatch.setattr(purging, "MATCH_SECONDS", 60.0)
    out = await store.purge_file(loose.id, "a.md", by="t", why="x", pattern="sk-[0-9]")
    assert out.purged == [1] and (await store.read_file(loose.id, "a.md")).content == (
        b"key [purged]\n")
