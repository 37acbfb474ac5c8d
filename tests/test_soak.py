"""One minute of scripts/soak: spool, mount and API load at once with the rules learner. The
daemon must not crash, and every message sent must be stored exactly once. Each mount and
API load thread is paced at 25 operations a second: unpaced, the load takes a core for the
whole minute, and the suite's other tests share the machine (`scripts/soak` alone goes
as fast as it can)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.long
def test_one_minute_soak_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([str(REPO / "scripts" / "soak"), "--minutes", "1", "--spool-rate", "15",
                        "--writers", "2", "--pace", "25", "--report-every", "15",
                        "--json", str(out)],
                       capture_output=True, text=True, timeout=400)
    assert out.exists(), r.stdout + r.stderr
    summary = json.loads(out.read_text())
    assert not summary["crashed"], r.stdout
    assert summary["drained"], r.stdout
    assert summary["messages_sent"] > 500
    assert summary["lost"] == 0 and summary["duplicated"] == 0, r.stdout
    assert summary["lost_lines"] == 0 and summary["rejected_files"] == 0
    assert summary["errors"] == {}, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
