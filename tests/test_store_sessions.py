"""Sessions through the store: spool ingestion exactly once, messages across a restart, and
the session events the learner wakes on."""

from __future__ import annotations

import pytest

from skillfs import errors
from skillfs.messages import Control, normalize
from skillfs.store import SessionEvent, SkillAdded, SpaceAdded, Store
from skillfs.store.sessions import SpoolFile

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("consistent")]


def _msgs(*texts: str) -> list:
    return [normalize({"role": "user", "content": t}) for t in texts]


async def _ingest(store: Store, space: str, session: str, rel: str, digest: str, records):
    """One spool file; None when the ledger has it already."""
    [result] = await store.ingest_spool_files(space, session,
                                              [SpoolFile(rel, digest, None, records)])
    return result


async def test_ingest_creates_space_and_session_once(store: Store, database) -> None:
    seen: list = []
    store.subscribe(seen.append)
    result = await _ingest(store, "alice", "s1", "alice/s1/001.jsonl", "d1",
                           _msgs("hi", "there"))
    space = store.space("alice")
    assert (result.space_id, result.messages) == (space.id, 2)
    assert set(space.skills) == {"daily-logs", "user-general-facts"}
    # the same file again (committed before a crash): left out
    assert await _ingest(store, "alice", "s1", "alice/s1/001.jsonl", "d1", _msgs("hi")) is None
    again = await _ingest(store, "alice", "s1", "alice/s1/002.jsonl", "d2",
                          [*_msgs("more"), Control(event="end")])
    assert again.session_id == result.session_id and list(again.events) == ["end"]
    session = await store.get_session(result.session_id)
    assert session.ended and session.space_id == space.id
    stored = await store.get_messages(result.session_id)
    assert [m.seq for m in stored] == [0, 1, 2]
    assert [type(e) for e in seen] == [SpaceAdded, SessionEvent, SessionEvent, SessionEvent,
                                       SessionEvent]
    assert [e.kind for e in seen[1:]] == ["attached", "messages", "messages", "end"]
    assert seen[2].count == 2

    store.close()
    reopened = Store(database)
    try:
        # The next message takes the next number, after a restart too.
        assert await reopened.add_messages(result.session_id, _msgs("after")) == [3]
    finally:
        reopened.close()


async def test_sessions_attach_once(store: Store) -> None:
    a = await store.create_space("alice")
    b = await store.create_space("bob")
    row = await store.create_session(space_id=a.id)
    await store.attach_session(row.id, a.id)  # the same space again: nothing changes
    with pytest.raises(errors.Conflict):
        await store.attach_session(row.id, b.id)
    with pytest.raises(errors.Conflict):
        await store.attach_session(row.id, a.id, strict=True)
    with pytest.raises(errors.Conflict):  # a session learns into one space
        await _ingest(store, "bob", str(row.id), "bob/x/1.jsonl", "d", _msgs("x"))
    seen: list = []
    store.subscribe(seen.append)
    await store.delete_session(row.id)
    assert seen == [SessionEvent("session_deleted", row.id)]
    with pytest.raises(errors.NotFound):
        await store.get_session(row.id)


async def test_a_skill_in_two_spaces_is_one_skill(store: Store) -> None:
    a = await store.create_space("alice")
    b = await store.create_space("bob")
    seen: list = []
    store.subscribe(seen.append)
    skill_id = a.skills["daily-logs"]
    with pytest.raises(errors.Exists):  # bob has a daily-logs of his own
        await store.include_skill(b.id, skill_id)
    await store.exclude_skill(b.id, b.skills["daily-logs"])
    await store.include_skill(b.id, skill_id)
    assert seen[-1] == SkillAdded(b.id, skill_id, "daily-logs", "api")
    assert store.get_skill(skill_id).spaces == {a.id, b.id}
    assert not await store.remove_skill(a.id, skill_id)  # bob still has it
    assert store.find_skill(skill_id) is not None
    assert await store.remove_skill(b.id, skill_id)  # the last space: into the trash
    assert store.find_skill(skill_id) is None


async def test_a_task_saved_again_keeps_when_it_was_first_saved(store: Store) -> None:
    """The learner saves a task whole each time it changes (created_ns unknown to it)."""
    from skillfs.store import TaskRow

    result = await _ingest(store, "alice", "s1", "alice/s1/001.jsonl", "d1", _msgs("hi"))
    sid = result.session_id
    await store.save_lessons(sid, [], tasks=[TaskRow("t1", sid, 0, "deploy", "running")])
    [first] = await store.list_tasks(sid)
    await store.save_lessons(sid, [], tasks=[TaskRow("t1", sid, 0, "deploy", "success")])
    [again] = await store.list_tasks(sid)
    assert again.status == "success" and again.updated_ns > first.updated_ns
    assert again.created_ns == first.created_ns
