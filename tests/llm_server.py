"""A small OpenAI-compatible chat-completions server for tests.

It listens on 127.0.0.1 on a free port in a thread and answers `POST .../chat/completions`
from a script: a list of rules, each a predicate on the request and a queue of replies. A reply
is a message (text and/or tool calls), an HTTP error, a delay before another reply, or a
callable that receives the request and returns one of those. Every request is recorded.

    with LLMServer() as srv:
        srv.add(call("insert_task", description="Deploy"), call("finish"),
                when=offers("insert_task"))
        cfg = LearnerConfig(backend="openai", base_url=srv.base_url, api_key="test")
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Predicate = Callable[[dict], bool]


@dataclass
class Reply:
    content: str | None = None
    # (name, arguments) where arguments is a dict or a raw string (to send malformed JSON)
    calls: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class HTTPError:
    status: int = 500
    message: str = "injected failure"


@dataclass
class Delay:
    seconds: float
    then: Any = None


def text(content: str) -> Reply:
    return Reply(content=content)


def call(name: str, args: Any = None, **kw: Any) -> Reply:
    """One tool call; `args` may be a raw string to send arguments that are not JSON."""
    return Reply(calls=[(name, args if args is not None else kw)])


def calls(*pairs: tuple[str, Any]) -> Reply:
    return Reply(calls=list(pairs))


def tool_names(req: dict) -> set[str]:
    return {t.get("function", {}).get("name") for t in req.get("tools") or []}


def offers(tool: str) -> Predicate:
    """Matches requests whose tools include `tool` (tells the learner's stages apart)."""
    return lambda req: tool in tool_names(req)


def mentions(needle: str) -> Predicate:
    return lambda req: needle in json.dumps(req.get("messages", []))


def both(*preds: Predicate) -> Predicate:
    return lambda req: all(p(req) for p in preds)


def last_tool_results(req: dict) -> list[str]:
    """The tool answers that follow the request's last assistant message."""
    out: list[str] = []
    for m in reversed(req.get("messages", [])):
        if m.get("role") != "tool":
            break
        out.append(m.get("content") or "")
    return list(reversed(out))


def finish_any(req: dict) -> Reply:
    """Ends whatever stage asked, so a test only scripts the stages it cares about."""
    names = tool_names(req)
    if "finish" in names:
        return call("finish", {})
    if "skip" in names:
        return call("skip", reason="nothing to learn")
    return text("ok")


@dataclass
class _Rule:
    pred: Predicate | None
    replies: list[Any]
    # an `always` rule answers every matching request with replies[0] and is never used up
    always: bool = False


def _usage(req: dict, msg: dict) -> dict:
    """Tokens as an endpoint would report them: the request's messages and tools, counted
    the way the learner counts when an endpoint reports none."""
    from skillfs.tokens import count_tokens
    prompt = count_tokens(json.dumps({"messages": req.get("messages"), "tools": req.get("tools")},
                                     ensure_ascii=False))
    completion = count_tokens(json.dumps(msg, ensure_ascii=False))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class LLMServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.usages: list[dict] = []  # the `usage` of every answer, in order
        # (received, answered, request) in the order answered, for overlap checks
        self.timings: list[tuple[float, float, dict]] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.fallback: Any = finish_any
        # False: answer without `usage`, as some endpoints do
        self.report_usage = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; with Nagle on, the second waits for
            # the client's delayed ACK (~40 ms a call).
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    req = json.loads(body or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "bad json"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                received = time.monotonic()
                with server._lock:
                    server.requests.append(req)
                status, payload = server._render(server._next(req), req)
                with server._lock:
                    server.timings.append((received, time.monotonic(), req))
                try:
                    self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- script --------------------------------------------------------------------------
    def _reported(self, req: dict, msg: dict) -> dict:
        usage = _usage(req, msg)
        self.usages.append(usage)
        return usage

    def add(self, *replies: Any, when: Predicate | None = None) -> None:
        """Queue replies for requests matching `when` (every request if None), used in order."""
        with self._lock:
            self._rules.append(_Rule(when, list(replies)))

    def always(self, reply: Any, when: Predicate | None = None) -> None:
        with self._lock:
            self._rules.append(_Rule(when, [reply], always=True))

    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return sum(len(r.replies) for r in self._rules if not r.always)

    def requests_offering(self, tool: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if tool in tool_names(r)]

    def _next(self, req: dict) -> Any:
        with self._lock:
            for rule in self._rules:
                if rule.replies and (rule.pred is None or rule.pred(req)):
                    return rule.replies[0] if rule.always else rule.replies.pop(0)
            return self.fallback

    def _render(self, reply: Any, req: dict) -> tuple[int, dict]:
        while not isinstance(reply, (Reply, HTTPError, str)):
            if isinstance(reply, Delay):
                time.sleep(reply.seconds)
                reply = reply.then if reply.then is not None else finish_any
            elif callable(reply):
                reply = reply(req)
            else:
                raise TypeError(f"unknown scripted reply {reply!r}")
        if isinstance(reply, HTTPError):
            return reply.status, {"error": {"message": reply.message, "type": "server_error"}}
        if isinstance(reply, str):
            reply = text(reply)
        msg: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            msg["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in reply.calls
            ]
        return 200, {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "test"),
            "choices": [{
                "index": 0,
                "message": msg,
                "finish_reason": "tool_calls" if reply.calls else "stop",
            }],
            **({"usage": self._reported(req, msg)} if self.report_usage else {}),
        }
