"""`SkillFS` driven directly, without the kernel: FUSE requests against a real store, and
what the mount asks the kernel to forget when the store tells it of a change (recorded
instead of sent: `RecordingKernel`)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pyfuse3
import pytest
from storetier import RecordingKernel

import skillfs.store
from skillfs import noflush
from skillfs.fs import ROOT_INO, SkillFS
from skillfs.store import FileMovedOver, Store

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("consistent")]

NOTES = b"---\nname: notes\ndescription: what we noted\n---\nKeep notes.\n"


async def _ino(fs: SkillFS, parent: int, *names: str) -> int:
    for name in names:
        parent = (await fs.lookup(parent, name.encode(), None)).st_ino
    return parent


async def _write(fs: SkillFS, parent: int, name: str, body: bytes) -> int:
    info, entry = await fs.create(parent, name.encode(), 0o644, os.O_WRONLY, None)
    await fs.write(info.fh, 0, body)
    await fs.flush(info.fh)
    await fs.release(info.fh)
    return entry.st_ino


async def _read(fs: SkillFS, ino: int) -> bytes:
    info = await fs.open(ino, os.O_RDONLY, None)
    fh = info.fh & ~noflush.BIT  # the kernel side of noflush takes the bit off
    try:
        return await fs.read(fh, 0, 1 << 20)
    finally:
        await fs.release(fh)


async def test_files_made_through_the_mount_are_versions(fs: SkillFS, store: Store,
                                                         kernel: RecordingKernel) -> None:
    await store.create_space("alice")
    folder = await _ino(fs, ROOT_INO, "alice", "daily-logs")
    kernel.batches.clear()
    ino = await _write(fs, folder, "a.md", b"one\n")
    skill = store.space("alice").skills["daily-logs"]
    assert (await store.read_file(skill.id, "a.md")).content == b"one\n"
    assert await _read(fs, ino) == b"one\n"
    # The kernel made these changes: nothing it must wait to forget.
    assert kernel.batches == [([("inode", ino, False)], False)]

    kernel.batches.clear()
    await store.write_file(skill.id, "a.md", b"two\n", author="api")
    assert kernel.batches == [([("inode", ino, False)], True)]
    assert await _read(fs, ino) == b"two\n"

    await fs.rename(folder, b"a.md", folder, b"b.md", 0, None)
    assert set(skill.files) == {"SKILL.md", "b.md"}
    await fs.unlink(folder, b"b.md", None)
    assert "b.md" not in skill.files
    with pytest.raises(pyfuse3.FUSEError) as refused:
        await fs.lookup(folder, b"b.md", None)
    assert refused.value.errno == errno.ENOENT


async def test_changes_from_elsewhere_are_forgotten_and_waited_for(
        fs: SkillFS, store: Store, kernel: RecordingKernel) -> None:
    space = await store.create_space("alice")
    space_ino = await _ino(fs, ROOT_INO, "alice")
    folder = await _ino(fs, space_ino, "daily-logs")
    skill = store.get_skill(space.skills["daily-logs"])
    kernel.batches.clear()

    await store.write_file(skill.id, "new.md", b"x", author="learner")
    await store.delete_file(skill.id, "new.md", author="spool")
    await store.update_space(space.id, name="bob", author="api")
    await store.exclude_skill(space.id, skill.id)
    assert kernel.batches == [
        ([("inode", folder, True)], True),
        ([("entry", folder, "new.md"), ("inode", folder, True)], True),
        ([("entry", ROOT_INO, "alice"), ("inode", ROOT_INO, True)], True),
        ([("entry", space_ino, "daily-logs"), ("inode", space_ino, True)], True),
    ]


async def test_a_refused_first_write_takes_the_name_back(fs: SkillFS, store: Store,
                                                         kernel: RecordingKernel) -> None:
    await store.create_space("alice")
    folder = await _ino(fs, ROOT_INO, "alice", "daily-logs")
    info, _ = await fs.create(folder, b"big.md", 0o644, os.O_WRONLY, None)
    with pytest.raises(pyfuse3.FUSEError) as refused:
        await fs.write(info.fh, 0, b"x" * (store.max_file_size + 1))
    assert refused.value.errno == errno.EFBIG
    await fs.release(info.fh)
    skill = store.space("alice").skills["daily-logs"]
    assert "big.md" not in skill.files
    # Dropped whatever the author: its creator's close must not outlive the name.
    assert ([("entry", folder, "big.md"), ("inode", folder, True)], True) in kernel.batches


async def test_mkdir_makes_spaces_skills_and_folders(fs: SkillFS, store: Store) -> None:
    space_ino = (await fs.mkdir(ROOT_INO, b"carol", 0o755, None)).st_ino
    skill_ino = (await fs.mkdir(space_ino, b"tips", 0o755, None)).st_ino
    folder_ino = (await fs.mkdir(skill_ino, b"notes", 0o755, None)).st_ino
    assert await _ino(fs, ROOT_INO, "carol", "tips", "notes") == folder_ino
    skill = store.get_skill(store.get_space("carol").skills["tips"])
    assert "SKILL.md" in skill.files and "notes" in store.skill(skill.id).children
    with pytest.raises(pyfuse3.FUSEError) as refused:
        await fs.mkdir(space_ino, b"Not_A_Skill", 0o755, None)
    assert refused.value.errno == errno.EINVAL


async def test_folder_numbers_follow_moves_and_end_with_removal(fs: SkillFS,
                                                                 store: Store) -> None:
    space = await store.create_space("alice")
    skill_id = space.skills["daily-logs"]
    await store.write_file(skill_id, "d/e/a.md", b"a", author="api")
    await store.make_dir(skill_id, "empty")
    skill_ino = await _ino(fs, ROOT_INO, "alice", "daily-logs")
    d_ino, e_ino = await _ino(fs, skill_ino, "d"), await _ino(fs, skill_ino, "d", "e")
    gone_ino = await _ino(fs, skill_ino, "empty")
    await store.move_dir(skill_id, "d", "empty")  # over an empty folder
    assert await _ino(fs, skill_ino, "empty") == d_ino  # the kernel's number moved with it
    assert await _ino(fs, skill_ino, "empty", "e") == e_ino
    assert gone_ino not in (d_ino, e_ino)
    await store.delete_file(skill_id, "empty/e/a.md", author="api")
    await store.remove_dir(skill_id, "empty/e")
    await store.make_dir(skill_id, "empty/e")
    assert await _ino(fs, skill_ino, "empty", "e") != e_ino  # a new folder, a new number


async def test_a_file_renamed_over_another_keeps_the_number_the_kernel_moved(
        fs: SkillFS, store: Store, kernel: RecordingKernel) -> None:
    """An editor's save: the store keeps the target's id and history, the kernel keeps the
    moved file's number at the name; the target's own number goes once forgotten."""
    seen: list = []
    store.subscribe(seen.append)
    space = await store.create_space("alice")
    folder = await _ino(fs, ROOT_INO, "alice", "daily-logs")
    target = await _write(fs, folder, "a.md", b"old\n")
    temp = await _write(fs, folder, ".a.md.swp", b"new\n")
    skill = store.skill(space.skills["daily-logs"])
    survivor_id, moved_id = skill.files["a.md"].id, skill.files[".a.md.swp"].id
    kernel.batches.clear()

    await fs.rename(folder, b".a.md.swp", folder, b"a.md", 0, None)
    assert seen[-1] == FileMovedOver(skill.id, ".a.md.swp", "a.md", moved_id, survivor_id,
                                     "fuse")
    assert await _ino(fs, folder, "a.md") == temp
    assert (await fs.getattr(temp, None)).st_size == 4 and await _read(fs, temp) == b"new\n"
    assert skill.files["a.md"].id == survivor_id
    assert [v.version for v in await store.file_log(skill.id, "a.md")] == [1, 2]
    # The kernel made the change: the folder and the survivor's pages, not waited for.
    assert kernel.batches == [([("entry", folder, ".a.md.swp"), ("inode", folder, True),
                                ("entry", folder, "a.md"), ("inode", folder, True),
                                ("inode", temp, False)], False)]
    with pytest.raises(pyfuse3.FUSEError) as gone:
        await fs.open(target, os.O_RDONLY, None)  # the replaced number names nothing live
    assert gone.value.errno == errno.ENOENT
    await fs.forget([(target, 1)])
    assert target not in fs.inodes.objects
    assert temp in fs.inodes.objects  # a live file's number stays, forgotten or not
    await fs.forget([(temp, 2)])
    assert await _ino(fs, folder, "a.md") == temp


async def test_numbers_are_never_reused(fs: SkillFS, store: Store) -> None:
    """Not after a delete and forget, not for a file restored under its old id, not for a
    skill that leaves a space and comes back."""
    space = await store.create_space("alice")
    skill_id = (await store.create_skill(NOTES, space_id=space.id)).id
    folder = await _ino(fs, ROOT_INO, "alice", "notes")
    first = await _write(fs, folder, "a.md", b"one\n")
    await fs.unlink(folder, b"a.md", None)
    await fs.forget([(first, 1)])
    assert first not in fs.inodes.objects
    await store.restore("alice/notes/a.md")  # the same file id, a new node
    again = await _ino(fs, folder, "a.md")
    assert again > first and await _read(fs, again) == b"one\n"

    other = await store.create_space("bob")
    await store.include_skill(other.id, skill_id)
    assert await _ino(fs, ROOT_INO, "bob", "notes", "a.md") == again  # one file, one number
    await store.exclude_skill(space.id, skill_id)
    assert await _ino(fs, ROOT_INO, "bob", "notes", "a.md") == again
    await store.exclude_skill(other.id, skill_id)  # in no space: no path in the mount
    await store.include_skill(space.id, skill_id)
    numbers = [await _ino(fs, ROOT_INO, "alice", "notes"),
               await _ino(fs, ROOT_INO, "alice", "notes", "a.md")]
    assert min(numbers) > max(again, folder)


async def test_an_unlinked_skill_leaves_an_empty_folder_only_in_the_mount(
        fs: SkillFS, store: Store) -> None:
    space = await store.create_space("alice")
    space_ino = await _ino(fs, ROOT_INO, "alice")
    folder = await _ino(fs, space_ino, "daily-logs")
    await fs.unlink(folder, b"SKILL.md", None)
    # The store has no such skill; the mount still lists the folder, empty, for rmdir.
    assert "daily-logs" not in store.space("alice").skills
    assert await _ino(fs, space_ino, "daily-logs") == folder
    fh = await fs.opendir(folder, None)
    await fs.readdir(fh, 0, None)
    assert fs._listings[fh][1] == []
    await fs.releasedir(fh)
    with pytest.raises(pyfuse3.FUSEError) as busy:
        await fs.rmdir(ROOT_INO, b"alice", None)
    assert busy.value.errno == errno.ENOTEMPTY
    # A skill of that name joining the space ends the stand-in.
    await store.create_skill(b"---\nname: daily-logs\ndescription: again\n---\nx\n",
                             space_id=space.id)
    fresh = await _ino(fs, space_ino, "daily-logs")
    assert fresh != folder and await _ino(fs, fresh, "SKILL.md")
    with pytest.raises(pyfuse3.FUSEError) as stale:
        await fs.opendir(folder, None)
    assert stale.value.errno == errno.ENOENT

    await fs.unlink(await _ino(fs, space_ino, "user-general-facts"), b"SKILL.md", None)
    await fs.rmdir(space_ino, b"user-general-facts", None)
    with pytest.raises(pyfuse3.FUSEError) as gone:
        await fs.lookup(space_ino, b"user-general-facts", None)
    assert gone.value.errno == errno.ENOENT


async def test_the_store_knows_no_inodes() -> None:
    """The store's modules name no inode, and importing the store loads no part of the
    mount."""
    store_dir = Path(skillfs.store.__file__).parent
    for module in sorted(store_dir.glob("*.py")):
        assert "ino" not in module.read_text(), module.name
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, skillfs.store; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert not {"pyfuse3", "skillfs.fs", "skillfs.inodes", "skillfs.invalidate"} & set(loaded)
