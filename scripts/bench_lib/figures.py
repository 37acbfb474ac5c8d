"""The figures measured for every system at every corpus size.

Each elapsed-time figure is the median of several runs of a real command
(`grep`, `find`, `ls`) as a user would type it, under LC_ALL=C. Latency
figures pool their samples and report p50/p99. Outputs of grep and find are
checked against the corpus, so a fast but wrong filesystem cannot pass.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import NEEDLE
from .systems import System, rss_kb

ENV = {**os.environ, "LC_ALL": "C"}

# key: (label, unit, compared with native)
FIGURES: dict[str, tuple[str, str, bool]] = {
    "grep_space_cold": ("grep -rl, one space, cold", "s", True),
    "grep_space_warm": ("grep -rl, one space, warm", "s", True),
    "grep_all_cold": ("grep -rl, whole mount, cold", "s", True),
    "grep_all_warm": ("grep -rl, whole mount, warm", "s", True),
    "find_warm": ("find, warm", "s", True),
    "ls_lR_warm": ("ls -lR, warm", "s", True),
    "cat_p50": ("cat one file p50 (spawn incl.)", "µs", True),
    "cat_p99": ("cat one file p99 (spawn incl.)", "µs", True),
    "orc_p50": ("open+read+close p50, warm", "µs", True),
    "orc_p99": ("open+read+close p99, warm", "µs", True),
    "orc_cold_p50": ("open+read+close p50, cold", "µs", True),
    "orc_cold_p99": ("open+read+close p99, cold", "µs", True),
    "mount_ready": ("time to mount ready", "s", False),
    "rss": ("RSS of the serving process", "MB", False),
    "import": ("import of the tree into the store", "s", False),
    "db_size": ("store file size", "MB", False),
}


@dataclass
class Settings:
    runs: int
    budget: float  # seconds per figure after which no further run starts
    cat_samples: int
    orc_passes: int
    orc_files: int
    drop_caches: bool = True
    # Daemon-only figures (daemon_figures.py).
    daemon_sizes: str = "all"  # "all" corpus sizes, "first" only, or "none"
    spool_msgs: int = 20_000
    spool_one_msg_files: int = 2000
    spool_singles: int = 50
    edit_runs: int = 100
    learn_runs: int = 10
    learn_model_runs: int = 20
    warnings: list[str] = field(default_factory=list)


def drop_caches(s: Settings) -> bool:
    if not s.drop_caches:
        return False
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        s.drop_caches = False
        s.warnings.append(f"could not drop caches ({e}); cold figures are only fresh-mount cold")
        return False


def timed(cmd: list[str], out: Path) -> float:
    with open(out, "wb") as f:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env=ENV, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - t0
    # grep exits 1 when nothing matched: a valid answer, checked separately.
    if r.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return took


def relative(out: Path, root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    lines = out.read_text().splitlines()
    return sorted(line[len(prefix):] if line.startswith(prefix) else line
                  for line in lines if line != str(root))


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Runner:
    """Measures one system on one corpus; results go into self.fig."""

    def __init__(self, system: System, corpus, s: Settings, scratch: Path) -> None:
        self.sys = system
        self.c = corpus
        self.s = s
        self.scratch = scratch
        self.fig: dict[str, dict] = {}
        self.checks: list[str] = []
        self.mount_samples: list[float] = []
        self.extra_entries = 0
        rng = random.Random(f"skillfs-bench-pick:{corpus.seed}:{corpus.n_files}")
        # The grep space is the second space, so cold-read samples drawn from
        # the other spaces are untouched by it.
        self.space = corpus.spaces[1 % len(corpus.spaces)]
        others = [f for f in corpus.files if not f.startswith(self.space + "/")] or corpus.files
        self.cold_sample = rng.sample(others, min(s.orc_files, len(others)))
        space_files = corpus.space_files(self.space)
        self.warm_sample = rng.sample(space_files, min(s.orc_files, len(space_files)))
        self.cat_file = corpus.files[len(corpus.files) // 2]

    # -- helpers -------------------------------------------------------------

    def put(self, key: str, samples: list[float], value: float | None = None) -> None:
        self.fig[key] = {
            "value": statistics.median(samples) if value is None else value,
            "runs": len(samples),
            "samples": [round(x, 6) for x in samples] if len(samples) <= 20 else None,
        }

    def mount(self) -> None:
        t = self.sys.mount()
        if t is not None:
            self.mount_samples.append(t)

    def repeat(self, fn) -> list[float]:
        """Run fn up to `runs` times; stop early once the figure's budget is spent."""
        out: list[float] = []
        spent = 0.0
        for _ in range(self.s.runs):
            x = fn()
            out.append(x)
            spent += x
            if spent >= self.s.budget:
                break
        return out

    def check(self, what: str, got: list[str], want: list[str]) -> None:
        if got != want:
            missing = sorted(set(want) - set(got))[:3]
            extra = sorted(set(got) - set(want))[:3]
            self.checks.append(f"{what}: {len(got)} lines, want {len(want)}; "
                               f"missing {missing} extra {extra}")

    def grep(self, where: Path, want: list[str], what: str) -> float:
        out = self.scratch / "grep.out"
        took = timed(["grep", "-rl", NEEDLE, str(where)], out)
        self.check(what, relative(out, self.sys.root), want)
        return took

    def orc(self, files: list[str]) -> list[float]:
        root = str(self.sys.root)
        samples = []
        clock = time.perf_counter_ns
        for rel in files:
            p = f"{root}/{rel}"
            t0 = clock()
            fd = os.open(p, os.O_RDONLY)
            while os.read(fd, 65536):
                pass
            os.close(fd)
            samples.append((clock() - t0) / 1000)
        return samples

    # -- the figures -----------------------------------------------------------

    def run(self) -> dict:
        c, sysm = self.c, self.sys
        space_want = [f for f in c.needle_files if f.startswith(self.space + "/")]
        space_dir = lambda: sysm.root / self.space  # noqa: E731

        # Cold, one space: fresh mount, dropped caches. The same mount then
        # gives the cold open+read+close sample from the other spaces.
        cold_orc: list[float] = []

        def cold_space() -> float:
            self.mount()
            try:
                drop_caches(self.s)
                took = self.grep(space_dir(), space_want, "grep space cold")
                if not cold_orc:
                    cold_orc.extend(self.orc(self.cold_sample))
                return took
            finally:
                sysm.unmount()

        self.put("grep_space_cold", self.repeat(cold_space))
        self.put("orc_cold_p50", cold_orc, pct(cold_orc, 0.50))
        self.put("orc_cold_p99", cold_orc, pct(cold_orc, 0.99))

        # Cold, whole mount. The last mount stays up for the warm figures.
        def cold_all() -> float:
            if sysm.root is not None:
                sysm.unmount()
            self.mount()
            drop_caches(self.s)
            return self.grep(sysm.root, c.needle_files, "grep all cold")

        self.put("grep_all_cold", self.repeat(cold_all))
        try:
            # Everything has been read once by the cold grep above: warm from here.
            self.put("grep_all_warm", self.repeat(
                lambda: self.grep(sysm.root, c.needle_files, "grep all warm")))
            self.put("grep_space_warm", self.repeat(
                lambda: self.grep(space_dir(), space_want, "grep space warm")))

            out = self.scratch / "find.out"
            want_find = sorted(_all_paths(c.files))

            skill_of = lambda p: "/".join(p.split("/", 2)[:2])  # noqa: E731
            owned = {skill_of(f) for f in c.files}

            def find() -> float:
                took = timed(["find", str(sysm.root)], out)
                got = relative(out, sysm.root)
                # Skills the system adds by itself (a space's defaults) are
                # not the corpus: count them, check the rest exactly.
                mine = [p for p in got if "/" not in p or skill_of(p) in owned]
                self.extra_entries = len(got) - len(mine)
                self.check("find", mine, want_find)
                return took

            self.put("find_warm", self.repeat(find))
            self.put("ls_lR_warm", self.repeat(
                lambda: timed(["ls", "-lR", str(sysm.root)], self.scratch / "ls.out")))

            cat = ["cat", str(sysm.root / self.cat_file)]
            for _ in range(10):
                subprocess.run(cat, stdout=subprocess.DEVNULL, env=ENV)
            cats = []
            for _ in range(self.s.cat_samples):
                t0 = time.perf_counter_ns()
                subprocess.run(cat, stdout=subprocess.DEVNULL, env=ENV)
                cats.append((time.perf_counter_ns() - t0) / 1000)
            self.put("cat_p50", cats, pct(cats, 0.50))
            self.put("cat_p99", cats, pct(cats, 0.99))

            self.orc(self.warm_sample)  # warm-up pass
            orcs: list[float] = []
            for _ in range(self.s.orc_passes):
                orcs.extend(self.orc(self.warm_sample))
            self.put("orc_p50", orcs, pct(orcs, 0.50))
            self.put("orc_p99", orcs, pct(orcs, 0.99))

            for rel in self.warm_sample:
                if (sysm.root / rel).read_bytes() != (c.root / rel).read_bytes():
                    self.checks.append(f"content of {rel} differs from the corpus")
                    break

            kb = rss_kb(sysm.pid())
            if kb is not None:
                self.put("rss", [kb / 1024])
        finally:
            sysm.unmount()
        if self.mount_samples:
            self.put("mount_ready", self.mount_samples)
        return self.fig


def _all_paths(files: list[str]) -> set[str]:
    paths = set(files)
    for f in files:
        parts = f.split("/")
        for i in range(1, len(parts)):
            paths.add("/".join(parts[:i]))
    return paths
