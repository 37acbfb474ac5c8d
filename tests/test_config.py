"""The one configuration: its four sources and their order, settings reaching the running
daemon, errors before the daemon starts, secrets kept off the command line, and README's
table of every setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import is_mounted, wait_for
from llm_server import Delay, LLMServer, call, offers
from skillfs import config as configmod
from skillfs import locations
from skillfs.config import LearnerConfig
from skillfs.learner import Learner

ROOT = Path(__file__).resolve().parent.parent


def show(d, *args: str) -> dict[str, dict]:
    out = d.cli("config", "show", "--json", *args).stdout
    return {row["key"]: row for row in json.loads(out)}


def write_toml(d, text: str) -> None:
    d.home.mkdir(parents=True, exist_ok=True)
    (d.home / "config.toml").write_text(text)


def test_one_setting_through_all_four_sources(make_daemon):
    d = make_daemon(start=False)
    assert show(d)["learner.timeout"] == {"key": "learner.timeout", "value": "60.0",
                                          "source": "default"}
    write_toml(d, "[learner]\ntimeout = 11\n")
    row = show(d)["learner.timeout"]
    assert (row["value"], row["source"]) == ("11.0", f"file {d.home / 'config.toml'}")
    d.env["SKILLFS_LLM_TIMEOUT"] = "12"
    assert show(d)["learner.timeout"]["source"] == "env SKILLFS_LLM_TIMEOUT"
    # the documented name beats the older alias
    d.env["SKILLFS_LEARNER__TIMEOUT"] = "13"
    row = show(d)["learner.timeout"]
    assert (row["value"], row["source"]) == ("13.0", "env SKILLFS_LEARNER__TIMEOUT")
    row = show(d, "-o", "learner.timeout=14")["learner.timeout"]
    assert (row["value"], row["source"]) == ("14.0", "command line")


def test_precedence_in_load(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('duckdb_memory = "10MB"\n[learner]\nmodel = "file-model"\n')
    monkeypatch.setenv("SKILLFS_HOME", str(tmp_path))
    monkeypatch.setenv("SKILLFS_LLM_MODEL", "env-model")
    monkeypatch.setenv("SKILLFS_LEARNER__MODEL", "")  # empty: unset
    cfg = configmod.load(toml)
    assert (cfg.duckdb_memory, cfg.learner.model) == ("10MB", "env-model")
    cfg = configmod.load(toml, ["learner.model=o-model", "duckdb_memory=128MB"])
    assert (cfg.duckdb_memory, cfg.learner.model) == ("128MB", "o-model")
    # mount's own flag and -o are both the command line; the flag is the later word
    cfg = configmod.load(toml, ["learner.model=o-model"], {"learner.model": "flag-model"})
    assert cfg.learner.model == "flag-model"


@pytest.mark.parametrize("env, toml", [
    ({}, ""),
    ({}, 'home = "{root}/toml-home"'),
    ({}, 'socket = "{root}/toml.sock"'),
    ({"SKILLFS_SOCKET": "{root}/env.sock"}, 'socket = "{root}/toml.sock"'),
    ({"SKILLFS_HOME": "{root}/env-home"}, 'home = "{root}/toml-home"'),
    ({}, 'spool = "{root}/toml-spool"'),
    ({"SKILLFS_SPOOL": "{root}/env-spool"}, 'spool = "{root}/toml-spool"\nhome = "{root}/h"'),
])
def test_clients_find_the_socket_where_the_configuration_puts_it(tmp_path, monkeypatch,
                                                                   env, toml):
    # the CLI's clients and the Claude Code hook locate things without building Config;
    # both must agree
    monkeypatch.setenv("SKILLFS_HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(root=tmp_path))
    config_file = tmp_path / "config.toml"
    config_file.write_text(toml.format(root=tmp_path) + "\n")
    monkeypatch.setenv("SKILLFS_CONFIG", str(config_file))
    cfg = configmod.load()
    assert locations.socket_path() == cfg.socket
    assert (locations.home(), locations.spool_path()) == (cfg.home, cfg.spool)
    assert (locations.home(config_file), locations.spool_path(config_file)) == \
        (cfg.home, cfg.spool)


def test_the_learner_reads_no_environment(monkeypatch):
    monkeypatch.setenv("SKILLFS_LLM_MODEL", "env-model")
    monkeypatch.setenv("SKILLFS_LEARNER", "off")
    learner = Learner(None, LearnerConfig(base_url="http://127.0.0.1:9/v1"))
    assert learner.backend == "openai" and learner.llm.config.model == "gpt-4.1"
    assert Learner(None).backend == "rules"


def model_daemon(make_daemon, srv: LLMServer, *args: str, **env: str):
    """A daemon with the openai learner pointed at `srv`, started with `env` added."""
    d = make_daemon("--learner", "openai", *args, start=False)
    write_toml(d, f'[learner]\nbase_url = "{srv.base_url}"\napi_key = "k"\n'
                  "idle_seconds = 0.3\nbackoff = 0.01\n")
    d.env.update(env)
    d.start()
    return d


def learn_once(d, name: str) -> dict:
    d.write_spool(f"s/{name}/001.jsonl", json.dumps({"role": "user", "content": "Hi"}) + "\n"
                  + json.dumps({"event": "end"}) + "\n")

    def done():
        rows = d.api("GET", "/skillfs/v1/sessions").json()
        row = next((r for r in rows if r["name"] == name), None)
        return row if row and row["learning_status"] in ("completed", "failed") else None
    return wait_for(done, timeout=30, what=f"learning of {name}")


def test_env_model_reaches_the_running_daemons_learner(make_daemon):
    with LLMServer() as srv:
        srv.always(call("finish"))
        d = model_daemon(make_daemon, srv, SKILLFS_LLM_MODEL="env-model")
        assert learn_once(d, "a")["learning_status"] == "completed"
        assert {r["model"] for r in srv.requests} == {"env-model"}


def test_o_nested_key_beats_the_environment_in_the_daemon(make_daemon):
    with LLMServer() as srv:
        srv.always(call("finish"))
        d = model_daemon(make_daemon, srv, "-o", "learner.model=o-model",
                         SKILLFS_LLM_MODEL="env-model")
        assert learn_once(d, "a")["learning_status"] == "completed"
        assert {r["model"] for r in srv.requests} == {"o-model"}


def test_env_timeout_and_retries_reach_the_daemon(make_daemon):
    """A model that hangs fails the session after SKILLFS_LLM_TIMEOUT, tried once."""
    with LLMServer() as srv:
        srv.always(Delay(3, then=call("finish")), when=offers("insert_task"))
        d = model_daemon(make_daemon, srv, SKILLFS_LLM_TIMEOUT="0.5", SKILLFS_LLM_RETRIES="0")
        row = learn_once(d, "a")
        assert row["learning_status"] == "failed", row
        assert row["learning_error"].endswith("failed after 1 attempts: timed out")
        assert len(srv.requests_offering("insert_task")) == 1


def refused(d, *args: str):
    """`skillfs mount` with `args` fails before a daemon starts; its stderr."""
    r = d.cli("mount", str(d.mnt), *args, check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert not is_mounted(d.mnt) and not d.socket.exists()
    return r.stderr


def test_unknown_keys_and_bad_values_stop_mount(make_daemon):
    d = make_daemon(start=False)
    assert "-o learner.modle: no such setting" in refused(d, "-o", "learner.modle=x")
    assert "-o duckdb_threads=0: " in refused(d, "-o", "duckdb_threads=0")
    assert "-o learner.timeout=abc: " in refused(d, "-o", "learner.timeout=abc")
    assert "expected KEY=VALUE" in refused(d, "-o", "learner.model")
    d.env["SKILLFS_LEARNER__RETRIES"] = "many"
    assert "learner.retries='many' (env SKILLFS_LEARNER__RETRIES)" in refused(d)
    del d.env["SKILLFS_LEARNER__RETRIES"]
    write_toml(d, "max_file_sise = 5\n")
    err = refused(d)
    assert f"max_file_sise=5 (file {d.home / 'config.toml'})" in err
    assert "Extra inputs are not permitted" in err


def test_secrets_are_refused_on_the_command_line(make_daemon):
    d = make_daemon(start=False)
    err = refused(d, "--listen", "127.0.0.1:0", "-o", "tokens=s3cret")
    assert "/proc/PID/cmdline" in err and "SKILLFS_TOKEN" in err and "--token-file" in err
    err = refused(d, "-o", "learner.api_key=sk-s3cret")
    assert "/proc/PID/cmdline" in err and "OPENAI_API_KEY" in err


def test_config_show_masks_secrets(make_daemon):
    d = make_daemon(start=False)
    write_toml(d, 'tokens = ["tok-s3cret"]\n')
    d.env["OPENAI_API_KEY"] = "sk-s3cret"
    d.env["SKILLFS_TOKEN"] = "env-s3cret"
    out = d.cli("config", "show").stdout
    assert "s3cret" not in out
    assert re.search(r"^learner\.api_key = \*\*\*\* +# env OPENAI_API_KEY$", out, re.M)
    assert re.search(r"^tokens = <2 tokens> +# file .* \+ env SKILLFS_TOKEN$", out, re.M)


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    assert configmod.settings_table() in readme, "regenerate with: python -m skillfs.config"
    for key in configmod.fields():
        assert f"| `{key}` |" in readme


def test_example_config_is_valid(monkeypatch, tmp_path):
    monkeypatch.setenv("SKILLFS_HOME", str(tmp_path))
    cfg = configmod.load(ROOT / "daemon" / "config.example.toml")
    assert cfg.learner.buffer_messages == 16
