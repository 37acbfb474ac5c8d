"""Learning through the real daemon: spool files in, skill files out, read through the mount.

The model is a scripted OpenAI-compatible server (tests/llm_server.py) reached with the real
`openai` SDK over a socket; the rules learner needs no model at all.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import datetime

import pytest

from conftest import run, wait_for
from llm_server import Delay, HTTPError, LLMServer, both, call, calls, mentions, offers

TERMINAL = ("completed", "failed")


def learning_daemon(make_daemon, backend: str, srv: LLMServer | None = None, **learner):
    d = make_daemon("--learner", backend, start=False)
    learner_config(d, srv, **learner)
    d.start()
    return d


def learner_config(d, srv: LLMServer | None = None, **learner) -> None:
    """The daemon's [learner] settings (read when it starts)."""
    settings = {"idle_seconds": 0.5, **learner}
    if srv is not None:
        settings.update(base_url=srv.base_url, api_key="test-key")
    d.home.mkdir(parents=True, exist_ok=True)
    lines = ["[learner]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (d.home / "config.toml").write_text("\n".join(lines) + "\n")


def spool(d, space: str, session: str, records: list[dict], name: str = "001.jsonl") -> None:
    d.write_spool(f"{space}/{session}/{name}", "".join(json.dumps(r) + "\n" for r in records))


def session_id(d, space: str, name: str) -> str:
    def find():
        r = d.api("GET", "/skillfs/v1/sessions")
        return next((s["id"] for s in r.json() if s["name"] == name), None)
    return wait_for(find, timeout=15, what=f"session {name} to be ingested")


def learning(d, sid: str) -> dict:
    return d.api("GET", f"/skillfs/v1/sessions/{sid}").json()


def wait_learned(d, sid: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (lambda s: s if s["learning_status"] in TERMINAL else None)(
        learning(d, sid)), timeout=timeout, interval=0.05, what=f"learning of {sid}")


def today() -> str:
    return datetime.now().strftime("%Y-%m-%d")


DEPLOY = [
    {"role": "user", "content": "I prefer blue-green deployments. Deploy API v2 to staging"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "c1", "type": "function",
        "function": {"name": "deploy", "arguments": "{\"env\": \"staging\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "deployed v2, health checks green"},
    {"role": "assistant", "content": "Blue-green deploy completed, zero downtime."},
    {"role": "user", "content": "Thanks! Now roll back staging after the test failure"},
    {"role": "assistant", "content": "The rollback script timed out on the large DB."},
    {"role": "user", "content": "Always run DB migrations before switching traffic."},
    {"event": "end"},
]


# ---------------------------------------------------------------------------------------
# the rules learner

def test_rules_deploy_scenario(make_daemon):
    d = learning_daemon(make_daemon, "rules")
    spool(d, "alice", "deploy", DEPLOY)
    sid = session_id(d, "alice", "deploy")
    assert wait_learned(d, sid)["learning_status"] == "completed"
    log = (d.mnt / "alice" / "daily-logs" / f"{today()}.md").read_text()
    assert log.startswith(f"# {today()}\n\n## [")
    assert "Task: Deploy API v2 to staging\n- **Outcome**: success\n- **Summary**: " in log
    assert "Task: Roll back staging after the test failure\n- **Outcome**: failed" in log
    # the agent gave no reasons: no boilerplate ("Used deploy") in their place
    assert "Key Decisions" not in log and "Learnings" not in log
    facts = d.mnt / "alice" / "user-general-facts"
    deploy = (facts / "deploy-preferences.md").read_text()
    assert deploy.startswith("# Deploy Preferences\n")
    assert "- Prefers blue-green deployments" in deploy
    assert "- Always run DB migrations before switching traffic" in deploy
    # history says who wrote it and why
    out = d.cli("log", str(d.mnt / "alice" / "daily-logs" / f"{today()}.md")).stdout
    assert "learner" in out


def test_rules_gus_found_by_grep(make_daemon):
    d = learning_daemon(make_daemon, "rules")
    spool(d, "quick", "s1", [{"role": "user", "content": "My name is Gus"}])
    sid = session_id(d, "quick", "s1")
    # no end event: the idle timer triggers learning
    assert wait_learned(d, sid)["learning_status"] == "completed"
    r = run("grep", "-ri", "gus", str(d.mnt))
    assert "user-general-facts/identity.md:- Name is Gus" in r.stdout
    # said again in another session: still one line
    spool(d, "quick", "s2", [{"role": "user", "content": "my name is Gus"}, {"event": "end"}])
    wait_learned(d, session_id(d, "quick", "s2"))
    assert (d.mnt / "quick" / "user-general-facts" / "identity.md").read_text().count("Gus") == 1


# ---------------------------------------------------------------------------------------
# a scripted model

def gus_script(srv: LLMServer, name: str = "Gus") -> None:
    srv.add(call("record_preference", preference=f"Name is {name}"), call("finish"),
            when=offers("insert_task"))
    srv.add(call("create_file", skill="user-general-facts", path="identity.md",
                 content=f"# Identity\n\n- Name is {name}\n"), call("finish"),
            when=offers("create_file"))


def test_model_gus_found_by_grep(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        gus_script(srv)
        spool(d, "quick", "s1", [{"role": "user", "content": "My name is Gus"},
                                 {"event": "end"}])
        sid = session_id(d, "quick", "s1")
        assert wait_learned(d, sid)["learning_status"] == "completed"
        r = run("grep", "-ri", "gus", str(d.mnt))
        assert "user-general-facts/identity.md:- Name is Gus" in r.stdout
        extract = srv.requests_offering("insert_task")[0]
        assert extract["model"] == "gpt-4.1"
        assert "My name is Gus" in json.dumps(extract["messages"])


def test_model_deploy_scenario(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=3),
                call("insert_task", description="Roll back staging after test failure",
                     status="failed", first_message=4, last_message=5),
                call("record_preference", preference="Prefers blue-green deployments", task=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging",
                     key_decisions=["Ran DB migration before switching traffic"]),
                when=mentions("Deploy API v2 to staging"))
        srv.add(call("report_failure", goal="Roll back staging",
                     symptom="Rollback script timed out on large DB",
                     applies_when="Rolling back staging with a large DB"),
                when=mentions("Roll back staging"))
        day = today()
        entry = ("## [14:30] Task: Deploy API v2 to staging\n- **Outcome**: success\n"
                 "- **Summary**: Blue-green deploy completed\n")
        srv.add(call("create_file", skill="daily-logs", path=f"{day}.md",
                     content=f"# {day}\n\n{entry}", result=1),
                call("append_to_file", skill="daily-logs", path=f"{day}.md", result=2,
                     text="## [16:00] Task: Roll back staging after test failure\n"
                          "- **Outcome**: failed\n"),
                call("create_file", skill="user-general-facts", path="deploy-preferences.md",
                     content="# Deploy Preferences\n\n- Always use blue-green deployments\n",
                     result=1),
                call("finish"), when=offers("create_file"))
        spool(d, "alice", "deploy", DEPLOY)
        sid = session_id(d, "alice", "deploy")
        assert wait_learned(d, sid)["learning_status"] == "completed"
        log = (d.mnt / "alice" / "daily-logs" / f"{day}.md").read_text()
        assert "- **Outcome**: success" in log and "- **Outcome**: failed" in log
        prefs = d.mnt / "alice" / "user-general-facts" / "deploy-preferences.md"
        assert "blue-green" in prefs.read_text()
        tasks = learning(d, sid)["tasks"]
        assert [(t["description"], t["status"]) for t in tasks] == [
            ("Deploy API v2 to staging", "success"),
            ("Roll back staging after test failure", "failed")]
        # the writer saw both lessons and the preference
        first = srv.requests_offering("create_file")[0]["messages"][1]["content"]
        assert "R1 — task: Deploy API v2 to staging" in first
        assert "symptom: Rollback script timed out" in first
        assert "Prefers blue-green deployments" in first


def _conversations(srv: LLMServer, tool: str) -> list[tuple[float, float, str]]:
    """Writer runs as (start, end, first prompt): requests sharing a first prompt."""
    runs: dict[str, list[float]] = {}
    for received, answered, req in srv.timings:
        if tool in {t["function"]["name"] for t in req.get("tools") or []}:
            key = req["messages"][1]["content"]
            span = runs.setdefault(key, [received, answered])
            span[0], span[1] = min(span[0], received), max(span[1], answered)
    return [(a, b, k) for k, (a, b) in runs.items()]


def test_one_writer_per_space_spaces_in_parallel(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        for who in ("Ann", "Bob", "Cid"):
            srv.add(call("record_preference", preference=f"Name is {who}"), call("finish"),
                    when=mentions(f"My name is {who}"))
        # every writer run takes a while, so runs would overlap if they could
        srv.always(lambda req: Delay(1.0, call("finish")), when=offers("create_file"))
        spool(d, "one", "ann", [{"role": "user", "content": "My name is Ann"}, {"event": "end"}])
        spool(d, "one", "bob", [{"role": "user", "content": "My name is Bob"}, {"event": "end"}])
        spool(d, "two", "cid", [{"role": "user", "content": "My name is Cid"}, {"event": "end"}])
        for space, name in (("one", "ann"), ("one", "bob"), ("two", "cid")):
            assert wait_learned(d, session_id(d, space, name))["learning_status"] == "completed"
        runs = _conversations(srv, "create_file")
        one = sorted(r for r in runs if "Ann" in r[2] or "Bob" in r[2])
        two = [r for r in runs if "Cid" in r[2]]
        # space one: never two runs at once (a lesson that arrives mid-run joins that run)
        for (_, a1, _), (b0, _, _) in itertools.pairwise(one):
            assert b0 >= a1 - 0.05, "two writer runs overlapped in one space"
        written = json.dumps([req["messages"] for req in srv.requests_offering("create_file")])
        assert "Name is Ann" in written and "Name is Bob" in written
        # spaces one and two: written at the same time
        assert two and any(a0 < two[0][1] and two[0][0] < a1 for a0, a1, _ in one)


# ---------------------------------------------------------------------------------------
# failures, retry, concurrent edits, wait

@pytest.mark.parametrize("failure", ["malformed", "http500", "timeout"])
def test_failures_then_retry(make_daemon, failure):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv, retries=1, timeout=0.5)
        bad = {
            "malformed": call("record_preference", '{"preference": '),
            "http500": HTTPError(500, "injected failure"),
            "timeout": Delay(1.5, call("finish")),
        }[failure]
        srv.always(bad, when=offers("insert_task"))
        spool(d, "alice", "s1", [{"role": "user", "content": "My name is Gus"},
                                 {"event": "end"}])
        sid = session_id(d, "alice", "s1")
        st = wait_learned(d, sid)
        assert st["learning_status"] == "failed"
        reason = {"malformed": "invalid tool calls", "http500": "HTTP 500",
                  "timeout": "timed out"}[failure]
        assert reason in st["learning_error"]
        # retries happened before giving up
        assert len(srv.requests_offering("insert_task")) >= 2
        srv._rules.clear()
        gus_script(srv)
        d.cli("learn", "retry", sid)
        assert wait_learned(d, sid)["learning_status"] == "completed"
        assert "Gus" in (d.mnt / "alice" / "user-general-facts" / "identity.md").read_text()


def test_person_edit_during_learner_run_survives(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        ident = d.mnt / "alice" / "user-general-facts" / "identity.md"
        os.mkdir(d.mnt / "alice")
        ident.write_text("# Identity\n\n- Name is Bob\n")

        def person_edits_then_replace(req):
            # between the agent reading the file and its edit, a person saves it
            with open(ident, "a") as f:
                f.write("- Works as an SRE\n")
            return call("replace_in_file", skill="user-general-facts", path="identity.md",
                        old_text="- Name is Bob", new_text="- Name is Gus")

        srv.add(call("record_preference", preference="Name is Gus"), call("finish"),
                when=offers("insert_task"))
        srv.add(call("read_file", skill="user-general-facts", path="identity.md"),
                person_edits_then_replace, call("finish"), when=offers("create_file"))
        spool(d, "alice", "s1", [{"role": "user", "content": "Actually, my name is Gus"},
                                 {"event": "end"}])
        sid = session_id(d, "alice", "s1")
        assert wait_learned(d, sid)["learning_status"] == "completed"
        assert ident.read_text() == "# Identity\n\n- Name is Gus\n- Works as an SRE\n"
        answers = [m["content"] for m in srv.requests_offering("create_file")[-1]["messages"]
                   if m["role"] == "tool"]
        assert answers[-1] == "ok"


def test_wait_returns_after_files_are_written(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        srv.add(call("record_preference", preference="Name is Gus"), call("finish"),
                when=offers("insert_task"))
        srv.add(Delay(1.5, call("create_file", skill="user-general-facts", path="identity.md",
                                content="# Identity\n\n- Name is Gus\n")),
                call("finish"), when=offers("create_file"))
        spool(d, "alice", "s1", [{"role": "user", "content": "My name is Gus"},
                                 {"event": "end"}])
        sid = session_id(d, "alice", "s1")
        ident = d.mnt / "alice" / "user-general-facts" / "identity.md"
        seen = set()
        while True:
            st = learning(d, sid)["learning_status"]
            seen.add(st)
            if st in TERMINAL:
                break
            assert not ident.exists() or "Gus" in ident.read_text()
            time.sleep(0.05)
        assert st == "completed"
        # no sleep: once completed is reported, the file is there
        assert "Name is Gus" in ident.read_text()
        assert "writing" in seen
        r = d.cli("learn", "wait", sid, "--timeout", "10")
        assert "completed" in r.stdout


def test_model_idle_after_the_answer_closes_the_last_task(make_daemon):
    # no end event: once the session is idle after the agent's answer, extraction is told
    # the conversation has ended, so the last task is judged now and not left open
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        srv.add(call("insert_task", description="Run the tests", status="success",
                     first_message=0, last_message=1), call("finish"),
                when=both(offers("insert_task"), mentions("The conversation has ended.")))
        spool(d, "alice", "s1", [{"role": "user", "content": "Run the tests"},
                                 {"role": "assistant", "content": "All 12 tests pass."}])
        sid = session_id(d, "alice", "s1")
        assert wait_learned(d, sid)["learning_status"] == "completed"
        assert [(t["description"], t["status"]) for t in learning(d, sid)["tasks"]] == [
            ("Run the tests", "success")]
        # the agent still working (a tool call last): the task stays open
        spool(d, "alice", "s2", [{"role": "user", "content": "Run the slow tests"},
                                 {"role": "assistant", "content": None, "tool_calls": [{
                                     "id": "c1", "type": "function",
                                     "function": {"name": "pytest", "arguments": "{}"}}]}])
        sid2 = session_id(d, "alice", "s2")
        assert wait_learned(d, sid2)["learning_status"] == "completed"
        asked = [r for r in srv.requests_offering("insert_task") if "slow tests" in json.dumps(r)]
        assert asked and all("The conversation has ended." not in json.dumps(r) for r in asked)


def test_rules_idle_learns_the_last_task_and_a_late_reaction_rewrites_it(make_daemon):
    d = learning_daemon(make_daemon, "rules")
    spool(d, "alice", "fix", [
        {"role": "user", "content": "Fix the flaky login test",
         "timestamp": "2025-03-04T10:00:00Z"},
        {"role": "assistant", "timestamp": "2025-03-04T10:05:00Z",
         "content": "I pinned the clock in the fixture because the test raced midnight. "
                    "The test passes now."}])
    sid = session_id(d, "alice", "fix")
    # no end event: the idle timer writes the finished-looking task, dated by its messages
    assert wait_learned(d, sid)["learning_status"] == "completed"
    day = d.mnt / "alice" / "daily-logs" / "2025-03-04.md"
    log = day.read_text()
    assert "## [10:05] Task: Fix the flaky login test\n- **Outcome**: success" in log
    assert ("- **Key Decisions**: I pinned the clock in the fixture because the test raced "
            "midnight.") in log
    # a day later the user says it does not work: the same entry is judged again
    spool(d, "alice", "fix", [{"role": "user", "content": "Actually it doesn't work, still flaky.",
                               "timestamp": "2025-03-05T09:00:00Z"}, {"event": "end"}],
          name="002.jsonl")
    wait_for(lambda: "- **Outcome**: failed" in day.read_text(), timeout=30,
             what="the entry to be judged again")
    log = day.read_text()
    assert log.count("## [") == 1 and "Actually it doesn't work" in log
    assert not (d.mnt / "alice" / "daily-logs" / "2025-03-05.md").exists()
    versions = d.cli("log", str(day)).stdout
    assert versions.count("learner") >= 2


def test_rules_original_date_dates_a_backfilled_session(make_daemon):
    d = learning_daemon(make_daemon, "rules")
    os.mkdir(d.mnt / "alice")
    r = d.api("POST", "/api/v1/session", json={"configs": {"original_date": "2024-02-29"}})
    assert r.status_code == 201, r.text
    sid = r.json()["data"]["id"]
    spool(d, "alice", sid, [{"role": "user", "content": "Rotate the staging certificates"},
                            {"role": "assistant", "content": "Rotated, all checks green."},
                            {"event": "end"}])
    assert wait_learned(d, sid)["learning_status"] == "completed"
    log = (d.mnt / "alice" / "daily-logs" / "2024-02-29.md").read_text()
    assert "Task: Rotate the staging certificates\n- **Outcome**: success" in log
    assert not (d.mnt / "alice" / "daily-logs" / f"{today()}.md").exists()


def test_rules_api_messages_dated_by_their_time(make_daemon):
    d = learning_daemon(make_daemon, "rules")
    with d.http() as c:
        space = c.post("/api/v1/learning_spaces", json={"meta": {"name": "bob"}}).json()["data"]
        sid = c.post("/api/v1/session", json={}).json()["data"]["id"]
        assert c.post(f"/api/v1/learning_spaces/{space['id']}/learn",
                      json={"session_id": sid}).status_code == 201
        sends = [({"role": "user", "content": "Prune the old docker images",
                   "timestamp": 1717236000}, None),  # 2024-06-01T10:00:00Z, epoch seconds
                 ({"role": "assistant", "content": "Pruned 31 images, freed 12 GB."},
                  {"created_at": "2024-06-01T10:05:00+00:00"})]  # the API message's meta
        for blob, meta in sends:
            r = c.post(f"/api/v1/session/{sid}/messages",
                       json={"format": "openai", "blob": blob, "meta": meta})
            assert r.status_code == 201, r.text
        assert c.post(f"/api/v1/session/{sid}/flush").status_code == 200
    assert wait_learned(d, sid)["learning_status"] == "completed"
    log = (d.mnt / "bob" / "daily-logs" / "2024-06-01.md").read_text()
    assert "## [10:05] Task: Prune the old docker images\n- **Outcome**: success" in log


# ---------------------------------------------------------------------------------------
# a crash between distillation and writing: nothing lost, nothing written twice

def test_rules_kill9_between_distill_and_write(make_daemon):
    # the space's writer waits a minute before it starts: the lessons are distilled and
    # queued, and the daemon dies before any file is written
    d = learning_daemon(make_daemon, "rules", write_delay=60)
    spool(d, "alice", "deploy", DEPLOY)
    sid = session_id(d, "alice", "deploy")
    wait_for(lambda: learning(d, sid)["learning_status"] == "queued", timeout=30,
             what="the lessons to be queued")
    day_file = d.mnt / "alice" / "daily-logs" / f"{today()}.md"
    assert not day_file.exists()
    d.kill9()
    learner_config(d)
    d.start()
    assert wait_learned(d, sid)["learning_status"] == "completed"
    log = day_file.read_text()
    assert log.count("Task: Deploy API v2 to staging\n- **Outcome**: success") == 1
    assert log.count("Task: Roll back staging after the test failure\n- **Outcome**: failed") == 1
    assert log.count("## [") == 2
    # the facts were stated in messages learned before the crash: they come from the store
    facts = d.mnt / "alice" / "user-general-facts"
    assert (facts / "deploy-preferences.md").read_text().count("blue-green") == 1
    assert (facts / "deploy-preferences.md").read_text().count("DB migrations") == 1
    # a second restart changes nothing
    d.restart()
    assert wait_learned(d, sid)["learning_status"] == "completed"
    assert day_file.read_text() == log


def test_model_kill9_while_writing_resumes_without_redoing_work(make_daemon):
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=3),
                call("record_preference", preference="Prefers blue-green deployments"),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        day = today()
        # the first writer run hangs on its first model call; the daemon is killed in it
        srv.add(Delay(30, call("finish")), when=offers("create_file"))
        srv.add(call("create_file", skill="daily-logs", path=f"{day}.md", result=2,
                     content=f"# {day}\n\n## [14:30] Task: Deploy API v2 to staging\n"
                             "- **Outcome**: success\n"),
                call("create_file", skill="user-general-facts", path="deploy-preferences.md",
                     content="# Deploy Preferences\n\n- Prefers blue-green deployments\n",
                     result=1),
                call("finish"), when=offers("create_file"))
        spool(d, "alice", "deploy", DEPLOY[:4] + [{"event": "end"}])
        sid = session_id(d, "alice", "deploy")
        wait_for(lambda: srv.requests_offering("create_file"), timeout=30,
                 what="the writer to start")
        assert learning(d, sid)["learning_status"] == "writing"
        # extraction took three turns (insert, record, finish), distillation one
        before = [len(srv.requests_offering(t)) for t in ("insert_task", "report_success")]
        assert before == [3, 1]
        d.kill9()
        d.start()
        assert wait_learned(d, sid)["learning_status"] == "completed"
        log = (d.mnt / "alice" / "daily-logs" / f"{day}.md").read_text()
        assert log.count("Task: Deploy API v2 to staging") == 1
        prefs = d.mnt / "alice" / "user-general-facts" / "deploy-preferences.md"
        assert prefs.read_text().count("blue-green") == 1
        # the lessons came from the store: no second extraction or distillation
        assert [len(srv.requests_offering(t)) for t in ("insert_task", "report_success")] \
            == before
        writes = srv.requests_offering("create_file")
        assert len(writes) == 4  # the hung call, then create, create, finish
        again = writes[1]["messages"][1]["content"]
        # the same prompt, byte for byte (no clock in it): an endpoint's cache serves it
        assert writes[0]["messages"][:2] == writes[1]["messages"][:2]
        assert "R1 — stated by the user" in again and "Prefers blue-green deployments" in again
        assert "R2 — task: Deploy API v2 to staging" in again
        assert "approach: Blue-green deploy" in again
        assert srv.pending() == 0


def test_model_session_dated_by_its_configs_and_usage_reported(make_daemon):
    """A session made through the Acontext API with `original_date` and `task_criteria` in
    its configs: the daily log is that day's file; what learning cost is reported per
    session (/skillfs/v1/learning) and in total (/skillfs/v1/status)."""
    day = "2026-03-12"
    with LLMServer() as srv:
        d = learning_daemon(make_daemon, "openai", srv)
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))

        def write(req):
            lesson = req["messages"][1]["content"]
            assert f"finished {day} " in lesson
            return calls(("create_file", {"skill": "daily-logs", "path": f"{day}.md",
                                          "content": f"# {day}\n\n## [09:00] Task: Deploy\n"}),
                         ("finish", {}))
        srv.add(write, when=offers("create_file"))
        space = d.api("POST", "/api/v1/learning_spaces",
                      json={"meta": {"name": "alice"}}).json()["data"]["id"]
        sid = d.api("POST", "/api/v1/session", json={"configs": {
            "original_date": day, "task_criteria": "Deployed only when health checks pass"}}
        ).json()["data"]["id"]
        d.api("POST", f"/api/v1/learning_spaces/{space}/learn", json={"session_id": sid})
        for role, content in (("user", "Deploy API v2 to staging"),
                              ("assistant", "Deployed; health checks green.")):
            d.api("POST", f"/api/v1/session/{sid}/messages",
                  json={"blob": {"role": role, "content": content}})
        d.api("POST", f"/api/v1/session/{sid}/flush")
        assert wait_learned(d, sid)["learning_status"] == "completed"
        assert (d.mnt / "alice" / "daily-logs" / f"{day}.md").read_text().startswith(f"# {day}")
        extract = srv.requests_offering("insert_task")[0]["messages"][1]["content"]
        assert "Deployed only when health checks pass" in extract
        [row] = d.api("GET", "/skillfs/v1/learning", params={"session": sid}).json()
        usage = row["usage"]
        # every model call is counted (the idle timer may have run extraction once more)
        assert usage["tasks"] == 1 and usage["calls"] == len(srv.requests)
        assert set(usage["stages"]) == {"extract", "distill", "write"}
        assert usage["input_tokens"] > 1000 and usage["output_tokens"] > 0
        assert usage["per_task"]["input_tokens"] == usage["input_tokens"]
        total = d.api("GET", "/skillfs/v1/status").json()["learner_usage"]
        assert total["calls"] == len(srv.requests) and total["tasks"] == 1
