"""A small read-only view of a stored message: what the learner's stages look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..messages import message_time


@dataclass(frozen=True)
class Msg:
    seq: int
    role: str  # user | assistant | tool | system
    text: str
    tool_calls: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (name, arguments)
    at: datetime | None = None  # the message's own time, else when it was stored
    stamped: bool = False  # `at` is the message's own time (it carried one)
    error: bool = False  # a tool result flagged as an error by its sender


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
    original = getattr(stored, "original", None)
    # the record's own time, else the time an API caller put in the message's meta
    at = message_time(original) or message_time({"meta": getattr(stored, "meta", None)})
    stamped = at is not None
    if at is None and getattr(stored, "created_ns", None):
        at = datetime.fromtimestamp(stored.created_ns / 1e9).astimezone()
    return Msg(seq=stored.seq, role=body.get("role") or stored.role,
               text=body.get("text") or "", tool_calls=tuple(calls), at=at, stamped=stamped,
               error=_flagged_error(original))


def _flagged_error(original: Any) -> bool:
    """Anthropic's `is_error` on a tool_result block, or the same flag in an Acontext part's
    meta: the sender says the tool failed, whatever its output reads like."""
    if not isinstance(original, dict):
        return False
    items = original.get("content") if "content" in original else original.get("parts")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
        if item.get("is_error") is True or meta.get("is_error") is True:
            return True
    return False


def render(msgs: list[Msg], limit: int = 4000) -> str:
    """Messages as the model reads them: one block per message, long texts shortened."""
    out = []
    for m in msgs:
        text = m.text if len(m.text) <= limit else m.text[:limit] + " …[cut]"
        calls = "".join(f"\n  [calls {n}({_cut(a, 400)})]" for n, a in m.tool_calls)
        out.append(f"<message id={m.seq} role={m.role}>\n{text}{calls}\n</message>")
    return "\n".join(out)


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + "…"
