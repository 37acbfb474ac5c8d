"""A small read-only view of a stored message: what the learner's stages look at.

Messages a user asked not to be remembered are dropped here, before any stage sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..redact import is_forget_request, redact, refers_back
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
    """Anthropic's `is_error` on a tool_result block (also inside a Claude Code line), or the
    same flag in an Acontext part's meta: the sender says the tool failed, whatever its output
    reads like."""
    if not isinstance(original, dict):
        return False
    if isinstance(original.get("message"), dict):  # a Claude Code transcript line
        original = original["message"]
    items = original.get("content") if "content" in original else original.get("parts")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        meta = found if isinstance(found := item.get("meta"), dict) else {}
        if item.get("is_error") is True or meta.get("is_error") is True:
            return True
    return False


def drop_forgotten(msgs: list[Msg]) -> list[Msg]:
    """`msgs` without what a user asked not to be remembered: the user message that asks,
    with the replies that follow it up to the next user message, and when it points back
    ("Forget that.", or nothing but the request) the user message before and its replies."""
    requests: list[list[Msg]] = []  # each user message with what follows it
    for m in msgs:
        if m.role == "user" or not requests:
            requests.append([])
        requests[-1].append(m)
    dropped: set[int] = set()
    for i, request in enumerate(requests):
        head = request[0]
        if head.role == "user" and is_forget_request(head.text):
            dropped.add(i)
            if i > 0 and refers_back(head.text):
                dropped.add(i - 1)
    return [m for i, request in enumerate(requests) if i not in dropped for m in request]


def redacted(m: Msg) -> Msg:
    """The message with its secrets redacted (what a model may be shown)."""
    calls = tuple((name, redact(args).text) for name, args in m.tool_calls)
    return replace(m, text=redact(m.text).text, tool_calls=calls)


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
