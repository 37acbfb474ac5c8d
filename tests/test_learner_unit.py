"""Learner unit tests: rules, the model client and tool loop against a scripted
OpenAI-compatible server, the writer's guards, and the Learner on a real Store (no mount)."""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

from llm_server import (Delay, HTTPError, LLMServer, both, call, calls, mentions,  # noqa: E402
                        offers, text)
from pydantic import BaseModel  # noqa: E402

from skillfs.config import LearnerConfig, LLMConfig  # noqa: E402
from skillfs.learner import core, rules  # noqa: E402
from skillfs.learner.core import Learner  # noqa: E402
from skillfs.learner.distill import Lesson  # noqa: E402
from skillfs.learner.llm import LLM, LLMError, Tool, ToolError, run_tools  # noqa: E402
from skillfs.learner.usage import Usage  # noqa: E402
from skillfs.learner.view import Msg, render  # noqa: E402
from skillfs.learner.writer import Edits, write_with_agent  # noqa: E402
from skillfs.messages import normalize  # noqa: E402
from skillfs.store import Store  # noqa: E402
from skillfs.tokens import count_tokens  # noqa: E402

AT = datetime(2025, 6, 15, 14, 30)


# ---------------------------------------------------------------------------------------
# rules

@pytest.mark.parametrize("sentence,topic,fact", [
    ("My name is Gus", "identity", "Name is Gus"),
    ("Hi, my name is Gus.", "identity", "Name is Gus"),
    ("Call me G", "identity", "Prefers to be called G"),
    ("I prefer Python 3.11+ with type hints", "coding-preferences",
     "Prefers Python 3.11+ with type hints"),
    ("I use pytest, not unittest", "coding-preferences", "Uses pytest, not unittest"),
    ("Always use blue-green deployments", "deploy-preferences",
     "Always use blue-green deployments"),
    ("I always run my tests first", "coding-preferences", "Always runs their tests first"),
    ("never deploy on Fridays!", "deploy-preferences", "Never deploy on Fridays"),
    ("I use vim, if that matters", "tools", "Uses vim"),
    ("Hey, some context before we start: I use poetry.", "coding-preferences", "Uses poetry"),
    ("I prefer short answers", "communication", "Prefers short answers"),
])
def test_rules_facts(sentence, topic, fact):
    f = rules.fact_from_sentence(sentence)
    assert f is not None and (f.topic, f.text) == (topic, fact)


@pytest.mark.parametrize("sentence", [
    "Deploy API v2 to staging", "Do I always use tabs?", "I like it", "What is my name?",
    "I never said I like dark mode", "I don't use emacs", "Never store my password hunter2",
    "Ich benutze immer vim", "Je préfère toujours les tabulations",
])
def test_rules_not_facts(sentence):
    assert rules.fact_from_sentence(sentence) is None


def _deploy_messages() -> list[Msg]:
    late = datetime(2025, 6, 15, 16, 0)
    return [
        Msg(1, "user", "I prefer blue-green deployments. Deploy API v2 to staging", at=AT),
        Msg(2, "assistant", "", (("run_deploy", "{}"),), at=AT),
        Msg(3, "tool", "deployed, no errors", at=AT),
        Msg(4, "assistant", "Blue-green deploy completed, zero downtime.", at=AT),
        Msg(5, "user", "Thanks! Now roll back staging after the test failure", at=late),
        Msg(6, "assistant", "The rollback script timed out on the large DB.", at=late),
    ]


def test_rules_tasks_and_outcomes():
    tasks, facts = rules.analyze(_deploy_messages(), final=True)
    assert [(t.description, t.status) for t in tasks] == [
        ("Deploy API v2 to staging", "success"),
        ("Roll back staging after the test failure", "failed"),
    ]
    assert [f.text for f in facts] == ["Prefers blue-green deployments"]
    # without an end the last task's outcome is not known yet
    tasks, _ = rules.analyze(_deploy_messages(), final=False)
    assert [t.status for t in tasks] == ["success", "running"]


def test_rules_feedback_decides():
    msgs = [Msg(1, "user", "Fix the flaky test"), Msg(2, "assistant", "Fixed it."),
            Msg(3, "user", "It still fails")]
    tasks, _ = rules.analyze(msgs, final=False)
    assert len(tasks) == 1 and tasks[0].status == "failed"
    msgs[2] = Msg(3, "user", "great, that worked")
    assert rules.analyze(msgs, final=False)[0][0].status == "success"


def test_rules_daily_log_format():
    tasks, _ = rules.analyze(_deploy_messages(), final=True)
    content = None
    for t in tasks:
        content = rules.add_daily_entry(content, "2025-06-15", rules.daily_entry(t, t.finished_at))
    lines = content.splitlines()
    assert lines[0] == "# 2025-06-15"
    assert lines[2] == "## [14:30] Task: Deploy API v2 to staging"
    assert lines[3] == "- **Outcome**: success"
    assert lines[4].startswith("- **Summary**: Blue-green deploy completed")
    # the agent gave no reasons: no boilerplate Key Decisions or Learnings
    assert not lines[5].strip()
    assert "Key Decisions" not in content and "Learnings" not in content
    assert "## [16:00] Task: Roll back staging after the test failure" in lines
    assert "- **Outcome**: failed" in lines
    # the same entry twice is not added twice
    assert rules.add_daily_entry(content, "2025-06-15",
                                 rules.daily_entry(tasks[0], tasks[0].finished_at)) is None


def test_rules_merge_facts():
    f = rules.merge_facts(None, "identity", [rules.Fact("identity", "Name is Gus")])
    assert f == "# Identity\n\n- Name is Gus\n"
    assert rules.merge_facts(f, "identity", [rules.Fact("identity", "Name is Gus")]) is None
    g = rules.merge_facts(f, "identity", [rules.Fact("identity", "Name is Gustav"),
                                          rules.Fact("identity", "Works as an SRE")])
    assert g == "# Identity\n\n- Name is Gustav\n- Works as an SRE\n"



def test_rules_fact_updates_denials_and_near_duplicates():
    def merged(old, sentence):
        facts = rules.facts_from_sentence(sentence)
        text = old
        for f in facts:
            text = rules.drop_lines(text, f.drops) or text
        topic = next((f.topic for f in facts if f.text), None)
        return rules.merge_facts(text, topic, facts) or text if topic else text
    tools = "# Coding Preferences\n\n- Uses black\n- Prefers tabs\n"
    assert merged(tools, "I no longer use black, I use ruff now") == \
        "# Coding Preferences\n\n- Prefers tabs\n- Uses ruff\n"
    assert merged(tools, "Actually, I prefer spaces") == \
        "# Coding Preferences\n\n- Uses black\n- Prefers spaces\n"
    assert merged(tools, "I switched from black to ruff") == \
        "# Coding Preferences\n\n- Prefers tabs\n- Uses ruff\n"
    likes = "# General\n\n- Likes dark mode\n- Likes long walks\n"
    assert merged(likes, "I never said I like dark mode") == "# General\n\n- Likes long walks\n"
    prefs = "# Coding Preferences\n\n- Prefers Python 3.11+ with type hints\n"
    assert merged(prefs, "I prefer Python 3.12+ with type hints") == \
        "# Coding Preferences\n\n- Prefers Python 3.12+ with type hints\n"


def _titles(msgs, final=True, idle=False):
    return [(t.description, t.status) for t in rules.analyze(msgs, final, idle)[0]]


def test_rules_outcomes_from_tools_reports_and_reactions():
    # an is_error result with a neutral reply after it is a failure
    assert _titles([Msg(1, "user", "Run the migration"),
                    Msg(2, "tool", "psql: connection reset", error=True),
                    Msg(3, "assistant", "Here is the output.")]
                   ) == [("Run the migration", "failed")]
    # a killed job's exit status
    assert _titles([Msg(1, "user", "Build the image"), Msg(2, "tool", "Killed\nexit code 137"),
                    ]) == [("Build the image", "failed")]
    # a report that mentions the earlier failure before the fix is a success
    assert _titles([Msg(1, "user", "Fix the CI"), Msg(2, "tool", "exit status 1"),
                    Msg(3, "assistant", "The first run failed on a missing fixture. I added it "
                                        "and all 40 tests pass now.")]
                   ) == [("Fix the CI", "success")]
    # sarcasm and resignation judge the task before them and start none
    for reaction in ("perfect, now the login page is down", "ok, leave it",
                     "Actually it doesn't work"):
        assert _titles([Msg(1, "user", "Restart the web server"),
                        Msg(2, "assistant", "Restarted, it is up."),
                        Msg(3, "user", reaction)]) == [("Restart the web server", "failed")]
    # questions, greetings and thanks are not tasks; lead-ins leave the title
    assert _titles([Msg(1, "user", "Hi there!"), Msg(2, "user", "What does git rebase do?"),
                    Msg(3, "assistant", "It replays commits."), Msg(4, "user", "Thanks a lot!"),
                    Msg(5, "user", "Hey, one more thing: could you bump the version to 2.1?"),
                    Msg(6, "assistant", "Bumped.")]) == [("Bump the version to 2.1", "success")]


def test_rules_thanks_in_the_request_judges_nothing():
    msgs = [Msg(1, "user", "Deploy the docs site. Thanks!"),
            Msg(2, "assistant", "", (("deploy", "{}"),))]
    assert _titles(msgs, final=False) == [("Deploy the docs site", "running")]
    msgs = [Msg(1, "user", "Fix the login form. It still fails after the last patch."),
            Msg(2, "assistant", "Fixed the CSRF check; login works.")]
    assert _titles(msgs) == [("Fix the login form", "success")]


def test_rules_problem_reports_and_wishes_are_requests():
    # a failure report with no task before it asks for a fix; "I need …" asks too
    assert _titles([Msg(1, "user", "My tests fail on CI."),
                    Msg(2, "assistant", "A fixture leaked state; I isolated it and CI is green."),
                    Msg(3, "user", "I need the coverage report as HTML"),
                    Msg(4, "assistant", "Wrote htmlcov/index.html.")]) == [
        ("My tests fail on CI", "success"), ("I need the coverage report as HTML", "success")]
    # the same report after a task judges that task
    assert _titles([Msg(1, "user", "Fix the fixture"), Msg(2, "assistant", "Fixed."),
                    Msg(3, "user", "My tests fail on CI.")]) == [("Fix the fixture", "failed")]


def test_rules_reasons_come_from_the_agent_or_not_at_all():
    tasks, _ = rules.analyze([
        Msg(1, "user", "I prefer small commits. Split the migration"),
        Msg(2, "assistant", "I split it into two files because the second one locks a table. "
                            "Next time run it off-peak.")], final=True)
    entry = rules.daily_entry(tasks[0], AT)
    assert ("- **Key Decisions**: I split it into two files because the second one locks a "
            "table.") in entry
    assert "- **Learnings**: Next time run it off-peak." in entry
    assert "small commits" not in entry


def test_rules_idle_closes_a_task_the_agent_answered():
    msgs = [Msg(1, "user", "Run the tests"), Msg(2, "assistant", "All 12 tests pass.")]
    assert _titles(msgs, final=False) == [("Run the tests", "running")]
    assert _titles(msgs, final=False, idle=True) == [("Run the tests", "success")]
    working = msgs + [Msg(3, "assistant", "", (("pytest", "{}"),))]
    assert _titles(working, final=False, idle=True) == [("Run the tests", "running")]


def test_rules_other_languages_write_nothing():
    tasks, facts = rules.analyze([Msg(1, "user", "Bitte deploye die App und prüfe die Logs. "
                                                 "Ich benutze immer vim."),
                                  Msg(2, "assistant", "Erledigt, die App läuft.")], final=True)
    assert tasks == [] and facts == []


def test_replace_daily_entry_keeps_the_others():
    day = rules.add_daily_entry(None, "2025-06-15", "## [10:00] Task: A\n- **Outcome**: success\n")
    day = rules.add_daily_entry(day, "2025-06-15", "## [11:00] Task: B\n- **Outcome**: success\n")
    new = rules.replace_daily_entry(day, "## [10:00] Task: A\n- **Outcome**: failed\n")
    assert new == ("# 2025-06-15\n\n## [10:00] Task: A\n- **Outcome**: failed\n\n"
                   "## [11:00] Task: B\n- **Outcome**: success\n")
    assert rules.replace_daily_entry(new, "## [09:00] Task: C\n- **Outcome**: failed\n") is None


@pytest.mark.parametrize("record,expected", [
    ({"role": "user", "content": "x", "timestamp": "2025-06-15T09:30:00+02:00"},
     "2025-06-15T09:30:00+02:00"),
    ({"role": "user", "content": "x", "created_at": "2025-06-15T07:30:00Z"},
     "2025-06-15T07:30:00+00:00"),
    ({"role": "user", "parts": [], "meta": {"created_at": "2025-06-15T07:30:00Z"}},
     "2025-06-15T07:30:00+00:00"),
])
def test_message_time_iso(record, expected):
    from skillfs.messages import message_time
    assert message_time(record).isoformat() == expected


def test_message_time_epoch_and_junk():
    from skillfs.messages import message_time
    assert message_time({"timestamp": 1749979800}) == message_time({"timestamp": 1749979800000})
    assert message_time({"timestamp": 1749979800}).timestamp() == 1749979800
    for junk in ("yesterday", 12, True, None, float("nan"), [1]):
        assert message_time({"timestamp": junk}) is None


def test_task_time_prefers_the_message_then_original_date():
    now = datetime(2026, 1, 2, 8, 15).astimezone()
    stamped = Msg(1, "user", "x", at=datetime(2025, 6, 15, 9, 30).astimezone(), stamped=True)
    arrived = Msg(1, "user", "x", at=now)
    assert core.task_time(stamped, "2024-01-01", now) == stamped.at
    assert core.task_time(arrived, "2024-03-04", now) == now.replace(2024, 3, 4)
    assert core.task_time(arrived, None, now) == now
    assert core.task_time(None, "not a date", now) == now


# ---------------------------------------------------------------------------------------
# the model client and the tool loop

class Add(BaseModel):
    x: int


class Empty(BaseModel):
    pass


def _tools(got: list):
    async def add(a: Add) -> str:
        got.append(a.x)
        return "added"

    async def finish(_a: Empty) -> None:
        return None

    return [Tool("add", "add a number", Add, add),
            Tool("finish", "done", Empty, finish, final=True)]


def _llm(srv: LLMServer, **kw) -> LLM:
    return LLM(LLMConfig(base_url=srv.base_url, api_key="test", backoff=0.01, **kw))


def test_tool_loop_recovers_from_bad_calls():
    with LLMServer() as srv:
        srv.add(HTTPError(500), call("add", x=1), call("add", '{"x": '), call("add", x="zz"),
                call("nope"), text("thinking aloud"), calls(("add", {"x": 2}), ("finish", {})))
        got: list[int] = []

        async def main():
            llm = _llm(srv, max_bad_calls=5)
            res = await run_tools(llm, [{"role": "user", "content": "go"}], _tools(got))
            await llm.aclose()
            return res

        res = trio.run(main)
        assert got == [1, 2] and res.finished
        answers = [m["content"] for m in srv.requests[-1]["messages"] if m["role"] == "tool"]
        assert any("not valid JSON" in a for a in answers)
        assert any("invalid arguments for add" in a for a in answers)
        assert any("no tool named 'nope'" in a for a in answers)
        # the model saw the tool schemas, validated by pydantic
        fn = srv.requests[0]["tools"][0]["function"]
        assert fn["name"] == "add" and fn["parameters"]["required"] == ["x"]


def test_tool_loop_gives_up_after_bad_calls():
    with LLMServer() as srv:
        srv.always(call("add", "not json"))

        async def main():
            await run_tools(_llm(srv, max_bad_calls=2), [{"role": "user", "content": "go"}],
                            _tools([]))

        with pytest.raises(LLMError, match="invalid tool calls"):
            trio.run(main)
        assert len(srv.requests) == 3


def test_http_errors_retry_then_fail():
    with LLMServer() as srv:
        srv.always(HTTPError(500, "boom"))

        async def main():
            await _llm(srv, retries=2).complete([{"role": "user", "content": "hi"}])

        with pytest.raises(LLMError, match="after 3 attempts.*HTTP 500"):
            trio.run(main)
        assert len(srv.requests) == 3


def test_timeout_retries_then_fail():
    with LLMServer() as srv:
        srv.always(Delay(1.0, text("late")))

        async def main():
            await _llm(srv, retries=1, timeout=0.2).complete([{"role": "user", "content": "hi"}])

        with pytest.raises(LLMError, match="timed out"):
            trio.run(main)
        assert len(srv.requests) == 2


def test_bad_request_is_not_retried():
    with LLMServer() as srv:
        srv.always(HTTPError(400, "bad"))

        async def main():
            await _llm(srv, retries=3).complete([{"role": "user", "content": "hi"}])

        with pytest.raises(LLMError, match="refused"):
            trio.run(main)
        assert len(srv.requests) == 1


# ---------------------------------------------------------------------------------------
# the writer against a real store

@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "t.duckdb"))
    yield s
    s.close()


def _skill(store, space, name):
    return store.space(space).skills[name]


async def _read(store, space, skill, path) -> str:
    fc = await store.read_file(_skill(store, space, skill).id, path)
    return fc.content.decode()


def test_writer_guards(store):
    async def main():
        sp = await store.create_space("s")
        lesson = Lesson("sess", "task", "success", "Do it", "success", AT)
        e = Edits(store, sp.id, [lesson])
        who = e.attribution(None)
        facts = _skill(store, "s", "user-general-facts")
        for bad in ("../x.md", "/etc/passwd", "a/../b.md", ""):
            with pytest.raises(ToolError):
                e.path(bad)
        with pytest.raises(ToolError, match="cannot be deleted"):
            await e.delete(facts, "SKILL.md", who)
        with pytest.raises(ToolError, match="renamed"):
            await e.move(facts, "SKILL.md", "x.md", who)
        with pytest.raises(ToolError, match="invalid"):
            await e.replace(facts, "SKILL.md", "name: user-general-facts", "name: other", who)
        await e.create(facts, "a.md", "x\nx\n", who)
        with pytest.raises(ToolError, match="already exists"):
            await e.create(facts, "a.md", "y", who)
        with pytest.raises(ToolError, match="occurs 2 times"):
            await e.replace(facts, "a.md", "x", "y", who)
        with pytest.raises(ToolError, match="does not occur"):
            await e.replace(facts, "a.md", "zzz", "y", who)
        with pytest.raises(ToolError, match="read"):
            await e.delete(facts, "a.md", who)
        with pytest.raises(ToolError, match="between 1 and 1"):
            e.attribution(3)
        log = await store.file_log(facts.id, "a.md")
        assert (log[-1].author, log[-1].session_id, log[-1].task_id) == ("learner", "sess", "task")

    trio.run(main)


class RacingStore:
    """A store whose first learner write loses a race against a person's save."""

    def __init__(self, store):
        self._s = store
        self.raced = False

    def __getattr__(self, name):
        return getattr(self._s, name)

    async def write_file(self, skill_id, path, content, **kw):
        if not self.raced and kw.get("author") == "learner":
            self.raced = True
            fc = await self._s.read_file(skill_id, path)
            await self._s.write_file(skill_id, path, fc.content + b"- Person's own line\n",
                                     author="fuse")
        return await self._s.write_file(skill_id, path, content, **kw)


def test_writer_redoes_edit_after_concurrent_change(store):
    async def main():
        sp = await store.create_space("s")
        facts = _skill(store, "s", "user-general-facts")
        await store.write_file(facts.id, "identity.md", b"# Identity\n\n- Name is Bob\n",
                               author="fuse")
        racing = RacingStore(store)
        e = Edits(racing, sp.id, [Lesson("sess", None, "preferences", "", None, AT)])
        await e.replace(facts, "identity.md", "Name is Bob", "Name is Gus", e.attribution(None))
        assert racing.raced
        text_ = await _read(store, "s", "user-general-facts", "identity.md")
        assert text_ == "# Identity\n\n- Name is Gus\n- Person's own line\n"
        # a stale delete is refused rather than clobbering the person's edit
        await e.read(facts, "identity.md")
        await store.write_file(facts.id, "identity.md", b"changed\n", author="fuse")
        with pytest.raises(ToolError, match="changed since you read it"):
            await e.delete(facts, "identity.md", e.attribution(None))

    trio.run(main)


def test_writer_agent_tools(store):
    with LLMServer() as srv:
        srv.add(
            call("get_skill", skill="daily-logs"),
            call("create_file", skill="daily-logs", path="2025-06-15.md",
                 content="# 2025-06-15\n\n## [14:30] Task: Deploy\n- **Outcome**: success\n"),
            call("create_file", skill="daily-logs", path="../escape.md", content="x"),
            call("create_skill",
                 skill_md="---\nname: deploys\ndescription: How deploys go.\n---\n\n# Deploys\n"),
            call("append_to_file", skill="deploys", path="SKILL.md", text="- Use blue-green"),
            call("finish"),
        )

        async def main():
            sp = await store.create_space("s")
            lesson = Lesson("sess", "t1", "success", "Deploy", "success", AT,
                            fields={"approach": "blue-green"})
            llm = _llm(srv)
            edits = await write_with_agent(llm, store, sp.id, [lesson])
            await llm.aclose()
            assert edits.edits == 3
            assert "Task: Deploy" in await _read(store, "s", "daily-logs", "2025-06-15.md")
            assert "- Use blue-green" in await _read(store, "s", "deploys", "SKILL.md")

        trio.run(main)
        first = srv.requests[0]["messages"][1]["content"]
        assert "=== skill daily-logs ===" in first and "R1 — task: Deploy" in first
        answers = [m["content"] for m in srv.requests[-1]["messages"] if m["role"] == "tool"]
        assert any("'..'" in a for a in answers)


# ---------------------------------------------------------------------------------------
# the Learner on a real store

def _msg(role, content, **kw):
    return normalize({"role": role, "content": content, **kw})


async def _session(store, space_name="s", messages=()):
    sp = await store.create_space(space_name) if space_name not in store.tree.space_names \
        else store.space(space_name)
    row = await store.create_session(space_id=sp.id)
    if messages:
        await store.add_messages(row.id, [_msg(*m) for m in messages])
    return sp, row


DEPLOY = [
    ("user", "I prefer blue-green deployments. Deploy API v2 to staging"),
    ("assistant", "Blue-green deploy completed, zero downtime."),
    ("user", "Thanks! Now roll back staging after the test failure"),
    ("assistant", "The rollback script timed out on the large DB."),
]


def _learner(store, **kw) -> Learner:
    cfg = LearnerConfig(backend=kw.pop("backend", "rules"), idle_seconds=kw.pop("idle", 30),
                        **kw)
    learner = Learner(store, cfg)
    store.subscribe(learner.on_store_event)
    return learner


def test_learner_rules_end_to_end(store):
    async def main():
        learner = _learner(store)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            sp, row = await _session(store, "s", DEPLOY + [("user", "My name is Gus")])
            await store.mark_session(row.id, "end")
            assert await learner.wait(row.id, 10) == "completed"
            assert (await store.get_learning(row.id)).status == "completed"
            day = datetime.now().strftime("%Y-%m-%d")
            log = await _read(store, "s", "daily-logs", f"{day}.md")
            assert log.startswith(f"# {day}\n\n## [")
            assert "Task: Deploy API v2 to staging\n- **Outcome**: success" in log
            assert "Task: Roll back staging after the test failure\n- **Outcome**: failed" in log
            assert "Name is Gus" in await _read(store, "s", "user-general-facts", "identity.md")
            # filed by subject, as the facts skill's own example does
            prefs = await _read(store, "s", "user-general-facts", "deploy-preferences.md")
            assert prefs == "# Deploy Preferences\n\n- Prefers blue-green deployments\n"
            tasks = await store.list_tasks(row.id)
            assert [(t.status, t.learned) for t in tasks] == [("success", True), ("failed", True)]
            versions = await store.file_log(_skill(store, "s", "daily-logs").id, f"{day}.md")
            assert {v.author for v in versions} == {"learner"}
            assert {v.session_id for v in versions} == {row.id}
            assert all(v.task_id in {t.id for t in tasks} for v in versions)
            # the same statement again adds no duplicate
            _, row2 = await _session(store, "s", [("user", "My name is Gus")])
            await store.mark_session(row2.id, "end")
            assert await learner.wait(row2.id, 10) == "completed"
            ident = await _read(store, "s", "user-general-facts", "identity.md")
            assert ident.count("Gus") == 1
            n.cancel_scope.cancel()

    trio.run(main)


def test_learner_buffer_and_idle(store):
    async def main():
        learner = _learner(store, buffer_messages=3, idle=0.5)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            _, row = await _session(store, "s", [("user", "My name is Gus")])
            await trio.sleep(0.2)
            assert learner.status(row.id) == "pending"
            # idle: learned after T seconds without an end
            assert await learner.wait(row.id, 5) == "completed"
            _, row2 = await _session(store, "s")
            learner.config.idle_seconds = 30
            await store.add_messages(row2.id, [_msg("user", "I use vim"),
                                               _msg("assistant", "ok"),
                                               _msg("user", "I use tmux")])
            # N messages: learned without waiting for idle
            with trio.fail_after(5):
                assert await learner.wait(row2.id) == "completed"
            tools = await _read(store, "s", "user-general-facts", "tools.md")
            assert "- Uses vim" in tools and "- Uses tmux" in tools
            n.cancel_scope.cancel()

    trio.run(main)


def _extract_script(srv: LLMServer, pref: str | None = None) -> None:
    replies = [call("insert_task", description="Deploy API v2 to staging", status="success",
                    first_message=0, last_message=1)]
    if pref:
        replies.append(call("record_preference", preference=pref))
    replies.append(call("finish"))
    srv.add(*replies, when=offers("insert_task"))


def test_learner_openai_pipeline(store):
    with LLMServer() as srv:
        _extract_script(srv, "Name is Gus")
        srv.add(call("report_success", goal="deploy", approach="blue-green",
                     key_decisions=["migrate first"], principle="p", applies_when="w"),
                when=offers("report_success"))
        srv.add(call("create_file", skill="user-general-facts", path="identity.md",
                     content="# Identity\n\n- Name is Gus\n", result=1),
                call("create_file", skill="daily-logs", path="2025-06-15.md",
                     content="# 2025-06-15\n", result=2),
                call("finish"), when=offers("create_file"))

        async def main():
            learner = _learner(store, backend="openai",
                               base_url=srv.base_url, api_key="k", backoff=0.01)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, row = await _session(store, "s", DEPLOY[:2])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "completed"
                assert "Gus" in await _read(store, "s", "user-general-facts", "identity.md")
                tasks = await store.list_tasks(row.id)
                assert [(t.description, t.learned) for t in tasks] == [
                    ("Deploy API v2 to staging", True)]
                v = (await store.file_log(_skill(store, "s", "daily-logs").id, "2025-06-15.md"))[0]
                assert (v.author, v.session_id, v.task_id) == ("learner", row.id, tasks[0].id)
                n.cancel_scope.cancel()

        trio.run(main)
        assert srv.pending() == 0
        extract = srv.requests_offering("insert_task")[0]["messages"][1]["content"]
        assert "Deploy API v2 to staging" in extract and "has ended" in extract
        write = srv.requests_offering("create_file")[0]["messages"][1]["content"]
        assert "approach: blue-green" in write and "facts: Name is Gus" in write


def test_learner_failure_then_retry(store):
    with LLMServer() as srv:
        srv.add(call("insert_task", description="x", status="success", first_message=0),
                call("insert_task", description="{oops"), call("insert_task", "{oops"),
                call("insert_task", "{oops"), call("insert_task", "{oops"),
                when=offers("insert_task"))

        async def main():
            learner = _learner(store, backend="openai",
                               base_url=srv.base_url, api_key="k", backoff=0.01, max_bad_calls=2)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, row = await _session(store, "s", [("user", "My name is Gus")])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "failed"
                lr = await store.get_learning(row.id)
                assert lr.status == "failed" and "invalid tool calls" in lr.error
                # the endpoint now fails with HTTP 500 for the writer
                srv.add(call("record_preference", preference="Name is Gus"), call("finish"),
                        when=offers("insert_task"))
                srv.add(HTTPError(500), HTTPError(500), HTTPError(500), HTTPError(500),
                        when=offers("create_file"))
                await learner.retry(row.id)
                assert await learner.wait(row.id, 10) == "failed"
                lr = await store.get_learning(row.id)
                assert "writing failed" in lr.error and "HTTP 500" in lr.error
                srv.add(call("create_file", skill="user-general-facts", path="identity.md",
                             content="# Identity\n\n- Name is Gus\n"), call("finish"),
                        when=offers("create_file"))
                await learner.retry(row.id)
                assert await learner.wait(row.id, 10) == "completed"
                assert (await store.get_learning(row.id)).error is None
                assert "Gus" in await _read(store, "s", "user-general-facts", "identity.md")
                n.cancel_scope.cancel()

        trio.run(main)


def test_one_writer_per_space_spaces_in_parallel(store, monkeypatch):
    running: dict[str, int] = {}
    peak = {"per_space": 0, "total": 0}
    real = core.write_with_rules

    async def slow(store_, space_id, lessons, **claim):
        running[space_id] = running.get(space_id, 0) + 1
        peak["per_space"] = max(peak["per_space"], running[space_id])
        peak["total"] = max(peak["total"], sum(running.values()))
        await trio.sleep(0.3)
        try:
            return await real(store_, space_id, lessons, **claim)
        finally:
            running[space_id] -= 1

    monkeypatch.setattr(core, "write_with_rules", slow)

    async def main():
        learner = _learner(store)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            rows = []
            for space in ("a", "a", "a", "b"):
                _, row = await _session(store, space, [("user", f"I use tool-{len(rows)}")])
                await store.mark_session(row.id, "end")
                rows.append(row)
            for row in rows:
                assert await learner.wait(row.id, 10) == "completed"
            n.cancel_scope.cancel()
        tools = await _read(store, "a", "user-general-facts", "tools.md")
        assert all(f"- Uses tool-{i}" in tools for i in range(3))

    trio.run(main)
    assert peak["per_space"] == 1
    assert peak["total"] == 2


def test_lessons_arriving_during_a_run_join_it(store):
    with LLMServer() as srv:
        async def main():
            learner = _learner(store, backend="openai",
                               base_url=srv.base_url, api_key="k", backoff=0.01)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, a = await _session(store, "s", [("user", "My name is Gus")])
                await store.mark_session(a.id, "end")
                await trio.sleep(0.5)
                _, b = await _session(store, "s", [("user", "I use vim")])
                await store.mark_session(b.id, "end")
                assert await learner.wait(a.id, 10) == "completed"
                assert await learner.wait(b.id, 10) == "completed"
                n.cancel_scope.cancel()

        srv.add(call("record_preference", preference="Name is Gus"), call("finish"),
                when=offers("insert_task"))
        srv.add(call("record_preference", preference="Uses vim"), call("finish"),
                when=offers("insert_task"))
        # the writer's first turn is slow, so session b's lesson arrives while it runs
        srv.add(Delay(1.0, call("get_skill", skill="daily-logs")), call("finish"),
                call("finish"), when=offers("create_file"))
        trio.run(main)
        writes = srv.requests_offering("create_file")
        assert len(writes) == 3  # one run: get_skill, finish (more arrived), finish
        assert "more lessons arrived" in json.dumps(writes[-1]["messages"][-1])
        assert "Uses vim" in json.dumps(writes[-1]["messages"][-1])


# ---------------------------------------------------------------------------------------
# lessons kept in the store until they are written

def _lesson_row(session_id, space_id, task_id=None, **payload):
    from skillfs.store import LessonRow
    return LessonRow(str(uuid.uuid4()), session_id, space_id, task_id,
                     {"kind": "facts", **payload})


def test_store_lessons(tmp_path):
    from skillfs.errors import Invalid, NotFound, SkillfsError
    from skillfs.store import TaskRow

    path = str(tmp_path / "l.duckdb")
    store = Store(path)

    async def main():
        sp, row = await _session(store, "s", [("user", "My name is Gus")] * 6)
        other_sp, other = await _session(store, "t")
        task = TaskRow("task-1", row.id, 1, "Deploy", "success", first_seq=0, last_seq=3)
        a = _lesson_row(row.id, sp.id, "task-1", facts=["Deployed"], n=1)
        b = _lesson_row(row.id, sp.id, None, facts=["Name is Gus"])
        c = _lesson_row(other.id, other_sp.id, None, facts=["Uses vim"])
        # lessons, their task and how far the messages are learned: one transaction
        await store.save_lessons(row.id, [a, b], tasks=[task], learned_seq=5)
        await store.save_lessons(other.id, [c])
        assert (await store.get_learning(row.id)).learned_seq == 5
        assert [(t.id, t.learned) for t in await store.list_tasks(row.id)] == [("task-1", False)]
        got = await store.list_lessons(session_id=row.id)
        assert [(x.id, x.task_id, x.payload, x.status, x.error) for x in got] == [
            (a.id, "task-1", {"kind": "facts", "facts": ["Deployed"], "n": 1}, "queued", None),
            (b.id, None, {"kind": "facts", "facts": ["Name is Gus"]}, "queued", None)]
        assert all(x.space_id == sp.id and x.created_ns and x.updated_ns for x in got)
        assert [x.id for x in await store.unwritten_lessons()] == [a.id, b.id, c.id]
        assert [x.id for x in await store.unwritten_lessons(space_id=other_sp.id)] == [c.id]
        assert [x.id for x in await store.unwritten_lessons(session_id=other.id)] == [c.id]

        # written: the lesson and its task in one transaction
        assert await store.mark_lessons([a.id], "written") == 1
        assert [t.learned for t in await store.list_tasks(row.id)] == [True]
        assert [x.id for x in await store.unwritten_lessons(session_id=row.id)] == [b.id]
        # failed keeps the reason; a written lesson stays written
        assert await store.mark_lessons([a.id, b.id], "failed", "HTTP 500") == 1
        st = {x.id: (x.status, x.error) for x in await store.list_lessons(session_id=row.id)}
        assert st == {a.id: ("written", None), b.id: ("failed", "HTTP 500")}
        assert [x.id for x in await store.unwritten_lessons(session_id=row.id)] == [b.id]
        assert [x.id for x in await store.list_lessons(status="failed")] == [b.id]
        assert await store.mark_lessons([b.id], "queued") == 1
        assert [(x.status, x.error) for x in await store.list_lessons(status="queued",
                                                                      session_id=row.id)] \
            == [("queued", None)]
        assert await store.mark_lessons([], "written") == 0
        with pytest.raises(Invalid):
            await store.mark_lessons([b.id], "done")

        # all or nothing: a batch that cannot be kept leaves no task, lesson or progress
        d = _lesson_row(row.id, sp.id, "task-2")
        task2 = TaskRow("task-2", row.id, 2, "Roll back", "failed")
        with pytest.raises(SkillfsError, match="database error"):
            await store.save_lessons(row.id, [d, d], tasks=[task2], learned_seq=6)
        assert (await store.get_learning(row.id)).learned_seq == 5
        assert [t.id for t in await store.list_tasks(row.id)] == ["task-1"]
        assert len(await store.list_lessons(session_id=row.id)) == 2
        with pytest.raises(Invalid):
            await store.save_lessons(row.id, [c])  # another session's lesson
        loose = await store.create_session()  # learns into no space
        with pytest.raises(NotFound):
            await store.save_lessons(loose.id, [_lesson_row(loose.id, sp.id)])
        assert await store.list_lessons(session_id=loose.id) == []
        return row, other, other_sp

    row, other, other_sp = trio.run(main)
    store.close()
    # kept across a restart
    store = Store(path)

    async def after():
        assert [x.status for x in await store.list_lessons(session_id=row.id)] == [
            "written", "queued"]
        await store.delete_session(row.id)
        assert await store.list_lessons(session_id=row.id) == []
        await store.delete_space(other_sp.id)
        assert await store.list_lessons() == []

    trio.run(after)
    store.close()


def test_lesson_payload_round_trip():
    rt = rules.analyze(_deploy_messages(), final=True)[0][1]
    facts = [rules.Fact("identity", "Name is Gus", 3), rules.Fact("tools", "Uses vim", 4)]
    at = datetime(2025, 6, 15, 16, 0).astimezone()
    for lesson in (
        Lesson("sess", "t1", "failure", rt.description, rt.status, at,
               preferences=["Prefers blue-green deployments"], rule_task=rt),
        Lesson("sess", None, "preferences", "", None, at, facts=facts,
               fields={"facts": [f.text for f in facts]}),
        Lesson("sess", "t2", "success", "Deploy", "success", at,
               fields={"goal": "g", "key_decisions": ["a", "b"], "pattern": ""}),
    ):
        payload = json.loads(json.dumps(lesson.payload()))
        back = Lesson.from_payload(lesson.id, "sess", lesson.task_id, payload)
        assert back == lesson
        assert back.describe(1) == lesson.describe(1)


def test_learner_rules_resumes_after_crash_mid_write(tmp_path, monkeypatch):
    """The daemon dies while the writer is half way through a batch: after a restart each
    daily-log entry and each fact is in the files exactly once, and nothing is missing."""
    path = str(tmp_path / "c.duckdb")
    real = core.write_with_rules
    reached = trio.Event()

    async def dies_half_way(store_, space_id, lessons, **claim):
        # the first lesson is written, then the process "dies" before the batch is done
        await real(store_, space_id, lessons[:1], **claim)
        reached.set()
        await trio.sleep_forever()

    store = Store(path)
    monkeypatch.setattr(core, "write_with_rules", dies_half_way)

    async def first():
        learner = _learner(store)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            _, row = await _session(store, "s", DEPLOY + [("user", "My name is Gus")])
            await store.mark_session(row.id, "end")
            with trio.fail_after(10):
                await reached.wait()
            n.cancel_scope.cancel()
        return row

    row = trio.run(first)
    assert [x.status for x in trio.run(store.list_lessons)] == ["queued"] * 3
    assert trio.run(store.get_learning, row.id).status == "writing"
    store.close()
    monkeypatch.setattr(core, "write_with_rules", real)
    store = Store(path)

    async def second():
        learner = _learner(store)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            assert await learner.wait(row.id, 10) == "completed"
            n.cancel_scope.cancel()
        day = datetime.now().strftime("%Y-%m-%d")
        log = await _read(store, "s", "daily-logs", f"{day}.md")
        assert log.count("Task: Deploy API v2 to staging\n") == 1
        assert log.count("Task: Roll back staging after the test failure\n") == 1
        assert log.count("## [") == 2
        ident = await _read(store, "s", "user-general-facts", "identity.md")
        assert ident == "# Identity\n\n- Name is Gus\n"
        prefs = await _read(store, "s", "user-general-facts", "deploy-preferences.md")
        assert prefs == "# Deploy Preferences\n\n- Prefers blue-green deployments\n"
        assert [x.status for x in await store.list_lessons()] == ["written"] * 3
        assert [t.learned for t in await store.list_tasks(row.id)] == [True, True]
        assert (await store.get_learning(row.id)).status == "completed"

    trio.run(second)
    store.close()


def test_learner_openai_resumes_after_crash_mid_distill(tmp_path):
    """Killed while the second of two tasks is distilled: after a restart only that task is
    distilled again; the first task's lesson and the stated fact come from the store."""
    path = str(tmp_path / "m.duckdb")
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("insert_task", description="Roll back staging", status="failed",
                     first_message=2, last_message=3),
                call("record_preference", preference="Name is Gus"), call("finish"),
                when=offers("insert_task"))
        deploy = both(offers("report_success"), mentions("Task: Deploy API v2 to staging"))
        rollback = both(offers("report_failure"), mentions("Task: Roll back staging"))
        srv.add(call("report_success", goal="deploy", approach="blue-green",
                     applies_when="deploys of API v2"), when=deploy)
        # the second distillation hangs: the process dies during it
        srv.add(Delay(30, call("report_failure", goal="late", symptom="late", applies_when="x")),
                call("report_failure", goal="roll back", symptom="script timed out",
                     applies_when="staging rollbacks"),
                when=rollback)
        srv.add(call("create_file", skill="user-general-facts", path="identity.md",
                     content="# Identity\n\n- Name is Gus\n", result=1),
                call("create_file", skill="daily-logs", path="2025-06-15.md",
                     content="# 2025-06-15\n\n## Deploy\n\n## Roll back\n", result=2),
                call("finish"), when=offers("create_file"))
        cfg = dict(backend="openai", base_url=srv.base_url, api_key="k", backoff=0.01)
        store = Store(path)

        async def first():
            learner = _learner(store, **cfg)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, row = await _session(store, "s", DEPLOY)
                await store.mark_session(row.id, "end")
                with trio.fail_after(10):
                    while not [r for r in srv.requests if rollback(r)]:
                        await trio.sleep(0.02)
                n.cancel_scope.cancel()
            return row

        row = trio.run(first)
        kept = trio.run(store.list_lessons)
        assert [(x.payload["kind"], x.status) for x in kept] == [
            ("preferences", "queued"), ("success", "queued")]
        store.close()
        store = Store(path)

        async def second():
            learner = _learner(store, **cfg)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                assert await learner.wait(row.id, 10) == "completed"
                n.cancel_scope.cancel()
            assert [x.payload["kind"] for x in await store.list_lessons()] == [
                "preferences", "success", "failure"]
            assert {x.status for x in await store.list_lessons()} == {"written"}
            assert [t.learned for t in await store.list_tasks(row.id)] == [True, True]
            assert "Gus" in await _read(store, "s", "user-general-facts", "identity.md")

        trio.run(second)
        store.close()
        assert srv.pending() == 0
        # extracted once (four turns); the first task distilled once, the second again
        assert len(srv.requests_offering("insert_task")) == 4
        assert len([r for r in srv.requests if deploy(r)]) == 1
        assert len([r for r in srv.requests if rollback(r)]) == 2
        # the stored lessons are written at once; the redone one joins them when it is ready
        writes = srv.requests_offering("create_file")
        first = writes[0]["messages"][1]["content"]
        assert "R1 — stated by the user" in first and "facts: Name is Gus" in first
        assert "R2 — task: Deploy API v2 to staging" in first and "approach: blue-green" in first
        # it joins the first run or comes in one of its own, depending on timing
        assert re.search(r"R\d — task: Roll back staging",
                         json.dumps(writes[-1]["messages"], ensure_ascii=False))
        assert "symptom: script timed out" in json.dumps(writes[-1]["messages"])
        assert json.dumps(writes[-1]["messages"]).count("Roll back staging") == 1


def test_failed_lessons_survive_a_restart_and_retry(tmp_path):
    """A session whose writing failed keeps its lessons across a restart; `retry` writes
    them without learning the messages again."""
    path = str(tmp_path / "f.duckdb")
    with LLMServer() as srv:
        srv.add(call("record_preference", preference="Name is Gus"), call("finish"),
                when=offers("insert_task"))
        srv.add(HTTPError(500), when=offers("create_file"))
        cfg = dict(backend="openai", base_url=srv.base_url, api_key="k", backoff=0.01, retries=0)
        store = Store(path)

        async def first():
            learner = _learner(store, **cfg)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, row = await _session(store, "s", [("user", "My name is Gus")])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "failed"
                n.cancel_scope.cancel()
            return row

        row = trio.run(first)
        [kept] = trio.run(store.list_lessons)
        assert kept.status == "failed" and "HTTP 500" in kept.error
        store.close()
        srv.add(call("create_file", skill="user-general-facts", path="identity.md",
                     content="# Identity\n\n- Name is Gus\n"), call("finish"),
                when=offers("create_file"))
        store = Store(path)

        async def second():
            learner = _learner(store, **cfg)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                # still failed after the restart: nothing is retried until asked
                assert await learner.wait(row.id, 0.5) == "failed"
                assert len(srv.requests_offering("create_file")) == 1
                await learner.retry(row.id)
                assert await learner.wait(row.id, 10) == "completed"
                n.cancel_scope.cancel()
            assert [x.status for x in await store.list_lessons()] == ["written"]
            assert await _read(store, "s", "user-general-facts", "identity.md") == \
                "# Identity\n\n- Name is Gus\n"

        trio.run(second)
        store.close()
        assert len(srv.requests_offering("insert_task")) == 2  # extracted once (two turns)
        assert srv.pending() == 0


def test_daily_log_continues_in_parts_at_the_size_cap(tmp_path):
    """A busy day fills its log to the cap; learning goes on in 2026-..-2.md, never fails."""
    store = Store(str(tmp_path / "cap.duckdb"), max_file_size=1500)

    async def main():
        learner = _learner(store)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            for i in range(12):
                _, row = await _session(store, "s", [
                    ("user", f"Deploy service number {i} to staging"),
                    ("assistant", f"Deployed service number {i} to staging; health checks pass.")])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "completed"
            n.cancel_scope.cancel()
        day = datetime.now().strftime("%Y-%m-%d")
        skill = _skill(store, "s", "daily-logs")
        parts = [rules.daily_log_name(day, n) for n in range(1, 20)
                 if rules.daily_log_name(day, n) in skill.files]
        assert len(parts) >= 2 and len(parts) == len([p for p in skill.files if day in p])
        text = ""
        for p in parts:
            part = await _read(store, "s", "daily-logs", p)
            assert len(part.encode()) <= 1500
            text += part
        assert (await _read(store, "s", "daily-logs", f"{day}-2.md")).startswith(
            f"# {day} (part 2)\n\n## [")
        for i in range(12):
            assert text.count(f"Task: Deploy service number {i} to staging\n") == 1
    try:
        trio.run(main)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------
# the model path: what each stage is shown, and what learning costs

def test_finish_in_the_edit_reply_waits_for_a_failed_call():
    """`finish` may come in the reply that makes the last edit, even listed first; it ends
    the loop only when the reply's other calls went through."""
    with LLMServer() as srv:
        srv.add(calls(("finish", {}), ("add", {"x": 1}), ("add", {"x": "bad"})),
                calls(("add", {"x": 2}), ("finish", {})))
        got: list[int] = []

        async def main():
            llm = _llm(srv)
            usage = Usage()
            res = await run_tools(llm, [{"role": "user", "content": "go"}], _tools(got),
                                  usage=usage)
            await llm.aclose()
            return res, usage

        res, usage = trio.run(main)
        assert got == [1, 2] and res.finished and res.turns == 2
        answers = [m["content"] for m in srv.requests[1]["messages"] if m["role"] == "tool"]
        assert answers[0].startswith("not finished: another call in this reply failed")
        assert answers[1] == "added" and "invalid arguments" in answers[2]
        # the endpoint's usage is what is counted
        assert usage.calls == 2 and usage.counted == "endpoint"
        assert usage.input_tokens == sum(count_tokens(json.dumps(
            {"messages": r["messages"], "tools": r["tools"]}, ensure_ascii=False))
            for r in srv.requests)


def test_usage_counted_locally_without_the_endpoints():
    with LLMServer() as srv:
        srv.report_usage = False
        srv.add(call("finish"))

        async def main():
            llm = _llm(srv)
            usage = Usage()
            await run_tools(llm, [{"role": "user", "content": "x" * 4000}], _tools([]),
                            usage=usage)
            await llm.aclose()
            return usage

        usage = trio.run(main)
        assert usage.calls == 1 and usage.counted in ("tiktoken", "estimate")
        assert 700 < usage.input_tokens < 1400 and usage.output_tokens > 0


def test_tool_output_keeps_its_end():
    log = "collected 61 items\n" + "tests/x.py PASSED\n" * 400 + "FAILED test_total - KeyError\n"
    shown = render([Msg(3, "tool", log), Msg(4, "user", "ok " * 10)])
    assert "FAILED test_total - KeyError" in shown and "collected 61 items" in shown
    assert "characters cut" in shown and len(shown) < 1300


def test_extraction_sees_known_facts_and_criteria(store):
    """Facts already in user-general-facts are shown and not recorded again; the session's
    task_criteria reach the extractor."""
    with LLMServer() as srv:
        srv.add(calls(("record_preference", {"preference": "Name is Gus."}),
                      ("record_preference", {"preference": "Uses vim"}),
                      ("insert_task", {"description": "Rename the module", "status": "success",
                                       "first_message": 0, "last_message": 1}),
                      ("finish", {})), when=offers("insert_task"))
        srv.add(call("report_success", goal="rename", approach="git mv",
                     applies_when="this repository"), when=offers("report_success"))
        srv.always(call("finish"), when=offers("create_file"))

        async def main():
            learner = _learner(store, backend="openai",
                               base_url=srv.base_url, api_key="k", backoff=0.01)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                sp = await store.create_space("s")
                facts = _skill(store, "s", "user-general-facts")
                await store.write_file(facts.id, "identity.md",
                                       b"# Identity\n\n- Name is Gus\n", author="fuse")
                row = await store.create_session(space_id=sp.id, configs={
                    "task_criteria": ["Done only when the tests pass"]})
                await store.add_messages(row.id, [_msg("user", "I'm Gus. Rename the module"),
                                                  _msg("assistant", "Renamed; tests pass.")])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "completed"
                kinds = [(x.payload["kind"], x.payload["fields"])
                         for x in await store.list_lessons()]
                n.cancel_scope.cancel()
            return kinds

        kinds = trio.run(main)
        prompt = srv.requests_offering("insert_task")[0]["messages"][1]["content"]
        assert "Facts about the user already recorded (known):\n- Name is Gus" in prompt
        assert "Task criteria (how this project judges a task):\n- Done only when the tests " \
               "pass" in prompt
        # only the new fact is kept ("Name is Gus." is the known one, told again)
        assert ("preferences", {"facts": ["Uses vim"]}) in kinds
        assert not any("Gus" in json.dumps(f) for k, f in kinds if k == "preferences")


def test_failed_task_cannot_be_skipped_and_lessons_are_scoped(store):
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Upgrade SQLAlchemy", status="failed",
                     first_message=0, last_message=1), call("finish"),
                when=offers("insert_task"))
        srv.add(call("skip", reason="small"),
                call("report_failure", goal="upgrade", symptom="pip conflict"),
                call("report_failure", goal="upgrade", symptom="pip conflict",
                     root_cause="flask-sqlalchemy 2.5 pins sqlalchemy<1.4",
                     applies_when="upgrading this service's SQLAlchemy", skill="dependencies"),
                when=offers("report_failure"))
        srv.always(call("finish"), when=offers("create_file"))

        async def main():
            learner = _learner(store, backend="openai",
                               base_url=srv.base_url, api_key="k", backoff=0.01)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                _, row = await _session(store, "s", [("user", "Upgrade SQLAlchemy"),
                                                     ("assistant", "pip: conflict; gave up")])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "completed"
                lessons = [x.payload for x in await store.list_lessons()]
                n.cancel_scope.cancel()
            return lessons

        [lesson] = trio.run(main)
        assert lesson["kind"] == "failure"
        assert lesson["fields"]["applies_when"] == "upgrading this service's SQLAlchemy"
        distill = srv.requests_offering("report_failure")
        assert [t["function"]["name"] for t in distill[0]["tools"]] == ["report_failure"]
        answers = [m["content"] for m in distill[-1]["messages"] if m["role"] == "tool"]
        assert "no tool named 'skip'" in answers[0]
        assert "applies_when" in answers[1]  # a report must say where it applies
        prompt = distill[0]["messages"][1]["content"]
        assert "- daily-logs: A diary of the agent's work" in prompt
        assert "- user-general-facts: Facts and preferences" in prompt


def test_writer_prompt_has_no_clock_and_shows_the_facts(store):
    """The writer's prompt holds no clock time (it is the same on a later run, so an endpoint
    caches it); a lesson's date is the session's; facts files are shown so the agent can
    change them without reading; an append needs no read."""
    with LLMServer() as srv:
        srv.add(calls(("append_to_file", {"skill": "user-general-facts", "path": "tools.md",
                                          "text": "- Uses tmux", "result": 1}),
                      ("finish", {})))

        async def main():
            sp = await store.create_space("s")
            facts = _skill(store, "s", "user-general-facts")
            await store.write_file(facts.id, "tools.md", b"# Tools\n\n- Uses vim\n", author="fuse")
            lesson = Lesson("sess", None, "preferences", "", None, AT,
                            fields={"facts": ["Uses tmux"]})
            llm = _llm(srv)
            await write_with_agent(llm, store, sp.id, [lesson])
            await write_with_agent(llm, store, sp.id, [lesson])
            await llm.aclose()
            return await _read(store, "s", "user-general-facts", "tools.md")

        text_ = trio.run(main)
        assert text_ == "# Tools\n\n- Uses vim\n- Uses tmux\n"
        first = srv.requests[0]["messages"][1]["content"]
        assert "Now:" not in first and datetime.now().strftime("%Y-%m-%d") not in first
        assert "R1 — stated by the user, 2025-06-15 14:30" in first
        assert "--- user-general-facts/tools.md ---\n# Tools\n\n- Uses vim" in first
        assert len(srv.requests) == 2  # one reply each: edit and finish together


# what learning costs: input tokens per learned task, measured on two fixture sessions with
# a model that batches its calls (tests/cost_script.py). Measured: deploy 2902, coding 3690
# (tokens estimated as characters / 4); the bounds leave about 15 %.
COST_BOUNDS = {"deploy": (3400, 2, "2026-03-12"), "coding": (4300, 3, "2026-03-14")}


@pytest.mark.parametrize("name", sorted(COST_BOUNDS))
def test_learning_cost_per_task(tmp_path, monkeypatch, name):
    from cost_script import measure

    from skillfs import tokens
    # the bounds were measured with the characters / 4 estimate: count the same way even
    # where tiktoken's BPE file happens to be cached
    monkeypatch.setattr(tokens, "encoding", lambda: None)
    bound, tasks, day = COST_BOUNDS[name]
    got = measure(str(tmp_path / "c.duckdb"), name, "batched")
    assert got["status"] == "completed" and got["tasks"] == tasks
    usage = got["usage"]
    assert usage["tasks"] == tasks and usage["calls"] == got["calls"]
    assert usage["input_tokens"] == got["input_tokens"]
    assert set(usage["stages"]) == {"extract", "distill", "write"}
    # one extraction call, one distillation per task, one writer call
    assert got["calls"] == tasks + 2
    assert usage["per_task"]["input_tokens"] < bound, usage
    # the session's original_date is the date written
    assert got["daily_logs"] == [f"{day}.md", "SKILL.md"]


def test_daemon_config_leaves_the_model_settings_to_the_environment(store, monkeypatch):
    """SKILLFS_LLM_MODEL and SKILLFS_LLM_TIMEOUT reach the learner when the command line
    says nothing; what it says wins."""
    from skillfs import config as configmod
    monkeypatch.setenv("SKILLFS_LLM_MODEL", "env-model")
    monkeypatch.setenv("SKILLFS_LLM_TIMEOUT", "7.5")
    monkeypatch.setenv("SKILLFS_CONFIG", "/nonexistent")
    cfg = configmod.load(flags={"learner.backend": "openai"})
    llm = Learner(store, cfg.learner).llm
    assert (llm.config.model, llm.config.timeout) == ("env-model", 7.5)
    cfg = configmod.load(flags={"learner.backend": "openai", "learner.model": "flag-model"})
    assert Learner(store, cfg.learner).llm.config.model == "flag-model"
