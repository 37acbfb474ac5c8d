"""The CLI's client of the daemon's control API, on its Unix socket.

Each `skillfs` command is a short-lived process that makes one or two requests to a local
socket, so the standard library's http.client is all it needs: httpx would bring httpcore,
trio and rich with it, half a second of imports for every command.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click

PREFIX = "/skillfs/v1"


class Reply:
    """What a command reads of a response."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float):
        super().__init__("skillfs", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class DaemonClient:
    def __init__(self, socket_path: Path, timeout: float = 60.0):
        self.socket = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, *, params: dict | None = None,
                json: Any = None, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """One request; a refusal (4xx, 5xx) becomes the command's error message."""
        url = PREFIX + quote(path, safe="/:@!$&'()*+,;=-._~")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urlencode(query, doseq=True)  # a list: the name once per item
        headers = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        conn = _UnixConnection(self.socket, self.timeout)
        try:
            conn.request(method, url, body=content, headers=headers)
            resp = conn.getresponse()
            reply = Reply(resp.status, resp.read())
        except (FileNotFoundError, ConnectionRefusedError):
            raise click.ClickException(
                f"the skillfs daemon is not running (nothing answers at {self.socket}); "
                "start it with: skillfs mount MOUNTPOINT") from None
        except TimeoutError:
            raise click.ClickException("the skillfs daemon did not answer in time") from None
        finally:
            conn.close()
        if reply.status_code >= 400:
            raise click.ClickException(f"{_error_text(reply)} (HTTP {reply.status_code})")
        return reply


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _error_text(reply: Reply) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail") or reply.text)
    return reply.text
