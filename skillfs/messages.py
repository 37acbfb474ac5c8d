"""One message model for the four input forms skillfs accepts.

- OpenAI chat: ``{"role", "content": str | [parts] | null, "tool_calls", "tool_call_id", "name"}``
- Anthropic: ``{"role": "user"|"assistant", "content": str | [blocks]}`` with ``tool_use`` /
  ``tool_result`` / ``thinking`` / image blocks
- Acontext: ``{"role", "parts": [{"type", "text", "meta"}], "meta"}`` where a ``tool-call``
  part carries ``meta = {"id", "name", "arguments"}`` and a ``tool-result`` part carries
  ``text`` and ``meta = {"tool_call_id"}``
- Claude Code transcript lines: ``{"type": "user"|"assistant", "message": {Anthropic message},
  "uuid", "parentUuid", "timestamp", "sessionId", …}``; the ``message`` is read as the
  Anthropic form, the whole line is the original (its timestamp dates the message). Other
  line types (summaries, bookkeeping) are not messages: the hook does not send them.

`normalize` checks a dict against its form and returns a `Message`: a normalised role, all
text flattened into one string, the tool calls, and the original dict untouched (the store
keeps it so nothing the agent sent is lost). Anything that is not a message raises
`InvalidMessage` (an `Invalid`) naming the field at fault.

A `Message` renders itself in each form again (`to_openai_messages`, `to_anthropic`,
`to_acontext_parts`, `render`): the API hands a session's messages out in the form its
reader asks for, whatever form they came in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import Invalid

Role = Literal["user", "assistant", "system", "tool"]
Format = Literal["openai", "anthropic", "acontext", "claude-code"]
# The forms a caller may name (the API's `format`); a Claude Code line is only detected.
FORMATS: tuple[str, ...] = ("openai", "anthropic", "acontext")
CLAUDE_CODE = "claude-code"
CLAUDE_CODE_MESSAGES = ("user", "assistant")
EVENTS: tuple[str, ...] = ("end", "flush")


class InvalidMessage(Invalid):
    """A dict that is not a message; `field` is a JSON-ish path such as ``content[2].text``."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    name: str
    # A dict when the caller's arguments were (or parsed as) a JSON object; otherwise the
    # raw string, so malformed arguments from a model are kept rather than refused.
    arguments: dict[str, Any] | str = Field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class Message(BaseModel):
    # Stored bodies are read back with model_validate; ignoring unknown keys lets older
    # or newer bodies load.
    model_config = ConfigDict(extra="ignore")

    role: Role
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    format: Format
    original: dict[str, Any]
    # The original's JSON text when it came as one spool line: stored as it is, which saves
    # encoding it again.
    raw: str | None = Field(default=None, exclude=True, repr=False)

    def to_openai(self) -> dict[str, Any]:
        """This message as one OpenAI chat message."""
        if self.role == "tool":
            if self.tool_call_id is None:
                # Several results (or none with an id) cannot be one tool message; as user
                # text they still read correctly.
                return {"role": "user", "content": self.text}
            return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.text}
        if self.role == "assistant":
            out: dict[str, Any] = {"role": "assistant"}
            if self.tool_calls:
                out["content"] = self.text or None
                out["tool_calls"] = [
                    {
                        "id": call.id or f"call_{i}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json()},
                    }
                    for i, call in enumerate(self.tool_calls)
                ]
            else:
                out["content"] = self.text
            if self.name:
                out["name"] = self.name
            return out
        out = {"role": self.role, "content": self.text}
        if self.name and self.role == "user":
            out["name"] = self.name
        return out

    def to_openai_messages(self) -> list[dict[str, Any]]:
        """This message as OpenAI chat messages, one ``tool`` message per tool result.

        Anthropic and Acontext put several tool results (and sometimes text) in one user
        message; OpenAI needs one ``tool`` message per result, then the text.
        """
        parsed = _parse(self.original, self.format)
        results = [p for p in parsed.pieces if p.kind == "result"]
        if self.role not in ("user", "tool") or not results:
            return [self.to_openai()]
        if len(results) == 1 and self.role == "tool" and self.tool_call_id:
            return [self.to_openai()]
        out: list[dict[str, Any]] = []
        for i, piece in enumerate(results):
            out.append(
                {"role": "tool", "tool_call_id": piece.ref or f"call_{i}", "content": piece.text}
            )
        rest = _join(p for p in parsed.pieces if p.kind != "result")
        if rest:
            out.append({"role": "user", "content": rest})
        return out

    def to_anthropic(self) -> dict[str, Any]:
        """This message as one Anthropic message: text and tool_use blocks for the assistant,
        text and tool_result blocks for everyone else (Anthropic has no system or tool role
        inside messages: both are the user's turn)."""
        if self.role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text \
                else []
            for i, c in enumerate(self.tool_calls):
                args = c.arguments if isinstance(c.arguments, dict) else {"arguments": c.arguments}
                blocks.append({"type": "tool_use", "id": c.id or f"call_{i}", "name": c.name,
                               "input": args})
            return {"role": "assistant", "content": blocks}
        blocks = []
        for o in self.to_openai_messages():
            if o["role"] == "tool":
                blocks.append({"type": "tool_result", "tool_use_id": o["tool_call_id"],
                               "content": o["content"]})
            elif o.get("content"):
                blocks.append({"type": "text", "text": o["content"]})
        return {"role": "user", "content": blocks or [{"type": "text", "text": self.text}]}

    def to_acontext_parts(self) -> list[dict[str, Any]]:
        """This message as Acontext's parts: the parts it came with if it came in Acontext's
        form, else text, tool-call and tool-result parts."""
        parts: list[dict[str, Any]] = []
        if self.format == "acontext":
            for p in self.original.get("parts") or []:
                if isinstance(p, str):
                    parts.append({"type": "text", "text": p})
                else:
                    parts.append({k: p[k] for k in ("type", "text", "filename", "meta")
                                  if p.get(k) is not None})
            return parts
        if self.role == "assistant":
            if self.text:
                parts.append({"type": "text", "text": self.text})
            for c in self.tool_calls:
                parts.append({"type": "tool-call", "meta": {"id": c.id, "name": c.name,
                                                            "arguments": c.arguments_json()}})
        else:
            for o in self.to_openai_messages():
                if o["role"] == "tool":
                    parts.append({"type": "tool-result", "text": o["content"],
                                  "meta": {"tool_call_id": o["tool_call_id"]}})
                elif o.get("content"):
                    parts.append({"type": "text", "text": o["content"]})
        return parts or [{"type": "text", "text": self.text}]

    def render(self, fmt: str) -> list[dict[str, Any]]:
        """This message in OpenAI's or Anthropic's form: exactly what the agent sent when it
        is in that form already, else converted (OpenAI may need several messages)."""
        if self.format == fmt:
            return [self.original]
        if fmt == "openai":
            return self.to_openai_messages()
        if fmt == "anthropic":
            return [self.to_anthropic()]
        raise InvalidMessage(None, f"cannot render a message as {fmt!r}")


class Control(BaseModel):
    """A control record in a spool file: ``end`` (the session is over) or ``flush`` (learn now)."""

    model_config = ConfigDict(extra="ignore")

    event: Literal["end", "flush"]
    original: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Parsing

_OPENAI_ROLES = {"user", "assistant", "system", "developer", "tool", "function"}
_ANTHROPIC_ROLES = {"user", "assistant"}
_ACONTEXT_ROLES = {"user", "assistant", "system", "tool"}

# Block/part types that only one of the two content-list forms uses; they decide the form of
# a message that does not say which it is.
_OPENAI_ONLY_PARTS = {"image_url", "input_audio", "file", "refusal"}
_ANTHROPIC_ONLY_BLOCKS = {
    "tool_use", "tool_result", "thinking", "redacted_thinking", "image", "document",
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "mcp_tool_use",
    "mcp_tool_result", "search_result", "container_upload", "code_execution_tool_result",
}
_OPENAI_ONLY_KEYS = ("tool_calls", "tool_call_id", "function_call", "refusal")
# Keys of a Claude Code transcript line's envelope (a summary line has only leafUuid)
_CLAUDE_CODE_KEYS = ("message", "sessionId", "uuid", "leafUuid")


@dataclass
class _Piece:
    kind: Literal["text", "result", "media"]
    text: str
    ref: str | None = None  # tool call id of a result


@dataclass
class _Parsed:
    role: str
    pieces: list[_Piece] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages read by people writing JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _want(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidMessage(where, f"expected {what}, got {json_type(value)}")


def _opt_str(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidMessage(where, f"expected a string, got {json_type(value)}")
    return value


def _req_str(obj: dict, key: str, where: str) -> str:
    if key not in obj or obj[key] is None:
        raise InvalidMessage(where, "missing")
    _want(obj[key], str, where, "a string")
    return obj[key]


def _typed(items: list, where: str) -> Any:
    """Yield (path, item, type) for a list whose items must be objects with a string type."""
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        _want(item, dict, at, "an object")
        yield at, item, _req_str(item, "type", f"{at}.type")


def _arguments(value: Any, where: str) -> dict[str, Any] | str:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, dict) else value
    raise InvalidMessage(where, f"expected an object or a JSON string, got {json_type(value)}")


def _join(pieces: Any) -> str:
    return "\n".join(p.text for p in pieces if p.text)


def _role(obj: dict, allowed: set[str], form: str) -> str:
    if "role" not in obj:
        raise InvalidMessage("role", "missing")
    role = obj["role"]
    _want(role, str, "role", "a string")
    if role not in allowed:
        raise InvalidMessage(
            "role",
            f"unknown role {role!r} for {form} (expected one of {', '.join(sorted(allowed))})"
        )
    return role


def detect_format(obj: Any) -> str:
    """Which of the four forms `obj` is in; raises InvalidMessage when it is none of them."""
    if not isinstance(obj, dict):
        raise InvalidMessage(None, f"a message must be a JSON object, got {json_type(obj)}")
    if "role" not in obj and "type" in obj and any(k in obj for k in _CLAUDE_CODE_KEYS):
        return CLAUDE_CODE
    if "role" not in obj:
        raise InvalidMessage("role", "missing")
    _want(obj["role"], str, "role", "a string")
    if "parts" in obj:
        if "content" in obj:
            raise InvalidMessage(
                "parts",
                "a message has 'content' (OpenAI/Anthropic) or 'parts' (Acontext), not both"
            )
        return "acontext"
    # Empty values ("tool_calls": [] / null from SDK dumps) say nothing about the form.
    openai = [k for k in _OPENAI_ONLY_KEYS if obj.get(k) not in (None, [], "")]
    if obj["role"] not in _ANTHROPIC_ROLES:
        openai.append("role")
    anthropic: list[str] = []
    if obj.get("type") == "message":
        anthropic.append("type")
    content = obj.get("content")
    if isinstance(content, list):
        for i, part in enumerate(content):
            ptype = part.get("type") if isinstance(part, dict) else None
            if ptype in _OPENAI_ONLY_PARTS:
                openai.append(f"content[{i}]")
            elif ptype in _ANTHROPIC_ONLY_BLOCKS:
                anthropic.append(f"content[{i}]")
    if openai and anthropic:
        raise InvalidMessage(
            anthropic[0],
            f"mixes Anthropic content with OpenAI fields ({', '.join(openai)})",
        )
    # A plain {"role", "content": "..."} is both; OpenAI's reading gives the same result.
    return "anthropic" if anthropic else "openai"


def _parse(obj: Any, fmt: str) -> _Parsed:
    if not isinstance(obj, dict):
        raise InvalidMessage(None, f"a message must be a JSON object, got {json_type(obj)}")
    if fmt == "openai":
        return _parse_openai(obj)
    if fmt == "anthropic":
        return _parse_anthropic(obj)
    if fmt == "acontext":
        return _parse_acontext(obj)
    if fmt == CLAUDE_CODE:
        return _parse_claude_code(obj)
    raise InvalidMessage(None, f"unknown message format {fmt!r} "
                               f"(expected {', '.join(FORMATS + (CLAUDE_CODE,))})")


_PLAIN_ROLES = frozenset({"user", "assistant", "system"})


def normalize(obj: Any, format: str | None = None) -> Message:
    """Check `obj` against its form (detected when `format` is None) and normalise it."""
    # Most transcript lines are a plain {"role", "content": "..."}: it needs no checks beyond
    # these, which is several times faster than the general path.
    if (format in (None, "openai") and type(obj) is dict and len(obj) == 2
            and type(obj.get("content")) is str and obj.get("role") in _PLAIN_ROLES):
        return Message(role=obj["role"], text=obj["content"], format="openai", original=obj)
    fmt = format or detect_format(obj)
    parsed = _parse(obj, fmt)
    return Message(
        role=parsed.role,
        text=_join(parsed.pieces),
        tool_calls=parsed.tool_calls,
        tool_call_id=parsed.tool_call_id,
        name=parsed.name,
        format=fmt,
        original=obj,
    )


# --- OpenAI ---------------------------------------------------------------------------------

def _openai_parts(content: list, where: str, out: list[_Piece]) -> None:
    for at, part, ptype in _typed(content, where):
        if ptype == "text":
            out.append(_Piece("text", _req_str(part, "text", f"{at}.text")))
        elif ptype == "refusal":
            out.append(_Piece("text", _req_str(part, "refusal", f"{at}.refusal")))
        elif ptype == "image_url":
            out.append(_Piece("media", "[image]"))
        elif ptype == "input_audio":
            out.append(_Piece("media", "[audio]"))
        elif ptype == "file":
            info = part.get("file")
            fname = info.get("filename") if isinstance(info, dict) else None
            out.append(_Piece("media", f"[file: {fname}]" if isinstance(fname, str) else "[file]"))
        else:
            out.append(_Piece("media", f"[{ptype}]"))


def _parse_openai(obj: dict) -> _Parsed:
    role = _role(obj, _OPENAI_ROLES, "an OpenAI message")
    parsed = _Parsed(role={"developer": "system", "function": "tool"}.get(role, role))
    parsed.name = _opt_str(obj, "name", "name")
    content = obj.get("content")
    pieces: list[_Piece] = []
    if isinstance(content, str):
        pieces.append(_Piece("text", content))
    elif isinstance(content, list):
        _openai_parts(content, "content", pieces)
    elif content is None:
        if role in ("user", "system", "developer", "tool"):
            raise InvalidMessage("content", "missing" if "content" not in obj else
                                 f"a {role} message needs a string or an array of parts")
    else:
        raise InvalidMessage("content", "expected a string, an array of parts or null, "
                                        f"got {json_type(content)}")

    refusal = _opt_str(obj, "refusal", "refusal")
    if refusal:
        pieces.append(_Piece("text", refusal))

    tool_calls = obj.get("tool_calls")
    if tool_calls is not None:
        _want(tool_calls, list, "tool_calls", "an array")
        if tool_calls and role != "assistant":
            raise InvalidMessage("tool_calls",
                                 f"only assistant messages make tool calls, not {role}")
        for i, call in enumerate(tool_calls):
            parsed.tool_calls.append(_openai_tool_call(call, f"tool_calls[{i}]"))
    fcall = obj.get("function_call")
    if fcall is not None:
        _want(fcall, dict, "function_call", "an object")
        parsed.tool_calls.append(ToolCall(
            name=_req_str(fcall, "name", "function_call.name"),
            arguments=_arguments(fcall.get("arguments", {}), "function_call.arguments"),
        ))

    call_id = _opt_str(obj, "tool_call_id", "tool_call_id")
    if role == "tool":
        if call_id is None:
            raise InvalidMessage("tool_call_id", "missing (a tool message answers a tool call)")
        parsed.tool_call_id = call_id
        pieces = [_Piece("result", _join(pieces), call_id)]
    elif role == "function":
        if parsed.name is None:
            raise InvalidMessage("name", "missing (a function message names its function)")
        pieces = [_Piece("result", _join(pieces))]
    elif call_id is not None:
        raise InvalidMessage("tool_call_id", f"only tool messages answer tool calls, not {role}")
    parsed.pieces = pieces
    return parsed


def _openai_tool_call(call: Any, at: str) -> ToolCall:
    _want(call, dict, at, "an object")
    call_id = _req_str(call, "id", f"{at}.id")
    ctype = _opt_str(call, "type", f"{at}.type") or "function"
    if ctype == "custom":
        custom = call.get("custom")
        _want(custom, dict, f"{at}.custom", "an object")
        raw = custom.get("input", "")
        _want(raw, str, f"{at}.custom.input", "a string")
        return ToolCall(id=call_id, name=_req_str(custom, "name", f"{at}.custom.name"),
                        arguments=raw)
    if ctype != "function":
        raise InvalidMessage(f"{at}.type",
                             f"unknown tool call type {ctype!r} (expected 'function')")
    fn = call.get("function")
    if fn is None:
        raise InvalidMessage(f"{at}.function", "missing")
    _want(fn, dict, f"{at}.function", "an object")
    return ToolCall(
        id=call_id,
        name=_req_str(fn, "name", f"{at}.function.name"),
        arguments=_arguments(fn.get("arguments", {}), f"{at}.function.arguments"),
    )


# --- Anthropic ------------------------------------------------------------------------------

def _anthropic_result_text(content: Any, at: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    _want(content, list, at, "a string or an array of blocks")
    pieces: list[_Piece] = []
    for where, block, btype in _typed(content, at):
        if btype == "text":
            pieces.append(_Piece("text", _req_str(block, "text", f"{where}.text")))
        else:
            pieces.append(_Piece("media", f"[{btype}]"))
    return _join(pieces)


def _parse_anthropic(obj: dict) -> _Parsed:
    role = _role(obj, _ANTHROPIC_ROLES, "an Anthropic message")
    parsed = _Parsed(role=role)
    if "content" not in obj:
        raise InvalidMessage("content", "missing")
    content = obj["content"]
    if isinstance(content, str):
        parsed.pieces.append(_Piece("text", content))
        return parsed
    _want(content, list, "content", "a string or an array of blocks")
    for at, block, btype in _typed(content, "content"):
        if btype == "text":
            parsed.pieces.append(_Piece("text", _req_str(block, "text", f"{at}.text")))
        elif btype in ("tool_use", "server_tool_use", "mcp_tool_use"):
            args = block.get("input", {})
            _want(args, dict, f"{at}.input", "an object")
            parsed.tool_calls.append(ToolCall(
                id=_req_str(block, "id", f"{at}.id"),
                name=_req_str(block, "name", f"{at}.name"),
                arguments=args,
            ))
        elif btype == "tool_result":
            ref = _req_str(block, "tool_use_id", f"{at}.tool_use_id")
            text = _anthropic_result_text(block.get("content"), f"{at}.content")
            parsed.pieces.append(_Piece("result", text, ref))
        elif btype in ("thinking", "redacted_thinking"):
            # The model's private reasoning is not conversation; the original keeps it.
            continue
        elif btype == "document":
            title = block.get("title")
            parsed.pieces.append(
                _Piece("media", f"[document: {title}]" if isinstance(title, str) else "[document]")
            )
        else:
            parsed.pieces.append(_Piece("media", f"[{btype}]"))
    _results_role(parsed)
    return parsed


def _results_role(parsed: _Parsed) -> None:
    """A user message made only of tool results is tool output, not the user talking."""
    results = [p for p in parsed.pieces if p.kind == "result"]
    if parsed.role == "user" and results and len(results) == len(parsed.pieces):
        parsed.role = "tool"
    if len(results) == 1:
        parsed.tool_call_id = results[0].ref


# --- Acontext -------------------------------------------------------------------------------

def _parse_acontext(obj: dict) -> _Parsed:
    role = _role(obj, _ACONTEXT_ROLES, "an Acontext message")
    parsed = _Parsed(role=role)
    meta = obj.get("meta")
    if meta is not None:
        _want(meta, dict, "meta", "an object")
    if "parts" not in obj:
        raise InvalidMessage("parts", "missing")
    parts = obj["parts"]
    _want(parts, list, "parts", "an array of parts")
    for i, part in enumerate(parts):
        at = f"parts[{i}]"
        if isinstance(part, str):  # the SDK's shorthand for a text part
            parsed.pieces.append(_Piece("text", part))
            continue
        _want(part, dict, at, "an object")
        ptype = _req_str(part, "type", f"{at}.type")
        text = _opt_str(part, "text", f"{at}.text")
        pmeta = part.get("meta")
        if pmeta is not None:
            _want(pmeta, dict, f"{at}.meta", "an object")
        if ptype == "text":
            if text is None:
                raise InvalidMessage(f"{at}.text", "missing")
            parsed.pieces.append(_Piece("text", text))
        elif ptype == "tool-call":
            if pmeta is None:
                raise InvalidMessage(f"{at}.meta",
                                     "missing (a tool-call part carries name and arguments)")
            name_key = "name" if "name" in pmeta else "tool_name"  # older servers: tool_name
            args_key = "arguments" if "arguments" in pmeta else "input"
            if args_key not in pmeta:
                raise InvalidMessage(f"{at}.meta.arguments", "missing")
            parsed.tool_calls.append(ToolCall(
                id=_opt_str(pmeta, "id", f"{at}.meta.id"),
                name=_req_str(pmeta, name_key, f"{at}.meta.{name_key}"),
                arguments=_arguments(pmeta[args_key], f"{at}.meta.{args_key}"),
            ))
        elif ptype == "tool-result":
            if pmeta is None:
                raise InvalidMessage(f"{at}.meta",
                                     "missing (a tool-result part carries tool_call_id)")
            ref = _req_str(pmeta, "tool_call_id", f"{at}.meta.tool_call_id")
            parsed.pieces.append(_Piece("result", text or "", ref))
        elif ptype in ("thinking", "redacted_thinking"):
            continue
        else:
            fname = part.get("filename")
            label = f"[{ptype}: {fname}]" if isinstance(fname, str) and fname else f"[{ptype}]"
            parsed.pieces.append(_Piece("media", label))
    _results_role(parsed)
    return parsed


# --- Claude Code ----------------------------------------------------------------------------

def _parse_claude_code(obj: dict) -> _Parsed:
    """A transcript line: its envelope checked, its ``message`` read as the Anthropic form."""
    kind = _req_str(obj, "type", "type")
    if kind not in CLAUDE_CODE_MESSAGES:
        raise InvalidMessage("type", f"a Claude Code transcript line of type {kind!r} is not a "
                                     "message (expected 'user' or 'assistant')")
    if "message" not in obj:
        raise InvalidMessage("message", "missing")
    message = obj["message"]
    if not isinstance(message, dict):
        raise InvalidMessage("message", f"expected an object, got {json_type(message)}")
    # The line's type says who spoke; a message without a role takes it from there.
    role = message.get("role", kind)
    if role != kind:
        raise InvalidMessage("message.role", f"{role!r} in a line of type {kind!r}")
    try:
        return _parse_anthropic({**message, "role": role})
    except InvalidMessage as e:
        raise InvalidMessage(f"message.{e.field}" if e.field else "message", e.reason) from None


# ---------------------------------------------------------------------------------------------
# A message's own time

_TIME_KEYS = ("timestamp", "created_at")
# epoch values outside these years are not times (a counter, an id)
_EPOCH_YEARS = (1990, 2200)


def message_time(obj: Any) -> datetime | None:
    """When the message says it was sent: ``timestamp`` or ``created_at`` on the record (or in
    an Acontext ``meta``), ISO 8601 or epoch seconds/milliseconds; None when it says nothing
    usable. An ISO time keeps its own offset (the sender's day); a naive one is local."""
    if not isinstance(obj, dict):
        return None
    meta = obj.get("meta")
    places = [obj] + ([meta] if isinstance(meta, dict) else [])
    for place in places:
        for key in _TIME_KEYS:
            at = _parse_time(place.get(key))
            if at is not None:
                return at
    return None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                at = datetime.fromisoformat(text)
            except ValueError:
                return None
            return at if at.tzinfo is not None else at.astimezone()
    if not isinstance(value, (int, float)) or value != value:
        return None
    seconds = value / 1000 if value > 1e11 else value  # milliseconds past ~1973 in seconds
    try:
        at = datetime.fromtimestamp(seconds).astimezone()
    except (OverflowError, OSError, ValueError):
        return None
    return at if _EPOCH_YEARS[0] <= at.year <= _EPOCH_YEARS[1] else None
