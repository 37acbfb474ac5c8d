"""A zero-latency, scripted OpenAI-compatible model for the learning-overhead figure.

`POST /v1/chat/completions` on 127.0.0.1 (a free port), served from a thread of the
bench process. It answers at once, without generating anything, and tells the learner's
three stages apart by the tools a request offers:

- extraction (offers insert_task): insert_task with the session's marker as the task,
  status success; then finish;
- distillation (offers report_success): report_success;
- the skill writer (offers append_to_file): append_to_file of a daily-logs entry that
  carries every marker in the lessons (create_file instead when the day's file does not
  exist yet); then finish.

A request without a session marker (a session the bench did not script, e.g. one left
to learn by an earlier figure) is answered with "nothing to learn": extraction finishes,
distillation skips, the writer finishes. Anything else (an unknown stage, a tool that
answered with an error, a malformed request) is answered with HTTP 400, which the daemon
does not retry, and is kept in `errors` so the bench fails the figure with the reason
instead of waiting for a timeout.

Every request is recorded with the time the handler started on it and the time its
answer was written (time.perf_counter, the bench's own clock), so the bench can subtract
the time spent "in the model" from what it measures.

Bounded: loopback only, at most `max_connections` connections at once (more are closed
at once), idle connections closed after `idle_timeout` seconds, request bodies of at
most `max_body` bytes, at most `max_requests` requests answered over the server's life.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The bench puts one such token in each session's messages; the model copies it along.
MARKER_RE = re.compile(r"lrn[0-9a-f]{10}")
# the day and time of the first lesson (the writer is given no clock time)
_NOW_RE = re.compile(r"finished (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})")
DAILY = "daily-logs"


class ScriptError(Exception):
    """A request the script has no answer for."""


@dataclass
class Call:
    """One request answered: when the handler took it and when its answer was written."""

    received: float
    answered: float
    stage: str  # extract | distill | write | ?
    tool: str  # the tool the answer called, or "" for an error
    markers: tuple[str, ...] = ()
    status: int = 200

    @property
    def seconds(self) -> float:
        return self.answered - self.received


@dataclass
class _Exchange:
    """What a request says about the conversation so far."""

    prompt: str  # the first user message
    turns: int  # assistant messages already in the conversation
    last_tools: list[str] = field(default_factory=list)  # tools called in the last turn
    last_results: list[str] = field(default_factory=list)  # their answers


def _exchange(req: dict) -> _Exchange:
    msgs = req.get("messages")
    if not isinstance(msgs, list):
        raise ScriptError("the request has no messages list")
    prompt = next((m.get("content") or "" for m in msgs
                   if isinstance(m, dict) and m.get("role") == "user"), "")
    if not isinstance(prompt, str):
        prompt = json.dumps(prompt)
    ex = _Exchange(prompt, sum(1 for m in msgs
                               if isinstance(m, dict) and m.get("role") == "assistant"))
    # the last assistant message and the tool answers after it
    for i in range(len(msgs) - 1, -1, -1):
        m = msgs[i]
        if isinstance(m, dict) and m.get("role") == "assistant":
            ex.last_tools = [(c.get("function") or {}).get("name", "")
                             for c in m.get("tool_calls") or []]
            ex.last_results = [x.get("content") or "" for x in msgs[i + 1:]
                               if isinstance(x, dict) and x.get("role") == "tool"]
            break
    return ex


def _offered(req: dict) -> set[str]:
    return {(t.get("function") or {}).get("name") for t in req.get("tools") or []
            if isinstance(t, dict)}


def _markers(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(MARKER_RE.findall(text)))


def _check_results(stage: str, ex: _Exchange) -> None:
    bad = [r for r in ex.last_results if r.startswith("error")]
    if bad:
        raise ScriptError(f"{stage}: {', '.join(ex.last_tools)} answered {bad[0][:200]!r}")


def decide(req: dict) -> tuple[str, str, dict, tuple[str, ...]]:
    """(stage, tool, arguments, markers) for one request; ScriptError if unscripted."""
    tools = _offered(req)
    ex = _exchange(req)
    markers = _markers(ex.prompt)
    if not markers:
        if "insert_task" in tools:
            return "extract", "finish", {}, ()
        if "skip" in tools:
            return "distill", "skip", {"reason": "not a bench session"}, ()
        if "append_to_file" in tools:
            return "write", "finish", {"summary": "nothing to record"}, ()
        raise ScriptError(f"no script for a request offering {sorted(t for t in tools if t)}")
    name = " ".join(markers)
    if "insert_task" in tools:
        if ex.turns == 0:
            return "extract", "insert_task", {
                "description": f"Deploy the payment service {name} to staging",
                "status": "success"}, markers
        _check_results("extract", ex)
        return "extract", "finish", {}, markers
    if "report_success" in tools:
        return "distill", "report_success", {
            "goal": f"Deploy the payment service {name} to staging",
            "approach": "Ran the deploy script against staging and checked the health endpoints",
            "key_decisions": ["Checked health before reporting"],
            "applies_when": "Deploys of the payment service"}, markers
    if "append_to_file" in tools:
        m = _NOW_RE.search(ex.prompt)
        day, hhmm = ((m.group(1), m.group(2)) if m
                     else (time.strftime("%Y-%m-%d"), time.strftime("%H:%M")))
        entry = "".join(f"## [{hhmm}] Task: Deploy the payment service {k} to staging\n"
                        "- **Outcome**: success\n- **Summary**: Deployed; health checks passed\n\n"
                        for k in markers).rstrip("\n") + "\n"
        if ex.turns == 0:
            return "write", "append_to_file", {"skill": DAILY, "path": f"{day}.md",
                                                "text": entry, "result": 1}, markers
        if (ex.last_tools == ["append_to_file"] and ex.last_results
                and "does not exist" in ex.last_results[0]):
            return "write", "create_file", {"skill": DAILY, "path": f"{day}.md",
                                             "content": f"# {day}\n\n{entry}", "result": 1}, markers
        _check_results("write", ex)
        return "write", "finish", {"summary": "logged"}, markers
    raise ScriptError(f"no script for a request offering {sorted(t for t in tools if t)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: ScriptedModel) -> None:
        self.owner = owner
        self._slots = threading.BoundedSemaphore(owner.max_connections)
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many connections: refuse this one
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's client expects
    # Headers and body are two writes; with Nagle on, the body would wait for the
    # client's delayed ACK (~40 ms), time that would count as the daemon's.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.owner.idle_timeout  # idle keep-alive connections end
        super().setup()

    def log_message(self, *a: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._send(404, {"error": {"message": "only POST /v1/chat/completions"}})

    def do_POST(self) -> None:
        received = time.perf_counter()
        owner = self.server.owner
        stage, tool, markers = "?", "", ()
        try:
            length = self.headers.get("Content-Length")
            if length is None:
                status, payload = 411, _error("Content-Length required")
                self.close_connection = True
            elif not 0 <= int(length) <= owner.max_body:
                status, payload = 413, _error(
                    f"request bodies are limited to {owner.max_body} bytes")
                self.close_connection = True
            else:
                body = self.rfile.read(int(length))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    status, payload = 404, _error(f"no route {self.path}")
                elif not owner._take_budget():
                    status, payload = 400, _error(f"request budget of {owner.max_requests} spent")
                else:
                    req = json.loads(body)
                    stage, tool, args, markers = decide(req)
                    status, payload = 200, _completion(req, tool, args, owner._next_id())
        except (ScriptError, ValueError) as e:
            status, payload = 400, _error(f"scripted model: {e}")
            owner._error(f"{type(e).__name__}: {e}")
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        owner._record(Call(received, time.perf_counter(), stage, tool if status == 200 else "",
                           markers, status))

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _completion(req: dict, tool: str, args: dict, n: int) -> dict:
    return {
        "id": f"chatcmpl-bench-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(req.get("model") or "scripted"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_bench_{n}", "type": "function",
                "function": {"name": tool, "arguments": json.dumps(args)}}]},
            "finish_reason": "tool_calls",
        }],
        "usage": _usage(req, tool, args),
    }


def _usage(req: dict, tool: str, args: dict) -> dict:
    # what an endpoint would bill, estimated as the learner does without tiktoken: 4 chars a token
    sent = json.dumps({"messages": req.get("messages"), "tools": req.get("tools")},
                      ensure_ascii=False)
    prompt, completion = (len(sent) + 3) // 4, (len(tool) + len(json.dumps(args)) + 3) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class ScriptedModel:
    """Start with start() (or `with`); stop() closes the socket and ends the thread."""

    def __init__(self, *, max_requests: int = 5000, max_body: int = 32 << 20,
                 max_connections: int = 8, idle_timeout: float = 30.0) -> None:
        self.max_requests = max_requests
        self.max_body = max_body
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.calls: list[Call] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._served = 0
        self._ids = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedModel:
        self._httpd = _Server(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def _take_budget(self) -> bool:
        with self._lock:
            if self._served >= self.max_requests:
                return False
            self._served += 1
            return True

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _record(self, call: Call) -> None:
        with self._lock:
            if len(self.calls) < self.max_requests + 1000:  # refusals are kept too, to a point
                self.calls.append(call)

    def _error(self, text: str) -> None:
        with self._lock:
            if len(self.errors) < 100:
                self.errors.append(text)
