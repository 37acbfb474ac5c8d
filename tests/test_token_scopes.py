"""Token scopes over the HTTP API (config `[[tokens]]`): a read-only token's writes get 403;
a token bound to spaces sees and touches only them — another space's objects are 404, as
if they did not exist, its lists are filtered, and routes that span every space are 403 —
on the Acontext routes and the control API alike. A plain token keeps full access."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import zipfile

import httpx
import pytest

from conftest import SKILLFS, Daemon
from test_api_tokens import free_port

FULL, ALICE_RO, ALICE = "scope-full-0a1b", "scope-alice-ro-2c3d", "scope-alice-4e5f"


# the module-scoped daemon is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("token_scopes")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("scopes")
    port = free_port()
    d = Daemon(root, ["--listen", f"127.0.0.1:{port}", "--learner", "off"])
    d.home.mkdir(parents=True)
    (d.home / "config.toml").write_text(
        f'[[tokens]]\ntoken = "{ALICE_RO}"\nspaces = ["alice"]\nread_only = true\n\n'
        f'[[tokens]]\ntoken = "{ALICE}"\nspaces = ["alice"]\n')
    d.env["SKILLFS_TOKEN"] = FULL
    d.start()
    d.base = f"http://127.0.0.1:{port}"
    for name in ("alice", "bob"):
        d.cli("space", "create", name)
        (d.mnt / name / "daily-logs" / "notes.md").write_text(f"{name}'s notes\n")
    spaces = {s["name"]: s for s in d.api("GET", "/skillfs/v1/spaces").json()}
    d.ids = {name: s["id"] for name, s in spaces.items()}
    skills = d.api("GET", "/skillfs/v1/skills", params={"space": "bob"}).json()
    d.bob_skill = skills[0]["id"]
    yield d
    d.cleanup()


def client(d: Daemon, token: str) -> httpx.Client:
    return httpx.Client(base_url=d.base, headers={"Authorization": f"Bearer {token}"},
                        timeout=60)


def test_a_plain_token_keeps_full_access(served):
    d = served
    with client(d, FULL) as c:
        assert {s["name"] for s in c.get("/skillfs/v1/spaces").json()} == {"alice", "bob"}
        items = c.get("/api/v1/learning_spaces").json()["data"]["items"]
        assert {s["name"] for s in items} == {"alice", "bob"}
        assert c.get("/skillfs/v1/status").status_code == 200
        r = c.put("/skillfs/v1/files", params={"path": "bob/daily-logs/full.md"},
                  content=b"full\n")
        assert r.status_code == 200


def test_a_read_only_token_reads_and_every_write_is_403(served):
    d = served
    with client(d, ALICE_RO) as c:
        r = c.get("/skillfs/v1/files", params={"path": "alice/daily-logs/notes.md"})
        assert r.status_code == 200 and r.content == b"alice's notes\n"
        writes = [
            ("PUT", "/skillfs/v1/files", {"params": {"path": "alice/daily-logs/ro.md"},
                                          "content": b"x"}),
            ("POST", "/skillfs/v1/sessions/x/flush", {}),
            ("POST", "/api/v1/session", {"json": {}}),
            ("PATCH", f"/api/v1/learning_spaces/{d.ids['alice']}", {"json": {"meta": {}}}),
            ("DELETE", f"/api/v1/learning_spaces/{d.ids['alice']}", {}),
        ]
        for method, path, kw in writes:
            r = c.request(method, path, **kw)
            assert r.status_code == 403, (method, path, r.text)
            assert "read-only" in r.json()["error"] and r.headers["x-request-id"]
        # the Acontext SDK reads code and msg
        assert r.json()["code"] == 403
    assert not (d.mnt / "alice/daily-logs/ro.md").exists()
    assert (d.mnt / "alice").is_dir()


def test_a_space_bound_token_sees_and_touches_only_its_spaces(served):
    d = served
    alice, bob = d.ids["alice"], d.ids["bob"]
    with client(d, ALICE) as c:
        # lists are filtered
        assert [s["name"] for s in c.get("/skillfs/v1/spaces").json()] == ["alice"]
        assert c.head("/api/v1/learning_spaces").status_code in (200, 405)
        items = c.get("/api/v1/learning_spaces").json()["data"]["items"]
        assert [s["id"] for s in items] == [alice]
        skills = c.get("/api/v1/agent_skills").json()["data"]["items"]
        assert skills and all(s["id"] != d.bob_skill for s in skills)
        # its own space: served
        assert c.get(f"/api/v1/learning_spaces/{alice}").status_code == 200
        assert c.get("/skillfs/v1/skills", params={"space": "alice"}).status_code == 200
        r = c.put("/skillfs/v1/files", params={"path": "alice/daily-logs/bound.md"},
                  content=b"mine\n")
        assert r.status_code == 200
        r = c.get("/skillfs/v1/search", params={"pattern": "notes", "space": "alice"})
        assert r.status_code == 200, r.text
        assert {m["file"].split("/")[0] for m in r.json()["matches"]} == {"alice"}
        assert (d.mnt / "alice/daily-logs/bound.md").read_text() == "mine\n"
        # another space's objects: 404, by id, name, path, skill, in a query or a body
        others = [
            ("GET", f"/api/v1/learning_spaces/{bob}", {}),
            ("DELETE", f"/api/v1/learning_spaces/{bob}", {}),
            ("GET", f"/api/v1/learning_spaces/{bob}/skills", {}),
            ("GET", f"/api/v1/agent_skills/{d.bob_skill}", {}),
            ("POST", f"/api/v1/learning_spaces/{alice}/skills",
             {"json": {"skill_id": d.bob_skill}}),
            ("GET", "/skillfs/v1/skills", {"params": {"space": "bob"}}),
            ("GET", "/skillfs/v1/files", {"params": {"path": "bob/daily-logs/notes.md"}}),
            ("PUT", "/skillfs/v1/files", {"params": {"path": "bob/daily-logs/x.md"},
                                          "content": b"x"}),
            ("POST", "/skillfs/v1/files/revert",
             {"json": {"path": "bob/daily-logs/notes.md", "version": 1}}),
            ("DELETE", "/skillfs/v1/spaces/bob", {}),
            ("GET", "/skillfs/v1/sessions", {"params": {"space": "bob"}}),
            ("GET", "/skillfs/v1/search", {"params": {"pattern": "notes",
                                                      "space": ["alice", "bob"]}}),
        ]
        for method, path, kw in others:
            r = c.request(method, path, **kw)
            assert r.status_code == 404, (method, path, r.text)
        # routes that span every space: 403
        for method, path in (("GET", "/skillfs/v1/status"), ("POST", "/skillfs/v1/shutdown"),
                             ("POST", "/api/v1/learning_spaces"), ("GET", "/api/v1/user/ls"),
                             ("GET", "/skillfs/v1/trash/everything"),
                             ("GET", "/skillfs/v1/sessions"), ("GET", "/skillfs/v1/trash"),
                             ("GET", "/skillfs/v1/search?pattern=notes")):
            r = c.request(method, path)
            assert r.status_code == 403, (method, path, r.text)
            assert "bound to" in r.json()["error"]
    assert (d.mnt / "bob").is_dir()
    assert not (d.mnt / "bob/daily-logs/x.md").exists()
    assert (d.mnt / "bob/daily-logs/notes.md").read_text() == "bob's notes\n"


def test_a_bound_token_runs_acontexts_session_flow_in_its_space(served):
    d = served
    alice, bob = d.ids["alice"], d.ids["bob"]
    with client(d, FULL) as full:
        foreign = full.post("/api/v1/session", json={}).json()["data"]["id"]
        assert full.post(f"/api/v1/learning_spaces/{bob}/learn",
                         json={"session_id": foreign}).status_code == 201
    with client(d, ALICE) as c:
        mine = c.post("/api/v1/session", json={}).json()["data"]["id"]
        # a session that learns into no space yet is reached only by learning into alice
        assert c.get(f"/api/v1/session/{mine}/configs").status_code == 404
        assert c.post(f"/api/v1/learning_spaces/{bob}/learn",
                      json={"session_id": mine}).status_code == 404
        assert c.post(f"/api/v1/learning_spaces/{alice}/learn",
                      json={"session_id": mine}).status_code == 201
        r = c.post(f"/api/v1/session/{mine}/messages",
                   json={"blob": {"role": "user", "content": "hello"}, "format": "openai"})
        assert r.status_code == 201, r.text
        assert c.get(f"/api/v1/session/{mine}/messages").status_code == 200
        listed = [s["id"] for s in c.get("/api/v1/session").json()["data"]["items"]]
        assert mine in listed and foreign not in listed
        # bob's session: as if it did not exist
        for method, path in (("GET", f"/api/v1/session/{foreign}/messages"),
                             ("DELETE", f"/api/v1/session/{foreign}"),
                             ("POST", f"/skillfs/v1/sessions/{foreign}/flush")):
            assert c.request(method, path).status_code == 404, (method, path)
    with client(d, FULL) as full:
        assert full.get(f"/api/v1/session/{foreign}/configs").status_code == 200


def test_a_body_past_what_the_gate_reads_reaches_the_route_whole(served):
    """The gate reads a body's first MiB to find a path in it; the route still gets every
    byte (a 1.4 MB ZIP of files that hardly compress)."""
    d = served
    parts = {f"part{i}.txt": base64.b64encode(os.urandom(700_000)) for i in range(2)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big/SKILL.md", "---\nname: big\ndescription: A large skill.\n---\n")
        for name, data in parts.items():
            zf.writestr(f"big/{name}", data)
    assert len(buf.getvalue()) > 1_300_000
    with client(d, ALICE) as c:
        r = c.post("/skillfs/v1/skills/import", params={"space": "alice"},
                   content=buf.getvalue(), headers={"Content-Type": "application/zip"})
        assert r.status_code == 201, r.text
        r = c.post("/skillfs/v1/skills/import", params={"space": "bob"},
                   content=buf.getvalue(), headers={"Content-Type": "application/zip"})
        assert r.status_code == 404
    for name, data in parts.items():
        assert (d.mnt / "alice/big" / name).read_bytes() == data
    assert not (d.mnt / "bob/big").exists()


def test_a_token_given_plain_and_scoped_is_refused(tmp_path):
    d = Daemon(tmp_path / "d", ["--listen", f"127.0.0.1:{free_port()}", "--learner", "off"])
    d.home.mkdir(parents=True)
    (d.home / "config.toml").write_text(
        '[[tokens]]\ntoken = "twice"\nspaces = ["alice"]\n')
    d.env["SKILLFS_TOKEN"] = "twice"
    r = subprocess.run([SKILLFS, "mount", str(d.mnt), *d.args], env=d.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "different scopes" in r.stderr
    r = subprocess.run([SKILLFS, "config", "show"], env=d.env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "twice" not in r.stdout
    # a misspelt key is refused, not read as a token without limits
    (d.home / "config.toml").write_text('[[tokens]]\ntoken = "t"\nreadonly = true\n')
    r = subprocess.run([SKILLFS, "mount", str(d.mnt), *d.args], env=d.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "readonly" in r.stderr
