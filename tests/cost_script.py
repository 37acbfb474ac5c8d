"""A scripted model that plays a fixture session's learning, for what learning costs.

A fixture (tests/fixtures/cost/*.json) holds a session's messages and configs, and what a
careful model would make of them: its tasks (message ranges, outcomes, progress notes) and
the user's stated facts. `script(srv, fixture, style)` answers the learner's three stages
from it; `style` is how the model spends its replies:

- "batched": every call of a stage in one reply, `finish` included, no reads before edits
  (what the prompts ask for);
- "read_first": the calls of a stage in one reply, then a reply that only finishes, and the
  writer reads the skill and the files it changes first (what the earlier prompts asked);
- "one_per_reply": one call a reply, the writer reading first.

`input_tokens(srv)` sums what the requests sent, counted as the learner counts without an
endpoint's usage, so the same figure can be taken from any version of the learner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llm_server import Reply, tool_names

from skillfs.tokens import count_tokens

FIXTURES = Path(__file__).parent / "fixtures" / "cost"
STYLES = ("batched", "read_first", "one_per_reply")
LESSON_RE = re.compile(r"^R(\d+) — (?:task: (.+?) — outcome: (\w+) — finished (\S+) (\S+)"
                       r"|stated by the user, (\S+))", re.MULTILINE)


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def input_tokens(srv: Any) -> int:
    return sum(count_tokens(json.dumps({"messages": r["messages"], "tools": r.get("tools")},
                                       ensure_ascii=False)) for r in srv.requests)


def script(srv: Any, fixture: dict, style: str) -> None:
    assert style in STYLES
    created: set[str] = set()
    # one plan per conversation (keyed by its first prompt), made at its first request
    plans: dict[str, list[tuple[str, dict]]] = {}

    def answer(req: dict) -> Reply:
        tools = tool_names(req)
        turns = sum(1 for m in req["messages"] if m["role"] == "assistant")
        prompt = req["messages"][1]["content"]
        if "report_failure" in tools or "report_success" in tools:
            return Reply(calls=[_distill_call(prompt, fixture)])
        if prompt not in plans:
            if "insert_task" in tools:
                plans[prompt] = _extract_calls(fixture)
            elif "append_to_file" in tools:
                plans[prompt] = _write_calls(prompt, created, style)
            else:
                raise AssertionError(f"no script for tools {sorted(tools)}")
        return _reply(plans[prompt], turns, style)

    srv.always(answer)


def _reply(plan: list[tuple[str, dict]], turns: int, style: str) -> Reply:
    reads = [c for c in plan if c[0] in ("get_skill", "read_file")]
    edits = [c for c in plan if c[0] not in ("get_skill", "read_file", "finish")]
    finish = [c for c in plan if c[0] == "finish"]
    if style == "batched":
        replies = [edits + finish]
    elif style == "read_first":
        replies = ([reads] if reads else []) + [edits, finish]
    else:
        replies = [[c] for c in reads + edits + finish]
    return Reply(calls=replies[min(turns, len(replies) - 1)])


def _extract_calls(fx: dict) -> list[tuple[str, dict]]:
    plan: list[tuple[str, dict]] = []
    for n, t in enumerate(fx["tasks"], 1):
        plan.append(("insert_task", {"description": t["description"], "status": t["status"],
                                     "first_message": t["first"], "last_message": t["last"]}))
        plan += [("add_progress", {"task": n, "note": p}) for p in t["progress"]]
    plan += [("record_preference", {"preference": p}) for p in fx["preferences"]]
    return plan + [("finish", {})]


def _distill_call(text: str, fx: dict) -> tuple[str, dict]:
    task = next(t for t in fx["tasks"] if f"Task: {t['description']}" in text)
    if task["status"] == "failed":
        # both field sets: the learner ignores those its version does not know
        return "report_failure", {
            "goal": task["description"], "symptom": task["progress"][-1],
            "failure_point": task["progress"][-1],
            "root_cause": "Changed a shared environment before checking what depends on it",
            "correct_approach": "Try the change in a throwaway environment first",
            "prevention": "Check dependants before an upgrade",
            "applies_when": "Upgrading dependencies of this service", "skill": "dependencies"}
    return "report_success", {
        "goal": task["description"], "approach": "; ".join(task["progress"]),
        "key_decisions": task["progress"][:1], "principle": "Reproduce, fix, run the suite",
        "applies_when": "This service's code changes", "skill": "daily-logs"}


def _write_calls(prompt: str, created: set[str], style: str) -> list[tuple[str, dict]]:
    plan: list[tuple[str, dict]] = []
    if style != "batched":
        plan.append(("get_skill", {"skill": "daily-logs"}))
    facts: list[str] = []
    for m in LESSON_RE.finditer(prompt):
        n = int(m.group(1))
        if m.group(2) is None:
            block = prompt[m.end():].split("\nR", 1)[0]
            facts += [f.strip() for line in block.splitlines() if "facts:" in line
                      for f in line.split("facts:", 1)[1].split(";")]
            facts_n = n
            continue
        day, hhmm = m.group(4), m.group(5)
        entry = (f"## [{hhmm}] Task: {m.group(2)}\n- **Outcome**: {m.group(3)}\n"
                 f"- **Summary**: recorded from lesson R{n}\n")
        path = f"{day}.md"
        if path in created:
            if style != "batched":
                plan.append(("read_file", {"skill": "daily-logs", "path": path}))
            plan.append(("append_to_file", {"skill": "daily-logs", "path": path, "text": entry,
                                            "result": n}))
        else:
            created.add(path)
            plan.append(("create_file", {"skill": "daily-logs", "path": path,
                                         "content": f"# {day}\n\n{entry}", "result": n}))
    if facts:
        body = "".join(f"- {f}\n" for f in facts)
        plan.append(("create_file", {"skill": "user-general-facts", "path": "preferences.md",
                                     "content": f"# Preferences\n\n{body}", "result": facts_n}))
    return plan + [("finish", {})]


def measure(db_path: str, name: str, style: str) -> dict:
    """Learn fixture `name` on a new store at `db_path` against a scripted model; return the
    session's id, the learner's own usage figures (None before it kept any) and the figures
    taken from the requests: model calls, input tokens, tasks learned."""
    import trio
    from llm_server import LLMServer

    from skillfs.config import LearnerConfig
    from skillfs.learner.core import Learner
    from skillfs.messages import normalize
    from skillfs.store import Store

    fixture = load(name)
    store = Store(db_path)
    out: dict = {}
    try:
        with LLMServer() as srv:
            script(srv, fixture, style)

            async def main() -> None:
                cfg = LearnerConfig(backend="openai", idle_seconds=30, buffer_messages=1000,
                                    base_url=srv.base_url, api_key="k")
                learner = Learner(store, cfg)
                store.subscribe(learner.on_store_event)
                async with trio.open_nursery() as n:
                    await n.start(learner.run)
                    space = await store.create_space("cost")
                    row = await store.create_session(space_id=space.id,
                                                     configs=fixture["configs"])
                    await store.add_messages(row.id, [normalize(m)
                                                      for m in fixture["messages"]])
                    await store.mark_session(row.id, "end")
                    out["status"] = await learner.wait(row.id, 30)
                    out["session_id"] = row.id
                    out["usage"] = getattr(learner, "usage", lambda _sid: None)(row.id)
                    out["tasks"] = sum(1 for t in await store.list_tasks(row.id) if t.learned)
                    out["daily_logs"] = sorted(store.space("cost").skills["daily-logs"].files)
                    n.cancel_scope.cancel()

            trio.run(main)
            out["calls"] = len(srv.requests)
            out["input_tokens"] = input_tokens(srv)
            out["requests"] = srv.requests
    finally:
        store.close()
    return out
