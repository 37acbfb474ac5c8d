"""`SkillFS` driven directly, without the kernel: FUSE requests against a real store, and
what the mount asks the kernel to forget when the store tells it of a change (recorded
instead of sent: `RecordingKernel`)."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest
from storetier import RecordingKernel

from skillfs import noflush
from skillfs.fs import ROOT_INO, SkillFS
from skillfs.store import Store

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("consistent")]


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
