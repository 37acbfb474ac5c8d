"""Typed configuration: defaults, then a TOML file, then the command line.

Everything lives under one data directory ($SKILLFS_HOME, else ~/.local/share/skillfs) unless
given elsewhere.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, Field


def default_home() -> Path:
    env = os.environ.get("SKILLFS_HOME")
    if env:
        return Path(env).expanduser()
    return Path("~/.local/share/skillfs").expanduser()


class LearnerConfig(BaseModel):
    backend: str | None = None  # "openai" | "rules" | "off"; None: openai when configured
    base_url: str | None = None
    api_key: str | None = None
    # None: $SKILLFS_LLM_MODEL / _TIMEOUT / _RETRIES, else the learner's defaults (gpt-4.1,
    # 60 s, 3): a value here must not hide the environment's
    model: str | None = None
    timeout: float | None = None
    retries: int | None = None
    buffer_messages: int = 16
    idle_seconds: float = 8.0
    # seconds a space's writer waits before it starts, so close lessons share one run
    write_delay: float = 0.0
    # redact secrets in the session messages sent to a model (what is written always is)
    redact_input: bool = False


class Config(BaseModel):
    home: Path = Field(default_factory=default_home)
    db: Path | None = None
    spool: Path | None = None
    socket: Path | None = None
    log_file: Path | None = None
    max_file_size: int = 1 << 20
    cache_bytes: int = 32 << 20  # file contents kept in memory (the kernel caches too)
    # DuckDB's buffer pool; it spills to duckdb_temp beyond this. Measured: spool files, the
    # rules learner and 700 KB versions together run in 16 MB (tests/test_faults.py); the
    # rest is room for DuckDB's indexes, which grow with the rows and stay in memory.
    duckdb_memory: str = "64MB"
    # DuckDB's limit while it checkpoints or replays its log: a checkpoint holds the long
    # strings (long messages) of a row group in memory, and one that fails invalidates it.
    duckdb_checkpoint_memory: str = "1GB"
    duckdb_temp: Path | None = None  # DuckDB's spill folder (default HOME/duckdb.tmp, 0700)
    duckdb_threads: int = 1  # each DuckDB thread holds buffers of its own; one writer is enough
    # The mount is private to the daemon's user. allow_other lets other users in, with the
    # kernel checking modes (default_permissions): the owner reads and writes, members of
    # mount_group (a name or gid; default the daemon's group) read, or also write with
    # group_write; everyone else nothing.
    allow_other: bool = False
    mount_group: str | None = None
    group_write: bool = False
    listen: str | None = None  # "127.0.0.1:PORT" for the HTTP API over TCP
    tokens: list[str] = Field(default_factory=list)  # bearer tokens accepted on TCP
    max_request_bytes: int = 32 << 20  # larger HTTP request bodies get a 413
    learner: LearnerConfig = Field(default_factory=LearnerConfig)

    def resolved(self) -> ResolvedConfig:
        c = self.model_copy(deep=True)
        c.home = Path(c.home).expanduser()
        c.db = Path(c.db or c.home / "skillfs.duckdb").expanduser()
        c.spool = Path(c.spool or c.home / "spool").expanduser()
        c.socket = Path(c.socket or c.home / "skillfs.sock").expanduser()
        c.log_file = Path(c.log_file or c.home / "skillfs.log").expanduser()
        c.duckdb_temp = Path(c.duckdb_temp or c.home / "duckdb.tmp").expanduser()
        return ResolvedConfig.model_validate(c.model_dump())


class ResolvedConfig(Config):
    """A Config whose paths are all set: what `load` returns and the daemon runs with."""

    db: Path
    spool: Path
    socket: Path
    log_file: Path
    duckdb_temp: Path


def load(path: str | os.PathLike | None = None, **overrides) -> ResolvedConfig:
    """Read the TOML config (if any) and apply non-None overrides."""
    data: dict = {}
    if path is None:
        env = os.environ.get("SKILLFS_CONFIG")
        candidate = Path(env) if env else default_home() / "config.toml"
        path = candidate if candidate.exists() else None
    if path is not None:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    learner = dict(data.pop("learner", {}))
    for key, value in list(overrides.items()):
        if key.startswith("learner_"):
            if value is not None:
                learner[key[len("learner_"):]] = value
            overrides.pop(key)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["learner"] = learner
    return Config.model_validate(data).resolved()


def all_tokens(configured: list[str], token_file: Path | None = None) -> list[str]:
    """The bearer tokens: the config's, $SKILLFS_TOKEN's and a token file's (one a line,
    '#' comments). Never argv's: every local user can read /proc/PID/cmdline."""
    tokens = list(configured)
    tokens.append(os.environ.get("SKILLFS_TOKEN", "").strip())
    if token_file is not None:
        tokens += [line.strip() for line in Path(token_file).read_text().splitlines()
                   if not line.lstrip().startswith("#")]
    return list(dict.fromkeys(t for t in tokens if t))


def socket_path(explicit: str | None = None) -> Path:
    """Where a client finds the daemon: --socket, $SKILLFS_SOCKET, the config, the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SKILLFS_SOCKET")
    if env:
        return Path(env)
    return load().socket
