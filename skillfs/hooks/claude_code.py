"""`skillfs hook claude-code`: a Claude Code session's transcript into the spool, each line once.

Claude Code runs a hook command with a JSON object on stdin: ``session_id``,
``transcript_path``, ``hook_event_name``, ``cwd`` and fields of the event. The transcript is a
JSONL file Claude Code only appends to: ``user`` and ``assistant`` lines wrap an Anthropic
message in an envelope (``uuid``, ``parentUuid``, ``timestamp``, ``sessionId`` …); other
line types (``summary``, ``system``, ``file-history-snapshot`` …) are bookkeeping. The hook
sends the conversation's lines as they are (the spool reads them as the Claude Code form) to
``SPOOL/<space>/<session_id>/``, leaving out what is not the user and the agent talking
(`not_the_conversation`), and on ``SessionEnd`` an ``{"event": "end"}`` after them. ``Stop``
ends a turn, not the session: it only sends the new lines.

Each line once, with hooks running at the same time or killed half-way: a state file per
space and session (HOME/hooks/claude-code/<space>/<session>.json) says how far the
transcript was sent. Hooks of one session take turns under a lock on a file beside it. A
spool file is written under a name the daemon ignores (``.NAME.tmp``), the state then records
it as pending, and the rename into place is the one moment it is sent; the state moves past
it afterwards. A hook killed in between leaves the pending record: the next one finds the
temporary file still there (not sent: it renames it) or gone (sent), and moves on.

Never loud: Claude Code treats exit 2 as "block" (a Stop hook that exits 2 keeps Claude from
stopping), so every failure, usage errors included, is a line on stderr and exit 0.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import Invalid
from ..messages import CLAUDE_CODE_MESSAGES
from ..names import check_component, check_space_name
from ..spool.parse import DEFAULT_MAX_LINE_BYTES, SpoolReject, parse_spool_bytes

END_EVENTS = ("SessionEnd",)
# Stop ends each turn; SessionEnd ends the session (exit, /clear, logout)
SETTINGS_EVENTS = ("Stop", "SessionEnd")
# One spool file holds at most this much of the transcript: a long session's first hook
# sends several files, each well under the spool's file cap.
CHUNK_BYTES = 4 << 20
LOCK_WAIT = 10.0
HOOK_TIMEOUT = 30  # seconds Claude Code gives the command


class HookError(Exception):
    """What keeps this hook from sending; said on stderr, never a failed hook."""


@dataclass(frozen=True)
class HookInput:
    session_id: str
    transcript: Path
    event: str


@dataclass
class State:
    offset: int = 0  # bytes of the transcript sent
    seq: int = 0  # spool files sent
    pending: dict[str, Any] | None = None  # {"name", "offset", "seq"}: a file on its way


def read_input(text: bytes | str) -> HookInput:
    """The hook's stdin as a HookInput; HookError says what is wrong with it."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise HookError(f"the hook input is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise HookError("the hook input is not a JSON object")
    values = {}
    for key in ("session_id", "transcript_path", "hook_event_name"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise HookError(f"the hook input has no {key}")
        values[key] = value
    try:
        check_component(values["session_id"])
    except Invalid as e:
        raise HookError(f"session_id: {e.message}") from None
    return HookInput(values["session_id"], Path(values["transcript_path"]).expanduser(),
                     values["hook_event_name"])


def run(hook: HookInput, space: str, spool: Path, state_dir: Path) -> list[str]:
    """Send the transcript's new lines (and the end, at session end) to the spool; return
    the lines left out that the spool would have refused, each with why."""
    try:
        check_space_name(space)
    except Invalid as e:
        raise HookError(e.message) from None
    if not hook.transcript.is_file():
        raise HookError(f"no transcript at {hook.transcript}")
    outbox = spool / space / hook.session_id
    state_path = state_dir / space / f"{hook.session_id}.json"
    # each folder private when the hook makes it (makedirs gives the mode to the last only)
    for folder in (spool, spool / space, outbox, state_dir, state_path.parent):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    skipped: list[str] = []
    with _locked(state_path.with_suffix(".lock")):
        state = _load(state_path)
        if state.pending is not None:
            _finish(state, state.pending, outbox, state_path)
        with open(hook.transcript, "rb") as transcript:
            size = os.fstat(transcript.fileno()).st_size
            if size < state.offset:
                raise HookError(f"{hook.transcript} is shorter than what was sent of it "
                                f"({size} < {state.offset} bytes); not sending")
            while (chunk := _next_chunk(transcript, state.offset, skipped)) is not None:
                end, lines = chunk
                _send(state, outbox, state_path, lines, end)
        if hook.event in END_EVENTS:
            _send(state, outbox, state_path, [b'{"event": "end"}'], state.offset)
    return skipped


# -- the transcript ------------------------------------------------------------------------

def _next_chunk(transcript: IO[bytes], offset: int,
                skipped: list[str]) -> tuple[int, list[bytes]] | None:
    """The conversation lines after `offset`, whole lines only, up to CHUNK_BYTES; with the
    offset after them. None when no whole line follows `offset`."""
    transcript.seek(offset)
    end, lines = offset, []
    while True:
        line = transcript.readline(DEFAULT_MAX_LINE_BYTES + 1)
        if end > offset and end + len(line) - offset > CHUNK_BYTES:
            break  # the next file starts with it
        if not line.endswith(b"\n"):
            if len(line) <= DEFAULT_MAX_LINE_BYTES:
                break  # the end, or a line Claude Code is still writing
            rest = _skip_line(transcript)
            if rest is None:
                break
            skipped.append(f"byte {end}: a line over the spool's "
                           f"{DEFAULT_MAX_LINE_BYTES}-byte cap")
            end += len(line) + rest
            continue
        keep, why = _conversation(line)
        if why:
            skipped.append(f"byte {end}: {why}")
        if keep:
            lines.append(line.rstrip(b"\r\n"))
        end += len(line)
    return (end, lines) if end > offset else None


def _skip_line(transcript: IO[bytes]) -> int | None:
    """Read past the rest of an over-long line: its length with the newline, None if the
    line is not whole yet."""
    skipped = 0
    while block := transcript.readline(1 << 20):
        skipped += len(block)
        if block.endswith(b"\n"):
            return skipped
    return None


def _conversation(line: bytes) -> tuple[bool, str | None]:
    """Whether a transcript line is sent, and why not when it is something the spool would
    reject (bookkeeping lines go unsaid)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return False, "not JSON"
    if not isinstance(obj, dict) or obj.get("type") not in CLAUDE_CODE_MESSAGES:
        return False, None
    if not_the_conversation(obj):
        return False, None
    try:
        parse_spool_bytes(line, ".jsonl")
    except SpoolReject as e:
        return False, str(e).removeprefix("line 1, ")
    return True, None


# Markup Claude Code writes in a user line for a slash command the user ran and its output
_LOCAL_COMMAND = ("<command-name>", "<command-message>", "<local-command-stdout>",
                  "<local-command-stderr>", "<local-command-caveat>")


def not_the_conversation(line: dict[str, Any]) -> bool:
    """A user or assistant line that is not the user and the agent talking: a subagent's own
    exchange, text Claude Code put in the user's turn, the summary that continues a compacted
    session, or a slash command the user ran in the terminal."""
    if any(line.get(flag) is True for flag in ("isSidechain", "isMeta", "isCompactSummary")):
        return True
    message = line.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, str) and content.lstrip().startswith(_LOCAL_COMMAND)


# -- sending exactly once ------------------------------------------------------------------

def _send(state: State, outbox: Path, state_path: Path, lines: list[bytes], end: int) -> None:
    """Send `lines` as the next spool file and move the state to `end` (no file for none)."""
    if not lines:
        state.offset = end
        _save(state_path, state)
        return
    seq = state.seq + 1
    name = _spool_name(seq)
    _write_new(outbox / _temp_name(name), b"\n".join(lines) + b"\n")
    state.pending = {"name": name, "offset": end, "seq": seq}
    _save(state_path, state)
    _finish(state, state.pending, outbox, state_path)


def _finish(state: State, pending: dict[str, Any], outbox: Path, state_path: Path) -> None:
    """Complete the pending file: rename it into place unless that was done already."""
    try:
        os.rename(outbox / _temp_name(pending["name"]), outbox / pending["name"])
    except FileNotFoundError:
        pass  # renamed by a hook that was stopped before it saved the state
    state.offset, state.seq, state.pending = pending["offset"], pending["seq"], None
    _save(state_path, state)


def _spool_name(seq: int) -> str:
    return f"cc-{seq:08d}.jsonl"


_SPOOL_NAME = re.compile(r"cc-\d{8,}\.jsonl")


def _temp_name(name: str) -> str:
    return f".{name}.tmp"


def _write_new(path: Path, data: bytes) -> None:
    """Write `path` whole and on disk before anything names it (0600: a private spool)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(fd)


def _load(path: Path) -> State:
    try:
        data = json.loads(path.read_text())
        pending = data.get("pending")
        if pending is not None:
            pending = {"name": pending["name"], "offset": int(pending["offset"]),
                       "seq": int(pending["seq"])}
            if not _SPOOL_NAME.fullmatch(str(pending["name"])):
                raise ValueError(f"pending file {pending['name']!r}")
        return State(int(data["offset"]), int(data["seq"]), pending)
    except FileNotFoundError:
        return State()
    except (ValueError, TypeError, KeyError) as e:
        raise HookError(f"{path} is damaged ({e!r}); remove it to send the transcript "
                        "again from its start") from None


def _save(path: Path, state: State) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write_new(tmp, json.dumps(asdict(state)).encode())
    os.rename(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hooks of one session take turns; the lock goes with a hook that is killed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HookError("another hook of this session held its lock for "
                                    f"{LOCK_WAIT:.0f} s; the next hook sends these lines") \
                        from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


# -- settings ------------------------------------------------------------------------------

def settings(command: list[str]) -> dict[str, Any]:
    """The ``hooks`` block of ``.claude/settings.json`` that runs `command` at each event."""
    entry = {"type": "command", "command": shlex.join(command), "timeout": HOOK_TIMEOUT}
    return {"hooks": {event: [{"hooks": [entry]}] for event in SETTINGS_EVENTS}}


def skillfs_command() -> str:
    """This skillfs's path, for a hook that runs without the caller's PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "skillfs" and argv0.is_file():
        return str(argv0.absolute())
    return shutil.which("skillfs") or "skillfs"


def print_settings(space: str, config_file: str | None) -> str:
    command = [skillfs_command(), "hook", "claude-code", "--space", space]
    if config_file:
        command += ["--config", str(Path(config_file).absolute())]
    return json.dumps(settings(command), indent=2)


def main(stdin: bytes, space: str, config_file: str | None) -> None:
    """The hook: send what is new, and say on stderr what went wrong, if anything."""
    # The hook runs at every event of a session: locations reads the two paths it needs
    # without building the typed configuration (pydantic-settings).
    from .. import locations
    from ..errors import ConfigError

    try:
        hook = read_input(stdin)
        spool, home = locations.spool_path(config_file), locations.home(config_file)
        skipped = run(hook, space, spool, home / "hooks" / "claude-code")
    except (HookError, ConfigError) as e:
        _say(str(e))
        return
    except OSError as e:
        _say(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))
        return
    except Exception as e:  # the error boundary: a bug here must not fail the session
        _say(f"unexpected error: {e!r}")
        return
    for why in skipped:
        _say(f"skipped a transcript line at {why}")


def _say(text: str) -> None:
    print(f"skillfs hook claude-code: {text}", file=sys.stderr)
