"""What a space and a session already say, read for the model stages.

Extraction is shown the facts the space has recorded so that it does not submit them again;
distillation is shown the skills' descriptions so that it can place and scope a lesson; a
session's configs may hold how its project judges a task (`task_criteria`). (Its
`original_date` is read where tasks are dated: `core.task_time`.)
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound

FACTS = "user-general-facts"
SKILL_MD = "SKILL.md"
# the facts shown to extraction, at most: a long list would cost more than a repeat
KNOWN_FACTS = 60
KNOWN_CHARS = 3000


async def known_facts(store: Any, space_id: str) -> list[str]:
    """The bullet lines of the space's user-general-facts files, newest files last."""
    skill = next((s for s in store.list_space_skills(space_id) if s.name == FACTS), None)
    if skill is None:
        return []
    facts: list[str] = []
    for path in sorted(p for p in skill.files if p != SKILL_MD):
        try:
            text = (await store.read_file(skill.id, path)).content.decode("utf-8", "replace")
        except NotFound:
            continue
        for line in text.splitlines():
            fact = line.strip()[2:].strip() if line.strip()[:2] in ("- ", "* ") else ""
            if fact and not fact.lower().startswith("source:") and fact not in facts:
                facts.append(fact)
    return _within(facts)


def _within(facts: list[str]) -> list[str]:
    kept, size = [], 0
    for fact in reversed(facts[-KNOWN_FACTS:]):
        size += len(fact) + 3
        if size > KNOWN_CHARS:
            break
        kept.append(fact)
    return kept[::-1]


def skill_descriptions(store: Any, space_id: str) -> str:
    return "\n".join(f"- {s.name}: {s.description}"
                     for s in sorted(store.list_space_skills(space_id), key=lambda s: s.name))


def task_criteria(configs: dict) -> str | None:
    """`task_criteria` of a session's configs: a text, or a list of texts."""
    value = configs.get("task_criteria")
    if isinstance(value, list):
        value = "\n".join(f"- {v}" for v in value if str(v).strip())
    return str(value).strip() or None if value else None
