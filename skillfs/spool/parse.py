"""Spool files as records: parsing and the layout's rules, pure functions with no I/O.

Everything a spool file can be refused for on its content or its name is decided here and
raised as a `SpoolReject` that says where (line, field) and why, so the sidecar next to the
rejected file can say so too.

Lone surrogates (``"\\ud800"`` with no pair) are valid JSON but not Unicode text: no UTF-8
database can store them, so a record holding one is rejected, naming the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import Invalid
from ..messages import Control, InvalidMessage, Message, json_type, normalize
from ..names import check_component, check_space_name

Record = Message | Control

SUFFIXES = (".jsonl", ".json")
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_FILE_BYTES = 64 << 20
# A message is stored three times in one row (its text, its original, its normalised body).
# With DuckDB's 32 MB buffer pool, messages of 3.2 MiB went in one after another; from 3.5 MiB
# on, the third such commit failed. So: 3 MiB and a little room for the JSON around it.
DEFAULT_MAX_MESSAGE_BYTES = (3 << 20) + (64 << 10)

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class SpoolReject(Exception):
    """Why a spool file cannot be ingested; `line` is 1-based."""

    def __init__(self, line: int | None, field: str | None, reason: str):
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


# ---------------------------------------------------------------------------------------------
# Parsing (pure)

def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_constants(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would break storing the body as JSON.
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constants)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate_field(obj: Any) -> str | None:
    """The path (``content[0].text``) of the first string or key holding a lone surrogate;
    "" for the value itself."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        at, value = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return at
        elif isinstance(value, dict):
            for key, item in value.items():
                key_shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                path = f"{at}.{key_shown}" if at else key_shown
                if not _is_unicode(key):
                    return path
                stack.append((path, item))
        elif isinstance(value, list):
            stack.extend((f"{at}[{i}]", item) for i, item in enumerate(value))
    return None


def may_hold_surrogates(text: str) -> bool:
    """Only JSON text holding an escape of the surrogate range can decode to a lone one."""
    return _SURROGATE_ESCAPE.search(text) is not None


def check_unicode(obj: Any, line: int | None, where: str | None = None) -> None:
    """Reject a record whose strings hold a lone surrogate."""
    at = _lone_surrogate_field(obj)
    if at is None:
        return
    field = (f"{where}.{at}" if at else where) if where else at or None
    raise SpoolReject(line, field, "a lone surrogate escape (\\ud800-\\udfff without its pair) "
                                   "is not Unicode text")


def check_message_size(record: Record, max_bytes: int, line: int | None,
                       where: str | None = None) -> None:
    if not isinstance(record, Message):
        return
    size = len(json.dumps(record.original, ensure_ascii=False).encode("utf-8", "replace"))
    if size > max_bytes:
        raise SpoolReject(line, where, f"message is {size} bytes, over the "
                                       f"{max_bytes}-byte cap for one message")


def parse_record(obj: Any, line: int | None = None, where: str | None = None) -> Record:
    """One decoded JSON value as a record; `where` prefixes field paths (``[3]`` in an array)."""

    def field(name: str | None) -> str | None:
        if where is None:
            return name
        return f"{where}.{name}" if name else where

    if not isinstance(obj, dict):
        raise SpoolReject(line, field(None), f"expected a JSON object, got {json_type(obj)}")
    if "event" in obj:
        if "role" in obj:
            raise SpoolReject(line, field("event"), "a record is a message (role) or a control "
                                                    "record (event), not both")
        event = obj["event"]
        if event not in ("end", "flush"):  # equal to neither unless it is that str
            raise SpoolReject(line, field("event"),
                              f"unknown event {event!r} (expected 'end' or 'flush')")
        return Control(event=event, original=obj)
    try:
        return normalize(obj)
    except InvalidMessage as e:
        raise SpoolReject(line, field(e.field), e.reason) from None
    except Invalid as e:
        raise SpoolReject(line, field(None), e.message) from None
    except ValidationError as e:
        raise SpoolReject(line, field(None), f"not a message: {e.errors()[0]['msg']}") from None


def _decode_utf8(data: bytes, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpoolReject(line, None, f"invalid UTF-8 at byte {col} of the line") from None


def _loads(text: str, line_base: int) -> Any:
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as e:
        line = line_base + e.lineno - 1
        raise SpoolReject(line, None, f"malformed JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:
        raise SpoolReject(line_base, None, f"malformed JSON: {e}") from None
    except RecursionError:
        raise SpoolReject(line_base, None, "malformed JSON: nested too deeply") from None


def _array_element_lines(text: str) -> list[int]:
    """The line each top-level element of a (valid) JSON array starts on."""
    lines: list[int] = []
    ws = " \t\r\n"
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in ws:
            i += 1
        if i >= len(text) or text[i] == "]":
            return lines
        lines.append(text.count("\n", 0, i) + 1)
        _, i = _decoder.raw_decode(text, i)
        while i < len(text) and text[i] in ws:
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1


def parse_spool_bytes(
    data: bytes,
    suffix: str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[Record]:
    """The records in one spool file's bytes; raises SpoolReject saying where and why.

    The line cap applies to ``.jsonl`` lines (one record each); a ``.json`` file is one
    document, bounded by the file cap, and each message in it by the message cap.
    """
    suffix = suffix if suffix.startswith(".") else "." + suffix
    if suffix not in SUFFIXES:
        raise SpoolReject(None, None, f"unsupported suffix {suffix!r} (expected .jsonl or .json)")
    if len(data) > max_file_bytes:
        raise SpoolReject(None, None,
                          f"file is {len(data)} bytes, over the {max_file_bytes}-byte cap")
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM some editors add
        data = data[3:]
    if suffix == ".jsonl":
        records = _parse_lines(data, max_line_bytes)
    else:
        records = _parse_document(data)
    if not records:
        raise SpoolReject(None, None, "empty file: no records")
    if len(data) > max_message_bytes:  # only then can one message be over the cap
        for n, record in enumerate(records):
            where = f"[{n}]" if len(records) > 1 else None
            check_message_size(record, max_message_bytes, None, where)
    return records


def _parse_lines(data: bytes, max_line_bytes: int) -> list[Record]:
    records: list[Record] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if len(raw) > max_line_bytes:
            raise SpoolReject(n, None,
                              f"line is {len(raw)} bytes, over the {max_line_bytes}-byte cap")
        text = _decode_utf8(raw, n)
        if not text.strip():
            continue
        obj = _loads(text, n)
        if may_hold_surrogates(text):
            check_unicode(obj, n)
        record = parse_record(obj, n)
        if isinstance(record, Message):
            record.raw = text.strip()
        records.append(record)
    return records


def _parse_document(data: bytes) -> list[Record]:
    text = _decode_utf8(data)
    if not text.strip():
        return []
    doc = _loads(text, 1)
    if not isinstance(doc, list):
        first = len(text) - len(text.lstrip())
        line = text.count("\n", 0, first) + 1
        if may_hold_surrogates(text):
            check_unicode(doc, line)
        return [parse_record(doc, line)]
    surrogates = may_hold_surrogates(text)
    records: list[Record] = []
    lines: list[int] | None = None
    for i, obj in enumerate(doc):
        try:
            if surrogates:
                check_unicode(obj, None, f"[{i}]")
            records.append(parse_record(obj, None, f"[{i}]"))
        except SpoolReject as e:
            # Finding element lines costs a second pass; only on the error path.
            lines = lines or _array_element_lines(text)
            e.line = lines[i] if i < len(lines) else None
            raise
    return records


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class SpoolPath:
    space: str
    session: str
    name: str
    rel: str  # "space/session/name", '/'-separated, relative to the spool

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]


def is_ignored(rel: str) -> bool:
    """Dotfiles/dot-dirs (including .rejected) and *.tmp are someone's work in progress."""
    return any(part.startswith(".") or part.endswith(".tmp") for part in rel.split("/"))


def shown(rel: str) -> str:
    """`rel` as valid text: bytes that are not UTF-8 (kept by surrogateescape) as ``\\xff``."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def check_utf8_name(rel: str, field: str | None) -> None:
    try:
        rel.rsplit("/", 1)[-1].encode("utf-8")
    except UnicodeEncodeError:
        raise SpoolReject(None, field, f"'{shown(rel)}': the name is not valid UTF-8") from None


def check_folder(rel: str) -> None:
    """A space (``space``) or session (``space/session``) folder's name; SpoolReject if bad."""
    field = "space" if "/" not in rel else "session"
    check_utf8_name(rel, field)
    name = rel.rsplit("/", 1)[-1]
    try:
        (check_space_name if field == "space" else check_component)(name)
    except Invalid as e:
        raise SpoolReject(None, field, e.message) from None


def check_spool_path(rel: str) -> SpoolPath | None:
    """None for an ignored path; raises SpoolReject for one that breaks the layout."""
    if is_ignored(rel):
        return None
    parts = rel.split("/")
    if len(parts) != 3:
        raise SpoolReject(None, None, f"'{shown(rel)}' is not <space>/<session>/<name>.jsonl|.json")
    space, session, name = parts
    check_folder(space)
    check_folder(f"{space}/{session}")
    return spool_file_path(space, session, name)


def spool_file_path(space: str, session: str, name: str) -> SpoolPath:
    """`check_spool_path` for a file in a session folder whose names passed `check_folder`
    (a batch of a session's files checks those once)."""
    rel = f"{space}/{session}/{name}"
    check_utf8_name(rel, "name")
    if os.path.splitext(name)[1] not in SUFFIXES:
        raise SpoolReject(None, None, f"{name!r}: spool files end in .jsonl or .json")
    return SpoolPath(space, session, name, rel)
