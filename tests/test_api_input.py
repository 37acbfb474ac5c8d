"""Hostile input over real HTTP on the daemon's socket: broken and hostile ZIPs, bodies over
the cap, lone surrogates, and one space's skills asked for through another. Every one is a
4xx with a reason, the daemon's memory stays bounded, and the daemon keeps serving."""

from __future__ import annotations

import io
import json
import os
import struct
import uuid
import zipfile

import httpx
import pytest

from conftest import Daemon, lazy_import

acontext = lazy_import("acontext")

# the module-scoped fixture is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("api_input")

SKILL_MD = b"---\nname: hostile\ndescription: A skill to test the importer.\n---\n"
MiB = 1 << 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def make_zip(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def patch_headers(data: bytes, name: bytes, **fields) -> bytes:
    """Rewrite fields of the local and the central header of entry `name`.
    Offsets (local, central) from APPNOTE 4.3.7 and 4.3.12."""
    offsets = {"flags": (6, 8), "method": (8, 10), "crc": (14, 16), "size": (22, 24)}
    out = bytearray(data)
    for sig, which in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 1)):
        name_at = 30 if which == 0 else 46
        at = out.find(sig)
        while at >= 0:
            if out[at + name_at:at + name_at + len(name)] == name:
                for field, value in fields.items():
                    off = at + offsets[field][which]
                    fmt = "<H" if field in ("flags", "method") else "<I"
                    struct.pack_into(fmt, out, off, value)
            at = out.find(sig, at + 4)
    return bytes(out)


def patch_end_count(data: bytes, count: int) -> bytes:
    """Rewrite the entry counts of the end of central directory record (APPNOTE 4.3.16)."""
    out = bytearray(data)
    at = out.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", out, at + 8, count, count)
    return bytes(out)


def bad_crc() -> bytes:
    data = make_zip({"SKILL.md": SKILL_MD, "notes.md": b"x" * 100}, zipfile.ZIP_STORED)
    return data.replace(b"x" * 100, b"y" * 100)


def encrypted() -> bytes:
    data = make_zip({"SKILL.md": SKILL_MD, "notes.md": b"secret"})
    return patch_headers(data, b"notes.md", flags=1)


def method_99() -> bytes:
    data = make_zip({"SKILL.md": SKILL_MD, "notes.md": b"hello"})
    return patch_headers(data, b"notes.md", method=99)


def lying_size() -> bytes:
    # 200 MiB of zeros that claim to be 1,000 bytes
    data = make_zip({"SKILL.md": SKILL_MD, "big.md": bytes(200 * MiB)})
    return patch_headers(data, b"big.md", size=1000)


def zeros_300() -> bytes:
    return make_zip({"SKILL.md": SKILL_MD, **{f"z/{i}.md": bytes(MiB) for i in range(300)}})


def text_300() -> bytes:
    """300 files of 1 MiB that compress like repetitive text (about 80 times): each file is
    under every cap, the ratio too; together they inflate to 300 MiB."""
    block = os.urandom(8 << 10)
    page = (block * (MiB // len(block) + 1))[:MiB]
    return make_zip({"SKILL.md": SKILL_MD, **{f"t/{i}.md": page for i in range(300)}})


BAD_ZIPS = {
    "bad CRC": (bad_crc, 400, "CRC"),
    "encrypted": (encrypted, 400, "encrypted"),
    "method 99": (method_99, 400, "compression method 99"),
    "size lies": (lying_size, 400, "big.md: Bad CRC-32"),
    "300 x 1 MiB zeros": (zeros_300, 400, "times its compressed size"),
    "300 x 1 MiB text": (text_300, 413, "inflates to more than"),
    "file and folder": (lambda: make_zip({"SKILL.md": SKILL_MD, "a": b"file",
                                          "a/b.md": b"in a folder"}), 409, "both as a file"),
    "20,000 entries": (lambda: make_zip({"SKILL.md": SKILL_MD,
                                         **{f"{i:x}": b"" for i in range(20_000)}},
                                        zipfile.ZIP_STORED), 400, "more than 10000 entries"),
    "20,000 entries, the end record says 1": (lambda: patch_end_count(make_zip(
        {"SKILL.md": SKILL_MD, **{f"{i:x}": b"" for i in range(20_000)}},
        zipfile.ZIP_STORED), 1), 400, "more than 10000 files"),
    "60,000 long names, the end record says 1": (lambda: patch_end_count(make_zip(
        {"SKILL.md": SKILL_MD, **{f"{i:060x}": b"" for i in range(60_000)}},
        zipfile.ZIP_STORED), 1), 400, "directory is over"),
    "file over the cap": (lambda: make_zip({"SKILL.md": SKILL_MD,
                                            "big.bin": os.urandom(MiB + 1)}),
                          413, "big.bin: 1048577 bytes; the limit is 1048576"),
    "not a zip": (lambda: b"PK\x03\x04 not really", 400, "not a readable ZIP"),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon for most tests here (starting one takes seconds), with a space 'alpha'."""
    d = Daemon(tmp_path_factory.mktemp("zips"), ["--learner", "off"])
    d.start()
    d.cli("space", "create", "alpha")
    yield d
    d.cleanup()


@pytest.mark.parametrize("kind", list(BAD_ZIPS))
def test_bad_zips_are_refused_and_memory_stays_bounded(shared, kind):
    daemon = shared
    build, status, reason = BAD_ZIPS[kind]
    data = build()
    before = rss_kib(daemon.pid)
    # the control API (skillfs skill import)
    r = daemon.api("POST", "/skillfs/v1/skills/import", params={"space": "alpha"},
                   content=data, headers={"Content-Type": "application/zip"})
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]
    # the Acontext API, through the SDK
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket), verify=False),
                        timeout=60, verify=False)
    with acontext.AcontextClient(api_key="local", base_url="http://skillfs/api/v1",
                                 client=http) as c:
        with pytest.raises(acontext.errors.APIError) as e:
            c.skills.create(file=acontext.FileUpload(filename="s.zip", content=data))
        assert e.value.status_code == status and reason in str(e.value), e.value
        assert c.ping() == "pong"
    grown = (rss_kib(daemon.pid) - before) // 1024
    print(f"{kind}: RSS {before // 1024} MiB, +{grown} MiB")
    assert grown < 150, f"the daemon grew by {grown} MiB on a {kind} ZIP"
    assert sorted(os.listdir(daemon.mnt / "alpha")) == ["daily-logs", "user-general-facts"]


def test_a_good_zip_still_imports(daemon):
    daemon.cli("space", "create", "alpha")
    data = make_zip({"hostile/SKILL.md": SKILL_MD, "hostile/a/b.md": b"deep\n",
                     "hostile/__MACOSX/._x": b"junk"})
    r = daemon.api("POST", "/skillfs/v1/skills/import", params={"space": "alpha"},
                   content=data, headers={"Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    assert (daemon.mnt / "alpha" / "hostile" / "a" / "b.md").read_bytes() == b"deep\n"


def test_bodies_over_the_cap_get_413(make_daemon):
    d = make_daemon("--learner", "off", start=False)
    d.home.mkdir(parents=True)
    (d.home / "config.toml").write_text(f"max_request_bytes = {4 * MiB}\n")
    d.start()
    session = d.api("POST", "/api/v1/session", json={}).json()["data"]["id"]
    url = f"/api/v1/session/{session}/messages"
    big = json.dumps({"blob": {"role": "user", "content": "x" * (5 * MiB)}}).encode()
    # a Content-Length over the cap is refused before the body is read
    r = d.api("POST", url, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == 413, r.text
    assert r.headers["x-request-id"]

    # a chunked body is cut off once it passes the cap
    def chunks():
        for i in range(0, len(big), 64 << 10):
            yield big[i:i + (64 << 10)]

    r = d.api("POST", url, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    r = d.api("POST", "/skillfs/v1/skills/import", params={"space": "x"},
              content=bytes(5 * MiB), headers={"Content-Type": "application/zip"})
    assert r.status_code == 413
    # a message is one database row: one under the body cap but over the JSON cap is a
    # 413 that says so (it used to exhaust the database's memory: a 500)
    r = d.api("POST", url, json={"blob": {"role": "user", "content": "y" * (3 * MiB)}})
    assert r.status_code == 413 and "a JSON body holds at most" in r.json()["msg"], r.text
    r = d.api("POST", "/api/v1/session", json={"configs": {"a": "y" * (2 * MiB)}})
    assert r.status_code == 413
    # a large message under both is stored, and read back whole
    fits = "y" * (900 << 10)
    r = d.api("POST", url, json={"blob": {"role": "user", "content": fits}})
    assert r.status_code == 201, r.text
    got = d.api("GET", url).json()["data"]["items"]
    assert [m["content"] for m in got] == [fits]


LONE = "\ud800"  # a lone surrogate: json.dumps writes it as the escape \ud800


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/skillfs/v1/spaces", json.dumps({"name": LONE})),
    ("POST", "/skillfs/v1/spaces", json.dumps({"name": "ok", "user": LONE})),
    ("POST", "/skillfs/v1/spaces", json.dumps({"name": "ok", "meta": {"k": [1, LONE]}})),
    ("POST", "/skillfs/v1/spaces", json.dumps({"name": "ok", "meta": {LONE: 1}})),
    ("POST", "/api/v1/learning_spaces", json.dumps({"user": LONE})),
    ("POST", "/api/v1/learning_spaces", json.dumps({"meta": {"name": LONE}})),
    ("POST", "/api/v1/session", json.dumps({"user": LONE})),
    ("POST", "/api/v1/session", json.dumps({"configs": {"a": LONE}})),
    ("POST", "/skillfs/v1/files/revert", json.dumps({"path": LONE, "version": 1})),
])
def test_lone_surrogates_are_refused(shared, method, path, body):
    spaces = shared.api("GET", "/skillfs/v1/spaces").json()
    r = shared.api(method, path, content=body.encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "lone surrogate" in r.text
    # nothing was created, and a good request right after is served
    assert shared.api("GET", "/skillfs/v1/spaces").json() == spaces
    assert shared.api("GET", "/api/v1/learning_spaces").status_code == 200


def test_lone_surrogates_in_messages_and_forms(shared):
    daemon = shared
    session = daemon.api("POST", "/api/v1/session", json={}).json()["data"]["id"]
    url = f"/api/v1/session/{session}/messages"
    r = daemon.api("POST", url, content=json.dumps({"blob": {"role": "user", "content": LONE}})
                   .encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == 400
    r = daemon.api("POST", url, data={"payload": json.dumps(
        {"blob": {"role": "user", "content": "hi"}, "meta": {"a": LONE}})})
    assert r.status_code == 400, r.text
    r = daemon.api("POST", "/api/v1/agent_skills", data={"user": "\ud800".encode(
        "utf-8", "surrogatepass")}, files={"file": ("s.zip", make_zip({"SKILL.md": SKILL_MD}))})
    # a form field is decoded with replacement characters: stored, but never as a surrogate
    assert r.status_code == 201, r.text
    assert r.json()["data"]["user_id"]
    r = daemon.api("GET", "/api/v1/learning_spaces",
                   params={"filter_by_meta": json.dumps({"a": LONE})})
    assert r.status_code == 400, r.text


def test_one_space_cannot_reach_another_spaces_skills(shared):
    daemon = shared
    for name in ("gamma", "beta"):
        daemon.cli("space", "create", name)
    secret = make_zip({"SKILL.md": b"---\nname: secret\ndescription: Beta's.\n---\n",
                       "secret.md": b"beta's secret\n"})
    made = daemon.api("POST", "/skillfs/v1/skills/import", params={"space": "beta"},
                      content=secret, headers={"Content-Type": "application/zip"}).json()
    sid = made["id"]
    assert daemon.api("GET", "/skillfs/v1/files",
                      params={"path": f"beta/{sid}/secret.md"}).content == b"beta's secret\n"
    unknown = str(uuid.uuid4())
    for ref in (sid, "secret"):
        for method, path, kw in [
            ("GET", "/skillfs/v1/files", {"params": {"path": f"gamma/{ref}/secret.md"}}),
            ("GET", "/skillfs/v1/files/log", {"params": {"path": f"gamma/{ref}/secret.md"}}),
            ("PUT", "/skillfs/v1/files", {"params": {"path": f"gamma/{ref}/secret.md"},
                                          "content": b"overwritten"}),
            ("POST", "/skillfs/v1/files/revert", {"json": {"path": f"gamma/{ref}/secret.md",
                                                           "version": 1}}),
            ("GET", "/skillfs/v1/skills/export", {"params": {"space": "gamma",
                                                             "skill": ref}}),
        ]:
            r = daemon.api(method, path, **kw)
            assert r.status_code == 404, (method, path, r.text)
            assert b"beta" not in r.content and b"secret\n" not in r.content
            # the answer is the one for a skill that exists nowhere
            kw = json.loads(json.dumps(kw, default=bytes.decode).replace(ref, unknown))
            other = daemon.api(method, path, **kw)
            assert other.status_code == 404
            assert other.json()["error"] == r.json()["error"].replace(ref, unknown)
    # a session learning into beta is not found through gamma
    session = daemon.api("POST", "/api/v1/session", json={}).json()["data"]["id"]
    beta_id = next(s["id"] for s in daemon.api("GET", "/skillfs/v1/spaces").json()
                   if s["name"] == "beta")
    assert daemon.api("POST", f"/api/v1/learning_spaces/{beta_id}/learn",
                      json={"session_id": session}).status_code == 201
    r = daemon.api("GET", "/skillfs/v1/learning", params={"session": session, "space": "gamma"})
    assert r.status_code == 404 and "beta" not in r.text
    spaces = daemon.api("GET", "/api/v1/learning_spaces").json()["data"]["items"]
    for space_id in {s["id"] for s in spaces} - {beta_id}:
        r = daemon.api("GET", f"/api/v1/learning_spaces/{space_id}/sessions/{session}")
        assert r.status_code == 404, r.text
    r = daemon.api("GET", "/skillfs/v1/learning", params={"session": session, "space": "beta"})
    assert r.status_code == 200 and r.json()[0]["space_id"] == beta_id
    assert (daemon.mnt / "beta" / "secret" / "secret.md").read_bytes() == b"beta's secret\n"
    assert not (daemon.mnt / "gamma" / "secret").exists()
