"""The real `acontext` SDK against a real daemon: the seeds' quickstart, the SKILL_TOOLS loop
and every call of the learning-spaces guide, over TCP with a bearer token (only base_url and
api_key differ from the seeds) and over the Unix socket; what the API changes is read back
through the mount and what the mount changes is read back through the API. Then schemathesis
throws generated requests at the served OpenAPI schema and no answer may be a 5xx.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import socket
import threading
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import Daemon, lazy_import, wait_for
from llm_server import LLMServer, call, text

acontext = lazy_import("acontext")

# the module-scoped fixture is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("acontext_sdk")

TOKEN = "sdk-test-token"
BINARY = bytes(range(256)) + b"\xff\xfe\x00 not utf-8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_daemon(root: Path, *args: str) -> Daemon:
    port = free_port()
    token_file = root / "tokens"
    d = Daemon(root, ["--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
                      *args])
    d.home.mkdir(parents=True, exist_ok=True)
    token_file.write_text(f"# the SDK tests' token\n{TOKEN}\n")
    # a short idle time so wait_for_learning returns in about a second
    (d.home / "config.toml").write_text("[learner]\nidle_seconds = 0.3\n")
    d.start()
    d.base_url = f"http://127.0.0.1:{port}/api/v1"
    return d


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One daemon for the module's SDK tests (they use their own spaces and users)."""
    d = tcp_daemon(tmp_path_factory.mktemp("acx"), "--learner", "rules")
    yield d
    d.cleanup()


@pytest.fixture
def client(api):
    with acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) as c:
        yield c


def folder(space_id: str) -> str:
    """The mount folder of a space created through the API without a meta name."""
    return "space-" + space_id.replace("-", "")[:8]


def expect(status: int, fn, *args, **kw) -> acontext.errors.APIError:
    with pytest.raises(acontext.errors.APIError) as e:
        fn(*args, **kw)
    assert e.value.status_code == status, e.value
    return e.value


def mount_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# seed 000: the skill-memory quickstart, then SKILL_TOOLS with a scripted model

def test_quickstart_and_skill_tools(api, client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the seed downloads to ./skills/<name>

    # -- as in the seed
    space = client.learning_spaces.create()
    session = client.sessions.create()
    client.learning_spaces.learn(space.id, session_id=session.id)
    client.sessions.store_message(session.id, blob={"role": "user", "content": "My name is Gus"})
    result = client.learning_spaces.wait_for_learning(space.id, session_id=session.id)
    assert (result.session_id, result.status) == (session.id, "completed")

    client.learning_spaces.wait_for_learning(space.id, session_id=session.id)
    skills = client.learning_spaces.list_skills(space.id)
    assert sorted(s.name for s in skills) == ["daily-logs", "user-general-facts"]
    read: dict[tuple[str, str], str] = {}
    for skill in skills:
        for f in skill.file_index:
            content = client.skills.get_file(skill_id=skill.id, file_path=f.path)
            read[skill.name, f.path] = content.content.raw
    for skill in skills:
        client.skills.download(skill_id=skill.id, path=f"./skills/{skill.name}")

    # -- the learned fact, read through the API and found in the mount
    facts = [raw for (name, path), raw in read.items()
             if name == "user-general-facts" and path != "SKILL.md"]
    assert any("Gus" in raw for raw in facts)
    space_dir = api.mnt / folder(space.id)
    for skill in skills:
        in_mount = mount_files(space_dir / skill.name)
        assert sorted(in_mount) == sorted(f.path for f in skill.file_index)
        assert mount_files(tmp_path / "skills" / skill.name) == in_mount
        for path, data in in_mount.items():
            assert read[skill.name, path].encode() == data
        # the ZIP holds the same files at the same relative paths
        with zipfile.ZipFile(io.BytesIO(client.skills.download_zip(skill.id))) as z:
            assert {n: z.read(n) for n in z.namelist()} == in_mount

    # -- SKILL_TOOLS: the seed's agent loop, the "model" a scripted OpenAI-compatible server
    from acontext.agent.skill import SKILL_TOOLS
    from openai import OpenAI

    facts_file = next(path for (name, path) in read
                      if name == "user-general-facts" and path != "SKILL.md")
    with LLMServer() as srv:
        srv.add(call("get_skill", skill_name="user-general-facts"),
                call("get_skill_file", skill_name="user-general-facts", file_path=facts_file),
                text("Your name is Gus."))
        openai_client = OpenAI(api_key="scripted", base_url=srv.base_url)

        skills = client.learning_spaces.list_skills(space.id)
        skill_ids = [s.id for s in skills]
        ctx = SKILL_TOOLS.format_context(client, skill_ids)
        tools = SKILL_TOOLS.to_openai_tool_schema()
        messages = [
            {"role": "system", "content": "You have access to skills from past sessions."
                                          f"\n\n{ctx.get_context_prompt()}"},
            {"role": "user", "content": "Do you know my name?"},
        ]
        results = []
        while True:
            response = openai_client.chat.completions.create(
                model="gpt-4.1", messages=messages, tools=tools)
            message = response.choices[0].message
            messages.append(message)
            if not message.tool_calls:
                break
            for tc in message.tool_calls:
                result = SKILL_TOOLS.execute_tool(ctx, tc.function.name,
                                                  json.loads(tc.function.arguments))
                results.append(result)
                messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})
        assert message.content == "Your name is Gus."
        first = srv.requests[0]
        assert {t["function"]["name"] for t in first["tools"]} == {"get_skill",
                                                                   "get_skill_file"}
        prompt = first["messages"][0]["content"]
        assert "<available_skills>" in prompt and "<name>user-general-facts</name>" in prompt
        assert "Skill: user-general-facts" in results[0] and "SKILL.md" in results[0]
        assert f"File '{facts_file}'" in results[1] and "Gus" in results[1]
        # the model saw the tool answers
        assert "Gus" in json.dumps(srv.requests[-1]["messages"])


# ---------------------------------------------------------------------------------------
# seed 001: every call of the learning-spaces guide, and what the mount shows

def test_learning_spaces_guide(api, client, tmp_path):
    user = f"alice-{uuid.uuid4().hex[:6]}@example.com"
    space = client.learning_spaces.create(user=user, meta={"domain": "deployments"})
    assert space.meta == {"domain": "deployments"} and space.user_id
    defaults = client.learning_spaces.list_skills(space.id)
    assert sorted(s.name for s in defaults) == ["daily-logs", "user-general-facts"]
    space_dir = api.mnt / folder(space.id)
    assert sorted(p.name for p in space_dir.iterdir()) == ["daily-logs", "user-general-facts"]

    # -- a session learns into one space only
    session = client.sessions.create(user=user)
    result = client.learning_spaces.learn(space.id, session_id=session.id)
    assert result.status == "pending"
    other = client.learning_spaces.create()
    expect(409, client.learning_spaces.learn, other.id, session_id=session.id)
    expect(409, client.learning_spaces.learn, space.id, session_id=session.id)
    expect(404, client.learning_spaces.learn, space.id, session_id=str(uuid.uuid4()))

    # -- messages in the three forms; the assistant's is the openai SDK's pydantic object
    from openai import OpenAI
    with LLMServer() as srv:
        srv.add(text("Deployed API v2 to staging with a blue-green switch."))
        llm = OpenAI(api_key="scripted", base_url=srv.base_url)
        messages = [{"role": "user", "content": "Deploy API v2 to staging"}]
        response = llm.chat.completions.create(model="gpt-4o", messages=messages)
    client.sessions.store_message(session.id, blob=messages[0])
    stored = client.sessions.store_message(session.id, blob=response.choices[0].message)
    assert stored.role == "assistant" and stored.parts[0].text.startswith("Deployed")
    a = client.sessions.store_message(session.id, format="anthropic", blob={
        "role": "user", "content": [{"type": "text", "text": "Thanks, that worked"}]})
    from acontext.messages import build_acontext_message
    c = client.sessions.store_message(session.id, format="acontext", meta={"k": "v"},
                                      blob=build_acontext_message(role="assistant",
                                                                  parts=["Glad to help."]))
    assert (a.role, c.role, c.meta) == ("user", "assistant", {"k": "v"})
    expect(400, client.sessions.store_message, session.id, blob={"role": "user"})
    got = client.sessions.get_messages(session.id)
    assert [m["role"] for m in got.items] == ["user", "assistant", "user", "assistant"]
    assert got.items[0] == messages[0] and len(got.ids) == 4 and not got.has_more
    assert got.items[3] == {"role": "assistant", "content": "Glad to help."}
    as_ac = client.sessions.get_messages(session.id, format="acontext")
    assert [p["text"] for m in as_ac.items for p in m["parts"]][2:] == [
        "Thanks, that worked", "Glad to help."]
    as_an = client.sessions.get_messages(session.id, format="anthropic")
    assert as_an.items[2]["content"] == [{"type": "text", "text": "Thanks, that worked"}]
    page = client.sessions.get_messages(session.id, limit=3)
    rest = client.sessions.get_messages(session.id, limit=3, cursor=page.next_cursor)
    assert page.has_more and page.ids + rest.ids == got.ids
    assert client.sessions.flush(session.id).status == 0

    # -- learning happens; progress through list_sessions / get_session
    sessions = client.learning_spaces.list_sessions(space.id)
    assert [s.session_id for s in sessions] == [session.id]
    assert sessions[0].status in ("pending", "distilling", "queued", "skill_writing",
                                  "completed")
    done = client.learning_spaces.wait_for_learning(space.id, session_id=session.id,
                                                    timeout=60, poll_interval=0.2)
    assert done.status == "completed"
    assert client.learning_spaces.get_session(space.id, session_id=session.id).status == \
        "completed"
    expect(404, client.learning_spaces.get_session, other.id, session_id=session.id)
    logs = [p for p in (space_dir / "daily-logs").iterdir() if p.name != "SKILL.md"]
    assert any("Deploy API v2 to staging" in p.read_text() for p in logs)

    # -- inspect what was learned
    for skill in client.learning_spaces.list_skills(space.id):
        content = client.skills.get_file(skill_id=skill.id, file_path="SKILL.md")
        assert content.content.raw.encode() == (space_dir / skill.name / "SKILL.md").read_bytes()
        assert f"name: {skill.name}" in content.content.raw and skill.description

    # -- your own skill: upload a ZIP, include it, exclude it (twice)
    name = f"deploy-runbook-{uuid.uuid4().hex[:6]}"
    skill_md = f"---\nname: {name}\ndescription: How we deploy.\n---\n# Rules\n".encode()
    skill = client.skills.create(file=acontext.FileUpload(filename="runbook.zip", content=zip_of({
        "runbook/SKILL.md": skill_md,
        "runbook/services/api.md": b"# api\n- blue-green\n",
        "runbook/.DS_Store": b"\0junk",
        "runbook/._SKILL.md": b"\0junk",
        "__MACOSX/runbook/._SKILL.md": b"\0junk",
    }), content_type="application/zip"))
    assert skill.name == name and skill.description == "How we deploy."
    assert sorted(f.path for f in skill.file_index) == ["SKILL.md", "services/api.md"]
    assert not (space_dir / name).exists()  # a new skill is in no space yet
    inc = client.learning_spaces.include_skill(space.id, skill_id=skill.id)
    assert (inc.learning_space_id, inc.skill_id) == (space.id, skill.id)
    expect(409, client.learning_spaces.include_skill, space.id, skill_id=skill.id)
    assert (space_dir / name / "services" / "api.md").read_bytes() == b"# api\n- blue-green\n"
    assert (space_dir / name / "SKILL.md").read_bytes() == skill_md
    skills = client.learning_spaces.list_skills(space.id)
    assert skill.id in {s.id for s in skills}
    client.learning_spaces.exclude_skill(space.id, skill_id=skill.id)
    client.learning_spaces.exclude_skill(space.id, skill_id=skill.id)  # idempotent
    client.learning_spaces.exclude_skill(space.id, skill_id=str(uuid.uuid4()))
    assert skill.id not in {s.id for s in client.learning_spaces.list_skills(space.id)}
    assert not (space_dir / name).exists()
    assert client.skills.get(skill.id).name == name  # excluded, not deleted
    expect(400, client.skills.create, file=("bad.zip", zip_of({"README.md": b"no skill"})))
    expect(400, client.skills.create, file=("bad.zip", b"not a zip at all"))
    expect(404, client.skills.get_file, skill_id=skill.id, file_path="missing.md")
    expect(400, client.skills.get_file, skill_id=skill.id, file_path="../SKILL.md")
    client.learning_spaces.include_skill(other.id, skill_id=skill.id)
    assert (api.mnt / folder(other.id) / name).is_dir()
    client.skills.delete(skill.id)
    expect(404, client.skills.get, skill.id)
    assert not (api.mnt / folder(other.id) / name).exists()

    # -- list, filter by user and meta, paginate, update, delete
    spaces = client.learning_spaces.list(limit=10)
    assert 0 < len(spaces.items) <= 10
    spaces = client.learning_spaces.list(user=user)
    assert [s.id for s in spaces.items] == [space.id]
    spaces = client.learning_spaces.list(filter_by_meta={"domain": "deployments"})
    assert space.id in {s.id for s in spaces.items} and other.id not in {
        s.id for s in spaces.items}
    assert all(s.meta["domain"] == "deployments" for s in spaces.items)
    expect(400, client.learning_spaces.list, limit=500)

    mark = uuid.uuid4().hex
    marked = [client.learning_spaces.create(user=mark, meta={"batch": mark, "i": i})
              for i in range(3)]
    spaces = client.learning_spaces.list(user=mark, limit=2)
    assert spaces.has_more and len(spaces.items) == 2
    if spaces.has_more:  # as in the guide: the next page without the filter
        next_page = client.learning_spaces.list(cursor=spaces.next_cursor)
        assert marked[2].id in {s.id for s in next_page.items}
        assert not {s.id for s in spaces.items} & {s.id for s in next_page.items}
    p2 = client.learning_spaces.list(filter_by_meta={"batch": mark}, limit=2,
                                     cursor=spaces.next_cursor)
    assert [s.id for s in spaces.items + p2.items] == [s.id for s in marked]
    assert not p2.has_more and p2.next_cursor is None
    newest = client.learning_spaces.list(user=mark, time_desc=True)
    assert [s.id for s in newest.items] == [s.id for s in reversed(marked)]

    updated = client.learning_spaces.update(space.id, meta={"version": "2.0"})
    assert updated.meta == {"domain": "deployments", "version": "2.0"}
    assert client.learning_spaces.get(space.id).meta == updated.meta

    kept = [s.id for s in client.learning_spaces.list_skills(space.id)]
    client.learning_spaces.delete(space.id)
    expect(404, client.learning_spaces.get, space.id)
    expect(404, client.learning_spaces.delete, space.id)
    assert not space_dir.exists()
    assert all(client.skills.get(sid).id == sid for sid in kept)  # skills stay
    assert client.sessions.get_configs(session.id).id == session.id  # sessions stay
    # freed by the delete, the session may learn into another space
    assert client.learning_spaces.learn(other.id, session_id=session.id).status in (
        "pending", "completed")

    # -- sessions: configs, list, delete
    s2 = client.sessions.create(user=user, configs={"agent": "bot", "run": mark})
    assert s2.configs == {"agent": "bot", "run": mark} and s2.project_id
    client.sessions.update_configs(s2.id, configs={"agent": "bot2"})
    assert client.sessions.get_configs(s2.id).configs == {"agent": "bot2"}
    assert client.sessions.patch_configs(s2.id, configs={"x": 1, "agent": None}) == {"x": 1}
    listed = client.sessions.list(user=user)
    assert [s.id for s in listed.items] == [session.id, s2.id]
    assert [s.id for s in client.sessions.list(filter_by_configs={"x": 1}).items] == [s2.id]
    client.sessions.delete(s2.id)
    expect(404, client.sessions.get_configs, s2.id)
    expect(404, client.sessions.delete, s2.id)
    expect(409, client.sessions.create, use_uuid=session.id)

    # -- users and project, in their smallest form
    assert user in {u.identifier for u in client.users.list().items}
    assert client.users.get_resources(user).counts.sessions_count == 1
    assert client.project.get_configs() is not None
    client.users.delete(mark)  # takes the user's spaces with it
    assert all(expect(404, client.learning_spaces.get, s.id) for s in marked)
    expect(404, client.users.delete, mark)
    client.learning_spaces.delete(other.id)


def test_meta_name_names_the_folder(api, client):
    name = f"team-{uuid.uuid4().hex[:6]}"
    space = client.learning_spaces.create(meta={"name": name})
    assert (api.mnt / name / "daily-logs" / "SKILL.md").is_file()
    # the same name again: the folder falls back to the id rule
    twin = client.learning_spaces.create(meta={"name": name})
    assert (api.mnt / folder(twin.id)).is_dir()
    # meta updates do not rename the folder
    client.learning_spaces.update(space.id, meta={"name": "renamed"})
    assert (api.mnt / name).is_dir() and not (api.mnt / "renamed").exists()


def test_space_folder_is_named_from_the_id_at_once(api, client):
    """A space created without a meta name appears under its id-derived folder only: no
    other name is ever listed in the mount, not even for a moment."""
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(os.listdir(api.mnt))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        spaces = [client.learning_spaces.create() for _ in range(10)]
    finally:
        done.set()
        watcher.join()
    assert all((api.mnt / folder(s.id)).is_dir() for s in spaces)
    assert not {n for n in seen if n.startswith("space-new-")}


def test_sessions_use_uuid(api, client):
    wanted = str(uuid.uuid4())
    session = client.sessions.create(use_uuid=wanted, user="dora", configs={"a": 1})
    assert session.id == wanted and session.configs == {"a": 1}
    assert client.sessions.get_configs(wanted).id == wanted
    expect(409, client.sessions.create, use_uuid=wanted)
    expect(409, client.sessions.create, use_uuid=wanted.upper())  # the same UUID
    expect(400, client.sessions.create, use_uuid="not-a-uuid")
    other = str(uuid.uuid4())
    assert client.sessions.create(use_uuid=other.upper()).id == other
    # a session with a chosen id is like any other: it learns and keeps messages
    space = client.learning_spaces.create()
    assert client.learning_spaces.learn(space.id, session_id=wanted).session_id == wanted
    client.sessions.store_message(wanted, blob={"role": "user", "content": "hi"})
    assert [m["content"] for m in client.sessions.get_messages(wanted).items] == ["hi"]
    client.sessions.delete(wanted)
    # deleted, the id is free again
    assert client.sessions.create(use_uuid=wanted).id == wanted


def test_session_configs_replace_and_merge(api, client):
    session = client.sessions.create(configs={"agent": "bot", "mode": "fast", "n": 1})
    # PUT replaces: keys not given are gone
    client.sessions.update_configs(session.id, configs={"agent": "bot2", "deep": {"k": [1]}})
    assert client.sessions.get_configs(session.id).configs == {"agent": "bot2",
                                                               "deep": {"k": [1]}}
    # PATCH merges; a null removes the key (and removing a missing key is no error)
    assert client.sessions.patch_configs(
        session.id, configs={"deep": None, "gone": None, "x": 2}) == {"agent": "bot2", "x": 2}
    assert client.sessions.get_configs(session.id).configs == {"agent": "bot2", "x": 2}
    assert client.sessions.patch_configs(session.id, configs={}) == {"agent": "bot2", "x": 2}
    # a removed key is not there for the config filter either
    mark = uuid.uuid4().hex
    client.sessions.patch_configs(session.id, configs={"mark": mark})
    assert [s.id for s in client.sessions.list(filter_by_configs={"mark": mark}).items] == [
        session.id]
    client.sessions.patch_configs(session.id, configs={"mark": None})
    assert client.sessions.list(filter_by_configs={"mark": mark}).items == []
    # PUT with an empty object clears everything
    client.sessions.update_configs(session.id, configs={})
    assert client.sessions.get_configs(session.id).configs == {}
    expect(404, client.sessions.update_configs, str(uuid.uuid4()), configs={"a": 1})
    expect(404, client.sessions.patch_configs, str(uuid.uuid4()), configs={"a": 1})


def test_message_meta_round_trip(api, client):
    session = client.sessions.create()
    m1 = {"source": "web", "n": 1, "nested": {"tags": ["a", "b"]}, "text": "caf\u00e9"}
    a = client.sessions.store_message(session.id, blob={"role": "user", "content": "hi"},
                                      meta=m1)
    assert a.meta == m1
    b = client.sessions.store_message(session.id,
                                      blob={"role": "assistant", "content": "hello"})
    assert b.meta == {}
    # one stored message that is several OpenAI messages (a tool result and a text)
    c = client.sessions.store_message(session.id, format="anthropic", meta={"m": 3}, blob={
        "role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
            {"type": "text", "text": "and then?"}]})
    assert c.meta == {"m": 3}
    got = client.sessions.get_messages(session.id)
    assert len(got.items) == len(got.ids) == len(got.metas) == 4
    assert got.metas == [m1, {}, {"m": 3}, {"m": 3}]
    assert got.ids[2] == got.ids[3] == c.id
    as_ac = client.sessions.get_messages(session.id, format="acontext")
    assert [m["meta"] for m in as_ac.items] == as_ac.metas == [m1, {}, {"m": 3}]
    as_an = client.sessions.get_messages(session.id, format="anthropic")
    assert as_an.metas == [m1, {}, {"m": 3}]
    newest = client.sessions.get_messages(session.id, format="acontext", limit=1,
                                          time_desc=True)
    assert newest.metas == [{"m": 3}] and newest.items[0]["meta"] == {"m": 3}
    # bad meta is refused, and nothing is stored
    r = api.api("POST", f"/api/v1/session/{session.id}/messages",
                json={"blob": {"role": "user", "content": "x"}, "meta": [1]})
    assert r.status_code == 400
    assert len(client.sessions.get_messages(session.id, format="acontext").items) == 3


def test_skill_meta_and_user(api, client):
    user = f"carol-{uuid.uuid4().hex[:6]}"
    meta = {"team": "infra", "tags": ["deploy"], "level": 2}
    name = f"owned-{uuid.uuid4().hex[:6]}"
    skill = client.skills.create(file=acontext.FileUpload(filename="s.zip", content=zip_of({
        "SKILL.md": f"---\nname: {name}\ndescription: Owned.\n---\n".encode()})),
        user=user, meta=meta)
    space = client.learning_spaces.create(user=user)
    assert skill.meta == meta and skill.user_id == space.user_id is not None
    got = client.skills.get(skill.id)
    assert (got.meta, got.user_id) == (meta, skill.user_id)
    client.learning_spaces.include_skill(space.id, skill_id=skill.id)
    listed = {s.id: s for s in client.learning_spaces.list_skills(space.id)}
    assert listed[skill.id].meta == meta and listed[skill.id].user_id == skill.user_id
    # the default skills have neither
    assert all(s.meta is None and s.user_id is None
               for s in listed.values() if s.id != skill.id)
    # a user filter finds the user's skills only
    assert [s.name for s in client.skills.list_catalog(user=user).items] == [name]
    assert client.skills.list_catalog(user=f"nobody-{uuid.uuid4().hex}").items == []
    assert user in {u.identifier for u in client.users.list().items}
    assert client.users.get_resources(user).counts.skills_count == 1
    # without user or meta
    plain = client.skills.create(file=acontext.FileUpload(filename="p.zip", content=zip_of({
        "SKILL.md": f"---\nname: plain-{uuid.uuid4().hex[:6]}\ndescription: P.\n---\n"
                    .encode()})))
    assert plain.meta is None and plain.user_id is None
    r = api.api("POST", "/api/v1/agent_skills", data={"meta": "[1]"},
                files={"file": ("s.zip", zip_of(
                    {"SKILL.md": b"---\nname: m\ndescription: M.\n---\n"}))})
    assert r.status_code == 400
    # deleting the user deletes the user's own skills (and spaces, and sessions)
    client.users.delete(user)
    expect(404, client.skills.get, skill.id)
    expect(404, client.learning_spaces.get, space.id)
    assert client.skills.get(plain.id).id == plain.id
    expect(404, client.users.delete, user)


def test_concurrent_learns_one_wins(api):
    """Two learn requests for one session at the same time: exactly one 201, one 409,
    whether they name the same space or two spaces."""
    with acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) as setup:
        a, b = setup.learning_spaces.create(), setup.learning_spaces.create()
        rounds = [(a.id, a.id)] * 8 + [(a.id, b.id)] * 4
        sessions = [setup.sessions.create().id for _ in rounds]
    clients = [acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) for _ in range(2)]
    try:
        for c in clients:  # connections open before the race
            c.ping()
        for (first, second), session_id in zip(rounds, sessions, strict=True):
            barrier = threading.Barrier(2)

            def attempt(c, space_id, barrier=barrier, session_id=session_id):
                barrier.wait()
                try:
                    c.learning_spaces.learn(space_id, session_id=session_id)
                    return 201, space_id
                except acontext.errors.APIError as e:
                    return e.status_code, space_id

            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(attempt, clients, (first, second)))
            assert sorted(status for status, _ in results) == [201, 409], results
            winner = next(space_id for status, space_id in results if status == 201)
            with acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) as check:
                assert check.learning_spaces.get_session(winner, session_id=session_id
                                                         ).session_id == session_id
                where = [s for s in {a.id, b.id}
                         if session_id in {r.session_id
                                           for r in check.learning_spaces.list_sessions(s)}]
                assert where == [winner]
    finally:
        for c in clients:
            c.close()


def test_store_features_behind_the_api(tmp_path):
    """The store calls the API relies on, on a store of its own (no daemon)."""
    import duckdb
    import trio

    from skillfs.errors import Conflict, Exists, Invalid
    from skillfs.messages import normalize
    from skillfs.store import Store

    db = str(tmp_path / "t.duckdb")

    async def main(store: Store) -> dict:
        ids: dict = {}
        sid = str(uuid.uuid4())
        space = await store.create_space("space-" + sid[:8], space_id=sid)
        assert space.id == sid and store.tree.space_names["space-" + sid[:8]].id == space.id
        with pytest.raises(Exists):
            await store.create_space("another", space_id=sid)
        with pytest.raises(Exists):
            await store.create_space("space-" + sid[:8], space_id=str(uuid.uuid4()))
        with pytest.raises(Invalid):
            await store.create_space("bad-id", space_id="not-a-uuid")
        assert "another" not in store.tree.space_names

        chosen = str(uuid.uuid4())
        row = await store.create_session(session_id=chosen, configs={"a": 1, "b": 2})
        assert row.id == chosen
        with pytest.raises(Exists):
            await store.create_session(session_id=chosen)
        with pytest.raises(Invalid):
            await store.create_session(session_id="nope")
        row = await store.update_session_configs(chosen, {"b": None, "c": 3})
        assert row.configs == {"a": 1, "c": 3}
        row = await store.update_session_configs(chosen, {"z": None, "y": [1]}, replace=True)
        assert row.configs == {"z": None, "y": [1]}  # replace keeps what it is given
        row = await store.update_session_configs(chosen, {"z": None})
        assert (await store.get_session(chosen)).configs == row.configs == {"y": [1]}
        ids["session"] = chosen

        seqs = await store.add_messages(chosen, [normalize({"role": "user", "content": "a"}),
                                                 normalize({"role": "user", "content": "b"})],
                                        metas=[{"k": "v"}, None])
        assert seqs == [0, 1]
        with pytest.raises(Invalid):
            await store.add_messages(chosen, [normalize({"role": "user", "content": "c"})],
                                     metas=[])

        skill = await store.create_skill("---\nname: owned\ndescription: O.\n---\n",
                                         meta={"team": "x"}, user="carol")
        assert (skill.meta, skill.user) == ({"team": "x"}, "carol")
        ids["skill"] = skill.id

        # strict attach: once only, even into the same space
        other = await store.create_space("other")
        await store.attach_session(chosen, sid, strict=True)
        with pytest.raises(Conflict, match="this space"):
            await store.attach_session(chosen, sid, strict=True)
        with pytest.raises(Conflict, match="another space"):
            await store.attach_session(chosen, other.id, strict=True)
        assert (await store.attach_session(chosen, sid)).space_id == sid  # lenient: same
        s2 = (await store.create_session()).id
        results = []

        async def try_attach(space_id):
            try:
                await store.attach_session(s2, space_id, strict=True)
                results.append("ok")
            except Conflict:
                results.append("conflict")
        async with trio.open_nursery() as n:
            for space_id in (sid, sid, other.id):
                n.start_soon(try_attach, space_id)
        assert sorted(results) == ["conflict", "conflict", "ok"]
        return ids

    store = Store(db)
    try:
        ids = trio.run(main, store)
    finally:
        store.close()

    # what was stored is there after a restart, and nulls were never stored
    store = Store(db)
    try:
        async def reread():
            return await store.get_messages(ids["session"])
        stored = trio.run(reread)
        assert [m.meta for m in stored] == [{"k": "v"}, {}]
        skill = store.tree.skills[ids["skill"]]
        assert (skill.meta, skill.user) == ({"team": "x"}, "carol")
    finally:
        store.close()
    con = duckdb.connect(db, read_only=True)
    try:
        configs = con.execute("SELECT configs FROM sessions WHERE id = ?",
                              [ids["session"]]).fetchone()[0]
        assert json.loads(configs) == {"y": [1]}
    finally:
        con.close()


def test_mount_changes_are_seen_by_the_api(api, client, tmp_path):
    os.mkdir(api.mnt / "by-hand")
    # LearningSpace has no name; skillfs adds the folder name, which the SDK's model drops
    raw = httpx.get(f"{api.base_url}/learning_spaces?limit=200",
                    headers={"Authorization": f"Bearer {TOKEN}"}).json()["data"]["items"]
    space = client.learning_spaces.get(next(s["id"] for s in raw if s["name"] == "by-hand"))
    logs = api.mnt / "by-hand" / "daily-logs"
    (logs / "notes").mkdir()
    (logs / "notes" / "today.md").write_bytes(b"\xef\xbb\xbf# BOM kept\r\nCRLF kept\r\n")
    (logs / "logo.bin").write_bytes(BINARY)
    skill = next(s for s in client.learning_spaces.list_skills(space.id)
                 if s.name == "daily-logs")
    index = {f.path: f.mime for f in skill.file_index}
    assert index["notes/today.md"] == "text/markdown" and "logo.bin" in index
    got = client.skills.get_file(skill_id=skill.id, file_path="notes/today.md")
    assert got.content.raw == "\ufeff# BOM kept\r\nCRLF kept\r\n"
    # a binary file comes as a signed URL the SDK fetches without a token
    binary = client.skills.get_file(skill_id=skill.id, file_path="logo.bin", expire=60)
    assert binary.content is None and binary.url.startswith("http://127.0.0.1:")
    assert httpx.get(binary.url).content == BINARY
    forged = binary.url.replace("sig=", "sig=0")
    assert httpx.get(forged).status_code == 403
    client.skills.download(skill_id=skill.id, path=str(tmp_path / "dl"))
    assert mount_files(tmp_path / "dl") == mount_files(logs)
    # a later edit through the mount is what the API reads next
    (logs / "notes" / "today.md").write_text("# edited\n")
    assert client.skills.get_file(skill_id=skill.id, file_path="notes/today.md"
                                  ).content.raw == "# edited\n"


def test_tokens_and_error_bodies(api):
    with acontext.AcontextClient(api_key="wrong", base_url=api.base_url) as bad:
        e = expect(401, bad.learning_spaces.list)
        assert e.message == "unauthorized"
    r = httpx.get(f"{api.base_url}/learning_spaces")
    assert r.status_code == 401 and r.json()["code"] == 401
    r = httpx.get(f"{api.base_url}/learning_spaces",
                  headers={"Authorization": "Bearer " + TOKEN + "x"})
    assert r.status_code == 401
    # the control API keeps its own error body, on TCP and on the socket
    r = httpx.get(api.base_url.replace("/api/v1", "/skillfs/v1/status"))
    assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}
    r = api.api("DELETE", "/skillfs/v1/spaces/no-such-space")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    # and /api/v1 errors are Acontext's envelope
    r = api.api("GET", f"/api/v1/learning_spaces/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json() == {"code": 404, "msg": "learning space not found"}
    r = api.api("GET", "/api/v1/learning_spaces/not-a-uuid")
    assert r.status_code == 400 and r.json()["msg"] == "parameter error"
    r = api.api("GET", "/api/v1/no/such/route")
    assert r.status_code == 404 and r.json()["code"] == 404


def test_unix_socket_without_tcp(daemon, tmp_path):
    """The SDK over the daemon's socket (any api_key): binary files come inline as base64
    there, since no URL could be fetched."""
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket), verify=False),
                        timeout=30, verify=False)
    with acontext.AcontextClient(api_key="local", base_url="http://skillfs/api/v1",
                                 client=http) as c:
        assert c.ping() == "pong"
        space = c.learning_spaces.create(user="bob", meta={"name": "bob"})
        skill = c.skills.create(file=acontext.FileUpload(filename="s.zip", content=zip_of({
            "SKILL.md": b"---\nname: pics\ndescription: Pictures.\n---\n",
            "logo.bin": BINARY})))
        c.learning_spaces.include_skill(space.id, skill_id=skill.id)
        assert (daemon.mnt / "bob" / "pics" / "logo.bin").read_bytes() == BINARY
        got = c.skills.get_file(skill_id=skill.id, file_path="logo.bin")
        assert got.url is None and got.content.type == "base64"
        assert base64.b64decode(got.content.raw) == BINARY
        session = c.sessions.create(user="bob")
        c.learning_spaces.learn(space.id, session_id=session.id)
        c.sessions.store_message(session.id, blob={"role": "user", "content": "hi"})
        # the learner is off here: the session stays pending, and says so
        assert c.learning_spaces.get_session(space.id, session_id=session.id).status == \
            "pending"
        assert [m["content"] for m in c.sessions.get_messages(session.id).items] == ["hi"]
        # the spool addresses an API session by its id
        daemon.write_spool(f"bob/{session.id}/001.jsonl",
                           json.dumps({"role": "assistant", "content": "hello"}) + "\n")
        wait_for(lambda: len(c.sessions.get_messages(session.id).items) == 2,
                 what="the spool file to reach the session")
        assert c.sessions.get_messages(session.id).items[1] == {"role": "assistant",
                                                                "content": "hello"}
    http.close()


# ---------------------------------------------------------------------------------------
# generated requests against the served schema: no 5xx

@pytest.mark.long
def test_schemathesis_finds_no_server_errors(tmp_path):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    d = tcp_daemon(tmp_path, "--learner", "off")
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        root = d.base_url.removesuffix("/api/v1")
        raw = httpx.get(f"{root}/openapi.json", headers=auth).json()
        schema = schemathesis.openapi.from_dict(raw).include(path_regex=r"^/api/v1/")
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) >= 25
        errors: list[str] = []
        statuses: list[int] = []
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=3, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode))
                def probe(case):
                    response = case.call(base_url=root, headers=auth, timeout=10)
                    statuses.append(response.status_code)
                    if response.status_code >= 500:
                        errors.append(f"{response.status_code} {case.method} {case.formatted_path}"
                                      f" {case.query} {str(case.body)[:200]}")
                try:
                    probe()
                except Unsatisfiable:
                    # nothing to get wrong (an operation without parameters or body)
                    assert mode == GenerationMode.NEGATIVE, op.label
        assert not errors, "\n".join(errors)
        # the run reached the handlers, not only the validation in front of them
        assert len(statuses) > 100 and sum(200 <= s < 300 for s in statuses) > 20, statuses
        print(sorted(collections.Counter(statuses).items()))
        wait_for(lambda: d.api("GET", "/skillfs/v1/status").status_code == 200,
                 what="the daemon to be alive after the run")
    finally:
        d.cleanup()
