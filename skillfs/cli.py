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
from pathlib import Path

import click
import httpx

from . import config as configmod


class DaemonClient:
    def __init__(self, socket: Path, timeout: float = 60.0):
        self.socket = socket
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)),
                                 base_url="http://skillfs", timeout=timeout)

    def request(self, method: str, path: str, **kw):
        try:
            r = self.http.request(method, "/skillfs/v1" + path, **kw)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError):
            raise click.ClickException(
                f"the skillfs daemon is not running (nothing answers at {self.socket}); "
                "start it with: skillfs mount MOUNTPOINT") from None
        except httpx.TimeoutException:
            raise click.ClickException("the skillfs daemon did not answer in time") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error") or r.json().get("detail") or r.text
            except ValueError:
                msg = r.text
            raise click.ClickException(f"{msg} (HTTP {r.status_code})")
        return r


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient(configmod.socket_path(ctx.obj.get("socket")))


def _emit(data, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render(data)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar="SKILLFS_SOCKET", help="The daemon's control socket.")
@click.version_option(package_name="skillfs")
@click.pass_context
def main(ctx: click.Context, socket: str | None) -> None:
    """skillfs: agent skill memory as plain files."""
    ctx.ensure_object(dict)
    ctx.obj["socket"] = socket


# -- mount / umount ------------------------------------------------------------------------


@main.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="DuckDB file.")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), help="Spool dir.")
@click.option("--socket", "socket_opt", type=click.Path(dir_okay=False, path_type=Path),
              help="Control socket (default under the data directory).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML config file (default $SKILLFS_HOME/config.toml).")
@click.option("--foreground", is_flag=True, help="Stay attached and log to stderr.")
@click.option("--listen", help="Also serve the HTTP API on 127.0.0.1:PORT (bearer token).")
@click.option("--token", "tokens", multiple=True, help="Bearer token accepted on --listen.")
@click.option("--learner", type=click.Choice(["openai", "rules", "off"]), help="Learner.")
@click.option("--model", help="Model name for the openai learner.")
@click.option("--max-file-size", type=int, help="Largest file in bytes (default 1 MiB).")
@click.option("--debug", is_flag=True, help="Verbose logging.")
@click.option("--ready-fd", type=int, hidden=True)
@click.pass_context
def mount(ctx, mountpoint, db, spool, socket_opt, config_file, foreground, listen, tokens,
          learner, model, max_file_size, debug, ready_fd):
    """Start the daemon and mount every learning space at MOUNTPOINT."""
    tokens = list(tokens) or None
    if tokens is None and os.environ.get("SKILLFS_TOKEN"):
        tokens = [os.environ["SKILLFS_TOKEN"]]
    cfg = configmod.load(config_file, db=db, spool=spool,
                         socket=socket_opt or ctx.obj.get("socket"),
                         listen=listen, tokens=tokens, max_file_size=max_file_size,
                         learner_backend=learner, learner_model=model)
    if cfg.listen and not cfg.tokens:
        raise click.ClickException("--listen needs at least one --token (or SKILLFS_TOKEN)")
    if not foreground:
        _detach(ctx, cfg)
        return
    _run_foreground(cfg, mountpoint, debug, ready_fd)


def _detach(ctx: click.Context, cfg) -> None:
    """Re-run ourselves in the foreground in a new session; return once it is ready."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    args = [a for a in sys.argv[1:]]
    cmd = [sys.executable, "-m", "skillfs.cli", *args, "--foreground",
           "--ready-fd", str(write_fd)]
    with open(cfg.log_file, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        msg = r.read().decode(errors="replace").strip()
    if msg == "ready":
        click.echo(f"skillfs mounted (pid {proc.pid}); log: {cfg.log_file}")
        return
    proc.wait(timeout=10)
    raise click.ClickException(msg.removeprefix("error: ") or
                               f"the daemon exited with {proc.returncode}; see {cfg.log_file}")


def _run_foreground(cfg, mountpoint: Path, debug: bool, ready_fd: int | None) -> None:
    import trio

    from .daemon import Daemon, StartupError

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "watchfiles", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def say(text: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            os.write(ready_fd, text.encode())
            os.close(ready_fd)
            ready_fd = None

    daemon = Daemon(cfg, mountpoint)
    try:
        daemon.prepare()
        trio.run(daemon.run, lambda: say("ready"))
    except StartupError as e:
        say(f"error: {e.message}")
        raise click.ClickException(e.message) from None
    except BaseException as e:
        say(f"error: {type(e).__name__}: {e}")
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
    from .daemon import daemon_pid, mount_state, unmount

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
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True))
def import_tree(src: Path, db, config_file):
    """Bulk-import a folder laid out like the mount (SPACE/SKILL/...) while no daemon runs."""
    from .daemon import DbLock, StartupError
    from .errors import SkillfsError
    from .store import Store

    cfg = configmod.load(config_file, db=db)
    cfg.db.parent.mkdir(parents=True, exist_ok=True)
    lock = DbLock(cfg.db)
    try:
        lock.acquire()
        # a bulk load wants DuckDB's default memory; the daemon's limit is for serving
        store = Store(str(cfg.db), max_file_size=cfg.max_file_size, duckdb_memory=None)
        t0 = time.monotonic()
        counts = store.import_tree(str(src))
        store.close()
    except (StartupError, SkillfsError) as e:
        raise click.ClickException(e.message) from None
    finally:
        lock.release()
    click.echo(f"imported {counts['spaces']} spaces, {counts['skills']} skills, "
               f"{counts['files']} files ({counts['bytes'] / 1e6:.1f} MB) into {cfg.db} "
               f"in {time.monotonic() - t0:.1f} s")


# -- status --------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, as_json):
    """Counts, spool backlog, mount point and database size."""
    data = _client(ctx).request("GET", "/status").json()

    def render(d):
        c = d["counts"]
        click.echo(f"mounted at   {d['mountpoint']} (pid {d['pid']}, up {d['uptime_s']:.0f} s)")
        click.echo(f"database     {d['db']} ({d['db_bytes'] / 1e6:.1f} MB)")
        health = d.get("database") or {}
        if health and not health["healthy"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(health["since"]))
            click.echo(f"             UNHEALTHY since {since}: {health['reason']}"
                       + (" (reopening)" if health["invalidated"] else ""))
        click.echo(f"spool        {d['spool']} ({d['spool_backlog']} files waiting)")
        click.echo(f"learner      {d['learner']}")
        click.echo(f"spaces {c['spaces']}, skills {c['skills']}, files {c['files']} "
                   f"({c.get('file_versions', '?')} versions), sessions "
                   f"{c.get('sessions', '?')}, messages {c.get('messages', '?')}, "
                   f"tasks {c.get('tasks', '?')}")
    _emit(data, as_json, render)


# -- spaces --------------------------------------------------------------------------------


@main.group()
def space():
    """Learning spaces."""


@space.command("create")
@click.argument("name")
@click.option("--user")
@click.option("--meta", help="JSON object.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def space_create(ctx, name, user, meta, as_json):
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
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def space_list(ctx, as_json):
    data = _client(ctx).request("GET", "/spaces").json()

    def render(rows):
        for s in rows:
            user = f"  user={s['user']}" if s["user"] else ""
            click.echo(f"{s['name']}\t{s['id']}\t{len(s['skills'])} skills{user}")
    _emit(data, as_json, render)


@space.command("delete")
@click.argument("name")
@click.pass_context
def space_delete(ctx, name):
    """Delete a space (its skills and sessions stay)."""
    _client(ctx).request("DELETE", f"/spaces/{name}")
    click.echo(f"deleted space {name}")


# -- skills --------------------------------------------------------------------------------


@main.group()
def skill():
    """Skills."""


@skill.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--space", "space_name", required=True)
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--space", "space_name", required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
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
@click.option("--space", "space_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def session_list(ctx, space_name, as_json):
    params = {"space": space_name} if space_name else {}
    data = _client(ctx).request("GET", "/sessions", params=params).json()

    def render(rows):
        for s in rows:
            ended = "\tended" if s["ended"] else ""
            click.echo(f"{s['id']}\t{s['name'] or '-'}\t{s['learning_status'] or '-'}{ended}")
    _emit(data, as_json, render)


@session.command("show")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def session_show(ctx, session_id, as_json):
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
@click.argument("session_id")
@click.pass_context
def session_flush(ctx, session_id):
    """Learn from a session now instead of waiting for more messages."""
    _client(ctx).request("POST", f"/sessions/{session_id}/flush")
    click.echo(f"flushed {session_id}")


# -- learning ------------------------------------------------------------------------------


@main.group()
def learn():
    """Learning status, waiting and retries."""


def _learning_line(r) -> str:
    err = f"  error: {r['error']}" if r.get("error") else ""
    return f"{r['session_id']}\t{r['status']}{err}"


@learn.command("status")
@click.argument("session_id", required=False)
@click.option("--space", "space_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def learn_status(ctx, session_id, space_name, as_json):
    """Learning status of one session, or of all (of a space)."""
    params = {k: v for k, v in (("session", session_id), ("space", space_name)) if v}
    rows = _client(ctx).request("GET", "/learning", params=params).json()
    _emit(rows, as_json, lambda rows: [click.echo(_learning_line(r)) for r in rows])


@learn.command("wait")
@click.argument("session_id")
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def learn_wait(ctx, session_id, timeout, as_json):
    """Wait until a session's learning completed or failed (exit 1 if failed or timed out)."""
    client = DaemonClient(configmod.socket_path(ctx.obj.get("socket")), timeout=timeout + 30)
    row = client.request("POST", f"/learning/{session_id}/wait",
                         params={"timeout": timeout}).json()
    _emit(row, as_json, lambda r: click.echo(_learning_line(r)))
    if row["status"] != "completed":
        if row.get("timed_out"):
            click.echo(f"timed out after {timeout:g} s", err=True)
        ctx.exit(1)


@learn.command("retry")
@click.argument("session_id")
@click.pass_context
def learn_retry(ctx, session_id):
    """Learn a failed session again from its stored messages."""
    row = _client(ctx).request("POST", f"/learning/{session_id}/retry").json()
    click.echo(_learning_line(row))


# -- history -------------------------------------------------------------------------------


def _mount_relative(ctx, path: str) -> str:
    """Turn a path under the mount (or SPACE/SKILL/FILE) into SPACE/SKILL/FILE."""
    status = _client(ctx).request("GET", "/status").json()
    mnt = Path(status["mountpoint"])
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(mnt))
    except ValueError:
        if os.path.isabs(path):
            raise click.ClickException(f"{path} is not under the mount {mnt}") from None
        return path


@main.command("log")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def log_cmd(ctx, path, as_json):
    """Versions of a file under the mount."""
    rel = _mount_relative(ctx, path)
    rows = _client(ctx).request("GET", "/files/log", params={"path": rel}).json()

    def render(rows):
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            what = "deleted" if r["deleted"] else f"{r['size']} bytes"
            extra = f" session={r['session_id']}" if r["session_id"] else ""
            click.echo(f"v{r['version']:<4} {when}  {r['author']:<8} {what:<14} "
                       f"{r['path']}  {r['reason'] or ''}{extra}")
    _emit(rows, as_json, render)


@main.command()
@click.argument("path")
@click.argument("version", type=int)
@click.pass_context
def revert(ctx, path, version):
    """Make VERSION of a file current again (as a new version)."""
    rel = _mount_relative(ctx, path)
    out = _client(ctx).request("POST", "/files/revert", json={"path": rel, "version": version})
    click.echo(f"{path}: version {version} is current again as version {out.json()['version']}")


if __name__ == "__main__":
    main()
