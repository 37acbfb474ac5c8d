"""Counting what a model costs: a small forwarding proxy between the daemon and the endpoint.

The daemon talks to the proxy as if it were the endpoint; the proxy passes every request on
unchanged and adds up the `usage` of each answer (calls, input and output tokens; an answer
without `usage` is estimated from its size and counted as such). Nothing in the learner has to
know it is being measured.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

BYTES_PER_TOKEN = 4
_HOP = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


class Usage:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.without_usage = 0

    def add(self, request: bytes | None, answer: bytes) -> None:
        try:
            usage = json.loads(answer).get("usage") or {}
        except (ValueError, AttributeError):
            usage = {}
        with self.lock:
            self.calls += 1
            if not usage:
                # an endpoint without `usage`: estimated at four bytes a token, and counted
                self.without_usage += 1
                self.input_tokens += len(request or b"") // BYTES_PER_TOKEN
                self.output_tokens += len(answer) // BYTES_PER_TOKEN
                return
            self.input_tokens += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("completion_tokens")
                                      or usage.get("output_tokens") or 0)


class UsageProxy:
    """`base_url` for the daemon, forwarding to `upstream` (an OpenAI-compatible base URL)."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream.rstrip("/"))
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path
        self.usage = Usage()
        self.client = httpx.Client(timeout=600)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_POST(self) -> None:
                proxy.forward(self, "POST")

            def do_GET(self) -> None:
                proxy.forward(self, "GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def forward(self, req: BaseHTTPRequestHandler, method: str) -> None:
        length = int(req.headers.get("content-length") or 0)
        body = req.rfile.read(length) if length else None
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
        try:
            r = self.client.request(method, self.origin + req.path, content=body, headers=headers)
            status, data, ctype = r.status_code, r.content, r.headers.get("content-type", "")
        except httpx.HTTPError as e:
            status, data, ctype = 502, json.dumps({"error": str(e)}).encode(), "application/json"
        if status == 200 and method == "POST":
            self.usage.add(body, data)
        req.send_response(status)
        req.send_header("content-type", ctype or "application/json")
        req.send_header("content-length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def __enter__(self) -> UsageProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.client.close()
