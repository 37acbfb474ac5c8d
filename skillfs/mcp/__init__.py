"""skillfs's MCP server, for agents that cannot mount a filesystem.

`tools` holds the tools (over the store, like the HTTP API, within the caller's access);
`http` serves them at /mcp in the daemon (streamable HTTP, on the Unix socket and behind
the bearer token on TCP); `stdio` is `skillfs mcp`, a stdio server that relays each call
to the daemon's /mcp, so there is one implementation of the tools and one place (the
daemon) that owns the store.
"""
