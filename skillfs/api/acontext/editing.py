"""Acontext's edit strategies, which `GET /session/{id}/messages?edit_strategies=[...]`
applies to a page of messages before handing it out: a long session made to fit a model's
context without changing what is stored.

They act on Acontext's parts, as Acontext's own editor does: `remove_tool_result` replaces
old tool results by a placeholder, `remove_tool_call_params` old tool calls' arguments by
`{}`, `token_limit` drops the oldest messages and `middle_out` the middle ones until the page
fits (a tool call and its result go together). Each strategy's parameters are checked, and a
strategy skillfs does not know is refused by name (400), never skipped. They run in
Acontext's order: results, then call parameters, then middle_out, token_limit last.

Tokens are counted as Acontext counts them (text, tool results, and each tool call's name
and arguments as JSON), with the learner's counter (o200k when tiktoken has its file, else
characters / 4). A message a strategy changed is rendered from its edited parts; one it
left alone is handed out as it was stored.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...tokens import count_tokens
from ...store import StoredMessage
from .wire import BadRequest, errors_text, message_id


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RemoveToolResult(_Params):
    keep_recent_n_tool_results: int = Field(3, ge=0)
    tool_result_placeholder: str = "Done"
    keep_tools: list[str] = Field(default_factory=list)
    gt_token: int | None = Field(None, gt=0)


class RemoveToolCallParams(_Params):
    keep_recent_n_tool_calls: int = Field(3, ge=0)
    keep_tools: list[str] = Field(default_factory=list)
    gt_token: int | None = Field(None, gt=0)


class MiddleOut(_Params):
    token_reduce_to: int = Field(gt=0)


class TokenLimit(_Params):
    limit_tokens: int = Field(gt=0)


# in the order they are applied
STRATEGIES: dict[str, type[_Params]] = {
    "remove_tool_result": RemoveToolResult, "remove_tool_call_params": RemoveToolCallParams,
    "middle_out": MiddleOut, "token_limit": TokenLimit}


def parse(text: str) -> list[_Params]:
    """The strategies of an `edit_strategies` query value, in the order they apply."""
    try:
        value = json.loads(text)
    except ValueError:
        raise BadRequest("invalid edit_strategies JSON") from None
    if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
        raise BadRequest("edit_strategies must be a JSON array of {type, params} objects")
    unknown = [json.dumps(s.get("type")) for s in value
               if not isinstance(s.get("type"), str) or s["type"] not in STRATEGIES]
    if unknown:
        raise BadRequest(f"edit strategies not supported: {', '.join(unknown)} "
                         f"(skillfs applies {', '.join(STRATEGIES)})")
    out = []
    for s in value:
        params = {} if s.get("params") is None else s["params"]
        try:
            out.append(STRATEGIES[s["type"]].model_validate(params))
        except ValidationError as e:
            raise BadRequest(f"edit strategy {s['type']}: {errors_text(e.errors())}") from None
    order = list(STRATEGIES.values())
    return sorted(out, key=lambda p: order.index(type(p)))


# -- tokens --------------------------------------------------------------------------------

def _part_text(part: dict) -> str:
    if part.get("type") == "tool-call":
        meta = part.get("meta") or {}
        return json.dumps({k: meta[k] for k in ("arguments", "name") if k in meta},
                          ensure_ascii=False)
    return part.get("text") or ""


def tokens(parts: Sequence[dict]) -> int:
    """A message's tokens, from its Acontext parts."""
    text = "".join(t + "\n" for t in map(_part_text, parts) if t)
    return count_tokens(text) if text else 0


# -- the page being edited -----------------------------------------------------------------

@dataclass
class Item:
    """One message of the page: its parts as the strategies leave them."""

    stored: StoredMessage
    parts: list[dict]
    edited: bool = False

    @property
    def id(self) -> str:
        return message_id(self.stored.session_id, self.stored.seq)


def _parts_of(item: Item, kind: str) -> Iterator[dict]:
    return (p for p in item.parts if p.get("type") == kind)


def _meta(part: dict, key: str) -> Any:
    meta = part.get("meta")
    return meta.get(key) if isinstance(meta, dict) else None


def _remove_tool_results(items: list[Item], s: RemoveToolResult) -> list[Item]:
    names = {_meta(p, "id"): _meta(p, "name") for i in items for p in _parts_of(i, "tool-call")}
    keep = set(s.keep_tools)
    found = [(i, p) for i in items for p in _parts_of(i, "tool-result")
             if names.get(_meta(p, "tool_call_id")) not in keep]
    placeholder = s.tool_result_placeholder.strip() or "Done"
    for item, part in found[:max(0, len(found) - s.keep_recent_n_tool_results)]:
        text = part.get("text") or ""
        if s.gt_token is not None and (not text or count_tokens(text) <= s.gt_token):
            continue
        part["text"], item.edited = placeholder, True
    return items


def _remove_tool_call_params(items: list[Item], s: RemoveToolCallParams) -> list[Item]:
    keep = set(s.keep_tools)
    found = [(i, p) for i in items for p in _parts_of(i, "tool-call")
             if _meta(p, "name") not in keep]
    for item, part in found[:max(0, len(found) - s.keep_recent_n_tool_calls)]:
        meta = part.get("meta")
        if not isinstance(meta, dict):
            continue
        if s.gt_token is not None:
            args = meta.get("arguments")
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            if "arguments" not in meta or count_tokens(text) <= s.gt_token:
                continue
        meta["arguments"], item.edited = "{}", True
    return items


def _paired(items: list[Item], first: int) -> set[int]:
    """Message `first` and every message tied to it by a tool call and its result."""
    def call_ids(item: Item) -> set[Any]:
        return ({_meta(p, "id") for p in _parts_of(item, "tool-call")}
                | {_meta(p, "tool_call_id") for p in _parts_of(item, "tool-result")}) - {None}
    ids = [call_ids(i) for i in items]
    taken, todo = {first}, [first]
    while todo:
        wanted = ids[todo.pop()]
        for j, own in enumerate(ids):
            if j not in taken and own & wanted:
                taken.add(j)
                todo.append(j)
    return taken


def _shrink(items: list[Item], budget: int, pick: Callable[[int], int]) -> list[Item]:
    """Drop messages (`pick(len)` says which, with its tool pairs) until the page fits."""
    counts = [tokens(i.parts) for i in items]
    total = sum(counts)
    while total > budget and items:
        gone = _paired(items, pick(len(items)))
        total -= sum(counts[j] for j in gone)
        items = [item for j, item in enumerate(items) if j not in gone]
        counts = [c for j, c in enumerate(counts) if j not in gone]
    return items


def _token_limit(items: list[Item], s: TokenLimit) -> list[Item]:
    return _shrink(items, s.limit_tokens, lambda n: 0)


def _middle_out(items: list[Item], s: MiddleOut) -> list[Item]:
    # from the middle, keeping head and tail; with two left, the older goes
    return _shrink(items, s.token_reduce_to, lambda n: n // 2 if n > 2 else 0)


_APPLY: dict[type, Callable[[list[Item], Any], list[Item]]] = {
    RemoveToolResult: _remove_tool_results, RemoveToolCallParams: _remove_tool_call_params,
    MiddleOut: _middle_out, TokenLimit: _token_limit}


def edit(page: Sequence[StoredMessage], strategies: Sequence[_Params],
         pin: str | None) -> tuple[list[Item], str | None]:
    """The page after the strategies, and the id of the last message they applied to: the
    pinned message when it is in the page (those after it are left as they are, so a
    prompt cache keeps its prefix), else the page's last."""
    items = [Item(sm, copy.deepcopy(sm.to_message().to_acontext_parts())) for sm in page]
    ids = [i.id for i in items]
    cut = ids.index(pin) + 1 if pin in ids else len(items)
    head, tail = items[:cut], items[cut:]
    for strategy in strategies:
        head = _APPLY[type(strategy)](head, strategy)
    return head + tail, (ids[cut - 1] if cut else None)
