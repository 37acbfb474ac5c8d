"""Search and glob: the engine on a store (line rules, patterns, scope, caps, the cache and
the database), then through the real daemon: the CLI and the control API, and a search
that runs while `cat` and a spool ingest go on."""

from __future__ import annotations

import time

import pytest

from skillfs import errors, search
from skillfs.search import SearchError
from skillfs.store import Store

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
    assert SearchError("x").http_status == 400
    t0 = time.monotonic()
    found = await search.search(store, "(a+)+$", skill="notes")
    assert found.matches == [] and time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    found = await search.search(store, r"(\w+\s?)+!$", skill="notes")
    assert [m.line for m in found.matches] == [1] and time.monotonic() - t0 < 1.0
    assert len(found.matches[0].text) == search.MAX_TEXT + 1  # cut, marked with …


@store_tier
async def test_scope_caps_and_versions(store: Store) -> None:
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
        found = await search.search(store, r"needle \d+", max_results=500)
        assert [m.text for m in found.matches] == [f"needle {i}" for i in range(200)]
        assert {m.line for m in found.matches} == {401}
    finally:
        store.close()


@store_tier
async def test_time_cap(store: Store) -> None:
    await _notes(store, files={f"f{i}.md": b"x\n" * 1000 for i in range(50)})
    found = await search.search(store, "x", max_results=10**6, timeout=0.0)
    assert found.timed_out and len(found.matches) < 50_000
