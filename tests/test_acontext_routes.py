"""The rest of Acontext's API with the real `acontext` SDK against a real daemon: tasks and
the session summary, token counts, observing status, message meta, edit strategies on
get_messages, disks and artifacts of skills (read, search, write through the store and seen
in the mount), and /health. Bad input to each gets a 4xx that says why."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from conftest import lazy_import, wait_for
from test_acontext_sdk import TOKEN, expect, folder, tcp_daemon, zip_of

acontext = lazy_import("acontext")

# the module-scoped fixture is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("acontext_routes")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    d = tcp_daemon(tmp_path_factory.mktemp("acr"), "--learner", "rules")
    yield d
    d.cleanup()


@pytest.fixture
def client(api):
    with acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) as c:
        yield c


def learned_session(client, *texts: tuple[str, str]):
    """A session in a new space that said `texts` ((role, text) pairs), learned."""
    space = client.learning_spaces.create()
    session = client.sessions.create()
    client.learning_spaces.learn(space.id, session_id=session.id)
    for role, text in texts:
        client.sessions.store_message(session.id, blob={"role": role, "content": text})
    client.sessions.flush(session.id)
    done = client.learning_spaces.wait_for_learning(space.id, session_id=session.id,
                                                    timeout=60, poll_interval=0.2)
    assert done.status == "completed"
    return space, session


# ---------------------------------------------------------------------------------------
# tasks, token counts, observing status

def test_tasks_summary_and_observing_status(client):
    space, session = learned_session(
        client, ("user", "I prefer blue-green deploys. Please deploy API v2 to staging."),
        ("assistant", "Deployed API v2 to staging; the health checks pass."),
        ("user", "Now roll back the canary in production."),
        ("assistant", "Rolled back the canary; production is on v1 again."))
    tasks = client.sessions.get_tasks(session.id)
    assert [t.order for t in tasks.items] == [1, 2] and not tasks.has_more
    first, second = tasks.items
    assert "API v2 to staging" in first.data.task_description
    assert (first.status, second.status) == ("success", "success")
    assert first.session_id == session.id and not first.is_planning
    assert first.data.progresses and "health checks pass" in first.data.progresses[0]
    assert any("blue-green" in p for p in first.data.user_preferences)
    summary = client.sessions.get_session_summary(session.id)
    assert summary.startswith(f'<task id="1" description="{first.data.task_description}">')
    assert "<user_preference>\n1. " in summary and '<task id="2"' in summary

    # paging, newest first
    one = client.sessions.get_tasks(session.id, limit=1, time_desc=True)
    assert [t.id for t in one.items] == [second.id] and one.has_more
    rest = client.sessions.get_tasks(session.id, limit=1, time_desc=True,
                                     cursor=one.next_cursor)
    assert [t.id for t in rest.items] == [first.id] and not rest.has_more

    # everything said has been read by the learner
    status = client.sessions.messages_observing_status(session.id)
    assert (status.observed, status.in_process, status.pending) == (4, 0, 0)

    # a session that learns into no space is never read
    alone = client.sessions.create()
    client.sessions.store_message(alone.id, blob={"role": "user", "content": "hello"})
    status = client.sessions.messages_observing_status(alone.id)
    assert (status.observed, status.in_process, status.pending) == (0, 0, 1)
    assert client.sessions.get_tasks(alone.id).items == []
    assert client.sessions.get_session_summary(alone.id) == ""

    for call in (client.sessions.get_tasks, client.sessions.get_token_counts,
                 client.sessions.messages_observing_status):
        expect(404, call, str(uuid.uuid4()))
        expect(400, call, "not-a-uuid")
    expect(400, client.sessions.get_tasks, session.id, limit=0)
    expect(400, client.sessions.get_tasks, session.id, limit=201)
    expect(400, client.sessions.get_tasks, session.id, cursor="%%%")


def test_token_counts(client):
    session = client.sessions.create()
    assert client.sessions.get_token_counts(session.id).total_tokens == 0
    client.sessions.store_message(session.id, blob={"role": "user", "content": "x" * 400})
    one = client.sessions.get_token_counts(session.id).total_tokens
    assert one >= 90  # o200k or characters / 4: a long run of x is many tokens either way
    client.sessions.store_message(session.id, blob={
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "read_file", "arguments": '{"path": "/etc/hosts"}'}}]})
    two = client.sessions.get_token_counts(session.id).total_tokens
    assert two > one  # a tool call counts by its name and arguments
    # the same count as the messages handed out
    assert client.sessions.get_messages(session.id).this_time_tokens == two
    assert client.sessions.get_messages(session.id, format="anthropic").this_time_tokens == two


# ---------------------------------------------------------------------------------------
# message meta

def test_patch_message_meta(client):
    session = client.sessions.create()
    first = client.sessions.store_message(session.id, blob={"role": "user", "content": "a"},
                                          meta={"keep": 1, "drop": 2})
    second = client.sessions.store_message(session.id, blob={"role": "user", "content": "b"})
    got = client.sessions.patch_message_meta(session.id, first.id,
                                             meta={"drop": None, "new": {"x": [1]}})
    assert got == {"keep": 1, "new": {"x": [1]}}
    assert client.sessions.patch_message_meta(session.id, second.id, meta={"s": "é"}) == \
        {"s": "é"}
    page = client.sessions.get_messages(session.id)
    assert page.metas == [{"keep": 1, "new": {"x": [1]}}, {"s": "é"}]
    assert page.ids == [first.id, second.id]
    assert [m["content"] for m in page.items] == ["a", "b"]  # the messages stay as they were
    # removing every key leaves an empty meta
    assert client.sessions.patch_message_meta(session.id, second.id, meta={"s": None}) == {}

    expect(404, client.sessions.patch_message_meta, session.id, str(uuid.uuid4()), meta={})
    expect(404, client.sessions.patch_message_meta, str(uuid.uuid4()), first.id, meta={})
    # a message of another session is not this session's
    other = client.sessions.create()
    expect(404, client.sessions.patch_message_meta, other.id, first.id, meta={"a": 1})
    expect(400, client.sessions.patch_message_meta, session.id, "nope", meta={})
    expect(400, client.sessions.patch_message_meta, session.id, first.id,
           meta={"big": "x" * (65 << 10)})
    for body in ({}, {"meta": [1]}, {"meta": "x"}, {"meta": {"s": "\ud800"}}):
        raw = httpx.patch(f"{client.base_url}/session/{session.id}/messages/{first.id}/meta",
                          content=json.dumps(body), headers={
                              "Authorization": f"Bearer {TOKEN}",
                              "Content-Type": "application/json"})
        assert raw.status_code == 400 and raw.json()["code"] == 400, raw.text


# ---------------------------------------------------------------------------------------
# edit strategies

def _call(i: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [{
        "id": f"c{i}", "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)}}]}


def _result(i: int, text: str) -> dict:
    return {"role": "tool", "tool_call_id": f"c{i}", "content": text}


TOOL_SESSION = [
    {"role": "user", "content": "Find the deploy script and run it."},
    _call(1, "ls", {"path": "/srv/" + "a" * 200}), _result(1, "deploy.sh\nREADME.md\n" * 40),
    _call(2, "cat", {"path": "/srv/deploy.sh"}), _result(2, "#!/bin/sh\nmake deploy\n" * 40),
    _call(3, "sh", {"cmd": "./deploy.sh"}), _result(3, "deployed"),
    {"role": "assistant", "content": "Deployed with ./deploy.sh."},
]


@pytest.fixture(scope="module")
def tool_session(api):
    with acontext.AcontextClient(api_key=TOKEN, base_url=api.base_url) as c:
        session = c.sessions.create()
        for blob in TOOL_SESSION:
            c.sessions.store_message(session.id, blob=blob)
        return session.id


def strategy(kind: str, **params) -> list[dict]:
    return [{"type": kind, "params": params}]


def test_remove_tool_results_and_call_params(client, tool_session):
    plain = client.sessions.get_messages(tool_session)
    assert plain.items == TOOL_SESSION and plain.edit_at_message_id == plain.ids[-1]
    assert plain.events is None
    assert client.sessions.get_messages(tool_session, with_events=True).events == []
    # a page always reads oldest first; time_desc picks the newest page
    newest = client.sessions.get_messages(tool_session, limit=2, time_desc=True)
    assert newest.items == TOOL_SESSION[-2:] and newest.ids == plain.ids[-2:]

    got = client.sessions.get_messages(
        tool_session, edit_strategies=strategy("remove_tool_result",
                                                keep_recent_n_tool_results=1))
    assert [m["content"] for m in got.items if m["role"] == "tool"] == [
        "Done", "Done", "deployed"]
    # the rest is handed out exactly as stored, and fewer tokens than before
    assert [m for m in got.items if m["role"] != "tool"] == \
        [m for m in TOOL_SESSION if m["role"] != "tool"]
    assert got.ids == plain.ids and got.this_time_tokens < plain.this_time_tokens

    got = client.sessions.get_messages(tool_session, edit_strategies=strategy(
        "remove_tool_result", keep_recent_n_tool_results=0, keep_tools=["ls"],
        tool_result_placeholder=" (cleared) "))
    assert [m["content"] for m in got.items if m["role"] == "tool"] == [
        TOOL_SESSION[2]["content"], "(cleared)", "(cleared)"]
    # only results over 50 tokens
    got = client.sessions.get_messages(tool_session, edit_strategies=strategy(
        "remove_tool_result", keep_recent_n_tool_results=0, gt_token=50))
    assert [m["content"] for m in got.items if m["role"] == "tool"] == [
        "Done", "Done", "deployed"]

    got = client.sessions.get_messages(tool_session, edit_strategies=strategy(
        "remove_tool_call_params", keep_recent_n_tool_calls=1))
    calls = [m["tool_calls"][0] for m in got.items if m.get("tool_calls")]
    assert [c["function"]["arguments"] for c in calls] == [
        "{}", "{}", TOOL_SESSION[5]["tool_calls"][0]["function"]["arguments"]]
    assert [c["id"] for c in calls] == ["c1", "c2", "c3"]  # results still find their call

    # in Anthropic's form and Acontext's too
    an = client.sessions.get_messages(tool_session, format="anthropic",
                                      edit_strategies=strategy("remove_tool_result",
                                                               keep_recent_n_tool_results=2))
    results = [b for m in an.items for b in m["content"] if b["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["Done", TOOL_SESSION[4]["content"], "deployed"]
    ac = client.sessions.get_messages(tool_session, format="acontext",
                                      edit_strategies=strategy("remove_tool_call_params",
                                                               keep_recent_n_tool_calls=0))
    parts = [p for m in ac.items for p in m["parts"] if p["type"] == "tool-call"]
    assert [p["meta"]["arguments"] for p in parts] == ["{}"] * 3


def _paired(items: list[dict]) -> bool:
    """Every tool result follows its call, and every call has its result."""
    calls = [c["id"] for m in items for c in m.get("tool_calls") or []]
    results = [m["tool_call_id"] for m in items if m["role"] == "tool"]
    return calls == results


def test_token_limit_middle_out_and_pin(client, tool_session):
    plain = client.sessions.get_messages(tool_session)
    total = plain.this_time_tokens
    got = client.sessions.get_messages(tool_session, edit_strategies=strategy(
        "token_limit", limit_tokens=total // 3))
    assert got.this_time_tokens <= total // 3 and got.items
    assert got.items == TOOL_SESSION[-len(got.items):]  # the oldest went first
    assert _paired(got.items) and got.ids == plain.ids[-len(got.ids):]

    got = client.sessions.get_messages(tool_session, edit_strategies=strategy(
        "middle_out", token_reduce_to=total // 2))
    assert got.this_time_tokens <= total // 2 and _paired(got.items)
    assert got.items[0] == TOOL_SESSION[0] and got.items[-1] == TOOL_SESSION[-1]
    assert len(got.items) < len(TOOL_SESSION)

    # several strategies: tool results go before the token limit is counted
    both = [*strategy("token_limit", limit_tokens=total // 3),
            *strategy("remove_tool_result", keep_recent_n_tool_results=0)]
    got = client.sessions.get_messages(tool_session, edit_strategies=both)
    assert len(got.items) > 3 and _paired(got.items)

    # pinned at the 3rd message: only the first three are edited, the prefix stays stable
    pin = plain.ids[2]
    got = client.sessions.get_messages(
        tool_session, pin_editing_strategies_at_message=pin,
        edit_strategies=strategy("remove_tool_result", keep_recent_n_tool_results=0))
    assert got.edit_at_message_id == pin
    assert got.items[2]["content"] == "Done" and got.items[3:] == TOOL_SESSION[3:]
    # an unknown pin: the whole page is edited
    got = client.sessions.get_messages(
        tool_session, pin_editing_strategies_at_message=str(uuid.uuid4()),
        edit_strategies=strategy("remove_tool_result", keep_recent_n_tool_results=0))
    assert got.edit_at_message_id == plain.ids[-1]
    # strategies apply to the page asked for
    page = client.sessions.get_messages(tool_session, limit=3, edit_strategies=strategy(
        "remove_tool_result", keep_recent_n_tool_results=0))
    assert page.items == [TOOL_SESSION[0], TOOL_SESSION[1], {**TOOL_SESSION[2],
                                                             "content": "Done"}]
    assert page.has_more and page.edit_at_message_id == plain.ids[2]


def test_edit_strategies_refused_by_name(client, tool_session):
    e = expect(400, client.sessions.get_messages, tool_session,
               edit_strategies=[{"type": "summarize", "params": {}},
                                *strategy("token_limit", limit_tokens=10),
                                {"type": "drop_images", "params": {}}])
    assert "summarize" in e.message and "drop_images" in e.message
    assert "token_limit" not in e.message.split("(")[0]
    for bad in (strategy("token_limit"), strategy("token_limit", limit_tokens=0),
                strategy("token_limit", limit_tokens="10"),
                strategy("middle_out", token_reduce_to=1.5),
                strategy("remove_tool_result", keep_recent_n_tool_results=-1),
                strategy("remove_tool_result", keep_tools="ls"),
                strategy("remove_tool_result", typo=3),
                strategy("remove_tool_call_params", keep_recent_n_tool_calls=True)):
        e = expect(400, client.sessions.get_messages, tool_session, edit_strategies=bad)
        assert bad[0]["type"] in e.message, e.message
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for raw in ("not json", '{"type": "token_limit"}', "[1]", "[[]]"):
        r = httpx.get(f"{client.base_url}/session/{tool_session}/messages",
                      params={"edit_strategies": raw}, headers=headers)
        assert r.status_code == 400 and "edit_strategies" in r.json()["msg"], r.text
    for raw in ('[{"type": ["token_limit"]}]', '[{"params": {}}]',
                '[{"type": "token_limit", "params": {"limit_tokens": 1e400}}]',
                '[{"type": "token_limit", "params": [10]}]',
                '[{"type": "remove_tool_result", "params": {"keep_tools": [1]}}]'):
        r = httpx.get(f"{client.base_url}/session/{tool_session}/messages",
                      params={"edit_strategies": raw}, headers=headers)
        assert r.status_code == 400 and "edit strateg" in r.json()["msg"], r.text


# ---------------------------------------------------------------------------------------
# disks and artifacts of skills

BINARY = bytes(range(256))


@pytest.fixture
def runbook(api, client):
    """A skill with files in folders, included in a new space: (space folder, skill)."""
    name = f"runbook-{uuid.uuid4().hex[:6]}"
    skill = client.skills.create(file=acontext.FileUpload(filename="r.zip", content=zip_of({
        "SKILL.md": f"---\nname: {name}\ndescription: How we deploy.\n---\n# Rules\n".encode(),
        "services/api.md": b"# API\nblue-green deploys, TODO: canary\n",
        "services/db/pg.md": b"# Postgres\nnever deploy on Fridays\n",
        "notes.txt": b"todo: write the rollback steps\n",
        "logo.bin": BINARY,
    })))
    space = client.learning_spaces.create()
    client.learning_spaces.include_skill(space.id, skill_id=skill.id)
    return api.mnt / folder(space.id) / name, skill


def test_artifacts_read_a_skill(api, client, runbook):
    skill_dir, skill = runbook
    arts = client.disks.artifacts
    disks = client.disks.list(limit=200)
    assert skill.disk_id in {d.id for d in disks.items}

    root = arts.list(skill.disk_id)
    assert sorted(a.filename for a in root.artifacts) == ["SKILL.md", "logo.bin", "notes.txt"]
    assert root.directories == ["services"] and {a.path for a in root.artifacts} == {"/"}
    sub = arts.list(skill.disk_id, path="/services/")
    assert [(a.path, a.filename) for a in sub.artifacts] == [("/services/", "api.md")]
    assert sub.directories == ["db"]
    info = sub.artifacts[0].meta["__artifact_info__"]
    assert info == {"path": "/services/", "filename": "api.md", "mime": "text/markdown",
                    "size": len(b"# API\nblue-green deploys, TODO: canary\n")}
    assert arts.list(skill.disk_id, path="/nothing/").artifacts == []

    got = arts.get(skill.disk_id, file_path="/services/db/", filename="pg.md")
    assert got.artifact.filename == "pg.md" and got.artifact.path == "/services/db/"
    assert got.content.raw == (skill_dir / "services" / "db" / "pg.md").read_text()
    assert httpx.get(got.public_url).content == (skill_dir / "services/db/pg.md").read_bytes()
    got = arts.get(skill.disk_id, file_path="/", filename="logo.bin", with_public_url=False)
    assert got.content is None and got.public_url is None  # bytes, not text
    got = arts.get(skill.disk_id, file_path="/", filename="notes.txt", with_content=False)
    assert got.content is None and got.public_url
    r = httpx.get(f"{api.base_url}/disk/{skill.disk_id}/artifact/download",
                  params={"file_path": "/logo.bin"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.content == BINARY

    # a change through the mount is what the disk shows next
    (skill_dir / "notes.txt").write_text("rewritten in the mount\n")
    assert arts.get(skill.disk_id, file_path="/", filename="notes.txt").content.raw == \
        "rewritten in the mount\n"

    missing = str(uuid.uuid4())
    expect(404, arts.list, missing)
    expect(404, arts.get, missing, file_path="/", filename="SKILL.md")
    expect(404, arts.get, skill.disk_id, file_path="/", filename="nope.md")
    expect(400, arts.get, skill.disk_id, file_path="/../", filename="SKILL.md")
    expect(400, arts.list, skill.disk_id, path="/services")
    expect(400, arts.list, skill.disk_id, path="/../")
    expect(400, arts.list, "not-a-uuid")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{api.base_url}/disk/{skill.disk_id}/artifact"
    for route, params in (("", {"file_path": "/a\x00b"}), ("", {"file_path": ""}),
                          ("", {"file_path": "/" + "x" * 5000}), ("/download", {}),
                          ("/download", {"file_path": "/./SKILL.md"}),
                          ("/ls", {"path": "/\x00/"}), ("/ls", {"path": "/a//b/"}),
                          ("", {"file_path": "/SKILL.md", "expire": "0"})):
        r = httpx.get(base + route, params=params, headers=headers)
        assert r.status_code == 400 and r.json()["code"] == 400, (route, params, r.text)


def test_grep_and_glob_a_skill(api, client, runbook):
    skill_dir, skill = runbook
    arts = client.disks.artifacts

    def names(found):
        return [f"{a.path}{a.filename}" for a in found]

    # case-insensitive, as Acontext's; one artifact per file, in path order
    assert names(arts.grep_artifacts(skill.disk_id, query="todo")) == [
        "/notes.txt", "/services/api.md"]
    assert names(arts.grep_artifacts(skill.disk_id, query=r"deploy(s)?\b")) == [
        "/SKILL.md", "/services/api.md", "/services/db/pg.md"]
    assert names(arts.grep_artifacts(skill.disk_id, query="todo", limit=1)) == ["/notes.txt"]
    assert arts.grep_artifacts(skill.disk_id, query="no such words") == []
    assert names(arts.grep_artifacts(skill.disk_id, query="\\x00|\\xff")) == []  # binary
    # what the mount writes is what grep finds next
    (skill_dir / "services" / "db" / "pg.md").write_text("# Postgres\nvacuum nightly\n")
    assert names(arts.grep_artifacts(skill.disk_id, query="vacuum")) == [
        "/services/db/pg.md"]
    found = arts.grep_artifacts(skill.disk_id, query="vacuum")[0]
    assert found.meta["__artifact_info__"]["filename"] == "pg.md"

    assert names(arts.glob_artifacts(skill.disk_id, query="**/*.md")) == [
        "/SKILL.md", "/services/api.md", "/services/db/pg.md"]
    assert names(arts.glob_artifacts(skill.disk_id, query="*.md")) == [
        "/SKILL.md", "/services/api.md", "/services/db/pg.md"]
    assert names(arts.glob_artifacts(skill.disk_id, query="/services/*.md")) == [
        "/services/api.md"]
    assert names(arts.glob_artifacts(skill.disk_id, query="services/**")) == [
        "/services/api.md", "/services/db/pg.md"]
    assert names(arts.glob_artifacts(skill.disk_id, query="*.{txt,bin}")) == [
        "/logo.bin", "/notes.txt"]
    assert names(arts.glob_artifacts(skill.disk_id, query="*", limit=2)) == [
        "/SKILL.md", "/logo.bin"]

    # a skill in no space, and one in two spaces (found once)
    alone = client.skills.create(file=("a.zip", zip_of({
        "SKILL.md": b"---\nname: lonely-notes\ndescription: Alone.\n---\nfind me\n"})))
    assert names(arts.grep_artifacts(alone.disk_id, query="FIND ME")) == ["/SKILL.md"]
    assert names(arts.glob_artifacts(alone.disk_id, query="SKILL.md")) == ["/SKILL.md"]
    second = client.learning_spaces.create()
    client.learning_spaces.include_skill(second.id, skill_id=skill.id)
    assert names(arts.grep_artifacts(skill.disk_id, query="todo")) == [
        "/notes.txt", "/services/api.md"]

    # a grep past the engine's cap on matching lines says so
    arts.upsert(skill.disk_id, file=("many.txt", b"hit\n" * 10_001))
    r = httpx.get(f"{api.base_url}/disk/{skill.disk_id}/artifact/grep",
                  params={"query": "hit"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.headers["X-Skillfs-Search"] == "truncated"
    assert [a["filename"] for a in r.json()["data"]] == ["many.txt"]

    # bad patterns are refused with the engine's reason
    e = expect(400, arts.grep_artifacts, skill.disk_id, query="(a")
    assert "RE2" in e.message or "missing" in e.message, e.message
    expect(400, arts.grep_artifacts, skill.disk_id, query=r"(a)\1")
    expect(400, arts.grep_artifacts, skill.disk_id, query="x" * 5000)
    expect(400, arts.glob_artifacts, skill.disk_id, query="/")
    expect(400, arts.grep_artifacts, skill.disk_id, query="a", limit=1001)
    expect(404, arts.grep_artifacts, str(uuid.uuid4()), query="a")
    expect(404, arts.glob_artifacts, str(uuid.uuid4()), query="*")
    r = httpx.get(f"{api.base_url}/disk/{skill.disk_id}/artifact/grep",
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400  # no query


def test_disk_tools_on_a_skill(api, client, runbook):
    """The SDK's DISK_TOOLS, the tools Acontext's agents and plugins use on a disk, given a
    skill's disk id: every tool works, and what they write is in the mount."""
    from acontext.agent.disk import DISK_TOOLS
    skill_dir, skill = runbook
    ctx = DISK_TOOLS.format_context(client, skill.disk_id)

    def run(tool: str, **args) -> str:
        return DISK_TOOLS.execute_tool(ctx, tool, args)

    assert run("list_disk", file_path="/") == (
        "[Listing in /]\nDirectories:\nservices/\nFiles:\nSKILL.md\nlogo.bin\nnotes.txt")
    assert run("grep_disk", query="fridays") == (
        "Found 1 file(s) matching 'fridays':\n/services/db/pg.md")
    assert run("glob_disk", query="services/**/*.md").endswith(
        "\n/services/api.md\n/services/db/pg.md")
    assert run("read_file_disk", file_path="/services/", filename="api.md").startswith(
        "[/services/api.md - showing L0-3 of 3 lines]\n# API\n")
    assert run("replace_string_disk", file_path="services", filename="api.md",
               old_string="TODO: canary", new_string="canary done") == (
        "Found 1 old_string in /services/api.md and replaced it.")
    assert (skill_dir / "services" / "api.md").read_text() == \
        "# API\nblue-green deploys, canary done\n"
    assert run("write_file_disk", file_path="/checklists/", filename="release.md",
               content="- tag\n- deploy\n") == \
        "File 'release.md' written successfully to '/checklists/'"
    assert (skill_dir / "checklists" / "release.md").read_text() == "- tag\n- deploy\n"
    url = run("download_file_disk", file_path="/checklists/", filename="release.md",
              expire=60).splitlines()[-1]
    assert httpx.get(url).content == b"- tag\n- deploy\n"


def test_artifact_writes_go_through_the_store(api, client, runbook):
    skill_dir, skill = runbook
    arts = client.disks.artifacts
    made = arts.upsert(skill.disk_id, file=acontext.FileUpload(filename="rollback.md",
                                                      content=b"# Rollback\n1. revert\n"),
                       file_path="/services/")
    assert (made.path, made.filename) == ("/services/", "rollback.md")
    wait_for(lambda: (skill_dir / "services" / "rollback.md").exists(),
             what="the upload to appear in the mount")
    assert (skill_dir / "services" / "rollback.md").read_bytes() == b"# Rollback\n1. revert\n"
    arts.upsert(skill.disk_id, file=("notes.txt", b"replaced\n"))
    assert (skill_dir / "notes.txt").read_bytes() == b"replaced\n"
    # every write is a version, as through the mount, by its author
    log = api.api("GET", "/skillfs/v1/files/log",
                  params={"path": f"{skill_dir.parent.name}/{skill_dir.name}/notes.txt"})
    assert [v["author"] for v in log.json()][-1] == "api" and len(log.json()) == 2
    arts.delete(skill.disk_id, file_path="/services/", filename="rollback.md")
    assert not (skill_dir / "services" / "rollback.md").exists()
    assert "rollback.md" not in {f.path for f in client.skills.get(skill.id).file_index}

    # a SKILL.md that breaks the skill is refused, as through the mount
    expect(400, arts.upsert, skill.disk_id, file=("SKILL.md", b"no front matter\n"))
    expect(403, arts.delete, skill.disk_id, file_path="/", filename="SKILL.md")
    expect(400, arts.upsert, skill.disk_id, file=("x.md", b"x"), meta={"owner": "me"})
    expect(400, arts.upsert, skill.disk_id, file=("x.md", b"x"), file_path="/../")
    expect(404, arts.delete, skill.disk_id, file_path="/", filename="nope.md")
    expect(404, arts.upsert, str(uuid.uuid4()), file=("x.md", b"x"))


# ---------------------------------------------------------------------------------------
# health

def test_health_needs_no_token(api, daemon):
    r = httpx.get(api.base_url.removesuffix("/api/v1") + "/health")
    assert r.status_code == 200 and r.json() == {"code": 0, "msg": "ok"}
    r = httpx.get(api.base_url.removesuffix("/api/v1") + "/healthz")
    assert r.status_code == 401  # nothing else goes without a token
    assert daemon.api("GET", "/health").json() == {"code": 0, "msg": "ok"}

