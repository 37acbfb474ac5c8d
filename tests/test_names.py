"""Naming rules, the same through the mount, the API and the spool: spaces and skills have
one documented alphabet, and every name is in Unicode NFC so no two entries look alike."""

from __future__ import annotations

import errno
import json
import os
import unicodedata

import pytest

from conftest import wait_for

# every test works in a space of its own: one daemon serves the module
pytestmark = pytest.mark.xdist_group("names")


@pytest.fixture
def daemon(shared_daemon):
    return shared_daemon


@pytest.mark.parametrize("name", ["Alice", "a b", "-a", "a--b", ".hidden", "a" * 129])
def test_bad_space_names_are_refused_everywhere(daemon, name):
    before = os.listdir(daemon.mnt)
    with pytest.raises(OSError) as e:
        os.mkdir(daemon.mnt / name)
    assert e.value.errno == errno.EINVAL
    r = daemon.api("POST", "/skillfs/v1/spaces", json={"name": name})
    assert r.status_code == 422 and "lowercase letters and digits" in r.text
    assert os.listdir(daemon.mnt) == before


@pytest.mark.parametrize("name", ["alice", "team-ops", "alice@example.com", "a.b_c", "x1"])
def test_good_space_names(daemon, name):
    os.mkdir(daemon.mnt / name)
    assert sorted(os.listdir(daemon.mnt / name)) == ["daily-logs", "user-general-facts"]


def test_skill_name_rule_is_logged_and_nfd_names_are_refused(daemon, space):
    with pytest.raises(OSError) as e:
        os.mkdir(space / "MySkill")
    assert e.value.errno == errno.EINVAL
    wait_for(lambda: "use lowercase letters, digits and single hyphens"
             in (daemon.home / "skillfs.log").read_text(), what="the reason in the log")
    nfc = "caf\u00e9.md"
    nfd = unicodedata.normalize("NFD", nfc)
    (space / "daily-logs" / nfc).write_text("one")
    with pytest.raises(OSError) as e:
        open(space / "daily-logs" / nfd, "w")
    assert e.value.errno == errno.EINVAL
    assert [n for n in os.listdir(space / "daily-logs") if n.startswith("caf")] == [nfc]


def test_spool_folder_with_a_bad_space_name_is_rejected_with_the_rule(daemon):
    before = os.listdir(daemon.mnt)
    daemon.write_spool("Nobody/s1/1.jsonl", json.dumps({"role": "user", "content": "hi"}) + "\n")
    rejected = daemon.spool / ".rejected"
    wait_for(lambda: rejected.exists() and any(p.name.endswith(".error.json")
                                               for p in rejected.iterdir()), what="rejection")
    [side] = [p for p in rejected.iterdir() if p.name.endswith(".error.json")]
    assert "lowercase letters and digits" in side.read_text()
    assert os.listdir(daemon.mnt) == before
