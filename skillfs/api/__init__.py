"""HTTP: the control API (for the `skillfs` CLI) and the Acontext-compatible API."""
