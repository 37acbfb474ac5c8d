"""Where skillfs keeps things, read without building the typed configuration.

A client command (`skillfs log`, `status` …) needs only the daemon's socket, and the Claude
Code hook (run at every event of a session) only the data directory and the spool; building
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


def _toml(explicit: str | os.PathLike | None = None) -> dict | None:
    """The TOML file's settings ({} without a file), None if it cannot be read or parsed."""
    path = toml_path(explicit)
    try:
        return tomllib.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return None


def home(explicit_config: str | os.PathLike | None = None) -> Path:
    """The data directory: $SKILLFS_HOME, the TOML file's `home`, else the default."""
    data = _toml(explicit_config)
    if data is None:
        from . import config  # its error names the file and what is wrong with it

        return config.load(explicit_config).home
    return _home_in(data)


def _home_in(data: dict) -> Path:
    if os.environ.get("SKILLFS_HOME") or not data.get("home"):
        return default_home()
    return Path(data["home"]).expanduser()


def _located(key: str, explicit_config: str | os.PathLike | None, default: str) -> Path:
    """A path setting: $SKILLFS_<KEY>, the TOML file's key, else HOME/<default>."""
    env = os.environ.get(f"SKILLFS_{key.upper()}")
    if env:
        return Path(env).expanduser()
    data = _toml(explicit_config)
    if data is None:
        from . import config  # its error names the file and what is wrong with it

        return getattr(config.load(explicit_config), key)
    if data.get(key):
        return Path(data[key]).expanduser()
    return _home_in(data) / default


def socket_path(explicit: str | None = None) -> Path:
    """Where a client finds the daemon: --socket, $SKILLFS_SOCKET, the TOML file's `socket`,
    else HOME/skillfs.sock (HOME: $SKILLFS_HOME, the file's `home`, the default)."""
    if explicit:
        return Path(explicit)
    return _located("socket", None, "skillfs.sock")


def spool_path(explicit_config: str | os.PathLike | None = None) -> Path:
    """The spool: $SKILLFS_SPOOL, the TOML file's `spool`, else HOME/spool."""
    return _located("spool", explicit_config, "spool")
