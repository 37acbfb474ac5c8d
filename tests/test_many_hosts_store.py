"""Several stores on one PostgreSQL database, as several daemons on many hosts would hold it:
each one's tree follows the others' commits through the change feed, their ids never
collide, a write computed against a version another store replaced fails instead of
overwriting it, and each host's spool ledger is its own.

Real stores on a real server (tests/pgserver.py), in one trio run; the feed's `catch_up` is
what its task runs on each notification, called here where the test needs it applied.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from skillfs.errors import Exists, WriteConflict
from skillfs.messages import Message
from skillfs.store import Store, events
from skillfs.store.sessions import SpoolFile

pytestmark = [pytest.mark.postgres_only, pytest.mark.anyio]


def _message(text: str) -> Message:
    return Message(role="user", text=text, format="openai",
                   original={"role": "user", "content": text})


@pytest.fixture
def stores(pg_url: str) -> Iterator[list[Store]]:
    made = [Store(pg_url, host=f"host{i}") for i in range(3)]
    yield made
    for store in made:
        store.close()


def _listing(store: Store, space: str) -> dict[str, dict[str, tuple[int, str]]]:
    """What a store's tree shows of a space: skill -> path -> (version, sha256)."""
    return {name: {path: (n.version, n.sha256) for path, n in skill.files.items()}
            for name, skill in store.space(space).skills.items()}


def _whole(store: Store) -> dict:
    """Everything a store's tree holds, comparable between stores."""
    tree = store.tree
    return {"spaces": {s.id: (s.name, sorted(k.id for k in s.skills.values()))
                       for s in tree.spaces.values()},
            "skills": {k.id: (k.name, k.description, sorted(k.spaces),
                              sorted(p for p in k.children if p),
                              {p: (n.id, n.version, n.size, n.sha256)
                               for p, n in k.files.items()})
                       for k in tree.skills.values()}}


def _as_loaded(store: Store, url: str) -> None:
    """The store's tree is what a store opening the database now loads."""
    fresh = Store(url)
    try:
        assert _whole(store) == _whole(fresh)
    finally:
        fresh.close()


async def _caught_up(*stores: Store) -> list[list]:
    heard: list[list] = []
    for store in stores:
        seen: list = []
        store.subscribe(seen.append)
        assert store.feed is not None
        await store.feed.catch_up()
        store.ctx.subscribers.remove(seen.append)
        heard.append(seen)
    return heard


async def test_every_kind_of_change_reaches_the_other_stores(stores: list[Store],
                                                             pg_url: str) -> None:
    a, b, c = stores
    space = await a.create_space("team")
    skill = a.space(space.id).skills["daily-logs"]
    await a.write_file(skill.id, "notes/one.md", b"one\n", author="api")
    await a.make_dir(skill.id, "empty")
    [heard_b, _] = await _caught_up(b, c)
    assert _listing(b, "team") == _listing(c, "team") == _listing(a, "team")
    assert "empty" in b.skill(skill.id).children
    assert any(isinstance(e, events.SpaceAdded) for e in heard_b)
    assert await b.files.content(b.skill(skill.id).files["notes/one.md"]) == b"one\n"

    await b.write_file(skill.id, "notes/one.md", b"two\n", author="api")
    await b.move_file(skill.id, "notes/one.md", "notes/moved.md", author="api")
    await b.move_dir(skill.id, "empty", "full")
    [heard_a, _] = await _caught_up(a, c)
    assert _listing(a, "team") == _listing(b, "team") == _listing(c, "team")
    node = a.skill(skill.id).files["notes/moved.md"]
    assert await a.files.content(node) == b"two\n"
    assert "full" in a.skill(skill.id).children and "empty" not in a.skill(skill.id).children
    assert any(isinstance(e, events.FileMoved) for e in heard_a), heard_a

    await c.delete_file(skill.id, "notes/moved.md", author="api")
    made = await c.create_skill("---\nname: second\ndescription: d\n---\n",
                                {"x.md": b"x"}, space_id=space.id)
    await c.update_space(space.id, name="renamed")
    await _caught_up(a, b)
    assert _listing(a, "renamed") == _listing(c, "renamed") == _listing(b, "renamed")
    assert a.skill(made.id).files["x.md"].version == 1

    for store in stores:
        _as_loaded(store, pg_url)
    await a.delete_space(space.id, with_skills=True)
    await _caught_up(b, c)
    assert b.tree.spaces == {} and c.tree.spaces == {}
    assert made.id not in b.tree.skills
    for store in stores:
        _as_loaded(store, pg_url)


async def test_file_ids_and_message_numbers_do_not_collide(stores: list[Store]) -> None:
    a, b, _ = stores
    space = await a.create_space("ids")
    await _caught_up(b)
    skill_id = a.space(space.id).skills["daily-logs"].id
    async with trio.open_nursery() as nursery:
        for store in (a, b):
            for i in range(20):
                nursery.start_soon(lambda s=store, i=i: s.write_file(
                    skill_id, f"{s.host}-{i}.md", b"x", author="api"))
    await _caught_up(a, b)
    ids = [n.id for n in a.skill(skill_id).files.values()]
    assert len(ids) == len(set(ids)) == 41  # with SKILL.md
    assert _listing(a, "ids") == _listing(b, "ids")

    session = await a.create_session()
    for round_ in range(3):
        for store in (a, b):
            await store.add_messages(session.id, [_message(f"{store.host} {round_}")])
    seqs = [m.seq for m in await a.get_messages(session.id)]
    assert seqs == list(range(6))


async def test_a_write_against_a_replaced_version_fails_and_nothing_is_lost(
        stores: list[Store]) -> None:
    a, b, _ = stores
    space = await a.create_space("race")
    skill_id = a.space(space.id).skills["daily-logs"].id
    await a.write_file(skill_id, "f.md", b"base\n", author="api")
    await _caught_up(b)
    await a.write_file(skill_id, "f.md", b"from a\n", author="api")
    # b has not heard of a's version yet: the database refuses b's
    with pytest.raises(WriteConflict):
        await b.write_file(skill_id, "f.md", b"from b\n", author="api")
    with pytest.raises(WriteConflict):
        await b.move_file(skill_id, "f.md", "g.md", author="api")
    # a name another store took first
    await a.write_file(skill_id, "new.md", b"a's\n", author="api")
    with pytest.raises((WriteConflict, Exists)):
        await b.write_file(skill_id, "new.md", b"b's\n", author="api")
    await _caught_up(b)
    node = b.skill(skill_id).files["f.md"]
    assert await b.files.content(node) == b"from a\n"
    await b.write_file(skill_id, "f.md", b"from b, after\n", author="api")
    log = await a.file_log(skill_id, "f.md")
    assert [v.version for v in log] == [1, 2, 3]  # every write that returned is there


async def test_each_hosts_spool_is_ingested_once(stores: list[Store]) -> None:
    files = [SpoolFile("alice/s1/0001.jsonl", "d1", None,
                       [_message("same name, another host")])]
    for store in stores:
        await _caught_up(store)  # the space the first host made
        [result] = await store.sessions.ingest_spool_files("alice", "s1", files)
        assert result is not None
        [again] = await store.sessions.ingest_spool_files("alice", "s1", files)
        assert again is None  # this host's ledger has it
    sessions = await stores[0].list_sessions()
    assert len(sessions) == 1
    assert [m.seq for m in await stores[0].get_messages(sessions[0].id)] == [0, 1, 2]


async def test_a_store_behind_the_trimmed_feed_re_reads_everything(stores: list[Store],
                                                                  pg_url: str) -> None:
    a, b, _ = stores
    space = await a.create_space("old")
    skill_id = a.space(space.id).skills["daily-logs"].id
    await a.write_file(skill_id, "f.md", b"missed\n", author="api")
    a.db.con.execute("UPDATE changes SET at = now() - interval '2 hours'")
    assert a.feed is not None
    await a.feed._trim()
    assert a.db.con.execute("SELECT count(*) FROM changes").fetchall()[0][0] == 0
    [heard] = await _caught_up(b)
    assert _listing(b, "old") == _listing(a, "old")
    _as_loaded(b, pg_url)
    assert any(isinstance(e, events.SpaceAdded) for e in heard)


async def test_a_skill_deleted_and_made_again_under_its_name_is_the_new_one(
        stores: list[Store], pg_url: str) -> None:
    a, b, _ = stores
    space = await a.create_space("again")
    old = await a.create_skill("---\nname: tips\ndescription: old\n---\n", space_id=space.id)
    await _caught_up(b)
    await a.delete_skill(old.id)
    new = await a.create_skill("---\nname: tips\ndescription: new\n---\n", space_id=space.id)
    await _caught_up(b)
    assert b.space(space.id).skills["tips"].id == new.id
    assert old.id not in b.tree.skills
    assert _listing(b, "again") == _listing(a, "again")
    _as_loaded(b, pg_url)
