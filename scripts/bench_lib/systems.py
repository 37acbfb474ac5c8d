"""The systems under test, each able to serve a corpus at a path.

A system is mounted fresh for every cold measurement, so `mount()` must be
cheap to repeat and `unmount()` must leave nothing behind. Every mount is
registered with `cleanup` so that Ctrl-C or an error never leaves a FUSE
mount or a server process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from . import cleanup

REPO = Path(__file__).resolve().parents[2]
VENV_PY = REPO / ".venv" / "bin" / "python"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "skillfs-bench"
MOUNT_TIMEOUT = 300.0


class Unavailable(Exception):
    """The system cannot run on this machine or at this revision; says why."""


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_mounted(path: Path) -> bool:
    """From the mount table: os.path.ismount says False for a dead server's mount."""
    want = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            where = line.split()[1]
            if "\\" in where:
                where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), where)
            if where == want:
                return True
    return False


def force_unmount(path: Path) -> None:
    """Unmount whatever is at path; lazily if a plain unmount is refused."""
    if not is_mounted(path):
        return
    for cmd in (["fusermount3", "-u", str(path)], ["umount", str(path)],
                ["umount", "-l", str(path)]):
        if subprocess.run(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            return
    # A dead server leaves a mount whose ismount() still answers; -z detaches it.
    subprocess.run(["fusermount3", "-uz", str(path)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def _stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_mounted(path: Path, alive, deadline: float) -> None:
    while not os.path.ismount(path):
        if not alive():
            raise RuntimeError(f"server for {path} exited before the mount was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not mounted after {MOUNT_TIMEOUT:.0f} s")
        time.sleep(0.002)
    # Ready means answering: the first request waits for the server's INIT.
    os.listdir(path)


class System:
    name = "?"
    fuse = True

    def __init__(self, workdir: Path, logdir: Path) -> None:
        self.workdir = workdir
        self.logdir = logdir
        self.root: Path | None = None

    def check(self) -> None:
        """Raise Unavailable if this system cannot run."""

    def prepare(self, corpus) -> dict:
        """Once per corpus, before any mount; returns extra figures (e.g. import time)."""
        self.corpus = corpus
        return {}

    def mount(self) -> float | None:
        """Serve the corpus; return seconds until ready (None: nothing to mount)."""
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def pid(self) -> int | None:
        return None

    def finish(self) -> None:
        """After the last mount of a corpus: drop per-corpus state."""


class Native(System):
    name = "native"
    fuse = False

    def mount(self) -> None:
        self.root = self.corpus.root
        return None

    def unmount(self) -> None:
        self.root = None


class _Subprocess(System):
    """A FUSE server run in the foreground as `python SCRIPT SOURCE MOUNTPOINT`."""

    script: Path

    def __init__(self, workdir: Path, logdir: Path) -> None:
        super().__init__(workdir, logdir)
        self.proc: subprocess.Popen | None = None
        self.mnt = workdir / f"mnt-{self.name}"

    def mount(self) -> float:
        self.mnt.mkdir(parents=True, exist_ok=True)
        log = open(self.logdir / f"{self.name}-{self.corpus.n_files}.log", "ab")
        cleanup.push(self.unmount)
        t0 = time.perf_counter()
        # Own session: Ctrl-C reaches the harness only, which then unmounts in order.
        self.proc = subprocess.Popen(
            [str(VENV_PY), str(self.script), str(self.corpus.root), str(self.mnt)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        _wait_mounted(self.mnt, lambda: self.proc.poll() is None, time.monotonic() + MOUNT_TIMEOUT)
        self.root = self.mnt
        return time.perf_counter() - t0

    def unmount(self) -> None:
        force_unmount(self.mnt)  # the server then exits by itself
        if self.proc is not None:
            _stop_process(self.proc)
            self.proc = None
        # Interrupted before the server had mounted: it may have mounted
        # since, and been stopped with its mount left behind.
        force_unmount(self.mnt)
        self.root = None
        # Only now: an interrupt above leaves the undo step in place.
        cleanup.discard(self.unmount)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Floor(_Subprocess):
    name = "floor"
    script = Path(__file__).resolve().parent / "floorfs.py"


class Peer(_Subprocess):
    """pyfuse3's own passthrough example, from the sdist of the installed version."""

    name = "peer"

    def check(self) -> None:
        self.script = fetch_passthroughfs()


def fetch_passthroughfs() -> Path:
    version = subprocess.run(
        [str(VENV_PY), "-c", "import importlib.metadata as m; print(m.version('pyfuse3'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    target = CACHE / f"pyfuse3-{version}" / "examples" / "passthroughfs.py"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [str(VENV_PY), "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
         f"pyfuse3=={version}", "-d", str(CACHE)],
        capture_output=True, text=True,
    )
    sdist = CACHE / f"pyfuse3-{version}.tar.gz"
    if r.returncode != 0 or not sdist.exists():
        raise Unavailable(f"could not download the pyfuse3 {version} sdist: "
                          f"{r.stderr.strip()[-300:]}")
    member = f"pyfuse3-{version}/examples/passthroughfs.py"
    with tarfile.open(sdist) as tar:
        tar.extract(member, CACHE, filter="data")
    return target


class Skillfs(System):
    """The daemon, with the corpus imported into its store before the first mount.

    Driven only through its CLI and its control API, never by importing skillfs:
      skillfs import-tree SRC --db PATH        (offline bulk import, when the CLI has it)
      skillfs mount MOUNTPOINT --db PATH --spool DIR --learner off   (returns when ready)
      skillfs umount MOUNTPOINT
    The socket and the daemon's home (log, config) are set through SKILLFS_SOCKET and
    SKILLFS_HOME so that nothing of the user's own daemon is touched.
    Without import-tree, the corpus goes in through the control API (one space
    create per space, one skill ZIP per skill) on a daemon started for that.
    """

    name = "skillfs"

    def __init__(self, workdir: Path, logdir: Path) -> None:
        super().__init__(workdir, logdir)
        self.mnt = workdir / "mnt-skillfs"
        self.state: Path | None = None
        self.corpus = None
        self.commands: set[str] = set()

    def cli(self) -> list[str]:
        exe = REPO / ".venv" / "bin" / "skillfs"
        if exe.exists():
            return [str(exe)]
        # Not installed into the venv: run the package from the work tree.
        return [str(VENV_PY), "-m", "skillfs.cli"]

    def _env(self) -> dict:
        env = dict(os.environ)
        if self.state is not None:
            env["SKILLFS_HOME"] = str(self.state)
            env["SKILLFS_SOCKET"] = str(self.socket)
        # A model on loopback (the scripted one) must never go through an HTTP proxy.
        for k in ("NO_PROXY", "no_proxy"):
            env[k] = ",".join(x for x in (env.get(k), "127.0.0.1", "localhost") if x)
        return env

    def _run(self, *args: str, timeout: float = MOUNT_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.cli(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, env=self._env(),
        )

    def check(self) -> None:
        if not (REPO / "skillfs" / "cli.py").exists():
            raise Unavailable("skillfs/cli.py does not exist yet")
        try:
            r = self._run("--help", timeout=60)
        except subprocess.TimeoutExpired:
            raise Unavailable("`skillfs --help` did not answer in 60 s") from None
        if r.returncode != 0:
            raise Unavailable(f"`skillfs --help` failed: {(r.stderr or r.stdout).strip()[-300:]}")
        self.commands = {line.split()[0] for line in r.stdout.split("Commands:", 1)[-1].splitlines()
                         if line.strip()}
        missing = [c for c in ("mount", "umount") if c not in self.commands]
        if missing:
            raise Unavailable(f"the CLI has no {', '.join(missing)} command yet")
        if "import-tree" not in self.commands and "skill" not in self.commands:
            raise Unavailable("the CLI has neither `import-tree` nor `skill import`")

    @property
    def db(self) -> Path:
        return self.state / "skillfs.duckdb"

    @property
    def spool(self) -> Path:
        return self.state / "spool"

    @property
    def socket(self) -> Path:
        return self.state / "skillfs.sock"

    def prepare(self, corpus) -> dict:
        super().prepare(corpus)
        self.state = Path(tempfile.mkdtemp(prefix=f"skillfs-{corpus.n_files}-", dir=self.workdir))
        self.spool.mkdir()
        t0 = time.perf_counter()
        if "import-tree" in self.commands:
            how = "import-tree"
            r = self._run("import-tree", str(corpus.root), "--db", str(self.db), timeout=3600)
            self._log("import-tree", r)
            if r.returncode != 0:
                raise RuntimeError("skillfs import-tree failed: "
                                   f"{(r.stderr or r.stdout).strip()[-500:]}")
        else:
            how = "control API (no import-tree in the CLI yet)"
            self._import_through_api(corpus)
        took = time.perf_counter() - t0
        return {"import_s": took, "import_how": how, "db_mb": self.db_mb()}

    def _import_through_api(self, corpus) -> None:
        """On a daemon started for it: one space create per space, one skill ZIP a skill."""
        self.mount()
        try:
            _import_via_api(self, corpus)
        finally:
            self.unmount()

    def db_mb(self) -> float:
        """The database on disk: the DuckDB file and its log."""
        return sum(p.stat().st_size for p in (self.db, Path(f"{self.db}.wal"))
                   if p.exists()) / 1e6

    def _log(self, what: str, r: subprocess.CompletedProcess) -> None:
        with open(self.logdir / f"skillfs-{self.corpus.n_files}.log", "a") as f:
            f.write(f"$ skillfs {what} -> {r.returncode}\n{r.stdout}{r.stderr}\n")

    def mount(self, learner: str = "off", config: Path | None = None) -> float:
        """`config`: a TOML file for `--config` (the learning figures point the
        openai learner at the bench's scripted model with one)."""
        self.mnt.mkdir(parents=True, exist_ok=True)
        cleanup.push(self.unmount)
        t0 = time.perf_counter()
        # The learner is off by default: it would compete for the 2 CPUs with
        # the figures; its own overhead is a separate figure.
        extra = ["--config", str(config)] if config is not None else []
        r = self._run("mount", str(self.mnt), "--db", str(self.db), "--spool", str(self.spool),
                      "--learner", learner, *extra)
        self._log("mount", r)
        if r.returncode != 0:
            raise RuntimeError(f"skillfs mount failed: {(r.stderr or r.stdout).strip()[-500:]}")
        # The CLI returns when the mount is ready; check that it is answering.
        _wait_mounted(self.mnt, lambda: True, time.monotonic() + MOUNT_TIMEOUT)
        took = time.perf_counter() - t0
        self.root = self.mnt
        return took

    def unmount(self) -> None:
        pid = self.pid()
        if is_mounted(self.mnt):
            try:
                r = self._run("umount", str(self.mnt), timeout=60)
                self._log("umount", r)
            except subprocess.TimeoutExpired:
                pass
            force_unmount(self.mnt)
        # The daemon must be gone before the next mount opens the same database.
        deadline = time.monotonic() + 30
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.root = None
        cleanup.discard(self.unmount)

    def pid(self) -> int | None:
        from skillfs.daemon import daemon_pid

        pid = daemon_pid(self.mnt)
        if pid:
            return pid
        # Fallback: the detached daemon's arguments name this mountpoint.
        want = str(self.mnt).encode()
        me = os.getpid()
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if want in args and any(b"skillfs" in a for a in args):
                return int(d)
        return None

    def api(self):
        """An httpx client of the daemon's control API on its Unix socket."""
        import httpx

        # no TLS on a Unix socket: verify=False spares loading the CA bundle twice
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket), verify=False),
                            base_url="http://skillfs/skillfs/v1", timeout=60, verify=False)

    def finish(self) -> None:
        if self.state is not None:
            # Keep the daemon's own log beside the bench logs.
            log = self.state / "skillfs.log"
            if log.exists():
                shutil.copy(log, self.logdir / f"skillfs-{self.corpus.n_files}-daemon.log")
            shutil.rmtree(self.state, ignore_errors=True)
            self.state = None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _import_via_api(system: Skillfs, corpus) -> None:
    import io
    import zipfile

    by_skill: dict[tuple[str, str], list[str]] = {}
    for rel in corpus.files:
        space, skill, rest = rel.split("/", 2)
        by_skill.setdefault((space, skill), []).append(rest)
    with system.api() as api:
        for space in corpus.spaces:
            api.post("/spaces", json={"name": space}).raise_for_status()
        for (space, skill), files in by_skill.items():
            buf = io.BytesIO()
            # Stored, not deflated: the figure is the store's import, not zlib.
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for rest in files:
                    zf.write(corpus.root / space / skill / rest, f"{skill}/{rest}")
            r = api.post("/skills/import", params={"space": space}, content=buf.getvalue(),
                         headers={"Content-Type": "application/zip"})
            if r.status_code >= 400:
                raise RuntimeError(f"import of {space}/{skill} failed: "
                                   f"HTTP {r.status_code} {r.text[:300]}")


class SkillfsPostgres(Skillfs):
    """The same daemon on PostgreSQL (`--db postgresql://…`): one cluster of the bench's
    own for the run (scripts/pg_cluster.py, with PostgreSQL's durable defaults: every
    commit synced, as DuckDB's are), a fresh database per corpus. The corpus goes in through
    the control API: import-tree writes DuckDB files only."""

    name = "skillfs-pg"

    def __init__(self, workdir: Path, logdir: Path) -> None:
        super().__init__(workdir, logdir)
        self.mnt = workdir / "mnt-skillfs-pg"
        self.server = None
        self.url = ""

    def check(self) -> None:
        super().check()
        try:
            import pg_cluster

            pg_cluster.bin_dir()
        except (ImportError, RuntimeError) as e:
            raise Unavailable(f"no PostgreSQL here: {e}") from None

    @property
    def db(self) -> str:  # type: ignore[override]
        return self.url

    def db_mb(self) -> float:
        return self.server.size_mb(self.url) if self.server is not None else 0.0

    def _start_server(self) -> None:
        import pg_cluster

        # Not below the bench's work folder: the server runs as another user when the
        # bench runs as root, and must reach its folder; a short path keeps the socket's
        # within its 107 bytes.
        root = Path(tempfile.mkdtemp(prefix="skillfs-bench-pg-"))
        self.server = pg_cluster.PgServer(root, durable=True)
        cleanup.push(lambda: shutil.rmtree(root, ignore_errors=True))
        self.server.start()
        cleanup.push(self.server.stop)

    def prepare(self, corpus) -> dict:
        System.prepare(self, corpus)
        if self.server is None:
            self._start_server()
        self.state = Path(tempfile.mkdtemp(prefix=f"skillfs-pg-{corpus.n_files}-",
                                           dir=self.workdir))
        self.spool.mkdir()
        self.url = self.server.fresh_database()
        t0 = time.perf_counter()
        self._import_through_api(corpus)
        took = time.perf_counter() - t0
        return {"import_s": took, "import_how": "control API", "db_mb": self.db_mb()}


ALL = {"native": Native, "floor": Floor, "peer": Peer, "skillfs": Skillfs,
       "skillfs-pg": SkillfsPostgres}
