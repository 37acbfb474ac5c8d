"""Spaces, skills and files through the store: writes, renames, folders, deletes, the
trash, purges, what the store tells its subscribers, and a failed commit. The fixtures
check the index against the database (and a reopened store) after each test."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest
from storetier import check_consistency

from skillfs import errors
from skillfs.store import (
    FileAdded,
    FileChanged,
    FileMoved,
    FileRemoved,
    FolderAdded,
    FolderMoved,
    FolderRemoved,
    SkillAdded,
    SkillRemoved,
    SpaceAdded,
    SpaceRemoved,
    SpaceRenamed,
    Store,
    writes,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("consistent")]

SKILL = b"---\nname: notes\ndescription: what we noted\n---\nKeep notes.\n"


async def _skill(store: Store, space: str = "alice") -> str:
    sp = await store.create_space(space)
    skill = await store.create_skill(SKILL, {"a.md": b"one\n"}, space_id=sp.id)
    return skill.id


async def test_writes_make_versions_and_folders(store: Store) -> None:
    skill_id = await _skill(store)
    await store.write_file(skill_id, "a.md", b"two\n", author="api")
    await store.write_file(skill_id, "deep/er/b.md", b"bee\n", author="api")
    assert (await store.read_file(skill_id, "a.md")).content == b"two\n"
    assert [v.version for v in await store.file_log(skill_id, "a.md")] == [1, 2]
    assert await store.read_version(skill_id, "a.md", 1) == b"one\n"
    skill = store.skill(skill_id)
    assert {"deep", "deep/er"} <= set(skill.children)
    with pytest.raises(errors.StaleVersion):
        await store.write_file(skill_id, "a.md", b"x", author="api", expect_version=1)
    with pytest.raises(errors.Exists):
        await store.write_file(skill_id, "a.md", b"x", author="api", expect_version=0)
    with pytest.raises(errors.TooBig):
        await store.write_file(skill_id, "big.md", b"x" * (store.max_file_size + 1),
                               author="api")
    with pytest.raises(errors.Invalid):
        await store.write_file(skill_id, "a.md/under", b"x", author="api")
    with pytest.raises(errors.Invalid):  # a SKILL.md that does not parse is refused
        await store.write_file(skill_id, "SKILL.md", b"no front matter", author="api")
    assert (await store.read_file(skill_id, "a.md")).version == 2


async def test_renames_over_files_and_folders(store: Store) -> None:
    skill_id = await _skill(store)
    await store.write_file(skill_id, "b.md", b"bee\n", author="api")
    await store.move_file(skill_id, "b.md", "a.md", author="api")  # an editor's save
    log = await store.file_log(skill_id, "a.md")
    assert [v.version for v in log] == [1, 2] and log[-1].sha256 != log[0].sha256
    assert (await store.read_file(skill_id, "a.md")).content == b"bee\n"
    await store.make_dir(skill_id, "d")
    await store.move_file(skill_id, "a.md", "d/a.md", author="api")
    await store.write_file(skill_id, "d/e/c.md", b"see\n", author="api")
    await store.move_dir(skill_id, "d", "moved")
    skill = store.skill(skill_id)
    assert set(skill.files) == {"SKILL.md", "moved/a.md", "moved/e/c.md"}
    with pytest.raises(errors.NotEmpty):
        await store.remove_dir(skill_id, "moved")
    with pytest.raises(errors.Invalid):
        await store.move_dir(skill_id, "moved", "moved/inner")
    with pytest.raises(errors.Forbidden):
        await store.move_file(skill_id, "SKILL.md", "other.md", author="api")
    await store.delete_file(skill_id, "moved/e/c.md", author="api")
    await store.remove_dir(skill_id, "moved/e")
    assert "moved/e" not in skill.children


async def test_delete_and_restore_from_the_trash(store: Store) -> None:
    skill_id = await _skill(store)
    await store.delete_file(skill_id, "a.md", author="api")
    with pytest.raises(errors.Forbidden):
        await store.delete_file(skill_id, "SKILL.md", author="api")
    kinds = [e.kind for e in await store.list_trash()]
    assert kinds == ["file"]
    await store.restore("alice/notes/a.md")
    assert (await store.read_file(skill_id, "a.md")).content == b"one\n"

    await store.delete_skill(skill_id)
    assert "notes" not in store.space("alice").skills
    await store.restore("alice/notes")
    assert set(store.skill(skill_id).files) == {"SKILL.md", "a.md"}

    space_id = store.space("alice").id
    await store.delete_space(space_id)
    with pytest.raises(errors.NotFound):
        store.space("alice")
    await store.create_space("alice")
    with pytest.raises(errors.Exists):  # the name is taken again
        await store.restore("alice")
    await store.update_space(store.space("alice").id, name="bob")
    result = await store.restore("alice")
    assert "notes" in result["skills"] and store.space("alice").id == space_id


async def test_purge_rewrites_the_current_version(store: Store) -> None:
    skill_id = await _skill(store)
    await store.write_file(skill_id, "a.md", b"key=sk-secret\n", author="api")
    await store.write_file(skill_id, "a.md", b"key=sk-secret again\n", author="api")
    out = await store.purge_file(skill_id, "a.md", by="tester", why="a leaked key",
                                 pattern="sk-secret")
    assert out.purged == [2, 3] and out.rewritten == 4  # the new current version
    assert b"sk-secret" not in (await store.read_file(skill_id, "a.md")).content
    with pytest.raises(errors.Invalid):
        await store.read_version(skill_id, "a.md", 2)
    with pytest.raises(errors.Invalid):  # the current version is purged by pattern only
        await store.purge_file(skill_id, "a.md", by="tester", why="x", version=4)
    out = await store.purge_file(skill_id, "a.md", by="tester", why="old", version=1)
    assert out.purged == [1]


async def test_events_are_frozen_and_say_who(store: Store) -> None:
    seen: list = []
    store.subscribe(seen.append)
    skill_id = await _skill(store)
    space_id = store.space("alice").id
    await store.write_file(skill_id, "a.md", b"two\n", author="learner")
    await store.write_file(skill_id, "n/b.md", b"b\n", author="fuse")
    await store.move_file(skill_id, "n/b.md", "c.md", author="api")
    await store.delete_file(skill_id, "c.md", author="api")
    await store.make_dir(skill_id, "x")
    await store.move_dir(skill_id, "x", "y")
    await store.remove_dir(skill_id, "y")
    await store.update_space(space_id, name="bob")
    await store.exclude_skill(space_id, skill_id)
    await store.delete_space(space_id)
    fid = store.skill(skill_id).files["a.md"].id
    assert seen == [
        SpaceAdded(space_id, "alice", "api"),
        SkillAdded(space_id, skill_id, "notes", "api"),
        FileChanged(skill_id, "a.md", fid, "learner"),
        FileAdded(skill_id, "n/b.md", seen[3].file_id, "fuse"),
        FolderAdded(skill_id, "n", "fuse"),
        FileMoved(skill_id, "n/b.md", "c.md", seen[3].file_id, "api"),
        FileRemoved(skill_id, "c.md", seen[3].file_id, "api"),
        FolderAdded(skill_id, "x", "api"),
        FolderMoved(skill_id, "x", "y", "api"),
        FolderRemoved(skill_id, "y", "api"),
        SpaceRenamed(space_id, "alice", "bob", "api"),
        SkillRemoved(space_id, skill_id, "notes", "api"),
        SpaceRemoved(space_id, "bob", "api"),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].name = "changed"  # type: ignore[misc]


@pytest.mark.duckdb_only
async def test_a_transaction_left_aborted_is_ended_by_the_next_write(store: Store) -> None:
    """A ROLLBACK that failed (out of memory itself) leaves its transaction open and
    aborted; the next write ends it instead of failing, like every write after it would."""
    skill_id = await _skill(store)
    con = store.db.con

    def leave_aborted() -> None:
        con.execute("BEGIN TRANSACTION")
        with pytest.raises(duckdb.Error):
            con.execute("SELECT CAST('x' AS INTEGER)")
    await store.db.run(leave_aborted)
    await store.write_file(skill_id, "a.md", b"two\n", author="api")
    assert (await store.read_file(skill_id, "a.md")).content == b"two\n"
    assert [v.version for v in await store.file_log(skill_id, "a.md")][-1] == 2


async def test_a_failed_commit_leaves_the_index_alone(store: Store, monkeypatch) -> None:
    skill_id = await _skill(store)
    seen: list = []
    store.subscribe(seen.append)

    def broken(*args, **kwargs):
        raise RuntimeError("the disk said no")
    monkeypatch.setattr(writes, "version", broken)
    with pytest.raises(Exception, match="the disk said no"):
        await store.write_file(skill_id, "a.md", b"lost\n", author="api")
    with pytest.raises(Exception, match="the disk said no"):
        await store.write_file(skill_id, "new/b.md", b"lost\n", author="api")
    monkeypatch.undo()
    skill = store.skill(skill_id)
    assert set(skill.files) == {"SKILL.md", "a.md"} and "new" not in skill.children
    assert (await store.read_file(skill_id, "a.md")).content == b"one\n"
    assert seen == []  # nothing was committed: nobody hears of it
    await store.write_file(skill_id, "a.md", b"kept\n", author="api")
    assert [v.version for v in await store.file_log(skill_id, "a.md")] == [1, 2]


async def test_a_reopened_store_goes_on_where_it_stopped(store: Store, database) -> None:
    skill_id = await _skill(store)
    await store.write_file(skill_id, "b.md", b"bee\n", author="api")
    await store.delete_file(skill_id, "b.md", author="api")
    gone = store.skill(skill_id).files.get("b.md")
    store.close()  # the fixture checks the file afresh
    reopened = Store(database)
    try:
        # File ids are not reused, even those of deleted files.
        known = [f.id for f in reopened.tree.file_ids.values()]
        node = await reopened.write_file(skill_id, "c.md", b"see\n", author="api")
        assert gone is None and node.id > max(known) and node.id not in known
        assert [v.deleted for v in await reopened.file_log(skill_id, "b.md")] == [False, True]
        check_consistency(reopened)
    finally:
        reopened.close()


async def test_callers_get_frozen_rows_without_reserved_files(store: Store, fs) -> None:
    from skillfs.fs import ROOT_INO
    space = await store.create_space("alice")
    folder = (await fs.lookup((await fs.lookup(ROOT_INO, b"alice", None)).st_ino,
                              b"daily-logs", None)).st_ino
    info, _ = await fs.create(folder, b"open.md", 0o644, 0, None)  # reserved, not written
    skill = store.get_skill(space.skills["daily-logs"])
    assert "open.md" not in skill.files and "open.md" in store.skill(skill.id).files
    with pytest.raises(dataclasses.FrozenInstanceError):
        skill.name = "changed"  # type: ignore[misc]
    row = await store.write_file(skill.id, "a.md", b"x", author="api")
    assert row.version == 1 and store.get_skill(skill.id).files["a.md"] == row
    assert skill.files.get("a.md") is None  # a row is what was, not a live view
    await fs.release(info.fh)


async def test_a_bulk_import_is_one_transaction_of_column_inserts(store: Store,
                                                                  tmp_path) -> None:
    skill_dir = tmp_path / "src" / "bob" / "tips"
    (skill_dir / "sub").mkdir(parents=True)
    (skill_dir / "SKILL.md").write_bytes(b"---\nname: tips\ndescription: t\n---\n")
    (skill_dir / "sub" / "a.md").write_bytes(b"long line\n" * 1000)  # stored in chunks
    counts = store.import_tree(str(tmp_path / "src"))
    assert (counts["spaces"], counts["skills"], counts["files"]) == (1, 1, 2)
    skill = store.get_skill(store.get_space("bob").skills["tips"])
    assert set(skill.files) == {"SKILL.md", "sub/a.md"}
    assert (await store.read_file(skill.id, "sub/a.md")).content == b"long line\n" * 1000
    with pytest.raises(errors.Exists):  # the same skill again: nothing is imported
        store.import_tree(str(tmp_path / "src"))


async def test_a_failing_subscriber_stops_neither_the_change_nor_the_others(
        store: Store, caplog) -> None:
    seen: list = []

    def broken(event) -> None:
        raise RuntimeError("subscriber bug")
    store.subscribe(broken)
    store.subscribe(seen.append)
    skill_id = await _skill(store)
    assert [type(e) for e in seen] == [SpaceAdded, SkillAdded]
    assert (await store.read_file(skill_id, "a.md")).content == b"one\n"
    assert "store subscriber failed" in caplog.text


async def test_the_check_catches_an_index_that_drifted(store: Store) -> None:
    skill_id = await _skill(store)
    node = store.skill(skill_id).files["a.md"]
    node.sha256, real = "0" * 64, node.sha256
    with pytest.raises(AssertionError, match="files"):
        check_consistency(store)
    node.sha256 = real
    store.cache.put((node.id, node.version), b"not what was written\n")
    with pytest.raises(AssertionError, match="cache"):
        check_consistency(store)
    store.cache.forget((node.id, node.version))
