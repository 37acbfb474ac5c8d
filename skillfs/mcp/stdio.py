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

from collections.abc import Sequence
from pathlib import Path
from typing import Any
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


def daemon_url(spaces: Sequence[str], read_only: bool) -> str:
    query: list[tuple[str, str]] = [("space", s) for s in spaces]
    if read_only:
        query.append(("read_only", "1"))
    return f"http://skillfs{PATH}" + (f"?{urlencode(query)}" if query else "")


def _unreachable(socket: Path, e: Exception) -> types.CallToolResult:
    return types.CallToolResult(is_error=True, content=[types.TextContent(
        type="text", text=f"the skillfs daemon did not answer at {socket} ({e}); start it "
        "with: skillfs mount MOUNTPOINT")])


async def serve(socket: Path, spaces: Sequence[str] = (), read_only: bool = False) -> None:
    """Serve stdio until the client closes it; the daemon must be running at the start."""
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket)),
                              timeout=httpx2.Timeout(30, read=300))
    async with http, Client(streamable_http_client(daemon_url(spaces, read_only),
                                                   http_client=http)) as daemon:

        async def list_tools(ctx: ServerRequestContext[Any],
                             params: types.PaginatedRequestParams | None
                             ) -> types.ListToolsResult:
            return await daemon.list_tools()

        async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                            ) -> types.CallToolResult:
            try:
                return await daemon.call_tool(params.name, params.arguments or {})
            except (httpx2.TransportError, OSError) as e:
                return _unreachable(socket, e)

        server: Server = Server("skillfs", instructions=INSTRUCTIONS,
                                on_list_tools=list_tools, on_call_tool=call_tool)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
