"""What learning costs: model calls and tokens, per session and per stage.

An evaluation harness compares learners and prompts by these figures, so every model call is
counted where it is made. The endpoint's `usage` is taken when it sends one; otherwise the
request is counted here with tiktoken's o200k encoding when tiktoken is installed and its BPE
file is already in tiktoken's cache (it would otherwise download it, blocking the event loop,
and offline it cannot), else estimated at four characters a token. `counted` says which of
these the figures rest on (the weakest one used).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("skillfs.learner.usage")

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
    counted = "tiktoken" if _encoding() is not None else "estimate"
    usage.add(1, count_tokens(json.dumps(request, ensure_ascii=False)),
              count_tokens(_reply_text(reply)), counted)


def count_tokens(text: str) -> int:
    enc = _encoding()
    if enc is None:
        return (len(text) + 3) // 4
    return len(enc.encode(text, disallowed_special=()))


_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


@functools.cache
def _encoding() -> Any:
    # where tiktoken keeps a downloaded BPE file (its own cache rule)
    cache = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
             or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    if not os.path.exists(os.path.join(cache, hashlib.sha1(_BPE_URL.encode()).hexdigest())):
        log.info("no tiktoken BPE file in %s; estimating tokens as characters / 4", cache)
        return None
    try:
        import tiktoken
        return tiktoken.get_encoding("o200k_base")
    except (ImportError, OSError, ValueError) as e:
        log.info("tiktoken unavailable (%s); estimating tokens as characters / 4", e)
        return None


def _reply_text(reply: Any) -> str:
    parts = [getattr(reply, "content", None) or ""]
    for c in getattr(reply, "tool_calls", None) or []:
        parts += [c.function.name, c.function.arguments or ""]
    return "\n".join(parts)
