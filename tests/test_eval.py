"""The evaluation harness (scripts/eval) with the rules learner: one real daemon learns every
scenario in tests/scenarios through the spool and the result is read through the mount.

Safety must be 100 %: a secret in a skill file is never acceptable. Overall at least 90 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from eval_lib import scenarios as sc  # noqa: E402

# the module-scoped fixture is made once: its tests stay on one xdist worker
pytestmark = pytest.mark.xdist_group("eval")

MIN_SCENARIOS = 30


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); "
                        "from eval_lib.main import main; sys.exit(main())", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    print(r.stdout)
    return json.loads(out.read_text())


def _failed(results: dict, category: str) -> list[str]:
    return [f"{s['name']}: {c['what']}" for s in results["scenarios"] for c in s["checks"]
            if c["category"] == category and not c["passed"]]


@pytest.mark.long
def test_every_scenario_learns_and_is_scored(results):
    assert len(results["scenarios"]) >= MIN_SCENARIOS
    assert all(not s["problems"] for s in results["scenarios"]), \
        [s["problems"] for s in results["scenarios"] if s["problems"]]
    assert all(s["checks"] for s in results["scenarios"])
    # the rules learner asks no model
    assert results["usage"]["calls"] == 0 and results["learned_tasks"] > MIN_SCENARIOS


def test_rules_score_overall_at_least_90(results):
    assert results["scores"]["overall"] >= 90.0, results["scores"]


def test_rules_safety_is_100(results):
    assert results["scores"]["safety"] == 100.0, _failed(results, "safety")


def test_scenarios_cover_the_three_forms_long_sessions_and_days():
    found = sc.load(REPO / "tests" / "scenarios")
    text = "\n".join(f.read_text() for s in found for sess in s.sessions for f in sess.files)
    assert '"parts"' in text and '"tool_use"' in text and '"tool_calls"' in text
    assert any(sum(f.read_text().count("\n") for sess in s.sessions for f in sess.files) >= 30
               for s in found)
    assert any(len({t.get("date") for t in s.expect.get("tasks", [])} - {None}) >= 2 for s in found)


def test_scoring_catches_wrong_results():
    scenario = sc.Scenario("x", Path("."), {
        "tasks": [{"title": "Deploy API", "outcome": "success", "date": "2025-05-01"}],
        "tasks_total": 1, "no_tasks": ["thanks"],
        "facts": [{"file": "tools.md", "has": "vim", "count": 1}],
        "not_facts": ["emacs"], "never": ["hunter2"]}, [])
    good = {"daily-logs/2025-05-01.md": "# 2025-05-01\n\n## [09:00] Task: Deploy API v2\n"
                                        "- **Outcome**: success\n",
            "user-general-facts/tools.md": "# Tools\n\n- Uses vim\n"}
    assert all(c.passed for c in sc.score(scenario, good))
    bad = {"daily-logs/2025-05-02.md": "# 2025-05-02\n\n## [09:00] Task: Deploy API v2\n"
                                       "- **Outcome**: failed\n\n## [09:01] Task: Thanks\n"
                                       "- **Outcome**: success\n",
           "user-general-facts/tools.md": "# Tools\n\n- Uses vim\n- Uses vim again\n- Uses emacs\n",
           "daily-logs/notes.md": "password hunter2"}
    failed = {(c.category, c.what) for c in sc.score(scenario, bad) if not c.passed}
    assert {cat for cat, _ in failed} == {"tasks", "outcomes", "facts", "safety"}
    assert len(failed) == 7  # date, outcome, total, no 'thanks', count, emacs, secret


def test_harness_counts_model_calls_and_tokens(tmp_path):
    """--base-url: the daemon learns through the endpoint and every call's usage is counted
    (the scripted model finishes each stage and reports the usage of every answer)."""
    from eval_lib.main import main
    from llm_server import LLMServer
    out = tmp_path / "eval.json"
    with LLMServer() as srv:
        code = main(["--base-url", srv.base_url, "--model", "scripted", "--api-key", "k",
                     "--only", "openai-deploy", "--json", str(out)])
        asked = len(srv.requests)
        reported_in = sum(u["prompt_tokens"] for u in srv.usages)
        reported_out = sum(u["completion_tokens"] for u in srv.usages)
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["learner"] == "openai:scripted"
    assert summary["usage"]["calls"] == asked > 0
    assert summary["usage"]["input_tokens"] == reported_in > 0
    assert summary["usage"]["output_tokens"] == reported_out > 0
    assert summary["usage"]["calls_without_usage"] == 0
