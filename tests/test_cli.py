"""The `skillfs` command against a running daemon, and the sandbox recipe."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import zipfile

import pytest

from conftest import SKILLFS, run, wait_for


def test_space_commands(daemon):
    out = daemon.cli("space", "create", "team", "--user", "alice@example.com",
                     "--meta", '{"domain": "deployments"}', "--json").stdout
    created = json.loads(out)
    assert created["name"] == "team" and created["meta"] == {"domain": "deployments"}
    assert sorted(os.listdir(daemon.mnt / "team")) == ["daily-logs", "user-general-facts"]
    rows = json.loads(daemon.cli("space", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["team"]
    assert "team" in daemon.cli("space", "list").stdout
    r = daemon.cli("space", "create", "team", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = daemon.cli("space", "create", "x", "--meta", "[1]", check=False)
    assert r.returncode == 2 and "JSON object" in r.stderr
    daemon.cli("space", "delete", "team")
    assert os.listdir(daemon.mnt) == []
    r = daemon.cli("space", "delete", "team", check=False)
    assert r.returncode == 1 and "no learning space" in r.stderr


def test_skill_import_export(daemon, space, tmp_path):
    src = tmp_path / "social-contacts"
    (src / "people").mkdir(parents=True)
    (src / "SKILL.md").write_text("---\nname: social-contacts\ndescription: One file per "
                                  "person the user mentions.\n---\n\n# Contacts\n")
    (src / "people" / "alice-chen.md").write_text("# Alice Chen\n- Works at Acme\n")
    daemon.cli("skill", "import", str(src), "--space", "alice")
    mounted = daemon.mnt / "alice" / "social-contacts"
    assert (mounted / "people" / "alice-chen.md").read_text() == "# Alice Chen\n- Works at Acme\n"
    out = tmp_path / "out.zip"
    daemon.cli("skill", "export", "social-contacts", "--space", "alice", "-o", str(out))
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == ["social-contacts/SKILL.md", "social-contacts/people/alice-chen.md"]
    # the exported ZIP imports into another space, with its junk-free layout
    daemon.cli("space", "create", "bob")
    daemon.cli("skill", "import", str(out), "--space", "bob")
    assert (daemon.mnt / "bob" / "social-contacts" / "SKILL.md").read_bytes() == \
        (mounted / "SKILL.md").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.md").write_text("no SKILL.md here")
    r = daemon.cli("skill", "import", str(bad), "--space", "alice", check=False)
    assert r.returncode == 1 and "SKILL.md" in r.stderr


def test_session_commands(daemon):
    daemon.write_spool("alice/s1/1.jsonl", json.dumps({"role": "user", "content": "hello there"})
                       + "\n")
    wait_for(lambda: json.loads(daemon.cli("session", "list", "--json").stdout),
             what="the session")
    rows = json.loads(daemon.cli("session", "list", "--space", "alice", "--json").stdout)
    assert len(rows) == 1 and rows[0]["name"] == "s1"
    sid = rows[0]["id"]
    shown = json.loads(daemon.cli("session", "show", sid, "--json").stdout)
    assert [m["text"] for m in shown["messages"]] == ["hello there"]
    assert "hello there" in daemon.cli("session", "show", sid).stdout
    r = daemon.cli("session", "show", "nope", check=False)
    assert r.returncode == 1 and "no session" in r.stderr
    # the spool folder's name works wherever a session is wanted
    assert json.loads(daemon.cli("session", "show", "s1", "--json").stdout)["id"] == sid
    daemon.cli("session", "flush", "s1")
    assert daemon.cli("session", "list").stdout.splitlines()[0].split() == [
        "ID", "NAME", "LEARNING"]
    daemon.write_spool("bob/s1/1.jsonl", json.dumps({"role": "user", "content": "hi"}) + "\n")
    wait_for(lambda: len(json.loads(daemon.cli("session", "list", "--json").stdout)) == 2,
             what="the second session")
    r = daemon.cli("session", "show", "s1", check=False)
    assert r.returncode == 1 and "2 sessions are named 's1'" in r.stderr


def test_log_and_revert(daemon, space):
    f = space / "user-general-facts" / "identity.md"
    f.write_text("- Name is Gus\n")
    f.write_text("- Name is Augustus\n")
    f.unlink()
    rows = json.loads(daemon.cli("log", str(f), "--json").stdout)
    assert [(r["version"], r["author"], r["deleted"]) for r in rows] == [
        (1, "fuse", False), (2, "fuse", False), (3, "fuse", True)]
    assert "v2" in daemon.cli("log", str(f)).stdout
    # reverting brings a deleted file back, as a new version
    daemon.cli("revert", str(f), "1")
    assert f.read_text() == "- Name is Gus\n"
    daemon.cli("revert", "alice/user-general-facts/identity.md", "2")
    assert f.read_text() == "- Name is Augustus\n"
    rows = json.loads(daemon.cli("log", str(f), "--json").stdout)
    assert [r["version"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["author"] == "cli" and "revert" in rows[-1]["reason"]
    r = daemon.cli("revert", str(f), "3", check=False)
    assert r.returncode == 1 and "deletion" in r.stderr
    r = daemon.cli("revert", str(f), "99", check=False)
    assert r.returncode == 1
    # versions as log prints them; options after the command; found from the mount path
    # in a shell that knows nothing of the daemon's data directory
    daemon.cli("revert", str(f), "v1", "--socket", str(daemon.socket))
    assert f.read_text() == "- Name is Gus\n"
    # looking at old versions changes nothing
    assert daemon.cli("show", f"{f}@v2").stdout == "- Name is Augustus\n"
    assert daemon.cli("show", str(f)).stdout == "- Name is Gus\n"
    d = daemon.cli("diff", str(f), "v2", "6").stdout
    assert "-- Name is Augustus" in d and "+- Name is Gus" in d and "@v2" in d and "@v6" in d
    assert json.loads(daemon.cli("diff", str(f), "--json").stdout)["from"] == 5
    r = daemon.cli("show", f"{f}@3", check=False)
    assert r.returncode == 1 and "deletion" in r.stderr
    versions = len(json.loads(daemon.cli("log", str(f), "--json").stdout))
    out = daemon.cli("revert", str(f), "1").stdout  # v1 is the current content
    assert "nothing changed" in out
    assert len(json.loads(daemon.cli("log", str(f), "--json").stdout)) == versions
    r = daemon.cli("revert", str(f), "vx", check=False)
    assert r.returncode == 2 and "write v3 or 3" in r.stderr
    bare = {k: v for k, v in daemon.env.items() if not k.startswith("SKILLFS_")}
    r = subprocess.run([SKILLFS, "log", str(f)], env={**bare, "HOME": "/nonexistent"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "v6" in r.stdout, r.stderr


def test_status(daemon, space):
    data = json.loads(daemon.cli("status", "--json").stdout)
    assert data["mountpoint"] == str(daemon.mnt)
    assert data["counts"]["spaces"] == 1 and data["counts"]["skills"] == 2
    assert data["spool_backlog"] == 0 and data["db_bytes"] > 0
    out = daemon.cli("status").stdout
    assert "mounted at" in out and "1 space, 2 skills" in out
    daemon.write_spool("x/y/bad.jsonl", "not json\n")
    wait_for(lambda: json.loads(daemon.cli("status", "--json").stdout)["spool_rejected"] == 1,
             what="the rejected file to be counted")
    assert "1 rejected" in daemon.cli("status").stdout


def test_clear_error_when_daemon_is_not_running(tmp_path):
    env = {**os.environ, "SKILLFS_HOME": str(tmp_path)}
    r = subprocess.run([SKILLFS, "space", "list"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "daemon is not running" in r.stderr


def test_mount_errors_are_clear(tmp_path):
    env = {**os.environ, "SKILLFS_HOME": str(tmp_path / "h")}
    r = subprocess.run([SKILLFS, "mount", str(tmp_path / "missing")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_read_only_bind_mount_of_one_space(daemon, space, tmp_path):
    os.mkdir(daemon.mnt / "other")
    (space / "daily-logs" / "today.md").write_text("entry\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    run("mount", "--bind", str(space), str(sandbox))
    try:
        run("mount", "-o", "remount,ro,bind", str(sandbox))
        assert sorted(os.listdir(sandbox)) == ["daily-logs", "user-general-facts"]
        assert (sandbox / "daily-logs" / "today.md").read_text() == "entry\n"
        assert "entry" in run("grep", "-r", "entry", str(sandbox)).stdout
        for action in (lambda: open(sandbox / "daily-logs" / "today.md", "a"),
                       lambda: open(sandbox / "daily-logs" / "new.md", "w"),
                       lambda: os.mkdir(sandbox / "new-skill"),
                       lambda: os.unlink(sandbox / "daily-logs" / "today.md")):
            with pytest.raises(OSError) as e:
                action()
            assert e.value.errno == errno.EROFS
        # nothing outside the space is reachable from inside
        assert not (sandbox / ".." / "other").resolve().is_relative_to(daemon.mnt)
        # the learner's (here: the API's) edits show up inside the sandbox
        r = daemon.api("PUT", "/skillfs/v1/files", params={"path": "alice/daily-logs/today.md"},
                       content=b"entry\nsecond\n")
        assert r.status_code == 200
        assert (sandbox / "daily-logs" / "today.md").read_text() == "entry\nsecond\n"
    finally:
        run("umount", str(sandbox), check=False)


def test_explicit_db_spool_and_socket_paths(make_daemon, tmp_path):
    d = make_daemon(start=False)
    db, spool, sock = tmp_path / "x" / "m.duckdb", tmp_path / "sp", tmp_path / "ctl.sock"
    d.args = ["--learner", "off", "--db", str(db), "--spool", str(spool), "--socket", str(sock)]
    d.start()
    assert db.exists() and spool.is_dir() and sock.exists()
    assert not (d.home / "skillfs.duckdb").exists()
    r = d.cli("--socket", str(sock), "space", "create", "elsewhere")
    assert "created space elsewhere" in r.stdout
    assert os.listdir(d.mnt) == ["elsewhere"]
    # without the socket the CLI looks in the default place and says the daemon is not there
    r = d.cli("space", "list", check=False)
    assert r.returncode == 1 and "not running" in r.stderr
    d.stop()


def test_mount_from_the_folder_holding_a_clone_named_skillfs(make_daemon, tmp_path):
    """`git clone ... skillfs; skillfs mount mnt`: the clone's folder is not the package."""
    d = make_daemon("--learner", "off", start=False)
    parent = tmp_path / "parent"
    (parent / "skillfs" / "daemon").mkdir(parents=True)
    (parent / "skillfs" / "daemon" / "skillfs.service").write_text("[Unit]\n")
    r = subprocess.run([SKILLFS, "mount", str(d.mnt), "--learner", "off"], cwd=parent,
                       env=d.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from skillfs.daemon import daemon_pid
    d.pid = daemon_pid(d.mnt)
    assert f"spool:    {d.spool}" in r.stdout and f"socket:   {d.socket}" in r.stdout
    log = (d.home / "skillfs.log").read_text()
    assert f"spool {d.spool}" in log and f"database {d.db}" in log


def test_second_daemon_on_the_same_data_directory_is_refused(make_daemon, tmp_path):
    first = make_daemon("--learner", "off")
    second = make_daemon("--learner", "off", "--db", str(tmp_path / "other.duckdb"),
                         start=False, root=tmp_path / "second")
    second.env["SKILLFS_HOME"] = str(first.home)
    r = subprocess.run([SKILLFS, "mount", str(second.mnt), *second.args], env=second.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"pid {first.pid}" in r.stderr and "skillfs.sock" in r.stderr
    assert first.cli("status").returncode == 0  # the first one still answers on its socket


def test_mounting_over_a_non_empty_folder_is_refused(make_daemon):
    d = make_daemon("--learner", "off", start=False)
    (d.mnt / "notes.txt").write_text("mine")
    r = subprocess.run([SKILLFS, "mount", str(d.mnt), *d.args], env=d.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not empty" in r.stderr and "--nonempty" in r.stderr
    d.start("--nonempty")
    assert os.listdir(d.mnt) == []
    d.stop()
    assert (d.mnt / "notes.txt").read_text() == "mine"


def test_sandbox_bind_survives_a_daemon_restart(daemon, space, tmp_path):
    (space / "daily-logs" / "today.md").write_text("entry\n")
    box = tmp_path / "box" / "skills"
    out = daemon.cli("sandbox", "bind", "alice", str(box), "--ro").stdout
    assert "bound" in out and "read-only" in out
    try:
        assert (box / "daily-logs" / "today.md").read_text() == "entry\n"
        with pytest.raises(OSError) as e:
            open(box / "daily-logs" / "new.md", "w")
        assert e.value.errno == errno.EROFS
        daemon.kill9()
        with pytest.raises(OSError) as e:
            os.listdir(box)
        assert e.value.errno == errno.ENOTCONN
        run("fusermount3", "-u", "-z", str(daemon.mnt))
        # the daemon binds its recorded sandboxes again at start
        daemon.start()
        wait_for(lambda: "\tbound" in daemon.cli("sandbox", "list").stdout, what="the rebind")
        assert (box / "daily-logs" / "today.md").read_text() == "entry\n"
        with pytest.raises(OSError) as e:
            open(box / "daily-logs" / "new.md", "w")
        assert e.value.errno == errno.EROFS
        # and by hand, for a binding that went missing
        run("umount", str(box))
        assert "\tfree" in daemon.cli("sandbox", "list").stdout
        assert f"{box}: bound" in daemon.cli("sandbox", "rebind").stdout
        assert sorted(os.listdir(box)) == ["daily-logs", "user-general-facts"]
        daemon.cli("sandbox", "unbind", str(box))
        assert daemon.cli("sandbox", "list").stdout == ""
        r = daemon.cli("sandbox", "bind", "nope", str(box), check=False)
        assert r.returncode == 1 and "no space 'nope'" in r.stderr
    finally:
        subprocess.run(["umount", "-l", str(box)], capture_output=True)


def test_skill_list_and_delete(daemon, space):
    os.mkdir(space / "tpyo-skill")  # a mistyped mkdir makes a skill ...
    rows = json.loads(daemon.cli("skill", "list", "--space", "alice", "--json").stdout)
    assert sorted(r["name"] for r in rows) == ["daily-logs", "tpyo-skill", "user-general-facts"]
    assert "tpyo-skill\t1 file\t" in daemon.cli("skill", "list", "--space", "alice").stdout
    # ... which can be deleted again
    assert "deleted skill tpyo-skill" in daemon.cli(
        "skill", "delete", "tpyo-skill", "--space", "alice").stdout
    assert sorted(os.listdir(space)) == ["daily-logs", "user-general-facts"]
    assert json.loads(daemon.cli("status", "--json").stdout)["counts"]["skills"] == 2
    # a skill another space includes only leaves this one
    os.mkdir(space / "shared")
    sid = json.loads(daemon.cli("skill", "list", "--space", "alice", "--json").stdout)
    sid = next(r["id"] for r in sid if r["name"] == "shared")
    daemon.cli("space", "create", "bob")
    r = daemon.api("PUT", "/skillfs/v1/files", params={"path": f"alice/{sid}/note.md"},
                   content=b"x")
    assert r.status_code == 200
    assert daemon.api("POST", f"/api/v1/learning_spaces/{_space_id(daemon, 'bob')}/skills",
                      json={"skill_id": sid}).status_code in (200, 201)
    out = daemon.cli("skill", "delete", "shared", "--space", "alice").stdout
    assert "still in bob" in out
    assert "shared" not in os.listdir(space)
    assert (daemon.mnt / "bob" / "shared" / "note.md").read_bytes() == b"x"
    r = daemon.cli("skill", "delete", "nope", "--space", "alice", check=False)
    assert r.returncode == 1 and "no skill 'nope'" in r.stderr


def _space_id(daemon, name: str) -> str:
    return next(s["id"] for s in json.loads(daemon.cli("space", "list", "--json").stdout)
                if s["name"] == name)
