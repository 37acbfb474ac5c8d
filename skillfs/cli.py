"""The `skillfs` command. Apart from `mount`, every command is a client of the running
daemon's control API on its Unix socket: the CLI never opens the database itself."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import locations
from .client import DaemonClient

if TYPE_CHECKING:
    from .config import ResolvedConfig


def _client(ctx: click.Context, timeout: float = 60.0) -> DaemonClient:
    return DaemonClient(locations.socket_path(ctx.obj.get("socket")), timeout)


def _set_socket(ctx: click.Context, _param, value):
    if value:
        ctx.ensure_object(dict)
        ctx.find_root().obj["socket"] = value
    return value


# `skillfs log --socket S PATH` as well as `skillfs --socket S log PATH`.
socket_option = click.option("--socket", expose_value=False, is_eager=True,
                             callback=_set_socket, metavar="PATH",
                             help="The daemon's control socket (also $SKILLFS_SOCKET).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON instead of text.")


class Group(click.Group):
    """Every command of the group takes --socket after its name too."""

    def command(self, *args, own_socket: bool = False, **kwargs):
        wrap = super().command(*args, **kwargs)
        return wrap if own_socket else (lambda f: wrap(socket_option(f)))

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        return super().group(*args, **kwargs)


class VersionType(click.ParamType):
    """A file version as `skillfs log` prints it (v3) or as a number (3)."""
    name = "VERSION"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        digits = text[1:] if text[:1] in ("v", "V") else text
        if not digits.isdigit() or int(digits) < 1:
            self.fail(f"{value!r} is not a version (write v3 or 3)", param, ctx)
        return int(digits)


VERSION = VersionType()


def _n(count: int | None, noun: str) -> str:
    """`1 skill`, `2 skills`; `? skills` for a count the daemon could not give."""
    return f"{'?' if count is None else count} {noun}{'' if count == 1 else 's'}"


def _emit(data, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render(data)


def _echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar="SKILLFS_SOCKET", help="The daemon's control socket.")
@click.version_option(package_name="skillfs")
@click.pass_context
def main(ctx: click.Context, socket: str | None) -> None:
    """skillfs: agent skill memory as plain files."""
    ctx.ensure_object(dict)
    ctx.obj["socket"] = socket


# -- mount / umount ------------------------------------------------------------------------


def _database_flags(db: str | None) -> dict[str, object]:
    """`--db`: a PostgreSQL URL sets store.url, a path the DuckDB file."""
    if db is not None and _config().is_postgres_url(db):
        return {"store.url": db}
    return {"db": Path(db) if db is not None else None}


@main.command(own_socket=True)
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--db", metavar="PATH|URL",
              help="DuckDB file, or a PostgreSQL database (postgresql://USER@HOST/DB).")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), help="Spool dir.")
@click.option("--socket", "socket_opt", type=click.Path(dir_okay=False, path_type=Path),
              help="Control socket (default under the data directory).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (default $SKILLFS_HOME/config.toml).")
@click.option("--foreground", is_flag=True, help="Stay attached and log to stderr.")
@click.option("--listen", help="Also serve the HTTP API on 127.0.0.1:PORT (bearer token).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, readable=True,
                                              path_type=Path),
              help="File of bearer tokens accepted on --listen, one a line "
                   "(also: $SKILLFS_TOKEN, tokens = [...] in the config).")
@click.option("--token", "argv_token", hidden=True)
@click.option("--learner", type=click.Choice(["openai", "rules", "off"]), help="Learner.")
@click.option("--model", help="Model name for the openai learner.")
@click.option("--max-file-size", type=int, help="Largest file in bytes (default 1 MiB).")
@click.option("--allow-other", is_flag=True, default=None,
              help="Let other users read the mount (members of --mount-group; modes are "
                   "checked by the kernel). Without it the mount is private to its owner.")
@click.option("--mount-group", help="Group (name or gid) that may read the mount with "
                                    "--allow-other (default: the daemon's group).")
@click.option("--nonempty", is_flag=True,
              help="Mount over a folder that is not empty (its files are hidden meanwhile).")
@click.option("--debug", is_flag=True, help="Verbose logging.")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Any setting, e.g. -o learner.model=gpt-4.1 -o duckdb_memory=128MB "
                   "(repeatable; `skillfs config show` lists them).")
@click.option("--ready-fd", type=int, hidden=True)
@click.pass_context
def mount(ctx, mountpoint, db, spool, socket_opt, config_file, foreground, listen, token_file,
          argv_token, learner, model, max_file_size, allow_other, mount_group, nonempty, debug,
          options, ready_fd):
    """Start the daemon and mount every learning space at MOUNTPOINT."""
    if argv_token is not None:
        raise click.UsageError("--token would show the token to every local user (in "
                               "/proc/PID/cmdline); use --token-file PATH or SKILLFS_TOKEN")
    # Everything the daemon creates (database, log, spool folders) is its user's alone.
    os.umask(0o077)
    if not foreground:
        _detach(mountpoint)
        return
    ready = _ReadyPipe(ready_fd)
    try:
        flags = {**_database_flags(db), "spool": spool,
                 "socket": socket_opt or ctx.obj.get("socket"), "listen": listen,
                 "max_file_size": max_file_size, "allow_other": allow_other,
                 "mount_group": mount_group, "learner.backend": learner, "learner.model": model}
        cfg = _load_config(config_file, options, flags)
        cfg.tokens = _config().all_tokens(cfg.tokens, token_file)
        try:
            _config().token_access(cfg.tokens)
        except _config().ConfigError as e:
            raise click.UsageError(str(e)) from None
        if cfg.listen and not cfg.tokens:
            raise click.ClickException("--listen needs a bearer token: --token-file PATH, "
                                       "SKILLFS_TOKEN, or tokens = [...] in the config")
    except click.ClickException as e:
        ready.say("usage" if isinstance(e, click.UsageError) else "error", e.message)
        raise
    if ready_fd is not None:
        _log_to(cfg.log_file)
    _run_foreground(cfg, mountpoint, debug, ready, nonempty)


def _config():
    """The typed configuration's module, imported by the commands that build it: it costs
    the other commands a third of a second."""
    from . import config

    return config


def _load_config(config_file, options=(), flags=None) -> ResolvedConfig:
    configmod = _config()
    try:
        return configmod.load(config_file, options, flags)
    except configmod.ConfigError as e:
        raise click.UsageError(str(e)) from None


class _ReadyPipe:
    """How a detached daemon tells `skillfs mount` it is ready, or why it is not: one
    message, `KIND TEXT`, then the pipe closes."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def say(self, kind: str, text: str) -> None:
        if self.fd is not None:
            os.write(self.fd, f"{kind} {text}".encode())
            os.close(self.fd)
            self.fd = None


def _log_to(log_file: Path) -> None:
    """A detached daemon's output goes to its log file from here on."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def _detach(mountpoint: Path) -> None:
    """Re-run ourselves in the foreground in a new session; return once it is ready. The
    daemon reads its own configuration and reports back (building it here too would double
    the cost of every start); what it prints before its log is open comes back here."""
    read_fd, write_fd = os.pipe()
    # -P: the current folder is not put on the import path (started from the folder holding
    # a clone named skillfs, that folder would be taken for the package).
    cmd = [sys.executable, "-P", "-m", "skillfs.cli", *sys.argv[1:], "--foreground",
           "--ready-fd", str(write_fd)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=(write_fd,),
                            start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        kind, _, text = r.read().decode(errors="replace").strip().partition(" ")
    if kind == "ready":
        assert proc.stderr is not None
        proc.stderr.close()  # the daemon writes to its log now
        info = json.loads(text)
        click.echo(f"skillfs mounted at {mountpoint.resolve()} (pid {proc.pid})\n"
                   f"  spool:    {info['spool']}\n  socket:   {info['socket']}\n"
                   f"  database: {info['db']}\n  log:      {info['log']}")
        return
    try:
        _, early = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, early = proc.communicate()
    if kind == "usage":
        raise click.UsageError(text)
    tail = early.decode(errors="replace").strip().splitlines()[-1:]
    raise click.ClickException(text or (tail[0] if tail else "") or
                               f"the daemon exited with {proc.returncode}")


def _run_foreground(cfg, mountpoint: Path, debug: bool, ready: _ReadyPipe,
                    nonempty: bool = False) -> None:
    import trio

    from .daemon import Daemon, StartupError

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "watchfiles", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    summary = json.dumps({"spool": str(cfg.spool), "socket": str(cfg.socket),
                          "db": str(cfg.db), "log": str(cfg.log_file)})
    daemon = Daemon(cfg, mountpoint, nonempty=nonempty)
    try:
        daemon.prepare()
        trio.run(daemon.run, lambda: ready.say("ready", summary))
    except StartupError as e:
        ready.say("error", e.message)
        raise click.ClickException(e.message) from None
    except BaseException as e:
        ready.say("error", f"{type(e).__name__}: {e}")
        raise
    # Everything is closed (database checkpointed, mount and socket gone). Skipping the
    # interpreter's teardown skips DuckDB's binding reporting objects still referenced at exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait.")
def umount(mountpoint: Path, timeout: float) -> None:
    """Unmount MOUNTPOINT and wait for its daemon to exit."""
    from .mounts import daemon_pid, mount_state, unmount

    state = mount_state(mountpoint)
    if state == "stale":
        unmount(mountpoint, lazy=True)
        click.echo(f"cleaned up a stale mount at {mountpoint}")
        return
    if state != "mounted":
        raise click.ClickException(f"{mountpoint} is not mounted")
    pid = daemon_pid(mountpoint)
    if pid is None:
        if not unmount(mountpoint):
            raise click.ClickException(f"could not unmount {mountpoint}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            click.echo(f"unmounted {mountpoint}")
            return
        time.sleep(0.05)
    raise click.ClickException(f"daemon {pid} did not exit within {timeout:g} s")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


@main.command("import-tree")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="DuckDB file.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (default $SKILLFS_HOME/config.toml).")
def import_tree(src: Path, db, config_file):
    """Bulk-import a folder laid out like the mount (SPACE/SKILL/...) while no daemon runs."""
    from .daemon import DbLock, StartupError
    from .errors import SkillfsError
    from .store import Store

    cfg = _load_config(config_file, flags={"db": db})
    cfg.db.parent.mkdir(parents=True, exist_ok=True)
    lock = DbLock(cfg.db)
    try:
        lock.acquire()
        # a bulk load wants DuckDB's default memory; the daemon's limit is for serving
        store = Store(str(cfg.db), max_file_size=cfg.max_file_size, duckdb_memory=None)
        t0 = time.monotonic()
        counts = store.files.import_tree(str(src))
        store.close()
    except (StartupError, SkillfsError) as e:
        raise click.ClickException(e.message) from None
    finally:
        lock.release()
    click.echo(f"imported {counts['spaces']} spaces, {counts['skills']} skills, "
               f"{counts['files']} files ({counts['bytes'] / 1e6:.1f} MB) into {cfg.db} "
               f"in {time.monotonic() - t0:.1f} s")


# -- config --------------------------------------------------------------------------------


@main.group("config")
def config_group():
    """The daemon's configuration (command line > environment > TOML file > defaults)."""


@config_group.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (default $SKILLFS_HOME/config.toml).")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A setting as `skillfs mount -o` takes it.")
@json_option
def config_show(config_file, options, as_json):
    """The configuration `skillfs mount` would run with, and where each value came from
    (keys and tokens masked)."""
    configmod = _config()
    cfg = _load_config(config_file, options)
    cfg.tokens = configmod.all_tokens(cfg.tokens)
    where = configmod.origins(config_file, options)
    rows = [{"key": key, "value": configmod.shown(key, value),
             "source": where.get(key, "default")}
            for key, value in configmod.flatten(cfg.model_dump()).items()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(f"{r['key']} = {r['value']}") for r in rows)
    for r in rows:
        click.echo(f"{r['key'] + ' = ' + r['value']:<{width}}  # {r['source']}")


# -- status --------------------------------------------------------------------------------


STATUS_PATHS = {"mount": "mountpoint", "spool": "spool", "db": "db", "socket": "socket",
                "log": "log"}


@main.command()
@json_option
@click.option("--path", "path_of", type=click.Choice(sorted(STATUS_PATHS)),
              help="Print only where this is, e.g. spool=$(skillfs status --path spool).")
@click.pass_context
def status(ctx, as_json, path_of):
    """Counts, spool backlog, mount point and database size."""
    data = _client(ctx).request("GET", "/status").json()
    if path_of:
        click.echo(data[STATUS_PATHS[path_of]])
        return

    def render(d):
        c = d["counts"]
        click.echo(f"mounted at   {d['mountpoint']} (pid {d['pid']}, up {d['uptime_s']:.0f} s)")
        size = "size unknown" if d["db_bytes"] is None else f"{d['db_bytes'] / 1e6:.1f} MB"
        click.echo(f"database     {d['db']} ({size})")
        health = d.get("database") or {}
        if health and not health["healthy"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(health["since"]))
            click.echo(f"             UNHEALTHY since {since}: {health['reason']}"
                       + (" (reopening)" if health["invalidated"] else ""))
        click.echo(f"spool        {d['spool']} ({_n(d['spool_backlog'], 'file')} waiting, "
                   f"{d.get('spool_rejected', 0)} rejected in .rejected/)")
        click.echo(f"learner      {d['learner']}")
        click.echo(", ".join([_n(c.get("spaces"), "space"), _n(c.get("skills"), "skill"),
                              _n(c.get("files"), "file")])
                   + f" ({_n(c.get('file_versions'), 'version')}), "
                   + ", ".join([_n(c.get("sessions"), "session"),
                                _n(c.get("messages"), "message"), _n(c.get("tasks"), "task")]))
    _emit(data, as_json, render)


# -- spaces --------------------------------------------------------------------------------


@main.group()
def space():
    """Learning spaces."""


@space.command("create")
@click.argument("name")
@click.option("--user", help="The user the space belongs to (free text, e.g. an email).")
@click.option("--meta", help="Metadata as a JSON object, e.g. '{\"team\": \"ops\"}'.")
@json_option
@click.pass_context
def space_create(ctx, name, user, meta, as_json):
    """Create a learning space NAME with the two default skills."""
    try:
        meta_obj = json.loads(meta) if meta else None
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--meta") from None
    if meta_obj is not None and not isinstance(meta_obj, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--meta")
    data = _client(ctx).request("POST", "/spaces",
                                json={"name": name, "user": user, "meta": meta_obj}).json()
    _emit(data, as_json, lambda d: click.echo(f"created space {d['name']} ({d['id']})"))


@space.command("list")
@json_option
@click.pass_context
def space_list(ctx, as_json):
    """List learning spaces: name, id, skills, user."""
    data = _client(ctx).request("GET", "/spaces").json()

    def render(rows):
        for s in rows:
            user = f"  user={s['user']}" if s["user"] else ""
            click.echo(f"{s['name']}\t{s['id']}\t{_n(len(s['skills']), 'skill')}{user}")
    _emit(data, as_json, render)


@space.command("delete")
@click.argument("name")
@click.pass_context
def space_delete(ctx, name):
    """Delete a space into the trash, with the skills no other space includes (sessions
    stay; `skillfs restore NAME` brings it back)."""
    _client(ctx).request("DELETE", f"/spaces/{name}")
    click.echo(f"deleted space {name}")


# -- skills --------------------------------------------------------------------------------


@main.group()
def skill():
    """Skills."""


@skill.command("list")
@click.option("--space", "space_name", required=True, help="The space whose skills to list.")
@json_option
@click.pass_context
def skill_list(ctx, space_name, as_json):
    """The skills of a space: name, files, description."""
    rows = _client(ctx).request("GET", "/skills", params={"space": space_name}).json()
    _emit(rows, as_json, lambda rows: _echo_lines(
        f"{r['name']}\t{_n(len(r['files']), 'file')}\t{r['description']}" for r in rows))


@skill.command("delete")
@click.argument("name")
@click.option("--space", "space_name", required=True, help="The space to take it out of.")
@click.pass_context
def skill_delete(ctx, name, space_name):
    """Take skill NAME out of a space; deleted when no other space includes it (its history
    stays: `skillfs log` and `revert` still reach its files)."""
    out = _client(ctx).request("DELETE", "/skills",
                               params={"space": space_name, "skill": name}).json()
    if out["deleted"]:
        click.echo(f"deleted skill {name}")
    else:
        click.echo(f"took skill {name} out of {space_name} (still in "
                   f"{', '.join(out['still_in'])})")


@skill.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--space", "space_name", required=True, help="The space to add it to.")
@json_option
@click.pass_context
def skill_import(ctx, path: Path, space_name, as_json):
    """Import a skill from a folder or a ZIP holding SKILL.md."""
    if path.is_dir():
        from .skillzip import write_skill_zip
        files = {str(p.relative_to(path)): p.read_bytes()
                 for p in sorted(path.rglob("*")) if p.is_file()}
        data = write_skill_zip(path.name, files)
    else:
        data = path.read_bytes()
    out = _client(ctx).request("POST", "/skills/import", params={"space": space_name},
                               content=data,
                               headers={"Content-Type": "application/zip"}).json()
    _emit(out, as_json, lambda d: click.echo(
        f"imported skill {d['name']} ({len(d['files'])} files) into {space_name}"))


@skill.command("export")
@click.argument("name")
@click.option("--space", "space_name", required=True, help="The space that holds it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The ZIP to write (default NAME.zip).")
@click.pass_context
def skill_export(ctx, name, space_name, output):
    """Write a skill as a ZIP."""
    r = _client(ctx).request("GET", "/skills/export", params={"space": space_name, "skill": name})
    output = output or Path(f"{name}.zip")
    output.write_bytes(r.content)
    click.echo(f"wrote {output} ({len(r.content)} bytes)")


# -- sessions ------------------------------------------------------------------------------


@main.group()
def session():
    """Sessions and their messages."""


@session.command("list")
@click.option("--space", "space_name", help="Only the sessions of this space.")
@json_option
@click.pass_context
def session_list(ctx, space_name, as_json):
    """List sessions: id, name (the spool folder), learning status."""
    params = {"space": space_name} if space_name else {}
    data = _client(ctx).request("GET", "/sessions", params=params).json()

    def render(rows):
        if rows:
            click.echo("ID\tNAME\tLEARNING")
        for s in rows:
            ended = "\tended" if s["ended"] else ""
            click.echo(f"{s['id']}\t{s['name'] or '-'}\t{s['learning_status'] or '-'}{ended}")
    _emit(data, as_json, render)


@session.command("show")
@click.argument("session_id", metavar="SESSION")
@json_option
@click.pass_context
def session_show(ctx, session_id, as_json):
    """A session's messages and tasks (SESSION: its id or its name)."""
    data = _client(ctx).request("GET", f"/sessions/{session_id}").json()

    def render(d):
        click.echo(f"session {d['id']} ({d['name'] or '-'}), learning: "
                   f"{d['learning_status'] or '-'}")
        if d.get("learning_error"):
            click.echo(f"error: {d['learning_error']}")
        for m in d["messages"]:
            text = m["text"].replace("\n", " ")
            click.echo(f"{m['seq']:>5} {m['role']:<9} {text[:200]}")
        for t in d["tasks"]:
            click.echo(f"task  [{t['status']}] {t['description']}")
    _emit(data, as_json, render)


@session.command("flush")
@click.argument("session_id", metavar="SESSION")
@click.pass_context
def session_flush(ctx, session_id):
    """Learn from a session now instead of waiting for more messages."""
    _client(ctx).request("POST", f"/sessions/{session_id}/flush")
    click.echo(f"flushed {session_id}")


@session.command("purge")
@click.argument("session_id", metavar="SESSION")
@click.option("--why", required=True, help="Why it is purged (kept with the messages).")
@json_option
@click.pass_context
def session_purge(ctx, session_id, why, as_json):
    """Replace the content of a session's messages by a tombstone (SESSION: its id or its
    name); the rows stay, so its spool files are still not taken in twice."""
    out = _client(ctx, PURGE_TIMEOUT).request(
        "POST", f"/sessions/{session_id}/purge", json={"why": why, "who": _user()}).json()
    _emit(out, as_json, lambda d: click.echo(
        f"purged {_n(d['purged'], 'message')} of session {d['session_id']}"))
    _check_compacted(ctx, out)


# a purge compacts the database: seconds per 20,000 files
PURGE_TIMEOUT = 600.0


def _user() -> str:
    import getpass

    return getpass.getuser()


def _check_compacted(ctx, out: dict) -> None:
    if not out["compacted"]:
        click.echo("the purge is done, but compacting the database failed (see the daemon's "
                   "log): the purged bytes may stay in its file until the next purge", err=True)
        ctx.exit(1)


# -- learning ------------------------------------------------------------------------------


@main.group()
def learn():
    """Learning status, waiting and retries."""


def _learning_line(r) -> str:
    err = f"  error: {r['error']}" if r.get("error") else ""
    return f"{r['session_id']}\t{r['status']}{err}"


@learn.command("status")
@click.argument("session_id", metavar="[SESSION]", required=False)
@click.option("--space", "space_name", help="Only the sessions of this space.")
@json_option
@click.pass_context
def learn_status(ctx, session_id, space_name, as_json):
    """Learning status of one session, or of all (of a space)."""
    params = {k: v for k, v in (("session", session_id), ("space", space_name)) if v}
    rows = _client(ctx).request("GET", "/learning", params=params).json()
    _emit(rows, as_json, lambda rows: _echo_lines(_learning_line(r) for r in rows))


@learn.command("wait")
@click.argument("session_id", metavar="SESSION")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait at most.")
@json_option
@click.pass_context
def learn_wait(ctx, session_id, timeout, as_json):
    """Wait until a session's learning completed or failed (exit 1 if failed or timed out)."""
    client = _client(ctx, timeout + 30)
    row = client.request("POST", f"/learning/{session_id}/wait",
                         params={"timeout": timeout}).json()
    _emit(row, as_json, lambda r: click.echo(_learning_line(r)))
    if row["status"] != "completed":
        if row.get("timed_out"):
            click.echo(f"timed out after {timeout:g} s", err=True)
        ctx.exit(1)


@learn.command("retry")
@click.argument("session_id", metavar="SESSION")
@click.pass_context
def learn_retry(ctx, session_id):
    """Learn a failed session again from its stored messages."""
    row = _client(ctx).request("POST", f"/learning/{session_id}/retry").json()
    click.echo(_learning_line(row))


# -- sandboxes -----------------------------------------------------------------------------


@main.group()
def sandbox():
    """Bind one space into a sandbox's folder, and bind again after a restart."""


def _daemon_home(ctx) -> tuple[Path, Path]:
    data = _client(ctx).request("GET", "/status").json()
    return Path(data["mountpoint"]), Path(data["home"])


@sandbox.command("bind")
@click.argument("space_name", metavar="SPACE")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ro", is_flag=True, help="Read-only: writes in the sandbox fail with EROFS.")
@click.pass_context
def sandbox_bind(ctx, space_name, directory, ro):
    """Bind-mount SPACE at DIR and remember it (needs the right to mount, e.g. root)."""
    from . import sandbox as sb

    mnt, home = _daemon_home(ctx)
    b = sb.Binding(space_name, os.path.abspath(directory), ro)
    try:
        done = sb.bind(mnt, b)
    except sb.BindError as e:
        raise click.ClickException(str(e)) from None
    sb.save(home, [x for x in sb.load(home) if x.dir != b.dir] + [b])
    click.echo(f"{b.dir}: {done} to {mnt / space_name}{' (read-only)' if ro else ''}")


@sandbox.command("unbind")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def sandbox_unbind(ctx, directory):
    """Unmount a sandbox's binding and forget it."""
    from . import sandbox as sb

    _, home = _daemon_home(ctx)
    target = os.path.abspath(directory)
    known = sb.load(home)
    found = [b for b in known if b.dir == target]
    if not found:
        raise click.ClickException(f"{target} is not a recorded sandbox binding")
    try:
        sb.unbind(found[0])
    except sb.BindError as e:
        raise click.ClickException(str(e)) from None
    sb.save(home, [b for b in known if b.dir != target])
    click.echo(f"{target}: unbound")


@sandbox.command("list")
@json_option
@click.pass_context
def sandbox_list(ctx, as_json):
    """Recorded bindings and whether each is live, dead (stale) or missing."""
    from . import sandbox as sb

    _, home = _daemon_home(ctx)
    rows = [{"space": b.space, "dir": b.dir, "ro": b.ro, "state": sb.state(b.dir)}
            for b in sb.load(home)]
    _emit(rows, as_json, lambda rows: _echo_lines(
        f"{r['dir']}\t{r['space']}\t{'ro' if r['ro'] else 'rw'}\t{r['state']}" for r in rows))


@sandbox.command("rebind")
@click.pass_context
def sandbox_rebind(ctx):
    """Bind every recorded sandbox again (after the daemon restarted)."""
    from . import sandbox as sb

    mnt, home = _daemon_home(ctx)
    failed = 0
    for b in sb.load(home):
        try:
            click.echo(f"{b.dir}: {sb.bind(mnt, b)}")
        except sb.BindError as e:
            failed += 1
            click.echo(f"{b.dir}: {e}", err=True)
    if failed:
        ctx.exit(1)


# -- history -------------------------------------------------------------------------------


def _path_client(ctx, path: str) -> tuple[DaemonClient, str]:
    """The daemon that serves `path` and the path as SPACE/SKILL/FILE. A path under a
    skillfs mount leads to the daemon serving that mount (unless --socket or
    $SKILLFS_SOCKET names one); SPACE/SKILL/FILE goes to the default daemon."""
    from .mounts import daemon_for_path

    found = None if ctx.find_root().obj.get("socket") else daemon_for_path(path)
    client = DaemonClient(found[1]) if found else _client(ctx)
    mnt = Path(client.request("GET", "/status").json()["mountpoint"])
    if found and found[0] != mnt:
        raise click.ClickException(f"the daemon at {found[1]} serves {mnt}, not {found[0]}")
    p = Path(os.path.abspath(path))
    try:
        return client, str(p.relative_to(mnt))
    except ValueError:
        if os.path.isabs(path):
            raise click.ClickException(f"{path} is not under the mount {mnt}") from None
        return client, path


@main.command("log")
@click.argument("path")
@json_option
@click.pass_context
def log_cmd(ctx, path, as_json):
    """Versions of a file under the mount."""
    client, rel = _path_client(ctx, path)
    rows = client.request("GET", "/files/log", params={"path": rel}).json()

    def render(rows):
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            what = "deleted" if r["deleted"] else f"{r['size']} bytes"
            extra = f" session={r['session_id']}" if r["session_id"] else ""
            if r.get("purged_at"):
                what = "purged"
                at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["purged_at"]))
                extra += f"  [purged by {r['purged_by']} at {at}: {r['purge_reason']}]"
            click.echo(f"v{r['version']:<4} {when}  {r['author']:<8} {what:<14} "
                       f"{r['path']}  {r['reason'] or ''}{extra}")
    _emit(rows, as_json, render)


@main.command()
@click.argument("path")
@click.argument("version", type=VERSION)
@click.pass_context
def revert(ctx, path, version):
    """Make VERSION of a file current again (as a new version)."""
    client, rel = _path_client(ctx, path)
    out = client.request("POST", "/files/revert", json={"path": rel, "version": version}).json()
    if not out.get("changed", True):
        click.echo(f"{path}: already has the content of version {version} (it is version "
                   f"{out['version']}); nothing changed")
        return
    click.echo(f"{path}: version {version} is current again as version {out['version']}")


@main.command()
@click.argument("path")
@click.option("--version", "version", type=VERSION,
              help="The version to purge (not the current one).")
@click.option("--all-matching", "regex", metavar="REGEX",
              help="Purge every version this regular expression matches; the current "
                   "content, if it matches, becomes a new version with [purged] instead.")
@click.option("--why", required=True, help="Why it is purged (kept with the versions).")
@json_option
@click.pass_context
def purge(ctx, path, version, regex, why, as_json):
    """Replace the content of versions of a file by a tombstone that says who purged it,
    when and why; the purged bytes leave the database file."""
    if (version is None) == (regex is None):
        raise click.UsageError("give --version N or --all-matching REGEX")
    client, rel = _path_client(ctx, path)
    client.timeout = PURGE_TIMEOUT
    out = client.request("POST", "/files/purge", json={
        "path": rel, "version": version, "all_matching": regex, "why": why,
        "who": _user()}).json()

    def render(d):
        if not d["purged"]:
            click.echo(f"{path}: nothing to purge")
            return
        listed = ", ".join(f"v{v}" for v in d["purged"])
        click.echo(f"{path}: purged {listed}")
        if d["rewritten"]:
            click.echo(f"{path}: the current content, without the matches, is version "
                       f"{d['rewritten']}")
    _emit(out, as_json, render)
    _check_compacted(ctx, out)


@main.command()
@click.option("--space", "space_name", help="Only what was deleted in or with this space.")
@json_option
@click.pass_context
def trash(ctx, space_name, as_json):
    """Deleted spaces, skills and files, and their last version: what `skillfs restore`
    can bring back."""
    params = {"space": space_name} if space_name else {}
    rows = _client(ctx).request("GET", "/trash", params=params).json()

    def render(rows):
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            last = f"v{r['version']}" if r["version"] else ""
            files = f" ({_n(r['files'], 'file')})" if r["files"] is not None else ""
            click.echo(f"{r['kind']:<5} {when}  {r['author']:<8} {last:<5} {r['path']}{files}")
    _emit(rows, as_json, render)


@main.command()
@click.argument("path")
@click.pass_context
def restore(ctx, path):
    """Bring back a deleted file, skill or space from the trash, as a new version: PATH is
    SPACE/SKILL/FILE, SPACE/SKILL, SPACE, or the same under the mount."""
    client, rel = _path_client(ctx, path)
    out = client.request("POST", "/trash/restore", json={"path": rel}).json()
    if out["kind"] == "file":
        click.echo(f"restored {out['path']}: version {out['restored_version']} is current "
                   f"again as version {out['version']}")
    elif out["kind"] == "skill":
        click.echo(f"restored skill {out['path']} ({_n(out['files'], 'file')})")
    else:
        click.echo(f"restored space {out['path']} ({_n(len(out['skills']), 'skill')}: "
                   f"{', '.join(out['skills'])})")


def _split_version(spec: str) -> tuple[str, int | None]:
    """PATH or PATH@VERSION (VERSION as v3 or 3)."""
    path, at, version = spec.rpartition("@")
    if not at or not version.lstrip("vV").isdigit():
        return spec, None
    return path, VERSION.convert(version, None, None)


def _content(client: DaemonClient, rel: str, version: int | None) -> bytes:
    params: dict = {"path": rel}
    if version is not None:
        params["version"] = version
    return client.request("GET", "/files", params=params).content


@main.command()
@click.argument("spec", metavar="PATH[@VERSION]")
@click.pass_context
def show(ctx, spec):
    """Print a file, or one of its versions (PATH@v3), without changing anything."""
    path, version = _split_version(spec)
    client, rel = _path_client(ctx, path)
    click.echo(_content(client, rel, version), nl=False)


@main.command()
@click.argument("path")
@click.argument("old", metavar="[V1", type=VERSION, required=False)
@click.argument("new", metavar="[V2]]", type=VERSION, required=False)
@json_option
@click.pass_context
def diff(ctx, path, old, new, as_json):
    """Unified diff between two versions of a file: V1 to V2 (default: the current one),
    or, with no version, the one before the current one to the current one."""
    import difflib

    client, rel = _path_client(ctx, path)
    if new is None:
        log = [r for r in client.request("GET", "/files/log", params={"path": rel}).json()
               if not r["deleted"] and not r.get("purged_at")]
        if not log:
            raise click.ClickException(f"{path} has no version to compare")
        new = log[-1]["version"]
        if old is None:
            earlier = [r["version"] for r in log if r["version"] < new]
            old = earlier[-1] if earlier else new
    texts = [_content(client, rel, v).decode("utf-8", "replace").splitlines(keepends=True)
             for v in (old, new)]
    text = "".join(difflib.unified_diff(texts[0], texts[1], f"{rel}@v{old}", f"{rel}@v{new}"))
    _emit({"path": rel, "from": old, "to": new, "diff": text}, as_json,
          lambda d: click.echo(d["diff"], nl=False))


# -- hooks ---------------------------------------------------------------------------------


class NeverBlocking(click.Command):
    """A hook command: Claude Code reads exit 2 (click's usage errors) as "block", so a
    usage error is said on stderr and exits 0 like any other failure of a hook."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            click.echo(f"skillfs hook: {e.format_message()}", err=True)
            ctx.exit(0)


@main.group()
def hook():
    """Commands that agents' hooks run."""


@hook.command("claude-code", cls=NeverBlocking, own_socket=True)
@click.option("--space", default="claude-code", show_default=True,
              help="The space the sessions learn into.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (default: $SKILLFS_CONFIG or HOME/config.toml).")
@click.option("--print-settings", is_flag=True,
              help="Print the hooks for .claude/settings.json instead of running as one.")
def hook_claude_code(space, config_file, print_settings):
    """Run by a Claude Code hook (Stop, SessionEnd): the hook input on stdin, the session's
    new transcript lines into the spool, and at SessionEnd the end of the session."""
    from .hooks import claude_code

    if print_settings:
        click.echo(claude_code.print_settings(space, config_file))
    else:
        claude_code.main(sys.stdin.buffer.read(), space, config_file)

# -- search --------------------------------------------------------------------------------


class GrepError(click.ClickException):
    exit_code = 2  # grep's: 1 means only that nothing matched


def _grep_status(ctx: click.Context, fn):
    """Run fn as grep would exit: 0 found, 1 nothing found, 2 an error."""
    try:
        found = fn()
    except click.ClickException as e:
        raise GrepError(e.message) from None
    ctx.exit(0 if found else 1)


scope_options = [
    click.option("--space", "spaces", multiple=True,
                 help="Only this space (repeatable; default: every space)."),
    click.option("--skill", help="Only this skill (its name or id)."),
]


def _scoped(f):
    for option in reversed(scope_options):
        f = option(f)
    return f


@main.command("search")
@click.argument("pattern")
@_scoped
@click.option("--glob", help="Only files whose path in the space matches, e.g. "
                             "'daily-logs/*.md' ('*.md': a name at any depth).")
@click.option("--regex/--fixed", "regex", default=True,
              help="PATTERN is a regular expression (RE2's syntax, the default) or a fixed "
                   "string.")
@click.option("-i", "--ignore-case", is_flag=True, help="Ignore case.")
@click.option("--max-results", default=1000, show_default=True, help="Matches at most.")
# Longer than the API's 5 s: a person at the command line wants the whole answer, and the
# daemon keeps serving meanwhile (100,000 files take seconds on a busy machine).
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds after which the daemon stops searching (at most 30).")
@json_option
@click.pass_context
def search_cmd(ctx, pattern, spaces, skill, glob, regex, ignore_case, max_results, timeout,
               as_json):
    """Lines of the current files that match PATTERN, as SPACE/SKILL/FILE:LINE:TEXT (under
    the mount root, as grep -rn prints them). Exit status: 0 found, 1 none, 2 an error."""

    def run() -> bool:
        client = _client(ctx, timeout + 30)
        out = client.request("GET", "/search", params={
            "pattern": pattern, "space": list(spaces) or None, "skill": skill, "glob": glob,
            "fixed": not regex, "ignore_case": ignore_case, "max_results": max_results,
            "timeout": timeout}).json()
        _emit(out, as_json, lambda d: _echo_lines(
            f"{m['file']}: binary file matches" if m["binary"]
            else f"{m['file']}:{m['line']}:{m['text']}" for m in d["matches"]))
        if out["truncated"]:
            click.echo(f"skillfs search: more matches than the first {max_results} "
                       "(--max-results)", err=True)
        if out["timed_out"]:
            click.echo(f"skillfs search: stopped after {timeout:g} s (--timeout): some files "
                       "were not searched", err=True)
            if not out["matches"]:
                raise click.ClickException("the search did not finish")
        return bool(out["matches"])

    _grep_status(ctx, run)


@main.command("glob")
@click.argument("pattern")
@_scoped
@click.option("--max-results", default=10_000, show_default=True, help="Paths at most.")
@json_option
@click.pass_context
def glob_cmd(ctx, pattern, spaces, skill, max_results, as_json):
    """Current files whose path in their space matches PATTERN ('daily-logs/*.md', '**/x.md',
    '*.md' for a name at any depth), as SPACE/SKILL/FILE under the mount root. Exit status:
    0 found, 1 none, 2 an error."""

    def run() -> bool:
        out = _client(ctx).request("GET", "/glob", params={
            "pattern": pattern, "space": list(spaces) or None, "skill": skill,
            "max_results": max_results}).json()
        _emit(out, as_json, lambda d: _echo_lines(d["paths"]))
        if out["truncated"]:
            click.echo(f"skillfs glob: more paths than the first {max_results} (--max-results)",
                       err=True)
        return bool(out["paths"])

    _grep_status(ctx, run)


@main.command("mcp")
@click.option("--space", "spaces", multiple=True, metavar="SPACE",
              help="See only this space (repeatable); its tools then need no space.")
@click.option("--read-only", is_flag=True, help="Offer no tool that writes.")
@click.pass_context
def mcp_command(ctx, spaces, read_only):
    """An MCP server on stdin/stdout for an agent's MCP client; each call goes to the
    running daemon (its /mcp on the control socket)."""
    socket = locations.socket_path(ctx.obj.get("socket"))
    if not socket.exists():
        raise click.ClickException(f"the skillfs daemon is not running (nothing answers at "
                                   f"{socket}); start it with: skillfs mount MOUNTPOINT")
    import trio

    from .mcp import stdio

    try:
        trio.run(stdio.serve, socket, spaces, read_only)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
