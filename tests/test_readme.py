"""The README's walkthrough, run as a new user would paste it into a shell."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import is_mounted

REPO = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Five minutes with skillfs", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks, "the walkthrough has no shell block"
    return "\n".join(blocks)


@pytest.mark.long
def test_the_walkthrough_runs_as_written(tmp_path):
    mnt = tmp_path / "memory"
    script = walkthrough().replace("/tmp/memory", str(mnt))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SKILLFS_") and k != "OPENAI_API_KEY"}
    env["SKILLFS_HOME"] = str(tmp_path / "home")
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    out = r.stdout
    assert f"spool:    {tmp_path / 'home' / 'spool'}" in out
    assert "name: daily-logs" in out
    assert "\tcompleted" in out  # learn wait
    assert "identity.md:- Name is Gus" in out
    assert "Task: Deploy API v2 to staging" in out and "**Outcome**: success" in out
    assert "version 1 is current again" in out
    assert "restored skill alice/daily-logs" in out
    assert not is_mounted(mnt)
