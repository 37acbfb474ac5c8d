"""Claude Code: its transcripts through the hook into a real daemon's spool, and its skills.

The transcripts in tests/fixtures/claude_code/ were written by hand from Claude Code's
documented shapes (hook input on stdin; transcript lines wrapping Anthropic messages). The hook
runs as Claude Code runs it: the `skillfs` command with the hook input on stdin, several at
once, and killed with SIGKILL at each step of sending a file.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import SKILLFS, wait_for
from llm_server import LLMServer, call, offers
from skillfs import skillmd
from skillfs.errors import Invalid
from skillfs.learner import view
from skillfs.messages import normalize
from skillfs.spool import SpoolReject, parse_spool_bytes

# the module's shared daemon (shared_daemon) serves the tests that neither stop it nor share
# a session or a space with another: they stay on one worker with it
pytestmark = pytest.mark.xdist_group("claude_code")

FIXTURES = Path(__file__).parent / "fixtures" / "claude_code"
DEPLOY = FIXTURES / "deploy.jsonl"
SID = "7c1d3e2a-5b4f-4a6e-9c8d-2f1e0a9b8c7d"
DAY = "2026-11-21"  # the fixture's timestamps


def fixture_lines(path: Path = DEPLOY) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def expected(lines: list[bytes]) -> list[tuple[str, str]]:
    """(role, text) of the messages the spool should hold for these transcript lines: the
    user and assistant lines that are the conversation, read here independently of skillfs."""
    out = []
    for raw in lines:
        line = json.loads(raw)
        if (line.get("type") not in ("user", "assistant") or line.get("isMeta")
                or line.get("isSidechain")):
            continue
        content = line["message"]["content"]
        if isinstance(content, str) and content.startswith(("<command-", "<local-command-")):
            continue  # a slash command typed in the terminal, and what it printed
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts = [b.get("text") or b.get("content") or "" for b in blocks
                 if b["type"] in ("text", "tool_result")]
        role = ("tool" if all(b["type"] == "tool_result" for b in blocks)
                else line["message"]["role"])
        out.append((role, "\n".join(t for t in texts if t)))
    return out


def hook_input(transcript: Path, event: str = "Stop", session: str = SID) -> str:
    return json.dumps({"session_id": session, "transcript_path": str(transcript),
                       "cwd": "/home/alice/api", "permission_mode": "default",
                       "hook_event_name": event,
                       **({"reason": "prompt_input_exit"} if event == "SessionEnd" else {})})


def hook(d, stdin: str | bytes, *args: str, space: str = "alice") -> subprocess.CompletedProcess:
    r = subprocess.run([SKILLFS, "hook", "claude-code", "--space", space, *args],
                       input=stdin.encode() if isinstance(stdin, str) else stdin,
                       env=d.env, capture_output=True, timeout=60)
    return r


def run_hook(d, transcript: Path, event: str = "Stop", session: str = SID) -> None:
    r = hook(d, hook_input(transcript, event, session))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def messages(d, session: str = SID) -> list[tuple[str, str]]:
    r = d.api("GET", f"/skillfs/v1/sessions/{session}")
    if r.status_code == 404:
        return []
    return [(m["role"], m["text"]) for m in r.json()["messages"]]


def settled(d, session: str, want: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The session's messages once the spool has no file of it left to take."""
    outbox = d.spool / "alice" / session
    wait_for(lambda: outbox.is_dir() and not [n for n in os.listdir(outbox)
                                              if not n.startswith(".")],
             timeout=20, what="the spool to take the hook's files")
    wait_for(lambda: len(messages(d, session)) >= len(want), timeout=20,
             what="the messages to be stored")
    return messages(d, session)


def grow(transcript: Path, lines: list[bytes]) -> None:
    with open(transcript, "ab") as f:
        f.write(b"".join(lines))


# -- the fourth message form -------------------------------------------------------------

def test_transcript_lines_are_messages_with_their_tool_calls():
    conversation = [raw for raw in fixture_lines() if json.loads(raw)["type"] in
                    ("user", "assistant")]
    records = parse_spool_bytes(b"".join(conversation), ".jsonl")
    assert {r.format for r in records} == {"claude-code"}
    calls = [(c.id, c.name, c.arguments) for r in records for c in r.tool_calls]
    assert calls[0] == ("toolu_01", "Bash", {"command": "./deploy.sh staging v2",
                                             "description": "Deploy v2 to staging"})
    results = [r for r in records if r.role == "tool"]
    assert [(r.tool_call_id, r.text) for r in results] == [
        ("toolu_01", "deployed v2, health checks green"),
        ("toolu_02", "rollback.sh: timed out after 600s")]
    # the whole line is the original: its timestamp and uuid stay with the message
    assert records[0].original["timestamp"].startswith(DAY)
    assert results[0].to_openai_messages() == [
        {"role": "tool", "tool_call_id": "toolu_01",
         "content": "deployed v2, health checks green"}]


def test_a_failed_tool_result_reaches_the_learner_flagged_and_dated():
    [line] = [json.loads(raw) for raw in fixture_lines() if b'"is_error":true' in raw]
    message = normalize(line)
    stored = SimpleNamespace(seq=7, role=message.role, original=line, created_ns=0, meta=None,
                             body=message.model_dump(exclude={"original"}))
    seen = view.from_stored(stored)
    assert (seen.role, seen.text, seen.error) == ("tool", "rollback.sh: timed out after 600s",
                                                  True)
    assert seen.stamped and seen.at == datetime.fromisoformat(line["timestamp"])


@pytest.mark.parametrize("line, field, reason", [
    ({"type": "summary", "summary": "x", "leafUuid": "u1"}, "type", "is not a message"),
    ({"type": "user", "uuid": "u1", "message": "hi"}, "message", "expected an object"),
    ({"type": "user", "uuid": "u1"}, "message", "missing"),
    ({"type": "user", "uuid": "u1", "message": {"role": "assistant", "content": "x"}},
     "message.role", "in a line of type 'user'"),
    ({"type": "user", "uuid": "u1", "message": {"content": [{"type": "tool_result"}]}},
     "message.content[0].tool_use_id", "missing"),
])
def test_transcript_lines_that_are_not_messages_are_refused(line, field, reason):
    with pytest.raises(SpoolReject) as e:
        parse_spool_bytes(json.dumps(line).encode(), ".jsonl")
    assert (e.value.line, e.value.field) == (1, field) and reason in e.value.reason


# -- the hook ------------------------------------------------------------------------------

def test_hook_sends_each_line_once_as_the_transcript_grows(shared_daemon, tmp_path):
    daemon = shared_daemon
    lines = fixture_lines()
    transcript = tmp_path / f"{SID}.jsonl"
    grow(transcript, lines[:5])
    run_hook(daemon, transcript)
    run_hook(daemon, transcript)  # nothing new: nothing sent
    assert settled(daemon, SID, expected(lines[:5])) == expected(lines[:5])
    # a line Claude Code is still writing waits for its end
    half = len(lines[5]) // 2
    grow(transcript, [lines[5][:half]])
    run_hook(daemon, transcript)
    grow(transcript, [lines[5][half:], *lines[6:11]])
    # hooks of one session at the same time
    procs = [subprocess.Popen([SKILLFS, "hook", "claude-code", "--space", "alice"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=daemon.env) for _ in range(6)]
    for p in procs:
        out, err = p.communicate(hook_input(transcript).encode(), timeout=60)
        assert (p.returncode, out, err) == (0, b"", b"")
    assert settled(daemon, SID, expected(lines[:11])) == expected(lines[:11])
    grow(transcript, lines[11:])
    run_hook(daemon, transcript, "SessionEnd")
    want = expected(lines)
    assert settled(daemon, SID, want) == want
    assert len(want) == 12
    r = daemon.api("GET", f"/skillfs/v1/sessions/{SID}").json()
    assert r["ended"] is True


KILLER = """
import os, signal, sys
from skillfs import cli

mode, at = sys.argv[1], int(sys.argv[2])
real, count = os.rename, [0]

def rename(*args, **kwargs):
    count[0] += 1
    if mode == "before" and count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(*args, **kwargs)
    if mode == "after" and count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename
cli.main(["hook", "claude-code", "--space", "alice"])
"""


# renames of one file: the state (pending), the spool file, the state (sent)
@pytest.mark.parametrize("mode, at", [("before", 1), ("after", 1), ("after", 2)])
def test_hook_killed_half_way_sends_each_line_once(shared_daemon, tmp_path, mode, at):
    daemon = shared_daemon
    session = str(uuid.uuid4())
    lines = fixture_lines()
    transcript = tmp_path / "t.jsonl"
    grow(transcript, lines[:8])
    killed = subprocess.run([sys.executable, "-c", KILLER, mode, str(at)],
                            input=hook_input(transcript, session=session).encode(),
                            env=daemon.env, capture_output=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    grow(transcript, lines[8:])
    run_hook(daemon, transcript, "SessionEnd", session)
    want = expected(lines)
    assert settled(daemon, session, want) == want


def test_hook_tool_calls_reach_the_learner(make_daemon, tmp_path):
    d = make_daemon("--learner", "rules", start=False)
    d.home.mkdir(parents=True, exist_ok=True)
    (d.home / "config.toml").write_text("[learner]\nidle_seconds = 0.5\n")
    d.start()
    transcript = tmp_path / f"{SID}.jsonl"
    grow(transcript, fixture_lines())
    run_hook(d, transcript)
    run_hook(d, transcript, "SessionEnd")
    status = wait_for(lambda: (lambda s: s if s["learning_status"] in ("completed", "failed")
                               else None)(d.api("GET", f"/skillfs/v1/sessions/{SID}").json()),
                      timeout=30, what="learning")
    assert status["learning_status"] == "completed", status
    log = (d.mnt / "alice" / "daily-logs" / f"{DAY}.md").read_text()
    assert "Task: Deploy API v2 to staging\n- **Outcome**: success" in log
    assert "Task: Roll back staging after the test failure\n- **Outcome**: failed" in log
    assert log.count("Task: ") == 2, log  # no task of the user's /model, a subagent's prompt
    facts = (d.mnt / "alice" / "user-general-facts" / "deploy-preferences.md").read_text()
    assert "- Prefers blue-green deployments" in facts
    assert "- Always run DB migrations before switching traffic" in facts
    # the tool calls and results, as an OpenAI client reads them back
    items = d.api("GET", f"/api/v1/session/{SID}/messages",
                  params={"format": "openai"}).json()["data"]["items"]
    calls = [c for i in items for c in i.get("tool_calls") or []]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [
        ("toolu_01", "Bash"), ("toolu_02", "Bash")]
    assert json.loads(calls[0]["function"]["arguments"])["command"] == "./deploy.sh staging v2"
    assert [(i["tool_call_id"], i["content"]) for i in items if i["role"] == "tool"] == [
        ("toolu_01", "deployed v2, health checks green"),
        ("toolu_02", "rollback.sh: timed out after 600s")]
    # purged, each message is still one of its form, read back in every form
    d.cli("session", "purge", SID, "--why", "test")
    for form in ("openai", "anthropic", "acontext"):
        r = d.api("GET", f"/api/v1/session/{SID}/messages", params={"format": form})
        assert r.status_code == 200, r.text
        assert "deploy" not in r.text


def test_hook_writes_the_spool_while_the_daemon_is_down(daemon, tmp_path):
    daemon.stop()
    transcript = tmp_path / f"{SID}.jsonl"
    grow(transcript, fixture_lines())
    run_hook(daemon, transcript, "SessionEnd")
    outbox = daemon.spool / "alice" / SID
    sent = sorted(os.listdir(outbox))
    assert sent == ["cc-00000001.jsonl", "cc-00000002.jsonl"]
    # private, as the daemon's own spool folders are
    assert [os.stat(p).st_mode & 0o777 for p in (outbox.parent, outbox, outbox / sent[0])] \
        == [0o700, 0o700, 0o600]
    daemon.start()
    want = expected(fixture_lines())
    assert settled(daemon, SID, want) == want


def test_hook_long_transcript_goes_in_several_files(daemon, tmp_path):
    """Each spool file holds at most 4 MiB of the transcript; a line over the spool's 1 MiB
    line cap is left out and named, the lines after it still go."""
    lines = fixture_lines()
    big = [json.loads(raw) for raw in lines if b'"tool_result"' in raw][0]
    results = []
    for i, size in enumerate([900_000] * 6 + [1_200_000, 1000]):
        line = json.loads(json.dumps(big))
        line["uuid"] = f"big-{i}"
        line["message"]["content"][0]["content"] = f"{i}:" + "x" * size
        results.append(json.dumps(line).encode() + b"\n")
    transcript = tmp_path / f"{SID}.jsonl"
    grow(transcript, [*lines[:4], *results, *lines[4:]])
    daemon.stop()
    r = hook(daemon, hook_input(transcript))
    assert r.returncode == 0 and r.stdout == b""
    [said] = r.stderr.decode().splitlines()
    assert "over the spool's 1048576-byte cap" in said
    sent = sorted(os.listdir(daemon.spool / "alice" / SID))
    assert sent == ["cc-00000001.jsonl", "cc-00000002.jsonl"]
    assert all(os.path.getsize(daemon.spool / "alice" / SID / n) <= 4 << 20 for n in sent)
    daemon.start()
    kept = [*lines[:4], *results[:6], results[7], *lines[4:]]
    want = expected(kept)
    assert settled(daemon, SID, want) == want


def test_hook_bad_input_is_said_on_stderr_and_never_fails_the_session(daemon, tmp_path):
    transcript = tmp_path / f"{SID}.jsonl"
    lines = fixture_lines()
    good = hook_input(transcript)
    cases = [
        ("not json", (), "not JSON"),
        (b"\xff\xfe{", (), "not JSON"),
        ("[]", (), "not a JSON object"),
        ("{}", (), "no session_id"),
        (json.dumps({"session_id": SID, "hook_event_name": "Stop"}), (), "no transcript_path"),
        (good, (), "no transcript at"),
        (hook_input(transcript, session="../etc"), (), "session_id"),
        (good, ("--space", "Not A Space"), "space name"),
        (good, ("--bogus",), "No such option"),
    ]
    for stdin, args, said in cases:
        r = hook(daemon, stdin, *args)
        assert (r.returncode, r.stdout) == (0, b""), (stdin, r)
        assert said in r.stderr.decode(), (stdin, r.stderr)
    # lines the spool would refuse are left out, each said; the rest go through
    broken = b'{"type":"user","uuid":"x","message":{"role":"user","content":7}}\n'
    grow(transcript, [*lines[:4], b"{not json\n", broken, *lines[4:]])
    r = hook(daemon, good)
    assert r.returncode == 0 and r.stdout == b""
    said = r.stderr.decode().splitlines()
    assert len(said) == 2 and "not JSON" in said[0] and "message.content" in said[1], said
    want = expected(lines)
    assert settled(daemon, SID, want) == want
    # a damaged state is said, and nothing is sent twice
    state = daemon.home / "hooks" / "claude-code" / "alice" / f"{SID}.json"
    state.write_text("{")
    r = hook(daemon, good)
    assert r.returncode == 0 and "damaged" in r.stderr.decode()
    assert not [n for n in os.listdir(daemon.spool / "alice" / SID) if not n.startswith(".")]
    state.unlink()
    # a configuration that does not load
    (daemon.home / "config.toml").write_text("spool = [\n")
    r = hook(daemon, good)
    (daemon.home / "config.toml").unlink()
    assert (r.returncode, r.stdout) == (0, b"") and "configuration" in r.stderr.decode()


def test_print_settings_is_a_working_hooks_block(shared_daemon, tmp_path):
    daemon, session = shared_daemon, str(uuid.uuid4())
    r = daemon.cli("hook", "claude-code", "--print-settings", "--space", "alice")
    settings = json.loads(r.stdout)
    assert set(settings) == {"hooks"} and set(settings["hooks"]) == {"Stop", "SessionEnd"}
    for groups in settings["hooks"].values():
        [group] = groups
        [entry] = group["hooks"]
        assert entry["type"] == "command" and entry["timeout"] > 0
    command = shlex.split(settings["hooks"]["SessionEnd"][0]["hooks"][0]["command"])
    assert command[0] == SKILLFS and command[1:] == ["hook", "claude-code", "--space", "alice"]
    transcript = tmp_path / f"{session}.jsonl"
    grow(transcript, fixture_lines())
    r = subprocess.run(command, input=hook_input(transcript, "SessionEnd", session).encode(),
                       env=daemon.env, capture_output=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")
    want = expected(fixture_lines())
    assert settled(daemon, session, want) == want


# -- the Agent Skills format ---------------------------------------------------------------

# The rules as agentskills.io's specification and Anthropic's skill docs state them, written
# here apart from skillfs's own check so that the test does not trust the code it tests.
SPEC_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
SKILL_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def agent_skill_problems(folder: str, text: str) -> list[str]:
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        return ["no front matter between --- lines"]
    meta = yaml.safe_load(text[4:text.index("\n---\n", 3)])
    if not isinstance(meta, dict):
        return ["the front matter is not a mapping"]
    name, description = meta.get("name"), meta.get("description")
    problems = [f"key {k!r} is not in the specification" for k in meta if k not in SPEC_KEYS]
    if not isinstance(name, str) or not SKILL_NAME.fullmatch(name) or len(name) > 64:
        problems.append(f"name {name!r}: 1-64 lowercase letters, digits, single hyphens")
    elif name != folder:
        problems.append(f"name {name!r} is not its folder {folder!r}")
    elif "anthropic" in name or "claude" in name:
        problems.append(f"name {name!r} holds a reserved word")
    if not isinstance(description, str) or not description.strip() or len(description) > 1024:
        problems.append("description: 1-1024 characters")
    elif "<" in description or ">" in description:
        problems.append("description holds an XML tag")
    if len(str(meta.get("compatibility", ""))) > 500:
        problems.append("compatibility over 500 characters")
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append("metadata is not a map of strings")
    return problems


def space_problems(space: Path) -> dict[str, list[str]]:
    """Every skill folder of a space (read through a mount or a link) and what breaks the
    format in it."""
    found = {}
    for folder in sorted(os.listdir(space)):
        skill_md = space / folder / "SKILL.md"
        found[folder] = (agent_skill_problems(folder, skill_md.read_text())
                         if skill_md.is_file() else ["no SKILL.md"])
    return found


def test_default_skills_meet_the_agent_skills_format():
    defaults = Path(skillmd.__file__).parent / "defaults"
    assert sorted(os.listdir(defaults)) == sorted(skillmd.DEFAULT_SKILLS)
    assert space_problems(defaults) == {name: [] for name in skillmd.DEFAULT_SKILLS}


@pytest.mark.parametrize("front, reason", [
    ("name: deploys\ndescription: D.\ntags: [ops]", "not tags"),
    ("name: claude-tips\ndescription: D.", "reserved word 'claude'"),
    ("name: deploys\ndescription: Use for <deploy> work.", "'<' or '>'"),
    ("name: deploys\ndescription: D.\ncompatibility: " + "x" * 501, "compatibility"),
    ("name: deploys\ndescription: D.\nmetadata: {version: 2}", "metadata"),
    ("name: Deploys\ndescription: D.", "lowercase"),
    ("name: deploys\ndescription: " + "d" * 1025, "1024"),
])
def test_what_skillfs_writes_is_checked_against_the_format(front, reason):
    with pytest.raises(Invalid, match=re.escape(reason)):
        skillmd.parse_agent_skill(f"---\n{front}\n---\n\n# Body\n")
    text = ("---\nname: deploys\ndescription: How deploys go.\nlicense: MIT\n"
            "metadata:\n  version: '2'\n---\n\n# Deploys\n")
    assert skillmd.parse_agent_skill(text, "deploys").name == "deploys"
    assert agent_skill_problems("deploys", text) == []


WRITER_TRIES = [
    ("---\nname: deploys\ndescription: How deploys go.\ntags: [ops]\n---\n", "not tags"),
    ("---\nname: claude-deploys\ndescription: How deploys go.\n---\n", "reserved word"),
    ("---\nname: deploys\ndescription: Use for <deploy> work.\n---\n", "'<' or '>'"),
]
DEPLOYS_MD = ("---\nname: deploys\ndescription: How API deploys to staging go; use before "
              "deploying or rolling back.\n---\n\n# Deploys\n\nOne file per service.\n")


def test_learned_skills_meet_the_agent_skills_format(make_daemon, tmp_path):
    """A scripted model that writes SKILL.md files the format forbids is refused; what it
    and the rules learner leave in the space meets the format."""
    with LLMServer() as srv:
        d = make_daemon("--learner", "openai", start=False)
        d.home.mkdir(parents=True, exist_ok=True)
        (d.home / "config.toml").write_text(
            f'[learner]\nidle_seconds = 0.5\nbase_url = "{srv.base_url}"\n'
            'api_key = "test-key"\n')
        d.start()
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=5), call("finish"),
                when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        srv.add(*[call("create_skill", skill_md=md) for md, _ in WRITER_TRIES],
                call("create_skill", skill_md=DEPLOYS_MD, result=1),
                call("replace_in_file", skill="deploys", path="SKILL.md",
                     old_text="description: How", new_text="version: 2\ndescription: How"),
                call("append_to_file", skill="deploys", path="SKILL.md",
                     text="- Deploy blue-green; run migrations first.", result=1),
                call("finish"), when=offers("create_skill"))
        transcript = tmp_path / f"{SID}.jsonl"
        grow(transcript, fixture_lines())
        run_hook(d, transcript, "SessionEnd")
        status = wait_for(lambda: (lambda s: s if s["learning_status"] in ("completed", "failed")
                                   else None)(d.api("GET", f"/skillfs/v1/sessions/{SID}").json()),
                          timeout=30, what="learning")
        assert status["learning_status"] == "completed", status
        answers = [m["content"] for m in srv.requests_offering("create_skill")[-1]["messages"]
                   if m["role"] == "tool"]
    refusals = [why for _, why in WRITER_TRIES] + ["not version"]
    for why in refusals:
        assert any(why in a for a in answers), (why, answers)
    skill_md = (d.mnt / "alice" / "deploys" / "SKILL.md").read_text()
    assert "version" not in skill_md and skill_md.endswith("run migrations first.\n")
    # and the rules learner, in a space of its own
    rules = make_daemon("--learner", "rules")
    run_hook(rules, transcript, "SessionEnd")
    wait_for(lambda: (rules.mnt / "alice" / "daily-logs" / f"{DAY}.md").exists(), timeout=30,
             what="the rules learner's daily log")
    for daemon in (d, rules):
        problems = space_problems(daemon.mnt / "alice")
        assert set(skillmd.DEFAULT_SKILLS) <= set(problems)
        assert problems == {name: [] for name in problems}
    assert "deploys" in space_problems(d.mnt / "alice")


# -- the recipe: a space's skills live in Claude Code --------------------------------------

def test_claude_skills_linked_to_a_space_show_its_skills_live(shared_daemon, tmp_path):
    daemon = shared_daemon
    (daemon.mnt / "linked").mkdir()
    home = tmp_path / "user"
    (home / ".claude").mkdir(parents=True)
    skills = home / ".claude" / "skills"
    skills.symlink_to(daemon.mnt / "linked")
    assert space_problems(skills) == {name: [] for name in skillmd.DEFAULT_SKILLS}
    # a change written to the space by another path than this link shows at once
    old = (skills / "daily-logs" / "SKILL.md").read_text()
    new = old.replace("A diary of the agent's work", "The agent's work diary")
    r = daemon.api("PUT", "/skillfs/v1/files", params={"path": "linked/daily-logs/SKILL.md"},
                   content=new.encode())
    assert r.status_code == 200, r.text
    assert (skills / "daily-logs" / "SKILL.md").read_text() == new
    r = daemon.api("POST", "/skillfs/v1/skills/import", params={"space": "linked"},
                   content=_zipped(DEPLOYS_MD), headers={"content-type": "application/zip"})
    assert r.status_code == 201, r.text
    assert space_problems(skills) == {name: [] for name in (*skillmd.DEFAULT_SKILLS, "deploys")}
    assert (skills / "deploys" / "SKILL.md").read_text() == DEPLOYS_MD


def _zipped(skill_md: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SKILL.md", skill_md)
    return buf.getvalue()
