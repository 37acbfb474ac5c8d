"""Several daemons learning into one PostgreSQL database: each on a mountpoint, home and spool
of its own, as separate hosts would be, sharing the database given with `--db`.

Claims (store/claims.py) keep one writer per space across the daemons and learn each task
once, whichever daemon ingested its session; a daemon killed while it holds a space's claim
leaves the work to another. The rules learner needs no model; the model learner talks to the
scripted server of tests/llm_server.py, which records when each call came and went.

These tests start their own daemons on a fresh database of the session's server, so they run
only where PostgreSQL is the backend (`--backend postgres`).

Until daemons follow each other's changes (the change feed) and allocate file ids apart,
a daemon only sees files that were there when it started, and two daemons must not create
files: the spaces and their day's log exist before the later daemons start.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest

from conftest import Daemon, wait_for
from llm_server import Delay, LLMServer, call, mentions, offers

# several daemons on one database: the postgres suite's (deselected without --backend postgres)
pytestmark = [pytest.mark.long, pytest.mark.postgres_only]

TERMINAL = ("completed", "failed")


def configure(d: Daemon, srv: LLMServer | None = None) -> None:
    """The daemon's [learner] settings (read when it starts)."""
    settings: dict[str, object] = {"idle_seconds": 0.5}
    if srv is not None:
        settings.update(base_url=srv.base_url, api_key="test-key")
    d.home.mkdir(parents=True, exist_ok=True)
    lines = ["[learner]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (d.home / "config.toml").write_text("\n".join(lines) + "\n")


def host(make_daemon: Callable[..., Daemon], url: str, learner: str,
         srv: LLMServer | None = None) -> Daemon:
    d = make_daemon("--learner", learner, "--db", url, start=False)
    configure(d, srv)
    d.start()
    return d


def spool(d: Daemon, space: str, session: str, records: list[dict]) -> None:
    d.write_spool(f"{space}/{session}/001.jsonl",
                  "".join(json.dumps(r) + "\n" for r in records))


def session_id(d: Daemon, name: str) -> str:
    def find() -> str | None:
        sessions = d.api("GET", "/skillfs/v1/sessions").json()
        return next((s["id"] for s in sessions if s["name"] == name), None)
    return wait_for(find, timeout=30, what=f"session {name} to be ingested")


def wait_learned(d: Daemon, sid: str, timeout: float = 60) -> str:
    def status() -> str | None:
        st = d.api("GET", f"/skillfs/v1/sessions/{sid}").json()["learning_status"]
        return st if st in TERMINAL else None
    return wait_for(status, timeout=timeout, interval=0.1, what=f"learning of {sid}")


def query(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(url) as con:
        return con.execute(sql, list(args)).fetchall()


def today() -> str:
    return datetime.now().strftime("%Y-%m-%d")


def deploy(tag: str) -> list[dict]:
    """A session of one task that succeeds, then ends."""
    return [{"role": "user", "content": f"Deploy the {tag} service to staging"},
            {"role": "assistant", "content": f"Deployed the {tag} service; health checks are "
                                             "green, the deploy completed."},
            {"event": "end"}]


def unmount_dead(d: Daemon) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], check=False)


# ---------------------------------------------------------------------------------------
# every host's sessions learned, each task once

def test_sessions_spooled_on_every_host_are_each_learned_once(make_daemon, pg_url):
    first = host(make_daemon, pg_url, "rules")
    day = today()
    for space in ("alpha", "beta"):
        os.mkdir(first.mnt / space)
        # the day's log made here: the writers only append to it
        (first.mnt / space / "daily-logs" / f"{day}.md").write_text(f"# {day}\n")
    hosts = [first] + [host(make_daemon, pg_url, "rules") for _ in range(2)]
    sessions = {(h, space, f"h{h}-{space}-{i}")
                for h in range(3) for space in ("alpha", "beta") for i in range(3)}
    for h, space, name in sorted(sessions):  # every host's spool at once
        spool(hosts[h], space, name, deploy(name))
    for h, _, name in sorted(sessions):
        assert wait_learned(hosts[h], session_id(hosts[h], name)) == "completed", name

    tasks = query(pg_url, "SELECT description, status, learned FROM tasks")
    assert sorted(d for d, _, _ in tasks) == sorted(
        f"Deploy the {name} service to staging" for _, _, name in sessions)
    assert {(status, learned) for _, status, learned in tasks} == {("success", True)}
    assert query(pg_url, "SELECT status, count(*) FROM lessons GROUP BY status") \
        == [("written", len(sessions))]
    # one learner edit for each task: its entry, appended once
    edits = query(pg_url, "SELECT task_id, count(*) FROM file_versions WHERE author = "
                          "'learner' GROUP BY task_id")
    assert len(edits) == len(sessions) and {n for _, n in edits} == {1}
    # a daemon started now reads every entry once, whichever daemon wrote it
    reader = make_daemon("--learner", "off", "--db", pg_url)
    for space in ("alpha", "beta"):
        log = (reader.mnt / space / "daily-logs" / f"{day}.md").read_text()
        for _, in_space, name in sessions:
            assert log.count(f"Task: Deploy the {name} service") == (in_space == space)


# ---------------------------------------------------------------------------------------
# one writer per space across daemons

def _writer_runs(srv: LLMServer) -> list[tuple[float, float, str]]:
    """The skill writer's runs as (first call received, last answered, first prompt)."""
    runs: dict[str, list[float]] = {}
    for received, answered, req in srv.timings:
        if "create_file" in {t["function"]["name"] for t in req.get("tools") or []}:
            span = runs.setdefault(req["messages"][1]["content"], [received, answered])
            span[0], span[1] = min(span[0], received), max(span[1], answered)
    return sorted((a, b, prompt) for prompt, (a, b) in runs.items())


def test_two_daemons_never_write_one_space_at_once(make_daemon, pg_url):
    with LLMServer() as srv:
        names = ("Ann", "Bob", "Cid", "Dan")
        for who in names:
            srv.add(call("record_preference", preference=f"Name is {who}"), call("finish"),
                    when=mentions(f"My name is {who}"))
        # every writer run takes a while: runs on two daemons would overlap if they could
        srv.always(lambda req: Delay(1.0, call("finish")), when=offers("create_file"))
        one = host(make_daemon, pg_url, "openai", srv)
        os.mkdir(one.mnt / "team")
        two = host(make_daemon, pg_url, "openai", srv)
        for d, who in zip((one, two, one, two), names, strict=True):
            spool(d, "team", who.lower(), [{"role": "user", "content": f"My name is {who}"},
                                           {"event": "end"}])
        for d, who in zip((one, two, one, two), names, strict=True):
            assert wait_learned(d, session_id(d, who.lower())) == "completed"
        runs = _writer_runs(srv)
        for (_, ended, _), (began, _, _) in itertools.pairwise(runs):
            assert began >= ended - 0.05, "two writer runs overlapped in one space"
        # each lesson reached a writer once, and was written once
        told = json.dumps([req["messages"] for _, _, req in srv.timings
                           if "create_file" in json.dumps(req.get("tools"))])
        for who in names:
            assert f"Name is {who}" in told
        assert query(pg_url, "SELECT status, count(*) FROM lessons GROUP BY status") \
            == [("written", len(names))]
        prompts = [prompt for _, _, prompt in runs]
        for who in names:
            assert sum(f"Name is {who}" in p for p in prompts) <= 1


# ---------------------------------------------------------------------------------------
# kill -9 of the daemon holding a space's claim while it writes

def test_kill9_of_the_writing_daemon_another_finishes_the_work(make_daemon, pg_url):
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        day = today()
        # the first daemon's writer hangs on its first model call; it is killed in it
        srv.add(Delay(60, call("finish")), when=offers("create_file"))
        srv.add(call("create_file", skill="daily-logs", path=f"{day}.md",
                     content=f"# {day}\n\n## [14:30] Task: Deploy API v2 to staging\n"
                             "- **Outcome**: success\n"),
                call("finish"), when=offers("create_file"))
        writing = host(make_daemon, pg_url, "openai", srv)
        os.mkdir(writing.mnt / "alice")
        other = host(make_daemon, pg_url, "openai", srv)
        spool(writing, "alice", "deploy", [
            {"role": "user", "content": "Deploy API v2 to staging"},
            {"role": "assistant", "content": "Blue-green deploy completed, zero downtime."},
            {"event": "end"}])
        sid = session_id(writing, "deploy")
        wait_for(lambda: srv.requests_offering("create_file"), timeout=30,
                 what="the writer to start")
        assert query(pg_url, "SELECT status FROM lessons") == [("queued",)]
        writing.kill9()
        unmount_dead(writing)
        # the other daemon takes the space once the dead one's connection is gone
        assert wait_learned(other, sid) == "completed"
        log = (other.mnt / "alice" / "daily-logs" / f"{day}.md").read_text()
        assert log.count("Task: Deploy API v2 to staging") == 1
        assert query(pg_url, "SELECT status FROM lessons") == [("written",)]
        assert query(pg_url, "SELECT status, learned FROM tasks") == [("success", True)]
        # nothing extracted or distilled twice; the writer ran again, once
        assert [len(srv.requests_offering(t)) for t in ("insert_task", "report_success")] \
            == [2, 1]
        assert len(srv.requests_offering("create_file")) == 3  # the hung call, create, finish
        assert srv.pending() == 0


# ---------------------------------------------------------------------------------------
# kill -9 of the daemon learning a session: another daemon takes the session over

def test_kill9_while_extracting_another_daemon_learns_the_session(make_daemon, pg_url):
    with LLMServer() as srv:
        # the first daemon's extraction hangs; it is killed in it
        srv.add(Delay(120, call("finish")), when=offers("insert_task"))
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        srv.add(call("append_to_file", skill="daily-logs", path=f"{today()}.md",
                     text="## [14:30] Task: Deploy API v2 to staging\n- **Outcome**: success\n"),
                call("finish"), when=offers("create_file"))
        learning = host(make_daemon, pg_url, "openai", srv)
        os.mkdir(learning.mnt / "alice")
        log = learning.mnt / "alice" / "daily-logs" / f"{today()}.md"
        log.write_text(f"# {today()}\n")
        other = host(make_daemon, pg_url, "openai", srv)
        spool(learning, "alice", "deploy", [
            {"role": "user", "content": "Deploy API v2 to staging"},
            {"role": "assistant", "content": "Blue-green deploy completed, zero downtime."},
            {"event": "end"}])
        sid = session_id(learning, "deploy")
        wait_for(lambda: srv.requests_offering("insert_task"), timeout=30,
                 what="the extraction to start")
        learning.kill9()
        unmount_dead(learning)
        # its learning row stops moving; after a while another daemon takes the session
        assert wait_learned(other, sid, timeout=90) == "completed"
        text = (other.mnt / "alice" / "daily-logs" / f"{today()}.md").read_text()
        assert text.count("Task: Deploy API v2 to staging") == 1
        assert query(pg_url, "SELECT status, learned FROM tasks") == [("success", True)]
        assert query(pg_url, "SELECT status FROM lessons") == [("written",)]
        assert srv.pending() == 0


def test_kill9_after_an_edit_the_next_writer_is_told_what_was_recorded(make_daemon, pg_url):
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        day = today()
        # the first writer records the task, then hangs before it could finish
        srv.add(call("append_to_file", skill="daily-logs", path=f"{day}.md",
                     text="## [14:30] Task: Deploy API v2 to staging\n- **Outcome**: success\n"),
                Delay(120, call("finish")), when=offers("create_file"))
        srv.add(call("finish"), when=offers("create_file"))
        writing = host(make_daemon, pg_url, "openai", srv)
        os.mkdir(writing.mnt / "alice")
        log = writing.mnt / "alice" / "daily-logs" / f"{day}.md"
        log.write_text(f"# {day}\n")
        other = host(make_daemon, pg_url, "openai", srv)
        spool(writing, "alice", "deploy", [
            {"role": "user", "content": "Deploy API v2 to staging"},
            {"role": "assistant", "content": "Blue-green deploy completed, zero downtime."},
            {"event": "end"}])
        sid = session_id(writing, "deploy")
        wait_for(lambda: "Task: Deploy API v2" in log.read_text(), timeout=30,
                 what="the first writer's edit")
        wait_for(lambda: len(srv.requests_offering("create_file")) == 2, timeout=30,
                 what="the first writer to hang")
        writing.kill9()
        unmount_dead(writing)
        assert wait_learned(other, sid) == "completed"
        again = srv.requests_offering("create_file")[2]["messages"][1]["content"]
        assert (f"already recorded in part by an earlier run that stopped: daily-logs/{day}.md"
                in again)
        assert query(pg_url, "SELECT status FROM lessons") == [("written",)]
        reader = make_daemon("--learner", "off", "--db", pg_url)
        text = (reader.mnt / "alice" / "daily-logs" / f"{day}.md").read_text()
        assert text.count("Task: Deploy API v2 to staging") == 1
        assert srv.pending() == 0


# ---------------------------------------------------------------------------------------
# a writer whose claims connection is lost makes no further edit

def test_a_writer_that_lost_its_claim_leaves_the_space_to_the_new_holder(
        make_daemon, pg_server, pg_url):
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Deploy API v2 to staging", status="success",
                     first_message=0, last_message=1),
                call("finish"), when=offers("insert_task"))
        srv.add(call("report_success", goal="Deploy API v2", approach="Blue-green deploy",
                     applies_when="API deploys to staging"), when=offers("report_success"))
        day = today()
        entry = "## [14:30] Task: Deploy API v2 to staging\n- **Outcome**: success\n"
        # the first writer's answer comes after it lost its claim: its edit must not land
        srv.add(Delay(8, call("append_to_file", skill="daily-logs", path=f"{day}.md",
                              text="LATE " + entry)),
                call("append_to_file", skill="daily-logs", path=f"{day}.md", text=entry),
                call("finish"), when=offers("create_file"))
        first = host(make_daemon, pg_url, "openai", srv)
        os.mkdir(first.mnt / "alice")
        (first.mnt / "alice" / "daily-logs" / f"{day}.md").write_text(f"# {day}\n")
        second = host(make_daemon, pg_url, "openai", srv)
        spool(first, "alice", "deploy", [
            {"role": "user", "content": "Deploy API v2 to staging"},
            {"role": "assistant", "content": "Blue-green deploy completed, zero downtime."},
            {"event": "end"}])
        sid = session_id(first, "deploy")
        wait_for(lambda: srv.requests_offering("create_file"), timeout=30,
                 what="the first writer to start")
        # every connection to the database ends: the first daemon's claims with it
        pg_server.terminate(pg_url)
        assert wait_learned(first, sid) == "completed"
        assert wait_learned(second, sid) == "completed"
        # the late answer: refused, and the lesson left as the new holder marked it
        wait_for(lambda: "the space's claim was lost" in (first.home / "skillfs.log").read_text(),
                 timeout=30, what="the first writer to stop")
        assert wait_learned(first, sid) == "completed"
        assert query(pg_url, "SELECT status FROM lessons") == [("written",)]
        reader = make_daemon("--learner", "off", "--db", pg_url)
        text = (reader.mnt / "alice" / "daily-logs" / f"{day}.md").read_text()
        assert text.count("Task: Deploy API v2 to staging") == 1 and "LATE" not in text
        assert srv.pending() == 0
