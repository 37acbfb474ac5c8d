"""The daemon's one typed configuration, and the only reader of its settings.

Every setting can come from four places; the first that gives it wins:

1. the command line: `skillfs mount`'s own flags (`--db`, `--model` …), then
   `-o KEY=VALUE` (repeatable; dotted keys for nested settings: `-o learner.model=gpt-4.1`);
2. the environment: `SKILLFS_<KEY>` and `SKILLFS_LEARNER__<KEY>`, then the older names
   kept as aliases (ALIASES: `SKILLFS_LLM_MODEL`, `OPENAI_API_KEY` …);
3. the TOML file: `--config PATH`, else `$SKILLFS_CONFIG`, else `$SKILLFS_HOME/config.toml`;
4. the defaults below.

That is the usual order: the narrower the scope, the later it was chosen (a flag for one
run, a variable for one shell or unit, a file for the host). Bearer tokens are the one
exception: every local user can read a command line (/proc/PID/cmdline), so they never come
from it; the file's `tokens`, `$SKILLFS_TOKEN` and `--token-file` are all accepted together.

The learner's settings are this module's LearnerConfig: the learner reads no environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict, TomlConfigSettingsSource)

from .access import FULL, Access
from .errors import ConfigError
from .locations import default_home, toml_path

ENV_PREFIX = "SKILLFS_"
SECRET_KEYS = ("learner.api_key", "tokens")

# Older environment names, still read; a SKILLFS_LEARNER__* variable wins over them, and
# the first of two aliases for one key wins over the second.
ALIASES = {
    "SKILLFS_LEARNER": "learner.backend",
    "SKILLFS_LLM_BASE_URL": "learner.base_url",
    "OPENAI_BASE_URL": "learner.base_url",
    "SKILLFS_LLM_API_KEY": "learner.api_key",
    "OPENAI_API_KEY": "learner.api_key",
    "SKILLFS_LLM_MODEL": "learner.model",
    "SKILLFS_LLM_TIMEOUT": "learner.timeout",
    "SKILLFS_LLM_RETRIES": "learner.retries",
    "SKILLFS_LEARN_BUFFER": "learner.buffer_messages",
    "SKILLFS_LEARN_IDLE": "learner.idle_seconds",
}


def _flag(name: str) -> dict:
    """Marks a setting that `skillfs mount` also takes as a flag of its own."""
    return {"flag": name}


def _shown(text: str) -> dict:
    """The default as the settings table shows it, where the value is computed."""
    return {"shown_default": text}


class LLMConfig(BaseModel):
    """The model client's settings; skillfs.learner.llm.LLM takes this or a LearnerConfig."""
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (default: "
                                 "OpenAI's)")
    api_key: str | None = Field(None, description="The endpoint's key")
    model: str = Field("gpt-4.1", description="Model name", json_schema_extra=_flag("--model"))
    timeout: float = Field(60.0, gt=0, description="Seconds one model call may take")
    retries: int = Field(3, ge=0, description="Attempts after the first for HTTP errors and "
                         "timeouts")
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles")
    backoff_max: float = Field(20.0, ge=0, description="Longest wait between retries")
    max_bad_calls: int = Field(3, ge=0, description="Malformed or unknown tool calls answered "
                               "before a stage gives up")
    temperature: float | None = Field(0.2, description="Sampling temperature (unset: the "
                                      "endpoint's)")


class LearnerConfig(LLMConfig):
    backend: Literal["openai", "rules", "off"] | None = Field(
        None, description="`openai`, `rules` or `off`; unset: openai when a key or base URL "
        "is set, else rules", json_schema_extra={**_flag("--learner"), **_shown("(see meaning)")})
    buffer_messages: int = Field(16, ge=1, description="Learn after this many new messages …")
    idle_seconds: float = Field(8.0, ge=0, description="… or after a session is quiet this "
                                "long (seconds)")
    extract_turns: int = Field(30, ge=1, description="Model turns for extracting a session's "
                               "tasks")
    distill_turns: int = Field(4, ge=1, description="Model turns for distilling one task")
    write_turns: int = Field(40, ge=1, description="Model turns for one skill writer run")
    parallel_sessions: int = Field(4, ge=1, description="Sessions extracted and distilled at "
                                   "the same time (writers are one per space)")
    context_messages: int = Field(6, ge=0, description="Messages before the new ones shown to "
                                  "the model as context")
    write_delay: float = Field(0.0, ge=0, description="Seconds a space's writer waits before it "
                               "starts, so close lessons share one run")
    redact_input: bool = Field(False, description="Redact secrets in the messages a model is "
                               "shown (what is written always is)")

    def chosen_backend(self) -> str:
        """The back end to run: the configured one, else openai when a key or base URL is
        known, else rules."""
        if self.backend is not None:
            return self.backend
        return "openai" if self.api_key or self.base_url else "rules"


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: str) -> bool:
    """A PostgreSQL URL, not a DuckDB file's path: `--db` takes either."""
    return target.startswith(POSTGRES_SCHEMES)


class StoreConfig(BaseModel):
    """Where the store keeps everything, when not in the DuckDB file `db`."""
    model_config = ConfigDict(extra="forbid")

    # `--db` takes a URL too: a path sets `db`, a URL this
    url: str | None = Field(None, pattern=r"^postgres(ql)?://", description="A PostgreSQL "
                            "database (`postgresql://USER@HOST/DB`) instead of the DuckDB "
                            "file; the duckdb_* settings are then unused",
                            json_schema_extra=_flag("--db"))


class TokenScope(BaseModel):
    """A bearer token bound to some spaces, or to reading only (access.py)."""
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1)
    spaces: list[str] | None = Field(None, min_length=1, description="The spaces it sees "
                                     "(names or ids); unset: every space")
    read_only: bool = False

    def access(self) -> Access:
        return FULL.narrowed(self.spaces or (), self.read_only)


# The TOML file load() was asked for: pydantic-settings builds its sources from the class,
# not from the call, so the path travels beside it.
_toml_file: ContextVar[Path | None] = ContextVar("skillfs_toml_file", default=None)


class Config(BaseSettings):
    # an empty variable counts as unset, as it always has
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      env_ignore_empty=True, extra="forbid")

    home: Path = Field(default_factory=default_home, description="Data directory: everything "
                       "below lives here unless given elsewhere",
                       json_schema_extra=_shown("`$SKILLFS_HOME` or ~/.local/share/skillfs"))
    db: Path | None = Field(None, description="DuckDB file", json_schema_extra={
        **_flag("--db"), **_shown("HOME/skillfs.duckdb")})
    spool: Path | None = Field(None, description="Spool folder agents write sessions to",
                               json_schema_extra={**_flag("--spool"), **_shown("HOME/spool")})
    socket: Path | None = Field(None, description="Control socket (the HTTP API)",
                                json_schema_extra={**_flag("--socket"),
                                                   **_shown("HOME/skillfs.sock")})
    log_file: Path | None = Field(None, description="The detached daemon's log",
                                  json_schema_extra=_shown("HOME/skillfs.log"))
    host: str | None = Field(None, description="This host's name: the spool's ledger is kept "
                             "per host, so hosts sharing a PostgreSQL database each ingest their "
                             "own spool once", json_schema_extra=_shown("the machine's hostname"))
    max_file_size: int = Field(1 << 20, ge=1, description="Largest file in bytes (EFBIG / 413 "
                               "beyond)", json_schema_extra=_flag("--max-file-size"))
    # Compressed when every file would not fit as it is: 256 MB then holds ~600 MB of
    # Markdown, 100,000 files of the bench's corpus. Cold reads of what it does not hold
    # cost a DuckDB query each (milliseconds). A bound, not an allocation.
    cache_bytes: int = Field(256 << 20, ge=0, description="File contents kept in memory, "
                             "compressed if they do not all fit (the kernel caches too)")
    # Measured: spool files, the rules learner and 700 KB versions together run in 16 MB
    # (tests/test_faults.py); the rest is room for DuckDB's indexes, which stay in memory.
    duckdb_memory: str = Field("64MB", description="DuckDB's buffer pool; it spills to "
                               "duckdb_temp beyond this")
    # A checkpoint holds the long strings of a row group in memory, and one that fails
    # invalidates the database.
    duckdb_checkpoint_memory: str = Field("1GB", description="DuckDB's limit while it "
                                          "checkpoints or replays its log")
    duckdb_temp: Path | None = Field(None, description="DuckDB's spill folder (0700)",
                                     json_schema_extra=_shown("HOME/duckdb.tmp"))
    # each DuckDB thread holds buffers of its own; one writer is enough
    duckdb_threads: int = Field(1, ge=1, description="DuckDB's threads")
    allow_other: bool = Field(False, description="Let other users in, the kernel checking "
                              "modes: mount_group reads (or writes with group_write)",
                              json_schema_extra=_flag("--allow-other"))
    mount_group: str | None = Field(None, description="Group (name or gid) of allow_other",
                                    json_schema_extra={**_flag("--mount-group"),
                                                       **_shown("the daemon's group")})
    group_write: bool = Field(False, description="allow_other's group may write too")
    listen: str | None = Field(None, description="`127.0.0.1:PORT`: also serve the HTTP API "
                               "over TCP (needs a token)", json_schema_extra=_flag("--listen"))
    tokens: list[str | TokenScope] = Field(
        default_factory=list, description="Bearer tokens accepted on TCP; added to "
        "`$SKILLFS_TOKEN`'s and `--token-file`'s, never from the command line. A token may be "
        "a table `{token = \"…\", spaces = [\"alice\"], read_only = true}`: bound to those "
        "spaces (names or ids), read-only")
    max_request_bytes: int = Field(32 << 20, ge=1, description="Larger HTTP request bodies get "
                                   "a 413")
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, _Env(settings_cls), _AliasEnv(settings_cls),
                TomlConfigSettingsSource(settings_cls, toml_file=_toml_file.get()))

    def resolved(self) -> ResolvedConfig:
        c = self.model_copy(deep=True)
        c.home = Path(c.home).expanduser()
        c.db = Path(c.db or c.home / "skillfs.duckdb").expanduser()
        c.spool = Path(c.spool or c.home / "spool").expanduser()
        c.socket = Path(c.socket or c.home / "skillfs.sock").expanduser()
        c.log_file = Path(c.log_file or c.home / "skillfs.log").expanduser()
        c.duckdb_temp = Path(c.duckdb_temp or c.home / "duckdb.tmp").expanduser()
        return ResolvedConfig.model_validate(c.model_dump())


class _Env(EnvSettingsSource):
    """SKILLFS_<KEY> and SKILLFS_LEARNER__<KEY>. Left out: SKILLFS_LEARNER, the alias of
    learner.backend (not the whole section), and SKILLFS_TOKENS (the one variable for tokens
    is SKILLFS_TOKEN, read by all_tokens)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        skipped = {"skillfs_learner", "skillfs_tokens"}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() not in skipped}


class _AliasEnv(PydanticBaseSettingsSource):
    """The older environment names (ALIASES); an empty variable counts as unset."""

    def get_field_value(self, field, field_name):  # the base class's; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for var, key in ALIASES.items():
            if os.environ.get(var) and key not in found:
                found[key] = os.environ[var]
        return nest(found)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"learner.model": x} → {"learner": {"model": x}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def fields(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, Any]:
    """Every setting by its dotted key, with its pydantic FieldInfo."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            out.update(fields(info.annotation, f"{prefix}{name}."))
        else:
            out[prefix + name] = info
    return out


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """`-o KEY=VALUE` pairs as {dotted key: value}, each checked against its field."""
    known = fields()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"-o {pair}: expected KEY=VALUE")
        if key in SECRET_KEYS:
            elsewhere = ", ".join(env_names(key) + (["--token-file PATH"] if key == "tokens"
                                                    else []))
            raise ConfigError(f"-o {key}=… would show it to every local user (in "
                              f"/proc/PID/cmdline); give it with {elsewhere} or in the "
                              "config file")
        if key not in known:
            raise ConfigError(f"-o {key}: no such setting (see `skillfs config show`)")
        out[key] = _checked(f"-o {key}", known[key], value)
    return out


def _checked(where: str, info, value: Any) -> Any:
    try:
        TypeAdapter(Annotated[info.annotation, info]).validate_python(value)
    except ValidationError as e:
        raise ConfigError(f"{where}={value}: {e.errors()[0]['msg']}") from None
    return value


def load(path: str | os.PathLike | None = None, options: Iterable[str] = (),
         flags: Mapping[str, Any] | None = None) -> ResolvedConfig:
    """The configuration from the command line (`-o` pairs, then the flags given as
    {dotted key: value or None}), the environment, the TOML file and the defaults."""
    given = _given(options, flags)
    reset = _toml_file.set(toml_path(path))
    try:
        return Config(**nest(given)).resolved()
    except ValidationError as e:
        where = origins(path, options, flags)
        raise ConfigError("; ".join(_describe(err, where) for err in e.errors())) from None
    except (OSError, ValueError) as e:  # an unreadable file, TOML or JSON that does not parse
        raise ConfigError(f"configuration: {e}") from None
    finally:
        _toml_file.reset(reset)


def _given(options: Iterable[str], flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """The command line's settings: `-o` pairs, then the flags that were given."""
    return {**parse_options(options),
            **{k: v for k, v in (flags or {}).items() if v is not None}}


def _describe(err: Mapping[str, Any], where: Mapping[str, str]) -> str:
    key = ".".join(str(part) for part in err["loc"])
    source = where.get(key)
    return f"{key}={err.get('input')!r}{f' ({source})' if source else ''}: {err['msg']}"


def origins(path: str | os.PathLike | None = None, options: Iterable[str] = (),
            flags: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Where each setting given anywhere came from, by dotted key (the rest are defaults)."""
    given = _given(options, flags)
    toml = toml_path(path)
    reset = _toml_file.set(toml)
    try:
        env = flatten(_Env(Config)())
        aliases = {key: var for var, key in reversed(ALIASES.items()) if os.environ.get(var)}
        from_file = flatten(TomlConfigSettingsSource(Config, toml_file=toml)())
    finally:
        _toml_file.reset(reset)
    out = {key: f"file {toml}" for key in from_file}
    out.update({key: f"env {var}" for key, var in aliases.items()})
    out.update({key: f"env {env_name(key)}" for key in env})
    out.update({key: "command line" for key in given})
    if os.environ.get("SKILLFS_TOKEN", "").strip():  # tokens add up (all_tokens)
        out["tokens"] = " + ".join(filter(None, [out.get("tokens"), "env SKILLFS_TOKEN"]))
    return out


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


def shown(key: str, value: Any) -> str:
    """A value as `skillfs config show` prints it: secrets masked."""
    if key in SECRET_KEYS and value:
        return f"<{len(value)} tokens>" if isinstance(value, list) else "****"
    return "unset" if value is None else str(value)


class ResolvedConfig(Config):
    """A Config whose paths are all set: what `load` returns and the daemon runs with."""

    db: Path
    spool: Path
    socket: Path
    log_file: Path
    duckdb_temp: Path

    def database(self) -> str:
        """What the store opens: the PostgreSQL URL if one is set, else the DuckDB file."""
        return self.store.url or str(self.db)



def all_tokens(configured: list[str | TokenScope],
               token_file: Path | None = None) -> list[str | TokenScope]:
    """The bearer tokens: the config's (plain or scoped), $SKILLFS_TOKEN's and a token file's
    (one a line, '#' comments; both plain). Never argv's: every local user can read
    /proc/PID/cmdline."""
    tokens = list(configured)
    tokens.append(os.environ.get("SKILLFS_TOKEN", "").strip())
    if token_file is not None:
        tokens += [line.strip() for line in Path(token_file).read_text().splitlines()
                   if not line.lstrip().startswith("#")]
    seen: set[tuple[str, Access]] = set()
    out: list[str | TokenScope] = []
    for t in tokens:
        key = (t.token, t.access()) if isinstance(t, TokenScope) else (t, FULL)
        if key[0] and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def token_access(tokens: list[str | TokenScope]) -> dict[str, Access]:
    """Each token's access; a token given twice, scoped once and plain once, is refused
    rather than given the wider of the two."""
    out: dict[str, Access] = {}
    for t in tokens:
        text, access = (t.token, t.access()) if isinstance(t, TokenScope) else (t, FULL)
        if out.get(text, access) != access:
            raise ConfigError("a token is given twice with different scopes")
        out[text] = access
    return out


def settings_table() -> str:
    """README's table of every setting, made from the model so that it cannot drift."""
    rows = ["| TOML key | environment | command line | default | meaning |",
            "|---|---|---|---|---|"]
    for key, info in fields().items():
        rows.append(f"| `{key}` | {_env_cell(key)} | {_cli_cell(key, info)} | "
                    f"{_default_cell(info)} | {info.description} |")
    return "\n".join(rows)


def env_names(key: str) -> list[str]:
    """The variables a setting is read from, the first winning."""
    if key == "tokens":
        return ["SKILLFS_TOKEN"]  # one token, added to the others
    return [env_name(key), *(var for var, k in ALIASES.items() if k == key)]


def _env_cell(key: str) -> str:
    names = ", ".join(f"`{n}`" for n in env_names(key))
    return f"{names} (one token)" if key == "tokens" else names


def _cli_cell(key: str, info) -> str:
    if key == "tokens":
        return "`--token-file PATH`"
    extra = info.json_schema_extra or {}
    flag = f"`{extra['flag']}`, " if "flag" in extra else ""
    return f"{flag}`-o {key}=…`"


def _default_cell(info) -> str:
    extra = info.json_schema_extra or {}
    if "shown_default" in extra:
        return extra["shown_default"]
    if info.default_factory is not None:
        return f"`{info.default_factory()}`"
    return "unset" if info.default is None else f"`{info.default}`"


if __name__ == "__main__":
    print(settings_table())
