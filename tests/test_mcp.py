"""The MCP server, driven by the `mcp` SDK's own client through a real daemon: over
streamable HTTP on the Unix socket and on TCP with bearer tokens, and over stdio
(`skillfs mcp` as a subprocess). Every tool, the space and read-only limits, bad input,
and writes seen at once through the mount."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from contextlib import asynccontextmanager
from urllib.parse import urlparse

import httpx
import pytest
import trio

from conftest import SKILLFS, Daemon, lazy_import
from test_api_tokens import free_port

httpx2 = lazy_import("httpx2")
mcp = lazy_import("mcp")

FULL, ALICE_RO, ALICE = "mcp-full-3b9e", "mcp-alice-ro-51c0", "mcp-alice-rw-d7a4"
READ_TOOLS = {"list_spaces", "list_skills", "get_skill", "read_file", "search", "glob"}
WRITE_TOOLS = {"write_file", "store_messages", "flush_session"}
# the daemon's first /mcp request waits for the SDK's import: seconds on a busy machine
TIMEOUT = 60.0


# the module-scoped daemon is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("mcp")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon for the module: spaces alice and bob, each with a file, on the Unix
    socket and on TCP with a full token, one bound to alice read-only and one bound to
    alice (a mixed list: plain strings and tables)."""
    root = tmp_path_factory.mktemp("mcp")
    port = free_port()
    d = Daemon(root, ["--listen", f"127.0.0.1:{port}", "--learner", "off"])
    d.home.mkdir(parents=True)
    (d.home / "config.toml").write_text(
        f'tokens = ["{FULL}", {{token = "{ALICE_RO}", spaces = ["alice"], read_only = true}},'
        f' {{token = "{ALICE}", spaces = ["alice"]}}]\n')
    d.start()
    d.port = port
    for name, text in (("alice", "apple pie: bake 40 minutes\n"),
                       ("bob", "bob's apple secret\n")):
        d.cli("space", "create", name)
        (d.mnt / name / "daily-logs" / "notes.md").write_text(text)
    yield d
    d.cleanup()


@asynccontextmanager
async def unix(d: Daemon, query: str = ""):
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(d.socket)),
                              timeout=TIMEOUT)
    async with http, mcp.Client(streamable_http_client(f"http://skillfs/mcp{query}",
                                                   http_client=http)) as client:
        yield client


@asynccontextmanager
async def tcp(d: Daemon, token: str, query: str = ""):
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    async with http, mcp.Client(streamable_http_client(f"http://127.0.0.1:{d.port}/mcp{query}",
                                                   http_client=http)) as client:
        yield client


def stdio(d: Daemon, *args: str) -> mcp.Client:
    return mcp.Client(mcp.StdioServerParameters(command=SKILLFS, args=["mcp", *args], env=d.env))


def session(connect, steps):
    """Run `steps(client)` in one MCP session; returns what it returns."""
    async def main():
        async with connect as client:
            return await steps(client)
    return trio.run(main)


async def ok(client, tool: str, **args) -> dict:
    r = await client.call_tool(tool, args)
    assert not r.is_error, f"{tool}: {r.content[0].text}"
    return r.structured_content


async def refused(client, tool: str, **args) -> str:
    r = await client.call_tool(tool, args)
    assert r.is_error, f"{tool} {args} was not refused: {r.structured_content}"
    return r.content[0].text


async def tool_names(client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def space_names(client) -> list[str]:
    return [s["name"] for s in (await ok(client, "list_spaces"))["spaces"]]


def test_every_tool_over_the_unix_socket(served):
    d = served

    async def steps(c):
        tools = (await c.list_tools()).tools
        assert {t.name for t in tools} == READ_TOOLS | WRITE_TOOLS
        for t in tools:
            assert len(t.description or "") > 20 and t.input_schema["type"] == "object"
            for name, prop in t.input_schema["properties"].items():
                assert prop.get("description"), (t.name, name)
        assert await space_names(c) == ["alice", "bob"]
        skills = await ok(c, "list_skills", space="alice")
        assert [s["name"] for s in skills["skills"]] == ["daily-logs", "user-general-facts"]
        skill = await ok(c, "get_skill", space="alice", skill="daily-logs")
        assert skill["skill_md"].startswith("---\nname: daily-logs")
        assert {"SKILL.md", "notes.md"} <= {f["path"] for f in skill["files"]}
        read = await ok(c, "read_file", space="alice", skill="daily-logs", path="notes.md")
        assert read["content"] == "apple pie: bake 40 minutes\n"

        # a write is a version, in the mount at once; expect_version guards a stale edit
        wrote = await ok(c, "write_file", space="alice", skill="daily-logs",
                         path="mcp/today.md", content="written over MCP\n")
        assert wrote["version"] == 1
        assert (d.mnt / "alice/daily-logs/mcp/today.md").read_text() == "written over MCP\n"
        again = await ok(c, "write_file", space="alice", skill="daily-logs",
                         path="mcp/today.md", content="second\n", expect_version=1)
        assert again["version"] == 2
        assert (d.mnt / "alice/daily-logs/mcp/today.md").read_text() == "second\n"
        assert "version" in await refused(c, "write_file", space="alice", skill="daily-logs",
                                          path="mcp/today.md", content="x", expect_version=1)
        made = await ok(c, "write_file", space="alice", skill="mcp-made", path="SKILL.md",
                        content="---\nname: mcp-made\ndescription: Made through MCP.\n---\n"
                                "# Rules\n")
        assert made["created_skill"] == "mcp-made"
        assert "Made through MCP" in (d.mnt / "alice/mcp-made/SKILL.md").read_text()

        found = await ok(c, "search", pattern="apple")
        assert [(m["file"], m["line"]) for m in found["matches"]] == [
            ("alice/daily-logs/notes.md", 1), ("bob/daily-logs/notes.md", 1)]
        assert found["truncated"] is False and found["timed_out"] is False
        found = await ok(c, "search", pattern="APPLE PIE", space="alice", ignore_case=True,
                         fixed=True, glob="daily-logs/*.md")
        assert [m["text"] for m in found["matches"]] == ["apple pie: bake 40 minutes"]
        globbed = await ok(c, "glob", pattern="daily-logs/**/*.md", space="alice")
        assert globbed["paths"] == ["alice/daily-logs/SKILL.md",
                                    "alice/daily-logs/mcp/today.md",
                                    "alice/daily-logs/notes.md"]

        stored = await ok(c, "store_messages", space="alice", session="chat-1", messages=[
            {"role": "user", "content": "remember that I like tea"},
            {"role": "assistant", "content": [{"type": "text", "text": "noted"}]}])
        assert stored["stored"] == 2
        more = await ok(c, "store_messages", space="alice", session=stored["session_id"],
                        messages=[{"role": "user", "content": "thanks"}])
        assert more["session_id"] == stored["session_id"]
        flushed = await ok(c, "flush_session", space="alice", session="chat-1")
        assert flushed == {"session_id": stored["session_id"], "flushed": True}
        return stored["session_id"]

    session_id = session(unix(d), steps)
    shown = d.api("GET", f"/skillfs/v1/sessions/{session_id}").json()
    assert shown["name"] == "chat-1"
    assert [m["text"] for m in shown["messages"]] == ["remember that I like tea", "noted",
                                                      "thanks"]


def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(served):
    d = served
    bad = [
        ("get_skill", {"skill": 5, "space": "alice"}, "valid string"),
        ("read_file", {"skill": "daily-logs", "space": "alice"}, "path"),
        ("read_file", {"skill": "nope", "path": "x.md", "space": "alice"}, "no skill"),
        ("read_file", {"skill": "daily-logs", "path": "missing.md", "space": "alice"},
         "missing.md"),
        ("read_file", {"skill": "daily-logs", "path": "../../bob/daily-logs/notes.md",
                       "space": "alice"}, ""),
        ("list_skills", {}, "name the space"),
        ("list_skills", {"space": "zzz"}, "no space"),
        ("search", {"pattern": "(a"}, "missing"),
        ("search", {"pattern": r"(a)\1"}, ""),
        ("search", {"pattern": "a", "max_results": 0}, "max_results"),
        ("write_file", {"skill": "daily-logs", "path": "SKILL.md", "content": "no front matter",
                        "space": "alice"}, ""),
        ("write_file", {"skill": "daily-logs", "path": "../escape.md", "content": "x",
                        "space": "alice"}, ""),
        ("write_file", {"skill": "daily-logs", "path": "big.md", "content": "x" * (1 << 20) + "x",
                        "space": "alice"}, "1048576"),
        ("store_messages", {"session": "s", "messages": [{"nonsense": 1}], "space": "alice"},
         "messages[0]"),
        ("store_messages", {"session": "s", "messages": [], "space": "alice"}, "messages"),
        ("flush_session", {"session": "never-made", "space": "alice"}, "no session"),
        ("store_messages", {"session": str(uuid.uuid4()), "space": "alice",
                            "messages": [{"role": "user", "content": "x"}]}, "not an id"),
    ]

    async def steps(c):
        for tool, args, says in bad:
            text = await refused(c, tool, **args)
            assert says in text, (tool, args, text)
        r = await c.call_tool("rm_rf", {})
        assert r.is_error
        return await space_names(c)

    assert session(unix(d), steps) == ["alice", "bob"]
    assert not (d.mnt / "alice/escape.md").exists()
    assert not (d.mnt / "alice/daily-logs/big.md").exists()
    with d.http() as http:
        garbage = http.post("/mcp", content=b"{not json", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        assert 400 <= garbage.status_code < 500
        for query in ("?read_only=maybe", "?bogus=1"):
            r = http.post(f"/mcp{query}", json={})
            assert r.status_code == 400 and r.json()["error"]
        assert http.get("/skillfs/v1/status").status_code == 200


def test_space_and_read_only_limits_on_the_unix_socket(served):
    d = served

    async def steps(c):
        assert await tool_names(c) == READ_TOOLS
        assert await space_names(c) == ["alice"]
        # one visible space: the tools need no space
        assert (await ok(c, "read_file", skill="daily-logs", path="notes.md"))["content"] \
            .startswith("apple pie")
        assert "no space 'bob'" in await refused(c, "list_skills", space="bob")
        bob_id = d.api("GET", "/skillfs/v1/spaces").json()[1]["id"]
        assert "no space" in await refused(c, "list_skills", space=bob_id)
        found = await ok(c, "search", pattern="apple")
        assert [m["file"] for m in found["matches"]] == ["alice/daily-logs/notes.md"]
        assert (await ok(c, "glob", pattern="*.md"))["paths"][0].startswith("alice/")
        assert "no skill" in await refused(c, "search", pattern="x", skill="nope")
        # the write tools are not offered, and calling one anyway is refused
        assert "read-only" in await refused(c, "write_file", skill="daily-logs",
                                            path="ro.md", content="x")
        assert "read-only" in await refused(c, "store_messages", session="s",
                                            messages=[{"role": "user", "content": "x"}])

    session(unix(d, "?space=alice&read_only=1"), steps)
    assert not (d.mnt / "alice/daily-logs/ro.md").exists()


def test_tcp_needs_a_token_and_each_token_keeps_its_scope(served):
    d = served
    r = httpx.post(f"http://127.0.0.1:{d.port}/mcp", json={})
    assert r.status_code == 401
    with pytest.raises(Exception):  # noqa: B017  (the SDK's error for a 401)
        session(tcp(d, "wrong-token"), space_names)

    async def full(c):
        assert await tool_names(c) == READ_TOOLS | WRITE_TOOLS
        assert await space_names(c) == ["alice", "bob"]
        await ok(c, "write_file", space="bob", skill="daily-logs", path="tcp.md",
                 content="over tcp\n")
        return (await ok(c, "store_messages", space="bob", session="bob-chat",
                         messages=[{"role": "user", "content": "bob's"}]))["session_id"]

    bobs_session = session(tcp(d, FULL), full)
    assert (d.mnt / "bob/daily-logs/tcp.md").read_text() == "over tcp\n"

    async def alice_read_only(c):
        assert await tool_names(c) == READ_TOOLS
        assert await space_names(c) == ["alice"]
        assert "read-only" in await refused(c, "write_file", skill="daily-logs",
                                            path="x.md", content="x")
        return [m["file"] for m in (await ok(c, "search", pattern="apple"))["matches"]]

    assert session(tcp(d, ALICE_RO), alice_read_only) == ["alice/daily-logs/notes.md"]
    # the query narrows a token, never widens it
    assert session(tcp(d, ALICE_RO, "?read_only=0&space=bob"), space_names) == []
    assert session(tcp(d, ALICE_RO, "?read_only=0"), tool_names) == READ_TOOLS

    async def alice(c):
        assert await tool_names(c) == READ_TOOLS | WRITE_TOOLS
        await ok(c, "write_file", skill="daily-logs", path="bound.md", content="mine\n")
        # bob's session and a session that does not exist get the same answer
        for ref in (bobs_session, str(uuid.uuid4())):
            text = await refused(c, "store_messages", session=ref,
                                 messages=[{"role": "user", "content": "x"}])
            assert text.endswith(f": no session '{ref}' in space 'alice'; name a new session "
                                 "with a name that is not an id")
            assert (await refused(c, "flush_session", session=ref)).endswith(
                f": no session '{ref}' in space 'alice'")
        return await refused(c, "write_file", space="bob", skill="daily-logs",
                             path="bound.md", content="not mine\n")

    assert "no space 'bob'" in session(tcp(d, ALICE), alice)
    assert (d.mnt / "alice/daily-logs/bound.md").read_text() == "mine\n"
    assert not (d.mnt / "bob/daily-logs/bound.md").exists()


def test_stdio_relays_to_the_daemon_with_its_limits(served):
    d = served

    async def limited(c):
        assert await tool_names(c) == READ_TOOLS
        assert await space_names(c) == ["alice"]
        read = await ok(c, "read_file", skill="daily-logs", path="notes.md")
        assert read["content"].startswith("apple pie")
        return await refused(c, "write_file", skill="daily-logs", path="x.md", content="x")

    assert "read-only" in session(stdio(d, "--space", "alice", "--read-only"), limited)

    async def full(c):
        assert await tool_names(c) == READ_TOOLS | WRITE_TOOLS
        await ok(c, "write_file", space="bob", skill="daily-logs", path="stdio.md",
                 content="over stdio\n")
        assert "no space" in await refused(c, "get_skill", space="carol", skill="daily-logs")
        return await ok(c, "glob", pattern="stdio.md")

    assert session(stdio(d), full)["paths"] == ["bob/daily-logs/stdio.md"]
    assert (d.mnt / "bob/daily-logs/stdio.md").read_text() == "over stdio\n"


def test_stdio_says_when_the_daemon_is_gone_and_works_again_after_a_restart(served):
    d = served

    async def steps(c):
        assert await space_names(c) == ["alice", "bob"]
        await trio.to_thread.run_sync(d.stop)
        gone = await refused(c, "list_spaces")
        await trio.to_thread.run_sync(d.start)
        return gone, await space_names(c)

    gone, after = session(stdio(d), steps)
    assert "did not answer" in gone and str(d.socket) in gone
    assert after == ["alice", "bob"]


def test_stdio_without_a_daemon_says_so(tmp_path):
    env = {**os.environ, "SKILLFS_SOCKET": str(tmp_path / "none.sock")}
    r = subprocess.run([SKILLFS, "mcp"], env=env, capture_output=True, text=True,
                       input="", timeout=60)
    assert r.returncode == 1 and "daemon is not running" in r.stderr
    assert r.stdout == ""


def test_the_readme_client_configuration_is_valid_json():
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        text = f.read()
    section = text[text.index("## MCP"):]
    blocks = [b.split("```", 1)[0] for b in section.split("```json\n")[1:3]]
    servers = [json.loads(b)["mcpServers"]["skillfs"] for b in blocks]
    assert servers[0]["command"] == "skillfs" and servers[0]["args"][0] == "mcp"
    assert urlparse(servers[1]["url"]).path == "/mcp"
    assert servers[1]["headers"]["Authorization"].startswith("Bearer ")


@pytest.mark.anyio
async def test_a_call_without_an_http_request_sees_nothing(store):
    """The tools take their access from the HTTP request; a call that has none (the SDK's
    in-process transport here) gets no space and no write, never full access."""
    from skillfs.mcp.tools import build_server

    await store.create_space("alice")
    async with mcp.Client(build_server(store)) as c:
        assert await tool_names(c) == READ_TOOLS
        assert await space_names(c) == []
        assert "no space" in await refused(c, "read_file", space="alice", skill="daily-logs",
                                           path="SKILL.md")
