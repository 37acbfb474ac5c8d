"""Deleting through the mount is whole, and the trash brings things back.

Real deleters (GNU `rm -rf`, Python's `shutil.rmtree`, `find -delete`) on a skill and on a
whole space; the refusal that keeps a half-deleted skill from losing its SKILL.md; `skillfs
trash` and `skillfs restore` as subprocesses; and a daemon restart after each.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from conftest import run

DELETERS = {
    "rm": lambda p: run("rm", "-rf", str(p)),
    "rmtree": shutil.rmtree,
    "find": lambda p: run("find", str(p), "-delete"),
}


def _fill(skill):
    """A skill with files, nested folders and an empty folder."""
    os.makedirs(skill / "guides" / "deep" / "deeper")
    os.makedirs(skill / "empty")
    (skill / "notes.md").write_text("notes\n")
    (skill / "guides" / "a.md").write_text("a\n")
    (skill / "guides" / "deep" / "b.md").write_text("b\n")
    (skill / "guides" / "deep" / "deeper" / "c.md").write_text("c\n")


def _get(daemon, path: str, **params):
    """A control API answer: the checks below read the daemon's state over HTTP, the CLI's
    own output is tested where a test runs `skillfs trash` and `skillfs restore`."""
    r = daemon.api("GET", f"/skillfs/v1{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _status(daemon) -> dict:
    return _get(daemon, "/status")["counts"]


def _trash(daemon, space: str | None = None) -> list[dict]:
    return _get(daemon, "/trash", **({"space": space} if space else {}))


def _skills_seen(daemon) -> int:
    """Skills the mount shows, counted once each (a skill may be in several spaces)."""
    return len({s["id"] for sp in _get(daemon, "/spaces")
                for s in _get(daemon, "/skills", space=sp["name"])})


def _consistent(daemon):
    counts = _status(daemon)
    assert counts["skills"] == _skills_seen(daemon)
    assert counts["spaces"] == len(os.listdir(daemon.mnt))


@pytest.mark.parametrize("deleter", sorted(DELETERS))
def test_deleters_remove_a_skill_whole(daemon, space, deleter):
    os.mkdir(space / "deploys")
    _fill(space / "deploys")
    DELETERS[deleter](space / "deploys")
    assert sorted(os.listdir(space)) == ["daily-logs", "user-general-facts"]
    assert not (space / "deploys").exists()
    _consistent(daemon)
    [entry] = [e for e in _trash(daemon) if e["kind"] == "skill"]
    assert entry["path"] == "alice/deploys" and entry["files"] == 5
    daemon.restart()
    assert sorted(os.listdir(space)) == ["daily-logs", "user-general-facts"]
    _consistent(daemon)
    assert [e["path"] for e in _trash(daemon) if e["kind"] == "skill"] == ["alice/deploys"]


@pytest.mark.parametrize("deleter", sorted(DELETERS))
def test_deleters_remove_a_space_whole(daemon, space, deleter):
    os.mkdir(space / "deploys")
    _fill(space / "deploys")
    DELETERS[deleter](space)
    assert os.listdir(daemon.mnt) == []
    _consistent(daemon)
    assert _status(daemon)["skills"] == 0
    trash = _trash(daemon, "alice")
    assert {(e["kind"], e["path"]) for e in trash} == {
        ("space", "alice"), ("skill", "alice/deploys"), ("skill", "alice/daily-logs"),
        ("skill", "alice/user-general-facts")}
    daemon.restart()
    assert os.listdir(daemon.mnt) == []
    _consistent(daemon)
    daemon.cli("restore", "alice")
    assert sorted(os.listdir(space)) == ["daily-logs", "deploys", "user-general-facts"]
    assert (space / "deploys" / "guides" / "deep" / "deeper" / "c.md").read_text() == "c\n"
    # a folder the deleter emptied and removed comes back with its files; an empty one not
    assert sorted(os.listdir(space / "deploys")) == ["SKILL.md", "guides", "notes.md"]
    _consistent(daemon)
    assert _trash(daemon) == []


def test_skill_md_with_siblings_is_refused_and_nothing_removed(daemon, space):
    skill = space / "daily-logs"
    (skill / "today.md").write_text("today\n")
    before = (skill / "SKILL.md").read_bytes()
    with pytest.raises(OSError) as e:
        os.unlink(skill / "SKILL.md")
    assert e.value.errno == errno.EBUSY
    assert os.listdir(skill) == ["today.md", "SKILL.md"]  # SKILL.md listed last
    assert (skill / "SKILL.md").read_bytes() == before
    assert _trash(daemon) == []
    log = (daemon.home / "skillfs.log").read_text()
    assert "SKILL.md refused" in log and "remove those first" in log
    # a file in a sub-folder named SKILL.md is an ordinary file
    os.mkdir(skill / "sub")
    (skill / "sub" / "SKILL.md").write_text("x")
    os.unlink(skill / "sub" / "SKILL.md")
    assert _status(daemon)["skills"] == 2


def test_trash_lists_and_restore_brings_back(daemon, space):
    skill = space / "daily-logs"
    (skill / "today.md").write_text("first\n")
    (skill / "today.md").write_text("second\n")
    os.unlink(skill / "today.md")
    rows = json.loads(daemon.cli("trash", "--json").stdout)
    assert [(r["kind"], r["path"], r["version"], r["author"]) for r in rows] == [
        ("file", "alice/daily-logs/today.md", 2, "fuse")]
    text = daemon.cli("trash", "--space", "alice").stdout
    assert "alice/daily-logs/today.md" in text and "v2" in text
    assert json.loads(daemon.cli("trash", "--space", "nobody", "--json").stdout) == []
    # a mount path works too
    out = daemon.cli("restore", str(skill / "today.md")).stdout
    assert "version 2 is current again as version 4" in out
    assert (skill / "today.md").read_text() == "second\n"
    assert _trash(daemon) == []
    log = json.loads(daemon.cli("log", str(skill / "today.md"), "--json").stdout)
    assert [(r["version"], r["deleted"]) for r in log] == [(1, False), (2, False), (3, True),
                                                           (4, False)]
    # nothing to restore
    r = daemon.cli("restore", "alice/daily-logs/today.md", check=False)
    assert r.returncode != 0 and "exists again" in r.stderr


def test_restore_refuses_a_taken_name(daemon, space):
    skill = space / "daily-logs"
    (skill / "a.md").write_text("old\n")
    os.unlink(skill / "a.md")
    (skill / "a.md").write_text("new\n")
    r = daemon.cli("restore", "alice/daily-logs/a.md", check=False)
    assert r.returncode != 0 and "exists again" in r.stderr
    assert (skill / "a.md").read_text() == "new\n"
    # a skill whose name is taken again
    run("rm", "-rf", str(skill))
    os.mkdir(skill)
    r = daemon.cli("restore", "alice/daily-logs", check=False)
    assert r.returncode != 0 and "again" in r.stderr
    # a space whose name is taken again
    shutil.rmtree(space)
    os.mkdir(space)
    r = daemon.cli("restore", "alice", check=False)
    assert r.returncode != 0 and "exists again" in r.stderr
    # a skill of a deleted space
    shutil.rmtree(space)
    daemon.cli("space", "delete", "alice", check=False)
    r = daemon.cli("restore", "alice/daily-logs", check=False)
    assert r.returncode != 0 and "no space" in r.stderr


def test_restore_a_skill_with_its_files(daemon, space):
    os.mkdir(space / "deploys")
    _fill(space / "deploys")
    (space / "deploys" / "gone-before.md").write_text("x\n")
    os.unlink(space / "deploys" / "gone-before.md")
    (space / "deploys" / "notes.md").write_text("notes v2\n")
    run("rm", "-rf", str(space / "deploys"))
    out = daemon.cli("restore", "alice/deploys").stdout
    assert "restored skill alice/deploys (5 files)" in out
    assert (space / "deploys" / "notes.md").read_text() == "notes v2\n"
    assert not (space / "deploys" / "gone-before.md").exists()
    assert "gone-before.md" in {e["path"].rsplit("/", 1)[-1] for e in _trash(daemon)}
    daemon.restart()
    assert (space / "deploys" / "guides" / "deep" / "b.md").read_text() == "b\n"
    assert not (space / "deploys" / "empty").exists()
    _consistent(daemon)


def test_space_delete_leaves_no_orphan(daemon, space):
    os.mkdir(space / "deploys")
    os.mkdir(daemon.mnt / "bob")
    alice = daemon.api("GET", "/skillfs/v1/spaces").json()
    deploys = next(s for s in daemon.api("GET", "/skillfs/v1/skills",
                                         params={"space": "alice"}).json()
                   if s["name"] == "deploys")
    bob_id = next(s["id"] for s in alice if s["name"] == "bob")
    # share deploys with bob through the Acontext API
    r = daemon.api("POST", f"/api/v1/learning_spaces/{bob_id}/skills",
                   json={"skill_id": deploys["id"]})
    assert r.status_code in (200, 201), r.text
    daemon.cli("space", "delete", "alice")
    _consistent(daemon)
    assert _status(daemon)["skills"] == 3  # bob's two and the shared one
    assert sorted(os.listdir(daemon.mnt / "bob")) == ["daily-logs", "deploys",
                                                     "user-general-facts"]
    daemon.restart()
    _consistent(daemon)
    daemon.cli("restore", "alice")
    assert sorted(os.listdir(space)) == ["daily-logs", "deploys", "user-general-facts"]
    _consistent(daemon)


def test_rm_rf_of_a_shared_skill_leaves_the_other_space(daemon, space):
    os.mkdir(space / "shared")
    (space / "shared" / "note.md").write_text("note\n")
    os.mkdir(daemon.mnt / "bob")
    skill_id = next(s["id"] for s in daemon.api("GET", "/skillfs/v1/skills",
                                                params={"space": "alice"}).json()
                    if s["name"] == "shared")
    bob_id = next(s["id"] for s in daemon.api("GET", "/skillfs/v1/spaces").json()
                  if s["name"] == "bob")
    assert daemon.api("POST", f"/api/v1/learning_spaces/{bob_id}/skills",
                      json={"skill_id": skill_id}).status_code in (200, 201)
    run("rm", "-rf", str(space / "shared"))
    assert "shared" not in os.listdir(space)
    # the skill lives on in bob; the files rm removed are in the trash, there
    assert os.listdir(daemon.mnt / "bob" / "shared") == ["SKILL.md"]
    assert [e["path"] for e in _trash(daemon)] == ["bob/shared/note.md"]
    daemon.cli("restore", "bob/shared/note.md")
    assert (daemon.mnt / "bob" / "shared" / "note.md").read_text() == "note\n"
    # alice may make a new skill of that name
    os.mkdir(space / "shared")
    assert os.listdir(space / "shared") == ["SKILL.md"]
    _consistent(daemon)


def test_deleted_and_restored_behind_the_kernels_back(daemon, space):
    """Deleting and restoring through the CLI: the kernel's cached names follow."""
    (space / "daily-logs" / "a.md").write_text("a\n")
    assert (space / "daily-logs").is_dir() and (space / "daily-logs" / "a.md").is_file()
    daemon.cli("skill", "delete", "daily-logs", "--space", "alice")
    assert not (space / "daily-logs").exists()
    assert os.listdir(space) == ["user-general-facts"]
    daemon.cli("restore", "alice/daily-logs")
    assert (space / "daily-logs" / "a.md").read_text() == "a\n"
    os.listdir(space / "daily-logs")
    daemon.cli("space", "delete", "alice")
    assert not space.exists()
    r = daemon.cli("restore", "alice/daily-logs/a.md", check=False)
    assert r.returncode != 0 and "restore it first (skillfs restore alice)" in r.stderr
    daemon.cli("restore", "alice")
    assert (space / "daily-logs" / "a.md").read_text() == "a\n"
    r = daemon.api("POST", "/skillfs/v1/trash/restore", json={"path": "alice"})
    assert r.status_code == 409
    r = daemon.api("POST", "/skillfs/v1/trash/restore", json={"path": "nobody"})
    assert r.status_code == 404


def test_restore_rebuilds_nested_folders(daemon, space):
    """A restore adds the deepest file first (rm removed it first): its folders must all
    be listed, each in its parent."""
    os.mkdir(space / "deploys")
    os.makedirs(space / "deploys" / "x" / "a")
    (space / "deploys" / "x" / "a" / "b.md").write_text("b\n")
    (space / "deploys" / "x" / "z.md").write_text("z\n")
    run("rm", "-rf", str(space / "deploys"))
    daemon.cli("restore", "alice/deploys")
    found = sorted(os.path.relpath(os.path.join(d, f), space / "deploys")
                   for d, _, files in os.walk(space / "deploys") for f in files)
    assert found == ["SKILL.md", "x/a/b.md", "x/z.md"]
