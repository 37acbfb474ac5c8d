"""What learning costs: model calls and tokens, per session and per stage.

An evaluation harness compares learners and prompts by these figures, so every model call is
counted where it is made. The endpoint's `usage` is taken when it sends one; otherwise the
request is counted here (`skillfs.tokens`: tiktoken when its BPE file is at hand, else an
estimate). `counted` says which of these the figures rest on (the weakest one used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..tokens import count_tokens, counted_by

# from the most to the least exact
COUNTED = ("endpoint", "tiktoken", "estimate")


@dataclass
class Usage:
    # floats: a writer run that served several sessions is shared among them
    calls: float = 0
    input_tokens: float = 0
    output_tokens: float = 0
    counted: str = "endpoint"

    def add(self, calls: float, input_tokens: float, output_tokens: float,
            counted: str) -> None:
        self.calls += calls
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if COUNTED.index(counted) > COUNTED.index(self.counted):
            self.counted = counted

    def json(self) -> dict[str, Any]:
        return {"calls": round(self.calls, 2), "input_tokens": round(self.input_tokens),
                "output_tokens": round(self.output_tokens)}


@dataclass
class Meter:
    """One session's learning cost: usage by stage and the tasks it paid for."""

    stages: dict[str, Usage] = field(default_factory=dict)
    tasks: int = 0

    def stage(self, name: str) -> Usage:
        return self.stages.setdefault(name, Usage())

    def json(self) -> dict[str, Any]:
        total = Usage()
        for u in self.stages.values():
            total.add(u.calls, u.input_tokens, u.output_tokens, u.counted)
        out = {**total.json(), "tasks": self.tasks, "counted": total.counted,
               "stages": {k: u.json() for k, u in sorted(self.stages.items())}}
        if self.tasks:
            out["per_task"] = {"calls": round(total.calls / self.tasks, 2),
                               "input_tokens": round(total.input_tokens / self.tasks),
                               "output_tokens": round(total.output_tokens / self.tasks)}
        return out


def record(usage: Usage | None, reply_usage: Any, request: dict, reply: Any) -> None:
    """Count one model call: the endpoint's figures, else our own."""
    if usage is None:
        return
    prompt = getattr(reply_usage, "prompt_tokens", None)
    completion = getattr(reply_usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        usage.add(1, prompt, completion, "endpoint")
        return
    counted = counted_by()
    usage.add(1, count_tokens(json.dumps(request, ensure_ascii=False)),
              count_tokens(_reply_text(reply)), counted)


def _reply_text(reply: Any) -> str:
    parts = [getattr(reply, "content", None) or ""]
    for c in getattr(reply, "tool_calls", None) or []:
        parts += [c.function.name, c.function.arguments or ""]
    return "\n".join(parts)
