"""Secrets never reach skill files: the scanner on realistic text, the writer redacting what the
learner writes (and nothing people write), forget requests, what a model is shown, and one
session through the spool and the mount with the rules learner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

from conftest import wait_for  # noqa: E402
from llm_server import LLMServer, call, offers  # noqa: E402

from skillfs.config import LearnerConfig  # noqa: E402
from skillfs.learner import rules  # noqa: E402
from skillfs.learner.core import Learner  # noqa: E402
from skillfs.learner.distill import Lesson  # noqa: E402
from skillfs.learner.view import Msg, drop_forgotten  # noqa: E402
from skillfs.learner.writer import Edits, write_with_rules  # noqa: E402
from skillfs.messages import normalize  # noqa: E402
from skillfs.redact import REDACTED, Redaction, is_forget_request, redact, refers_back  # noqa: E402
from skillfs.store import Store  # noqa: E402

AT = datetime(2026, 11, 21, 14, 30)
GH_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
STRIPE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"

# ---------------------------------------------------------------------------------------
# the scanner

SECRETS = [
    # (text, the secret, kind)
    ("The staging db password is hunter2, can you check the users table?", "hunter2",
     "password"),
    ("password: Tr0ub4dor&3", "Tr0ub4dor&3", "password"),
    ("log in with pw=letmein99 on the admin panel", "letmein99", "password"),
    ("My password for staging is s3cr3t!x, use it for the migration.", "s3cr3t!x", "password"),
    ("Never store my password hunter2 in any file", "hunter2", "password"),
    ("the password is hunter.two", "hunter.two", "password"),
    ("export DB_PASSWORD=supersecret", "supersecret", "password"),
    ("PGPASSWORD=s3cret psql -h db -U app", "s3cret", "password"),
    ('GITHUB_TOKEN="abc123def456" make release', "abc123def456", "token"),
    ('The passphrase is "correct horse battery staple".', "correct horse battery staple",
     "password"),
    ("connect to postgres://app:Sup3rS3cret@db.internal:5432/app", "Sup3rS3cret",
     "connection string"),
    ("mysql://root:p@ssw0rd@localhost/test", "p@ssw0rd", "connection string"),
    ("MONGO_URL=mongodb+srv://admin:Zx9pLq2w@cluster0.abc.mongodb.net/db", "Zx9pLq2w",
     "connection string"),
    ("cache at redis://:r3disPass@cache:6379/0", "r3disPass", "connection string"),
    ("amqp://guest:guestpw42@rabbit:5672/ is the broker", "guestpw42", "connection string"),
    ("Here is the key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1c2x9Lm\n"
     "q8Wn3Rt5Yu7Io9Pa\n-----END RSA PRIVATE KEY-----\nthanks", "MIIEowIBAAKCAQEA1c2x9Lm",
     "private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "b3BlbnNzaC1rZXktdjEAAAAA",
     "private key"),
    ("curl -H 'Authorization: Bearer abc123def456ghi789' https://api.example.com",
     "abc123def456ghi789", "bearer token"),
    ("send it as Bearer 9a8b7c6d5e4f3a2b1c0d", "9a8b7c6d5e4f3a2b1c0d", "bearer token"),
    (f"Charge the card with {STRIPE} please", STRIPE, "stripe key"),
    ("rk_live_51HxyzABCDEFGHIJKLMNOPqrst is the restricted key",
     "rk_live_51HxyzABCDEFGHIJKLMNOPqrst", "stripe key"),
    ("publishable pk_live_51HxyzABCDEFGHIJKLMNOPqrst", "pk_live_51HxyzABCDEFGHIJKLMNOPqrst",
     "stripe key"),
    (f"Push the release with my token {GH_TOKEN}", GH_TOKEN, "github token"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a",
     "github token"),
    ("use github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF for CI",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF", "github token"),
    ("the GitLab token glpat-xxxxXXXX1234abcdEFGH expires soon", "glpat-xxxxXXXX1234abcdEFGH",
     "gitlab token"),
    ("post with xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack token"),
    ("xoxp-123456789012-1234567890123-abcdef0123", "xoxp-123456789012-1234567890123-abcdef0123",
     "slack token"),
    ("AWS access key AKIAIOSFODNN7EXAMPLE in us-east-1", "AKIAIOSFODNN7EXAMPLE", "aws key"),
    ("set OPENAI_API_KEY to sk-proj-abc123DEF456ghi789JKL012mno",
     "sk-proj-abc123DEF456ghi789JKL012mno", "api key"),
    ("Anthropic key: sk-ant-api03-abcDEF123456ghiJKL789mnoPQR",
     "sk-ant-api03-abcDEF123456ghiJKL789mnoPQR", "api key"),
    ("the session cookie is eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
     "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt"),
    ("it read Zk8qL2mN9xR4tV7wB1cD6fH3jK5p from the env", "Zk8qL2mN9xR4tV7wB1cD6fH3jK5p",
     "high-entropy token"),
    ("copied wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8k3Lm2Np into the vault",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8k3Lm2Np", "high-entropy token"),
    ("the api key is 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
     "api key"),
    ("export API_TOKEN=abcd1234efgh5678", "abcd1234efgh5678", "token"),
    ('client_secret = "q8Wn3Rt5Yu7Io9Pa"', "q8Wn3Rt5Yu7Io9Pa", "secret"),
    ("SendGrid: 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",
     "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", "sendgrid api key"),
]


@pytest.mark.parametrize("text,secret,kind", SECRETS, ids=[s[2] for s in SECRETS])
def test_secrets_are_redacted(text, secret, kind):
    r = redact(text)
    assert secret not in r.text, r.text
    assert REDACTED in r.text
    assert kind in r.kinds, r.kinds
    assert r.changed


ORDINARY = [
    # a daily entry whose title names a password field: the next line is no value
    "## [09:02] Task: Submit the form with an empty password field\n- **Outcome**: success\n",
    "def main():\n    return os.path.join(root, 'src/skillfs/learner/writer.py')",
    "Edit /home/gus/projects/skillfs/src/components/UserProfileCard.tsx and re-run",
    "See https://docs.python.org/3/library/re.html#re.sub for details",
    "git clone https://user@github.com/org/repo.git",
    "session 3fa85f64-5717-4562-b3fc-2c963f66afa6 learned 4 tasks",
    "Upgrade to version 1.2.3-beta.4+build.5 on 2026-11-22T01:52:21Z",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed the race",
    "image sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "## [14:30] Task: Deploy API v2 to staging\n- **Outcome**: success\n- **Summary**: Done.",
    "| task | outcome |\n|---|---|\n| deploy | success |",
    "The password is stored in Vault; rotate it monthly.",
    "Reset the password in the admin panel, then log in again.",
    "The token is expired, refresh it first.",
    "Set max_tokens: 4000 for the model",
    "Token usage: 4.5k input tokens per task",
    "Use getUserProfileByIdV2 in the handler",
    "AbstractSingletonProxyFactoryBean is a Spring class",
    "pip install scikit-learn==1.5.2 numpy>=2.0",
    "password = os.environ['DB_PASSWORD']",
    "password: ${DB_PASSWORD}",
    "password = settings.DB_PASSWORD",
    "export PASSWORD=$DB_PASS MAX_TOKEN=4000",
    "token = os.getenv('API_TOKEN')",
    "api_key = get_api_key()",
    "Use a bearer token for the API",
    "The secret is to keep functions short.",
    "The key is to restart the daemon first.",
    "credentials are in ~/.aws/credentials",
    "kubectl get pods -n kube-system --selector=app.kubernetes.io/name=ingress-nginx",
    "npm install @types/node@20.11.5 --save-dev",
    "docker pull ghcr.io/org/app:v1.4.2",
    "I prefer blue-green deployments with pytest and ruff 0.6.9",
    "Meeting on 2026-11-22 at 14:30 UTC, ticket JIRA-4312",
    "Prefers tabs over spaces; uses vim and tmux",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_kept(text):
    assert redact(text) == Redaction(text, ())


def test_redaction_names_every_kind_once():
    r = redact(f"password: hunter2, token {GH_TOKEN}, and again {GH_TOKEN}")
    assert r.kinds == ("password", "github token")
    assert r.text == "password: [redacted], token [redacted], and again [redacted]"
    assert redact(r.text) == Redaction(r.text, ())  # redacting twice changes nothing
    # only the secret goes: the sentence around it stays readable
    assert redact("my password for staging is s3cr3t!x, use it").text == \
        "my password for staging is [redacted], use it"
    assert redact("The db password is hunter2. Run it").text == \
        "The db password is [redacted]. Run it"
    assert redact("connect to postgres://app:Sup3rS3cret@db:5432/app now").text == \
        "connect to postgres://app:[redacted]@db:5432/app now"
    assert redact("key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n"
                  "-----END EC PRIVATE KEY-----\nthanks").text == "key:\n[redacted]\nthanks"


# ---------------------------------------------------------------------------------------
# forget requests

FORGET = [
    "Don't remember this.", "dont remember this please", "Do not remember that!",
    "DON'T REMEMBER THIS", "don’t remember any of this",
    "Off the record: the staging password is hunter2, check the users table",
    "Forget that.", "Actually, forget that.", "ok, forget it", "forget I said that",
    "please forget what I said about the token", "Don't save this.", "don’t store that",
    "Don't record this conversation", "Don't learn this", "don't learn from this session",
    "This is confidential, don't keep it.", "this is confidential",
    "you don't need to remember this", "no need to remember this", "Never memorise this",
    "Fix the login bug, but don't remember this conversation.",
]
NOT_FORGET = [
    "Don't forget to run the tests.", "don't forget that the deploy needs a migration",
    "I always forget that the server is slow", "Remember this: I prefer tabs",
    "Don't save it to disk yet", "don't store this in the repo", "Please remember to save",
    "Keep it simple", "don't keep it running overnight", "the record was off by one",
    "turn off the recording", "Forget about the old API, use v2", "This is private API code",
    "Deploy API v2 to staging",
]


@pytest.mark.parametrize("text", FORGET)
def test_forget_requests(text):
    assert is_forget_request(text)


@pytest.mark.parametrize("text", NOT_FORGET)
def test_not_forget_requests(text):
    assert not is_forget_request(text)


@pytest.mark.parametrize("text,back", [
    ("Forget that.", True), ("Please don't remember this!", True),
    ("Thanks. Don't save that.", True), ("forget what I just said", True),
    ("Off the record: the password is hunter2, check the users table", False),
    ("Fix the login bug, but don't remember this conversation.", False),
])
def test_refers_back(text, back):
    assert refers_back(text) is back


def _msgs(*pairs) -> list[Msg]:
    return [Msg(i, role, text) for i, (role, text) in enumerate(pairs)]


def test_drop_forgotten_requests():
    msgs = _msgs(("user", "Deploy API v2 to staging"), ("assistant", "Deployed."),
                 ("user", "Off the record: the db password is hunter2, check the users"),
                 ("tool", "42 users"), ("assistant", "There are 42 users."),
                 ("user", "Rotate the logs"), ("assistant", "Rotated."))
    assert [m.seq for m in drop_forgotten(msgs)] == [0, 1, 5, 6]
    # "Forget that." takes the request before it along
    msgs = _msgs(("user", "Deploy API v2 to staging"), ("assistant", "Deployed."),
                 ("user", "Connect with password hunter2"), ("assistant", "Connected."),
                 ("user", "Forget that."), ("assistant", "Forgotten."),
                 ("user", "Rotate the logs"))
    assert [m.seq for m in drop_forgotten(msgs)] == [0, 1, 6]
    # the agent saying it is no request
    msgs = _msgs(("user", "Rotate the logs"), ("assistant", "Done; I won't remember this."))
    assert drop_forgotten(msgs) == msgs


# ---------------------------------------------------------------------------------------
# the writer on a real store

@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "t.duckdb"))
    yield s
    s.close()


def _skill(store, space, name):
    return store.space(space).skills[name]


async def _text(store, space, skill, path) -> str:
    return (await store.read_file(_skill(store, space, skill).id, path)).content.decode()


async def _last_reason(store, space, skill, path) -> str:
    return (await store.file_log(_skill(store, space, skill).id, path))[-1].reason


def test_rules_writer_redacts_and_names_the_kinds(store):
    msgs = [Msg(1, "user", f"The db password is hunter2. Push the release with {GH_TOKEN}", at=AT),
            Msg(2, "assistant", "Pushed v1.4 to the registry.", at=AT),
            Msg(3, "user", "I use postgres://app:s3cretPass1@db.internal:5432/app for staging",
                at=AT)]
    tasks, facts = rules.analyze(msgs, final=True)
    lessons = [Lesson("sess", "t1", "success", tasks[0].description, "success", AT,
                      rule_task=tasks[0]),
               Lesson("sess", None, "preferences", "", None, AT, facts=facts)]

    async def main():
        sp = await store.create_space("s")
        # a person's note in the same day's file: the learner adds to it, never alters it
        mine = f"# 2026-11-21\n\nmy own note: deploy key {STRIPE}\n"
        await store.write_file(_skill(store, "s", "daily-logs").id, "2026-11-21.md",
                               mine.encode(), author="cli", reason="my note")
        await write_with_rules(store, sp.id, lessons)
        day = await _text(store, "s", "daily-logs", "2026-11-21.md")
        assert day.startswith(mine)
        learned = day[len(mine):]
        assert "hunter2" not in learned and GH_TOKEN not in learned
        # the stated password ends the title before it; the token in it is redacted
        assert "Task: Push the release with [redacted]" in learned
        assert await _last_reason(store, "s", "daily-logs", "2026-11-21.md") == \
            "learner (rules); redacted: github token"
        deploy = await _text(store, "s", "user-general-facts", "deploy-preferences.md")
        assert "postgres://app:[redacted]@db.internal:5432/app" in deploy
        assert "s3cretPass1" not in deploy
        assert await _last_reason(store, "s", "user-general-facts",
                                  "deploy-preferences.md") == \
            "learner (rules); redacted: connection string"

    trio.run(main)


def test_model_writes_are_redacted_and_people_writes_kept(store):
    async def main():
        sp = await store.create_space("s")
        e = Edits(store, sp.id, [Lesson("sess", "t1", "success", "Deploy", "success", AT)])
        who = e.attribution(None)
        facts = _skill(store, "s", "user-general-facts")
        await e.create(facts, "deploy.md", f"# Deploy\n\nUse {STRIPE} for charges.\n", who)
        assert await _text(store, "s", "user-general-facts", "deploy.md") == \
            "# Deploy\n\nUse [redacted] for charges.\n"
        assert await _last_reason(store, "s", "user-general-facts", "deploy.md") == \
            "learner: create file; redacted: stripe key"
        await e.append(facts, "deploy.md", "- db at postgres://app:Sup3rS3cret@db:5432/app", who)
        await e.replace(facts, "deploy.md", "Use [redacted]", f"Push with {GH_TOKEN}", who)
        text = await _text(store, "s", "user-general-facts", "deploy.md")
        assert "Sup3rS3cret" not in text and GH_TOKEN not in text
        log = await store.file_log(facts.id, "deploy.md")
        assert [v.reason for v in log[1:]] == [
            "learner: append; redacted: connection string",
            "learner: replace text; redacted: github token"]
        await e.create_skill("---\nname: ops\ndescription: ops notes\n---\n\n"
                             "The admin password is hunter2.\n", who)
        assert "hunter2" not in await _text(store, "s", "ops", "SKILL.md")
        # a clean write says nothing about redaction
        await e.append(facts, "deploy.md", "- deploy on Tuesdays", who)
        assert await _last_reason(store, "s", "user-general-facts", "deploy.md") == \
            "learner: append"
        # people write what they like, byte for byte
        raw = f"password: hunter2\n{GH_TOKEN}\n".encode()
        await store.write_file(facts.id, "mine.md", raw, author="cli", reason="")
        assert (await store.read_file(facts.id, "mine.md")).content == raw

    trio.run(main)


# ---------------------------------------------------------------------------------------
# what a model is shown

SESSION = [
    ("user", f"The db password is hunter2. Deploy with the token {GH_TOKEN}"),
    ("assistant", "Deployed v2 to staging."),
    ("user", "Off the record: my salary is 90k, draft the raise email"),
    ("assistant", "Drafted the raise email."),
]


def _script(srv: LLMServer) -> None:
    srv.add(call("insert_task", description="Deploy v2 to staging", status="success",
                 first_message=0, last_message=1),
            call("finish"), when=offers("insert_task"))
    srv.add(call("report_success", goal="deploy", approach="used the token"),
            when=offers("report_success"))
    srv.add(call("create_file", skill="daily-logs", path="2026-11-21.md",
                 content=f"# 2026-11-21\n\n- deployed; password hunter2, token {GH_TOKEN}\n"),
            call("finish"), when=offers("create_file"))


async def _learn(store, srv: LLMServer, redact_input: bool) -> str:
    cfg = LearnerConfig(backend="openai", idle_seconds=30, redact_input=redact_input,
                        base_url=srv.base_url, api_key="k", backoff=0.01)
    learner = Learner(store, cfg)
    store.subscribe(learner.on_store_event)
    async with trio.open_nursery() as n:
        await n.start(learner.run)
        sp = await store.create_space("s")
        row = await store.create_session(space_id=sp.id)
        await store.add_messages(row.id, [normalize({"role": r, "content": c})
                                          for r, c in SESSION])
        await store.mark_session(row.id, "end")
        assert await learner.wait(row.id, 20) == "completed"
        n.cancel_scope.cancel()
    return await _text(store, "s", "daily-logs", "2026-11-21.md")


@pytest.mark.parametrize("redact_input", [True, False])
def test_model_input_redacted_when_configured(store, redact_input):
    with LLMServer() as srv:
        _script(srv)
        written = trio.run(_learn, store, srv, redact_input)
        # what the learner shows (the model's own calls come back to it as they were)
        sent = json.dumps([m for r in srv.requests for m in r["messages"]
                           if m["role"] != "assistant"])
    # what the model writes is redacted either way
    assert "hunter2" not in written and GH_TOKEN not in written
    # the forgotten request never reaches a model
    assert "salary" not in sent and "raise email" not in sent
    assert ("hunter2" in sent) is not redact_input
    assert (GH_TOKEN in sent) is not redact_input


async def _learned_upto(store, session_id: str, seq: int) -> None:
    while (await store.get_learning(session_id)).learned_seq < seq:
        await trio.sleep(0.05)


def _forget_later_session() -> tuple[list, list]:
    """The first part ends on the agent's tool call: the task is still under way (a session
    idle after the agent's answer would have its task written at once)."""
    first = [{"role": "user",
              "content": "Connect to prod with password hunter2 and vacuum the events table"},
             {"role": "assistant", "content": "Connecting.", "tool_calls": [
                 {"id": "c1", "type": "function",
                  "function": {"name": "psql", "arguments": "{\"sql\": \"VACUUM events\"}"}}]}]
    later = [{"role": "tool", "tool_call_id": "c1", "content": "VACUUM"},
             {"role": "assistant", "content": "Vacuumed the events table."},
             {"role": "user", "content": "Forget that."}, {"role": "assistant", "content": "Done."},
             {"role": "user", "content": "Rotate the nginx logs"},
             {"role": "assistant", "content": "Rotated the nginx logs."}]
    return first, later


def test_rules_forget_that_drops_a_request_already_seen(store):
    """The request was read in an earlier run (its task kept, still open); "Forget that."
    arriving later drops it: no entry, while the request after it is written."""
    first, later = _forget_later_session()

    async def main():
        cfg = LearnerConfig(backend="rules", idle_seconds=0.1)
        learner = Learner(store, cfg)
        store.subscribe(learner.on_store_event)
        async with trio.open_nursery() as n:
            await n.start(learner.run)
            sp = await store.create_space("s")
            row = await store.create_session(space_id=sp.id)
            await store.add_messages(row.id, [normalize(m) for m in first])
            with trio.fail_after(10):
                await _learned_upto(store, row.id, 1)
            assert [t.description for t in await store.list_tasks(row.id)] == [
                "Connect to prod"]  # the title stops before the credential
            await store.add_messages(row.id, [normalize(m) for m in later])
            await store.mark_session(row.id, "end")
            assert await learner.wait(row.id, 10) == "completed"
            n.cancel_scope.cancel()
        day = datetime.now().strftime("%Y-%m-%d")
        log = await _text(store, "s", "daily-logs", f"{day}.md")
        assert "vacuum" not in log and "hunter2" not in log and "Forget" not in log
        assert "Task: Rotate the nginx logs" in log

    trio.run(main)


def test_model_forget_that_closes_a_task_without_a_lesson(store):
    """The model made a task of the request in an earlier run; once it is forgotten the task
    is closed with no distillation and no write."""
    first, later = _forget_later_session()
    with LLMServer() as srv:
        srv.add(call("insert_task", description="Vacuum the events table", status="running",
                     first_message=0, last_message=1), call("finish"),
                call("update_task", task=1, status="success"), call("finish"),
                when=offers("insert_task"))

        async def main():
            cfg = LearnerConfig(backend="openai", idle_seconds=0.1,
                                base_url=srv.base_url, api_key="k", backoff=0.01)
            learner = Learner(store, cfg)
            store.subscribe(learner.on_store_event)
            async with trio.open_nursery() as n:
                await n.start(learner.run)
                sp = await store.create_space("s")
                row = await store.create_session(space_id=sp.id)
                await store.add_messages(row.id, [normalize(m) for m in first])
                with trio.fail_after(10):
                    await _learned_upto(store, row.id, 1)
                await store.add_messages(row.id, [normalize(m) for m in later[:4]])
                await store.mark_session(row.id, "end")
                assert await learner.wait(row.id, 10) == "completed"
                tasks = await store.list_tasks(row.id)
                assert [(t.status, t.learned) for t in tasks] == [("success", True)]
                n.cancel_scope.cancel()

        trio.run(main)
        assert srv.pending() == 0
        assert not srv.requests_offering("report_success")
        assert not srv.requests_offering("create_file")
        # the second extraction was not shown the forget request either
        assert "Forget that" not in json.dumps(srv.requests)


def test_config_redact_input_reaches_the_learner(store):
    learner = Learner(store, LearnerConfig(backend="rules", redact_input=True))
    assert learner.config.redact_input is True
    assert Learner(store, LearnerConfig(backend="rules")).config.redact_input is False


# ---------------------------------------------------------------------------------------
# through the spool and the mount

def test_spool_session_keeps_no_secret_and_nothing_forgotten(make_daemon):
    d = make_daemon("--learner", "rules", start=False)
    d.home.mkdir(parents=True, exist_ok=True)
    (d.home / "config.toml").write_text("[learner]\nidle_seconds = 0.5\n")
    d.start()
    os.mkdir(d.mnt / "alice")
    day = datetime.now().strftime("%Y-%m-%d")
    # a person's own note with a (fake) key, written through the mount before learning
    note = f"# {day}\n\nmy note: the deploy key is {STRIPE}\n".encode()
    note_path = d.mnt / "alice" / "daily-logs" / f"{day}.md"
    note_path.write_bytes(note)
    mine = f"password: hunter3\n{GH_TOKEN[:-1]}x\npostgres://me:pw123@db/x\n".encode()
    (d.mnt / "alice" / "user-general-facts" / "mine.md").write_bytes(mine)
    r = d.api("PUT", "/skillfs/v1/files", params={"path": "alice/user-general-facts/api.md"},
              content=mine, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    records = [
        {"role": "user", "content": "The staging database password is hunter2. Run the "
                                    "migrations on staging"},
        {"role": "assistant", "content": "Migrations ran on staging, 3 applied."},
        {"role": "user", "content": f"Publish the package with the token {GH_TOKEN}"},
        {"role": "assistant", "content": "Published v1.4.0."},
        {"role": "user", "content": "Draft the reorg announcement for the platform team. "
                                    "Don't remember this."},
        {"role": "assistant", "content": "Drafted the reorg announcement."},
        {"role": "user", "content": "I use postgres://app:s3cretPass1@db.internal:5432/app "
                                    "for staging. Rotate the nginx logs"},
        {"role": "assistant", "content": "Rotated the nginx logs."},
        {"event": "end"},
    ]
    d.write_spool("alice/s1/001.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    def learned():
        r = d.api("GET", "/skillfs/v1/sessions")
        s = next((s for s in r.json() if s["name"] == "s1"), None)
        return s if s and s["learning_status"] in ("completed", "failed") else None
    assert wait_for(learned, timeout=60, what="learning")["learning_status"] == "completed"

    def grep(needle: str) -> str:
        r = subprocess.run(["grep", "-r", needle, str(d.mnt)], capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stderr
        return r.stdout
    assert grep("hunter2") == ""
    assert grep(GH_TOKEN) == ""
    assert grep("reorg") == ""
    log = note_path.read_text()
    assert log.encode().startswith(note)  # the person's note is as they wrote it
    assert "Run the migrations on staging" in log
    # the title stops before the credential (and the scanner would have caught it)
    assert "Task: Publish the package\n" in log
    assert "Task: Rotate the nginx logs" in log
    # what people wrote, through the mount and the API, is as they wrote it
    assert (d.mnt / "alice" / "user-general-facts" / "mine.md").read_bytes() == mine
    assert d.api("GET", "/skillfs/v1/files",
                 params={"path": "alice/user-general-facts/api.md"}).content == mine
    facts = d.mnt / "alice" / "user-general-facts" / "deploy-preferences.md"
    assert "postgres://app:[redacted]@db.internal:5432/app" in facts.read_text()
    assert grep("s3cretPass1") == ""
    assert "redacted: connection string" in d.cli("log", str(facts)).stdout
