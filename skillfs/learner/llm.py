"""The model client and the tool-call loop the learner's three stages share.

The `openai` SDK (AsyncOpenAI) is the only client; any compatible endpoint works through
`base_url`. Retries are done here rather than by the SDK so that backoff sleeps on the trio
clock and the number of attempts is under the learner's configuration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from pydantic import BaseModel, ValidationError

from ..config import LLMConfig
from .usage import Usage, record

log = logging.getLogger("skillfs.learner.llm")


class LLMError(Exception):
    """The model could not be used to finish a stage; the text says why."""


class ToolError(Exception):
    """A tool refused a call (a guard or a missing file); the text goes back to the model."""


def _sdk():
    """The openai SDK, imported on first use: importing it costs about a second of CPU, which
    a daemon with the rules learner (and every test daemon) need not pay."""
    import openai

    return openai


def _transient(openai) -> tuple[type[Exception], ...]:
    """Errors worth another attempt: the endpoint may recover. Anything else (bad key, bad
    request) would fail the same way again."""
    return (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
            openai.InternalServerError, openai.ConflictError)


class LLM:
    def __init__(self, config: LLMConfig):
        """`config`: an LLMConfig, or the LearnerConfig that extends it."""
        self.config = config
        self._client = _sdk().AsyncOpenAI(
            # a local endpoint often needs no key, but the SDK insists on one
            api_key=config.api_key or "no-key",
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=0,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict], tools: list[dict] | None = None,
                       usage: Usage | None = None) -> Any:
        """One chat completion with bounded retries; returns the assistant message and adds
        the call's tokens to `usage`."""
        cfg = self.config
        openai = _sdk()
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages}
        if tools:
            kwargs["tools"] = tools
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                delay = min(cfg.backoff * 2 ** (attempt - 1), cfg.backoff_max)
                log.warning("model call failed (%s); retry %d in %.1fs", _describe(last), attempt,
                            delay)
                await trio.sleep(delay)
            try:
                # the SDK's own timeout covers the request; this one covers a hung stream
                with trio.fail_after(cfg.timeout * 2 + 5):
                    resp = await self._client.chat.completions.create(**kwargs)
            except _transient(openai) as e:
                last = e
                continue
            except trio.TooSlowError as e:
                last = e
                continue
            except openai.APIStatusError as e:
                raise LLMError(f"model endpoint refused the request: {_describe(e)}") from e
            except openai.OpenAIError as e:
                raise LLMError(f"model call failed: {_describe(e)}") from e
            if not resp.choices:
                last = LLMError("the model returned no choices")
                continue
            reply = resp.choices[0].message
            record(usage, getattr(resp, "usage", None), kwargs, reply)
            return reply
        raise LLMError(f"model call failed after {cfg.retries + 1} attempts: {_describe(last)}")


def _describe(e: Exception | None) -> str:
    if e is None:
        return "unknown error"
    openai = _sdk()
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {e.message}"
    if isinstance(e, openai.APITimeoutError | trio.TooSlowError):
        return "timed out"
    return f"{type(e).__name__}: {e}"


@dataclass
class Tool:
    """A function the model may call: a pydantic model validates its arguments."""

    name: str
    description: str
    args: type[BaseModel]
    # returns the text answered to the model; a final tool returns None to end the loop
    # (or text to keep it going, e.g. when more work arrived meanwhile)
    run: Callable[[Any], Awaitable[str | None]]
    final: bool = False

    def schema(self) -> dict:
        params = _clean_schema(self.args.model_json_schema())
        params.setdefault("properties", {})
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }


def _clean_schema(node: Any) -> Any:
    # Titles are noise to the model and some endpoints reject unknown keys. An optional
    # field's `anyOf [T, null]` with `default: null` says no more than leaving it out of
    # `required` does; sent with every call, it is cut to T.
    if isinstance(node, dict):
        options = node.get("anyOf")
        if (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options
                and node.get("default", 0) is None):
            kept = next(o for o in options if o != {"type": "null"})
            node = {**{k: v for k, v in node.items() if k not in ("anyOf", "default")}, **kept}
        return {k: _clean_schema(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_clean_schema(v) for v in node]
    return node


@dataclass
class LoopResult:
    turns: int
    finished: bool
    calls: list[tuple[str, BaseModel]] = field(default_factory=list)


async def run_tools(
    llm: LLM,
    messages: list[dict],
    tools: Sequence[Tool],
    *,
    max_turns: int = 20,
    usage: Usage | None = None,
) -> LoopResult:
    """Let the model call tools until it calls a final one.

    A reply may hold many calls, the final one among them: the others run first, in order,
    and the final one ends the loop only when none of them failed (the model then sees why
    and carries on). Malformed arguments, unknown tools and replies without a tool call are
    answered with an error so the model can correct itself; after `max_bad_calls` of them the
    stage fails.
    """
    by_name = {t.name: t for t in tools}
    schemas = [t.schema() for t in tools]
    bad = 0
    result = LoopResult(turns=0, finished=False)

    def count_bad(reason: str) -> None:
        nonlocal bad
        bad += 1
        log.info("bad tool call (%d/%d): %s", bad, llm.config.max_bad_calls, reason)
        if bad > llm.config.max_bad_calls:
            raise LLMError(f"the model made {bad} invalid tool calls; last: {reason}")

    for turn in range(max_turns):
        result.turns = turn + 1
        reply = await llm.complete(messages, schemas, usage)
        calls = list(reply.tool_calls or [])
        messages.append(_assistant_dict(reply, calls))
        if not calls:
            count_bad("the reply called no tool")
            names = ", ".join(sorted(by_name))
            messages.append({
                "role": "user",
                "content": f"Reply only with tool calls ({names}). Call the final tool when done.",
            })
            continue
        if await _answer_reply(calls, by_name, count_bad, result, messages):
            result.finished = True
            return result
    raise LLMError(f"the model did not finish within {max_turns} turns")


async def _answer_reply(calls: list[Any], by_name: dict[str, Tool],
                        count_bad: Callable[[str], None], result: LoopResult,
                        messages: list[dict]) -> bool:
    """Run one reply's calls, final tools last; answer each in the order called. True when
    the loop is done."""
    def is_final(call: Any) -> bool:
        tool = by_name.get(getattr(getattr(call, "function", None), "name", None) or "")
        return tool is not None and tool.final

    answers: dict[int, Any] = {}
    for i, call in enumerate(calls):
        if not is_final(call):
            answers[i] = await _answer(call, by_name, count_bad, result)
    failed = any(str(a).startswith("error:") for a in answers.values())
    done = False
    for i, call in enumerate(calls):
        if not is_final(call):
            continue
        if failed:
            answers[i] = ("not finished: another call in this reply failed (see its answer); "
                          "put it right, then call this again")
            continue
        answer = await _answer(call, by_name, count_bad, result)
        done = done or answer is _FINAL
        answers[i] = "ok" if answer is _FINAL else answer
    for i, call in enumerate(calls):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": answers[i]})
    return done


_FINAL = object()


async def _answer(call: Any, by_name: dict[str, Tool], count_bad: Callable[[str], None],
                  result: LoopResult) -> Any:
    fn = getattr(call, "function", None)
    name = getattr(fn, "name", None) or ""
    tool = by_name.get(name)
    if tool is None:
        count_bad(f"unknown tool {name!r}")
        return f"error: there is no tool named {name!r}; use one of: {', '.join(sorted(by_name))}"
    raw = getattr(fn, "arguments", None) or "{}"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        count_bad(f"{name}: arguments are not JSON ({e})")
        return f"error: the arguments are not valid JSON ({e}); send a JSON object"
    if not isinstance(data, dict):
        count_bad(f"{name}: arguments are not an object")
        return "error: the arguments must be a JSON object"
    try:
        args = tool.args.model_validate(data)
    except ValidationError as e:
        count_bad(f"{name}: {_short_validation(e)}")
        return f"error: invalid arguments for {name}: {_short_validation(e)}"
    result.calls.append((name, args))
    try:
        text = await tool.run(args)
    except ToolError as e:
        # a refused edit is not malformed; the model gets the reason and tries otherwise
        return f"error: {e}"
    if text is None:
        return _FINAL if tool.final else "ok"
    return text


def _short_validation(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(arguments)"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def _assistant_dict(reply: Any, calls: list[Any]) -> dict:
    d: dict[str, Any] = {"role": "assistant", "content": reply.content or ""}
    if calls:
        d["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"},
            }
            for c in calls
        ]
    return d
