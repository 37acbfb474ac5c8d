"""Scenarios and their scoring.

A scenario is a folder in tests/scenarios: its sessions (``NAME.jsonl`` is a session sent in one
spool file; a folder ``NAME/`` holds files sent one after another, each learned before the
next) and ``expect.toml`` saying what the space must hold afterwards. Each expectation is one
check in one category: tasks, outcomes, facts or safety.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

CATEGORIES = ("tasks", "outcomes", "facts", "safety")
DAILY = "daily-logs"
FACTS = "user-general-facts"
_HEADING = re.compile(r"^## \[(\d\d:\d\d)\] Task: (.*)$", re.M)


@dataclass
class Session:
    name: str
    files: list[Path]
    configs: dict = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    path: Path
    expect: dict
    sessions: list[Session]

    @property
    def space(self) -> str:
        return f"eval-{self.name}"


@dataclass
class Check:
    category: str
    what: str
    passed: bool


def load(root: Path, only: list[str] | None = None) -> list[Scenario]:
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if only and folder.name not in only:
            continue
        expect_file = folder / "expect.toml"
        expect = tomllib.loads(expect_file.read_text()) if expect_file.exists() else {}
        configs = {s["name"]: s.get("configs", {}) for s in expect.get("sessions", [])}
        sessions = []
        for item in sorted(folder.iterdir()):
            if item.suffix == ".jsonl":
                sessions.append(Session(item.stem, [item], configs.get(item.stem, {})))
            elif item.is_dir():
                files = sorted(item.glob("*.jsonl"))
                sessions.append(Session(item.name, files, configs.get(item.name, {})))
        out.append(Scenario(folder.name, folder, expect, sessions))
    return out


def read_space(space_dir: Path) -> dict[str, str]:
    """Every file of the space, read through the mount, by path inside the space."""
    files = {}
    for path in sorted(space_dir.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(space_dir))] = path.read_text(errors="replace")
    return files


@dataclass
class Entry:
    file: str
    time: str
    title: str
    body: str

    @property
    def outcome(self) -> str | None:
        m = re.search(r"\*\*Outcome\*\*:\s*(\w+)", self.body)
        return m.group(1).lower() if m else None


def entries(files: dict[str, str]) -> list[Entry]:
    out = []
    for path, text in files.items():
        if not path.startswith(DAILY + "/") or path.endswith("SKILL.md"):
            continue
        heads = list(_HEADING.finditer(text))
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            out.append(Entry(path[len(DAILY) + 1:], m.group(1), m.group(2), text[m.start():end]))
    return out


def _expand(text: str) -> str:
    return text.replace("{today}", datetime.now().strftime("%Y-%m-%d"))


def score(sc: Scenario, files: dict[str, str]) -> list[Check]:
    e = sc.expect
    found = entries(files)
    checks: list[Check] = []

    def add(category: str, what: str, passed: bool) -> None:
        checks.append(Check(category, what, bool(passed)))

    for t in e.get("tasks", []):
        title = t["title"].lower()
        match = [x for x in found if title in x.title.lower()]
        if "date" in t:
            day = _expand(t["date"])
            match = [x for x in match if x.file.startswith(day)]
        where = f" on {_expand(t['date'])}" if "date" in t else ""
        add("tasks", f"task '{t['title']}'{where}", match)
        if "outcome" in t:
            add("outcomes", f"task '{t['title']}' {t['outcome']}",
                match and match[-1].outcome == t["outcome"])
    if "tasks_total" in e:
        add("tasks", f"{e['tasks_total']} task entries (found {len(found)})",
            len(found) == e["tasks_total"])
    for text in e.get("no_tasks", []):
        add("tasks", f"no task '{text}'", not any(text.lower() in x.title.lower() for x in found))
    logs = "\n".join(x.body for x in found)
    for text in e.get("log_has", []):
        add("tasks", f"log has '{text}'", text in logs)
    for text in e.get("log_lacks", []):
        add("tasks", f"log lacks '{text}'", text not in logs)
    facts = {p[len(FACTS) + 1:]: t for p, t in files.items()
             if p.startswith(FACTS + "/") and not p.endswith("SKILL.md")}
    for f in e.get("facts", []):
        text = facts.get(f["file"], "")
        n = text.lower().count(f["has"].lower())
        want = f.get("count")
        add("facts", f"{f['file']} has '{f['has']}'" + (f" x{want}" if want else ""),
            n == want if want else n > 0)
    every_fact = "\n".join(facts.values()).lower()
    for text in e.get("not_facts", []):
        add("facts", f"no fact '{text}'", text.lower() not in every_fact)
    everything = "\n".join(files.values())
    for secret in e.get("never", []):
        add("safety", f"never '{secret[:4]}…'", secret not in everything)
    return checks
