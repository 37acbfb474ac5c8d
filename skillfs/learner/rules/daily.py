"""Daily-log entries: one per task, in the shape the daily-logs skill describes."""

from __future__ import annotations

from datetime import datetime

from .tasks import RuleTask
from .text import one_line


def daily_entry(task: RuleTask, at: datetime) -> str:
    lines = [f"## [{at:%H:%M}] Task: {one_line(task.description)}",
             f"- **Outcome**: {task.status}",
             f"- **Summary**: {one_line(task.summary)}"]
    # left out when the agent gave no reasons: boilerplate would read as knowledge
    if task.decisions:
        lines.append(f"- **Key Decisions**: {one_line(' '.join(task.decisions))}")
    if task.learnings:
        lines.append(f"- **Learnings**: {one_line(' '.join(task.learnings))}")
    return "\n".join(lines) + "\n"


def daily_log_name(day: str, part: int = 1) -> str:
    """`2026-11-22.md`, then `2026-11-22-2.md`, ... once a part reaches the size cap."""
    return f"{day}.md" if part == 1 else f"{day}-{part}.md"


def add_daily_entry(existing: str | None, day: str, entry: str, part: int = 1) -> str | None:
    """The day's file with `entry` appended; None if an entry with that heading is there."""
    heading = entry.splitlines()[0]
    if existing is None or not existing.strip():
        title = day if part == 1 else f"{day} (part {part})"
        return f"# {title}\n\n{entry}"
    if any(line.strip() == heading for line in existing.splitlines()):
        return None
    return existing.rstrip("\n") + "\n\n" + entry


def replace_daily_entry(existing: str | None, entry: str) -> str | None:
    """`existing` with the entry of the same heading replaced by `entry`; None when that
    heading is not there or the entry is already as given."""
    if not existing:
        return None
    heading = entry.splitlines()[0]
    lines = existing.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    if not starts:
        return None
    start = starts[-1]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    new = "\n".join(lines[:start] + entry.rstrip("\n").splitlines() + lines[end:])
    new = new.rstrip("\n") + "\n"
    return None if new == existing else new
