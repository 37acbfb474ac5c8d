"""Where skillfs keeps things, read without building the typed configuration.

A client command (`skillfs log`, `status` …) needs only the daemon's socket, and building
`config.Config` imports pydantic-settings: half a client's start-up time. These functions
follow config.py's precedence (command line, environment, TOML file, defaults) for the few
settings that locate things; tests/test_config.py checks that they agree with `config.load()`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("SKILLFS_HOME")
    if env:
        return Path(env).expanduser()
    return Path("~/.local/share/skillfs").expanduser()


def toml_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The TOML file read: --config, else $SKILLFS_CONFIG, else HOME/config.toml if any."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("SKILLFS_CONFIG")
    candidate = Path(env) if env else default_home() / "config.toml"
    return candidate if candidate.exists() else None


def socket_path(explicit: str | None = None) -> Path:
    """Where a client finds the daemon: --socket, $SKILLFS_SOCKET, the TOML file's `socket`,
    else HOME/skillfs.sock (HOME: $SKILLFS_HOME, the file's `home`, the default)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SKILLFS_SOCKET")
    if env:
        return Path(env)
    path = toml_path()
    try:
        data = tomllib.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        from . import config  # its error names the file and what is wrong with it

        return config.load().socket
    if data.get("socket"):
        return Path(data["socket"]).expanduser()
    if os.environ.get("SKILLFS_HOME") or not data.get("home"):
        return default_home() / "skillfs.sock"
    return Path(data["home"]).expanduser() / "skillfs.sock"
