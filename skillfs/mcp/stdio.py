"""`skillfs mcp`: an MCP server on stdin/stdout for clients that start one per session
(Claude Desktop, Claude Code, IDEs).

It relays each tools/list and tools/call to the daemon's /mcp on its control socket instead
of serving the tools itself: the daemon owns the database (no other process may open it),
the tools then behave the same over stdio and HTTP, and a write is in the mount at once.
The space and read-only limits travel as /mcp's query (`?space=S&read_only=1`): the socket
is its user's alone, so the limits protect an agent from its own mistakes, not the daemon
from the agent — a sandbox that must not write gets the read-only bind mount (sandbox.py)
or a read-only token on TCP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

from .http import PATH
from .tools import INSTRUCTIONS

T = TypeVar("T")


def daemon_url(spaces: Sequence[str], read_only: bool) -> str:
    query: list[tuple[str, str]] = [("space", s) for s in spaces]
    if read_only:
        query.append(("read_only", "1"))
    return f"http://skillfs{PATH}" + (f"?{urlencode(query)}" if query else "")


class DaemonGone(Exception):
    """The daemon did not answer on its socket."""


def _transport_error(e: BaseException) -> BaseException | None:
    """The connection error inside what the SDK's task groups raised, if that is what it is."""
    if isinstance(e, httpx2.TransportError | OSError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            found = _transport_error(sub)
            if found is not None:
                return found
    return None


class Relay:
    """One MCP exchange with the daemon per call: the SDK's HTTP client transport ends its
    session on a connection error, so a session kept open would die with a daemon restart;
    a fresh one per call just works again once the daemon is back (the server is stateless:
    the protocol version it chose at the first call is reused, without asking again)."""

    def __init__(self, socket: Path, spaces: Sequence[str], read_only: bool):
        self.socket = socket
        self.url = daemon_url(spaces, read_only)
        self.mode: Any = "auto"
        self.discovered: types.DiscoverResult | None = None
        # no TLS on a Unix socket: verify=False spares loading the CA bundle
        self.http = httpx2.AsyncClient(
            transport=httpx2.AsyncHTTPTransport(uds=str(socket), verify=False),
            timeout=httpx2.Timeout(30, read=300), verify=False)

    async def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        try:
            async with Client(streamable_http_client(self.url, http_client=self.http),
                              mode=self.mode, prior_discover=self.discovered) as c:
                if c.session.discover_result is not None:
                    # the next calls skip the probe
                    self.mode, self.discovered = c.protocol_version, c.session.discover_result
                return await fn(c)
        except Exception as e:
            found = _transport_error(e)
            if found is None:
                raise
            raise DaemonGone(f"the skillfs daemon did not answer at {self.socket} ({found}); "
                             "start it with: skillfs mount MOUNTPOINT") from None

    async def list_tools(self, ctx: ServerRequestContext[Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return await self.call(lambda c: c.list_tools())

    async def call_tool(self, ctx: ServerRequestContext[Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            return await self.call(lambda c: c.call_tool(params.name, params.arguments or {}))
        except DaemonGone as e:
            return types.CallToolResult(is_error=True, content=[
                types.TextContent(type="text", text=str(e))])


async def serve(socket: Path, spaces: Sequence[str] = (), read_only: bool = False) -> None:
    """Serve stdio until the client closes it."""
    relay = Relay(socket, spaces, read_only)
    server: Server = Server("skillfs", instructions=INSTRUCTIONS,
                            on_list_tools=relay.list_tools, on_call_tool=relay.call_tool)
    async with relay.http, stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
