"""A small read-only view of a stored message: what the learner's stages look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Msg:
    seq: int
    role: str  # user | assistant | tool | system
    text: str
    tool_calls: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (name, arguments)
    at: datetime | None = None  # local time the message was stored


def from_stored(stored: Any) -> Msg:
    """Build a Msg from the store's StoredMessage (body is the normalised Message)."""
    body = stored.body or {}
    calls = []
    for c in body.get("tool_calls") or []:
        args = c.get("arguments", {})
        if not isinstance(args, str):
            import json
            args = json.dumps(args, ensure_ascii=False)
        calls.append((str(c.get("name", "")), args))
    at = None
    if getattr(stored, "created_ns", None):
        at = datetime.fromtimestamp(stored.created_ns / 1e9).astimezone()
    return Msg(seq=stored.seq, role=body.get("role") or stored.role,
               text=body.get("text") or "", tool_calls=tuple(calls), at=at)


def render(msgs: list[Msg], limit: int = 4000, tool_limit: int = 1000) -> str:
    """Messages as the model reads them: one block per message, long texts shortened.

    Tool output is held shorter than the rest: it is the bulk of a coding session, and what
    matters in it (an error, an exit status, a summary) sits at its end, so the end is kept.
    """
    out = []
    for m in msgs:
        text = shorten(m.text, tool_limit if m.role == "tool" else limit)
        calls = "".join(f"\n  [calls {n}({_cut(a, 400)})]" for n, a in m.tool_calls)
        out.append(f"<message id={m.seq} role={m.role}>\n{text}{calls}\n</message>")
    return "\n".join(out)


def shorten(text: str, limit: int) -> str:
    """`text` within about `limit` characters: a quarter from its start, the rest from its end."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]} …[{len(text) - limit} characters cut]… {text[-tail:]}"


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + "…"
