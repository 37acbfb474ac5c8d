"""The mount through the real kernel: everyday tools and os calls."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time

import pytest

from conftest import run, wait_for

# most tests work in a space of their own on one daemon; those that restart or kill it, or
# look at the whole mount, take their own (own_daemon)
pytestmark = pytest.mark.xdist_group("mount")


@pytest.fixture
def daemon(shared_daemon):
    return shared_daemon


def test_new_space_has_default_skills(daemon, space):
    assert sorted(os.listdir(space)) == ["daily-logs", "user-general-facts"]
    for skill in ("daily-logs", "user-general-facts"):
        text = (space / skill / "SKILL.md").read_text()
        assert text.startswith("---\n") and f"name: {skill}" in text
    out = run("ls", "-la", str(space / "daily-logs")).stdout
    assert "SKILL.md" in out
    st = os.stat(space / "daily-logs")
    assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 2
    st = os.stat(space / "daily-logs" / "SKILL.md")
    assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    assert st.st_size == len((space / "daily-logs" / "SKILL.md").read_bytes())


def test_write_append_truncate_cat_head_tail_wc(space):
    f = space / "daily-logs" / "2026-11-21.md"
    f.write_text("# 2026-11-21\n")
    with open(f, "a") as fh:
        fh.write("line two\nline three\n")
    assert run("cat", str(f)).stdout == "# 2026-11-21\nline two\nline three\n"
    assert run("head", "-n1", str(f)).stdout == "# 2026-11-21\n"
    assert run("tail", "-n1", str(f)).stdout == "line three\n"
    assert run("wc", "-l", str(f)).stdout.split()[0] == "3"
    os.truncate(f, 4)
    assert f.read_bytes() == b"# 20"
    with open(f, "r+b") as fh:
        fh.truncate(2)
        fh.seek(0, os.SEEK_END)
        fh.write(b"!")
    assert f.read_bytes() == b"# !"
    assert os.stat(f).st_size == 3


def test_mtime_moves_on_edit(space):
    f = space / "daily-logs" / "a.md"
    f.write_text("one")
    m1 = os.stat(f).st_mtime_ns
    time.sleep(0.02)
    f.write_text("two")
    assert os.stat(f).st_mtime_ns > m1


def test_cp_mv_rm_grep_find_du(space):
    src = space / "daily-logs" / "a.md"
    src.write_text("needle in a haystack\n")
    run("cp", str(src), str(space / "daily-logs" / "b.md"))
    run("mv", str(space / "daily-logs" / "b.md"), str(space / "daily-logs" / "c.md"))
    assert not (space / "daily-logs" / "b.md").exists()
    assert (space / "daily-logs" / "c.md").read_text() == "needle in a haystack\n"
    hits = run("grep", "-rl", "needle", str(space)).stdout.split()
    assert sorted(hits) == [str(space / "daily-logs" / "a.md"), str(space / "daily-logs" / "c.md")]
    found = run("find", str(space), "-name", "*.md").stdout.split()
    assert len(found) == 4
    assert run("du", "-s", str(space)).returncode == 0
    # across skills: the kernel gets EXDEV and mv copies
    run("mv", str(space / "daily-logs" / "c.md"), str(space / "user-general-facts" / "c.md"))
    assert (space / "user-general-facts" / "c.md").read_text() == "needle in a haystack\n"
    run("rm", str(space / "user-general-facts" / "c.md"))
    assert sorted(os.listdir(space / "user-general-facts")) == ["SKILL.md"]


def test_mkdir_skill_and_subfolders_rmdir(space):
    os.mkdir(space / "deploys")
    text = (space / "deploys" / "SKILL.md").read_text()
    assert "name: deploys" in text
    os.makedirs(space / "deploys" / "runbooks" / "old")
    (space / "deploys" / "runbooks" / "api.md").write_text("steps")
    assert sorted(os.listdir(space / "deploys" / "runbooks")) == ["api.md", "old"]
    assert os.stat(space / "deploys" / "runbooks").st_nlink == 3
    with pytest.raises(OSError) as e:
        os.rmdir(space / "deploys" / "runbooks")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(space / "deploys" / "runbooks" / "old")
    os.rename(space / "deploys" / "runbooks", space / "deploys" / "guides")
    assert (space / "deploys" / "guides" / "api.md").read_text() == "steps"
    os.unlink(space / "deploys" / "guides" / "api.md")
    os.rmdir(space / "deploys" / "guides")
    assert sorted(os.listdir(space / "deploys")) == ["SKILL.md"]
    with pytest.raises(OSError) as e:
        os.mkdir(space / "Bad_Name")
    assert e.value.errno == errno.EINVAL


def test_space_rename_and_rmdir(own_daemon):
    daemon = own_daemon
    os.mkdir(daemon.mnt / "tmp-space")
    os.rename(daemon.mnt / "tmp-space", daemon.mnt / "renamed")
    assert "renamed" in os.listdir(daemon.mnt)
    with pytest.raises(OSError) as e:
        os.rmdir(daemon.mnt / "renamed")
    assert e.value.errno == errno.ENOTEMPTY
    daemon.cli("space", "delete", "renamed")
    assert os.listdir(daemon.mnt) == []


def test_editor_save_pattern_keeps_one_new_version(daemon, space):
    f = space / "daily-logs" / "notes.md"
    f.write_text("v1\n")
    # vim-like: backup copy, write a temp file, rename it over the original
    tmp = space / "daily-logs" / ".notes.md.swp"
    tmp.write_text("v2\n")
    os.rename(tmp, f)
    backup = space / "daily-logs" / "notes.md~"
    backup.write_text("v2\n")
    os.unlink(backup)
    assert f.read_text() == "v2\n"
    assert sorted(os.listdir(space / "daily-logs")) == ["SKILL.md", "notes.md"]
    rows = json.loads(daemon.cli("log", str(f), "--json").stdout)
    assert [r["version"] for r in rows] == [1, 2]
    assert all(r["path"] == "notes.md" for r in rows)


def test_python_editor_replace(space):
    # the atomic-save idiom many programs use: write a temp file, fsync, os.replace
    f = space / "user-general-facts" / "identity.md"
    f.write_text("# Identity\n- Name is Gus\n")
    tmp = space / "user-general-facts" / "identity.md.tmp"
    with open(tmp, "w") as fh:
        fh.write("# Identity\n- Name is Gus\n- Lives in Lisbon\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, f)
    assert "Lisbon" in f.read_text()
    assert not tmp.exists()


def _close_error(path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, data)
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def test_invalid_skill_md_is_refused_and_old_version_stays(space):
    path = space / "daily-logs" / "SKILL.md"
    before = path.read_bytes()
    bad = [
        b"no front matter at all\n",
        b"---\nname: daily-logs\n---\nbody\n",                         # no description
        b"---\ndescription: x\n---\n",                                   # no name
        b"---\nname: other-name\ndescription: x\n---\n",                 # not its folder
        b"---\nname: Daily_Logs\ndescription: x\n---\n",                 # bad characters
        b"---\nname: daily-logs\ndescription: " + b"x" * 1025 + b"\n---\n",
        b"---\nname: [unclosed\n---\n",                                  # not YAML
    ]
    for data in bad:
        assert _close_error(path, data) == errno.EINVAL, data[:40]
        assert path.read_bytes() == before
    # fsync reports it too
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, bad[1])
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        os.close(fd)
    assert path.read_bytes() == before
    good = b"---\nname: daily-logs\ndescription: A new description.\n---\n\nRules.\n"
    assert _close_error(path, good) == 0
    assert path.read_bytes() == good
    # SKILL.md goes last, and takes the skill with it (tests/test_trash.py)
    (path.parent / "other.md").write_text("x")
    with pytest.raises(OSError) as e:
        os.unlink(path)
    assert e.value.errno == errno.EBUSY
    assert path.read_bytes() == good


def test_bad_names_and_size_cap(space):
    d = space / "daily-logs"
    with pytest.raises(OSError) as e:
        open(d / ("x" * 256), "w").close()
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        open(space / "file-in-space.md", "w").close()
    assert e.value.errno == errno.EPERM
    big = d / "big.md"
    with pytest.raises(OSError) as e:
        with open(big, "wb") as fh:
            fh.write(b"x" * ((1 << 20) + 1))
    assert e.value.errno == errno.EFBIG
    assert not big.exists()
    r = run("cp", "/dev/null", str(d / "empty.md"))
    assert r.returncode == 0 and (d / "empty.md").read_bytes() == b""
    # a file just under the cap is fine
    (d / "max.md").write_bytes(b"y" * (1 << 20))
    assert os.stat(d / "max.md").st_size == 1 << 20


def test_statfs(daemon, space):
    out = run("df", str(daemon.mnt)).stdout
    assert "skillfs" in out
    st = os.statvfs(daemon.mnt)
    assert st.f_namemax == 255 and st.f_blocks > 0


def test_persistence_across_restart(own_daemon):
    daemon, space = own_daemon, own_daemon.mnt / "alice"
    os.mkdir(space)
    (space / "daily-logs" / "keep.md").write_text("kept\n")
    os.makedirs(space / "daily-logs" / "empty-folder")
    os.mkdir(space / "custom")
    daemon.restart()
    assert (space / "daily-logs" / "keep.md").read_text() == "kept\n"
    assert (space / "daily-logs" / "empty-folder").is_dir()
    assert sorted(os.listdir(space)) == ["custom", "daily-logs", "user-general-facts"]


def test_second_daemon_on_same_db_refuses(daemon, make_daemon, tmp_path):
    other = make_daemon(start=False, root=tmp_path / "other")
    other.env["SKILLFS_HOME"] = str(daemon.home)
    r = other.cli("mount", str(other.mnt), check=False)
    assert r.returncode != 0
    assert "already using" in r.stderr


def test_stale_mount_is_cleaned_up_on_start(own_daemon):
    daemon, space = own_daemon, own_daemon.mnt / "alice"
    os.mkdir(space)
    (space / "daily-logs" / "x.md").write_text("survives")
    daemon.kill9()
    with pytest.raises(OSError) as e:
        os.statvfs(daemon.mnt)
    assert e.value.errno == errno.ENOTCONN
    daemon.start()
    assert (space / "daily-logs" / "x.md").read_text() == "survives"


def test_a_mount_at_a_non_ascii_path_is_found_and_cleaned_up_when_stale(make_daemon, tmp_path):
    # /proc/self/mounts holds the path as UTF-8 bytes; it must read back as the same path
    d = make_daemon("--learner", "off", start=False)
    d.mnt = tmp_path / "café"
    d.mnt.mkdir()
    d.start()
    assert d.pid  # found through the mount table
    os.mkdir(d.mnt / "alice")
    (d.mnt / "alice" / "daily-logs" / "x.md").write_text("survives")
    d.kill9()
    d.start()
    assert (d.mnt / "alice" / "daily-logs" / "x.md").read_text() == "survives"


def test_umount_and_sigterm(own_daemon):
    daemon = own_daemon
    pid = daemon.pid
    os.kill(pid, 15)
    wait_for(lambda: not os.path.ismount(daemon.mnt), what="unmount on SIGTERM")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="exit on SIGTERM")
    daemon.pid = None
    daemon.start()
    assert os.path.ismount(daemon.mnt)


def test_changes_from_api_are_visible_without_stale_reads(daemon, space):
    """Readers keep reading while the store changes a file; once a change is committed
    (the API call returned), no reader sees the old content."""
    f = space / "daily-logs" / "live.md"
    f.write_text("v0\n")
    stop = threading.Event()
    errors: list[str] = []

    def reader():
        while not stop.is_set():
            with open(f) as fh:
                fh.read()
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 30):
            body = f"v{i}\n" * i
            _api_write(daemon, f"{space.name}/daily-logs/live.md", body)
            got = f.read_text()
            if got != body:
                errors.append(f"after commit {i} read {got[:20]!r}")
            assert os.stat(f).st_size == len(body)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors


def _api_write(daemon, path, body):
    r = daemon.api("PUT", "/skillfs/v1/files", params={"path": path}, content=body.encode())
    assert r.status_code == 200, r.text


def test_readers_close_without_a_flush_round_trip(daemon, space):
    """Read-only opens are answered with FOPEN_NOFLUSH; writers still get errors at close."""
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["noflush"] is True, "skillfs._noflush was not built or not loaded"
    before = status["noflush_opens"]
    for _ in range(5):
        run("cat", str(space / "daily-logs" / "SKILL.md"))
    after = json.loads(daemon.cli("status", "--json").stdout)["noflush_opens"]
    assert after - before >= 5
    assert _close_error(space / "daily-logs" / "SKILL.md", b"not front matter") == errno.EINVAL
