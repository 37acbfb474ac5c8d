"""The store's side of learning across daemons (store/learning.py), on both backends: what a
learner asks of the store to take over work another daemon committed."""

from __future__ import annotations

import pytest

from skillfs.store import LessonRow, Store, TaskRow
from skillfs.store.rows import now_ns
from test_store_sessions import _ingest, _msgs

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("consistent")]


async def _session(store: Store) -> tuple[str, str]:
    result = await _ingest(store, "alice", "s1", "alice/s1/001.jsonl", "d1",
                           _msgs("deploy it", "thanks"))
    return result.session_id, store.get_space("alice").id


async def test_what_is_committed_for_a_session_and_its_lessons(store: Store) -> None:
    sid, space_id = await _session(store)
    assert await store.learning.stored_last_seq(sid) == 1
    assert await store.learning.stored_last_seq("no-such-session") == -1
    await store.save_lessons(sid, [LessonRow("l1", sid, space_id, "t1", {"kind": "success"}),
                                   LessonRow("l2", sid, space_id, None, {"kind": "facts"})],
                             tasks=[TaskRow("t1", sid, 0, "deploy it", "success")])
    assert await store.learning.spaces_with_queued_lessons() == [space_id]
    await store.mark_lessons(["l1"], "written")
    await store.mark_lessons(["l2"], "failed", "no model")
    assert await store.learning.lesson_states(["l1", "l2", "l3"]) == {
        "l1": ("written", None), "l2": ("failed", "no model")}
    assert await store.learning.spaces_with_queued_lessons() == []


async def test_learning_that_stopped_moving_is_stale(store: Store) -> None:
    sid, _ = await _session(store)
    await store.set_learning(sid, "extracting")
    assert [r.session_id for r in await store.learning.stale_learning(now_ns())] == [sid]
    assert await store.learning.stale_learning(now_ns() - 60 * 10**9) == []
    await store.set_learning(sid, "completed")
    assert await store.learning.stale_learning(now_ns()) == []


async def test_a_writer_started_again_learns_what_the_last_run_changed(store: Store) -> None:
    sid, space_id = await _session(store)
    await store.save_lessons(sid, [LessonRow("l1", sid, space_id, "t1", {"kind": "success"}),
                                   LessonRow("l2", sid, space_id, "t2", {"kind": "success"})],
                             tasks=[TaskRow("t1", sid, 0, "deploy it", "success"),
                                    TaskRow("t2", sid, 1, "thanks", "success")])
    # a first run: nothing to look up
    assert await store.learning.start_writing(["l1", "l2"]) == {}
    daily = next(s for s in store.list_space_skills(space_id) if s.name == "daily-logs")
    await store.write_file(daily.id, "2026-11-22.md", b"# entry\n", author="learner",
                           session_id=sid, task_id="t1")
    await store.write_file(daily.id, "other.md", b"by a person\n", author="fuse",
                           session_id=sid, task_id="t2")
    # the run stopped; the next one hears which files it changed for which lesson
    assert await store.learning.start_writing(["l1", "l2"]) == {
        "l1": ["daily-logs/2026-11-22.md"]}
    await store.mark_lessons(["l1"], "written")
    assert await store.learning.start_writing(["l1"]) == {}
