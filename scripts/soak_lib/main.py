"""scripts/soak: sustained load on one daemon through the spool, the mount and the API, with
the rules learner on, printing RSS, database size, backlog and errors as it goes.

Every message sent carries a unique marker; at the end every marker must be stored exactly
once (none lost, none duplicated), every line appended through the mount must be in its file,
and the daemon must still be the process that started. The exit status says whether all held.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SKILLFS = str(Path(sys.executable).with_name("skillfs"))
SPACES = ("soak-a", "soak-b")
FILES_PER_SESSION = 20


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long to load (default 5)")
    p.add_argument("--report-every", type=float, default=5.0, help="seconds between lines")
    p.add_argument("--writers", type=int, default=4, help="processes appending through the mount")
    p.add_argument("--spool-rate", type=float, default=40.0,
                   help="spool files a second (3 messages each; default 40)")
    p.add_argument("--pace", type=float, default=0.0,
                   help="at most this many operations a second for each mount writer, the "
                        "mount reader and the API load (default: as fast as they go)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    return p.parse_args(argv)


class Pacer:
    """Keeps a load thread at `rate` operations a second (0: no limit)."""

    def __init__(self, rate: float):
        self.step = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if self.step:
            self.next = max(self.next + self.step, time.monotonic() - 1.0)
            time.sleep(max(0.0, self.next - time.monotonic()))


@dataclass
class Tally:
    """What the load sent and what went wrong, shared by the load threads."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    markers: list[str] = field(default_factory=list)
    spool_files: int = 0
    api_messages: int = 0
    reads: int = 0
    errors: Counter = field(default_factory=Counter)
    samples: list[dict] = field(default_factory=list)

    def sent(self, markers: list[str]) -> None:
        with self.lock:
            self.markers.extend(markers)

    def error(self, kind: str, detail: object) -> None:
        with self.lock:
            if self.errors[kind] < 3:
                print(f"  error {kind}: {detail}", file=sys.stderr)
            self.errors[kind] += 1


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="skillfs-soak-"))
        self.home, self.mnt = self.root / "home", self.root / "mnt"
        self.mnt.mkdir()
        self.env = {**os.environ, "SKILLFS_HOME": str(self.home)}
        for var in ("OPENAI_API_KEY", "SKILLFS_CONFIG", "SKILLFS_SOCKET"):
            self.env.pop(var, None)
        self.tally = Tally()
        self.stop = threading.Event()
        self.pid = 0

    # -- the daemon ------------------------------------------------------------------------

    def start(self) -> None:
        r = subprocess.run([SKILLFS, "mount", str(self.mnt), "--learner", "rules"],
                           env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode:
            sys.exit(f"soak: the daemon did not start: {r.stderr}")
        self.pid = self.status()["pid"]
        for space in SPACES:
            os.mkdir(self.mnt / space)

    def http(self) -> httpx.Client:
        # no TLS on a Unix socket: verify=False spares loading the CA bundle twice
        socket = str(self.home / "skillfs.sock")
        return httpx.Client(transport=httpx.HTTPTransport(uds=socket, verify=False),
                            base_url="http://skillfs", timeout=60, verify=False)

    def status(self) -> dict:
        with self.http() as c:
            return c.get("/skillfs/v1/status").raise_for_status().json()

    def alive(self) -> bool:
        return self.pid > 0 and Path(f"/proc/{self.pid}").exists()

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    # -- the load --------------------------------------------------------------------------

    def spool_load(self) -> None:
        """Sessions of FILES_PER_SESSION files of 3 messages, the last one ending it."""
        spool, n, session = self.home / "spool", 0, 0
        while not self.stop.is_set():
            space = SPACES[session % len(SPACES)]
            folder = spool / space / f"spool-{session}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(FILES_PER_SESSION):
                if self.stop.is_set():
                    break
                markers = [f"soak-s{n}-{k}" for k in range(2)]
                lines = [{"role": "user",
                          "content": f"Deploy service {n} to staging ({markers[0]})"},
                         {"role": "assistant",
                          "content": f"Deployed service {n}; health checks pass ({markers[1]})."},
                         {"event": "end"} if i == FILES_PER_SESSION - 1 else {"event": "flush"}]
                tmp = folder / f".{i:04d}.jsonl"
                tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
                os.rename(tmp, folder / f"{i:04d}.jsonl")
                self.tally.sent(markers)
                with self.tally.lock:
                    self.tally.spool_files += 1
                n += 1
                time.sleep(1.0 / self.args.spool_rate)
            session += 1

    def api_load(self) -> None:
        """Acontext API sessions with messages, and reads of spaces and files."""
        n, pacer = 0, Pacer(self.args.pace)
        with self.http() as c:
            while not self.stop.is_set():
                try:
                    sid = c.post("/api/v1/session", json={}).raise_for_status().json()["data"]["id"]
                    for _ in range(10):
                        pacer.wait()
                        marker = f"soak-a{n}"
                        r = c.post(f"/api/v1/session/{sid}/messages", json={
                            "format": "openai",
                            "blob": {"role": "user", "content": f"note {marker}"}})
                        if r.status_code != 201:
                            self.tally.error("api-status", f"{r.status_code} {r.text[:200]}")
                            continue
                        self.tally.sent([marker])
                        with self.tally.lock:
                            self.tally.api_messages += 1
                        n += 1
                    c.get("/api/v1/learning_spaces").raise_for_status()
                    c.get("/skillfs/v1/files", params={
                        "path": f"{SPACES[0]}/daily-logs/SKILL.md"}).raise_for_status()
                except httpx.HTTPError as e:
                    self.tally.error("api", e)
                    time.sleep(0.2)

    def mount_writer(self, w: int) -> None:
        """Appends numbered lines with O_APPEND, one open per line, as a logger would."""
        path = self.mnt / SPACES[w % 2] / "user-general-facts" / f"soak-append-{w % 2}.md"
        i, pacer = 0, Pacer(self.args.pace)
        while not self.stop.is_set():
            pacer.wait()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"writer {w} line {i}\n".encode())
                finally:
                    os.close(fd)
                i += 1
            except OSError as e:
                self.tally.error("mount-write", e)
                time.sleep(0.2)
        with self.tally.lock:
            self.tally.samples.append({"writer": w, "lines": i, "path": str(path)})

    def mount_reader(self) -> None:
        rng, pacer = random.Random(1), Pacer(self.args.pace)
        while not self.stop.is_set():
            try:
                space = self.mnt / rng.choice(SPACES)
                for skill in os.listdir(space):
                    for name in os.listdir(space / skill):
                        pacer.wait()
                        (space / skill / name).read_bytes()
                        with self.tally.lock:
                            self.tally.reads += 1
            except FileNotFoundError:
                pass  # a file went away between listing and reading: fine
            except OSError as e:
                self.tally.error("mount-read", e)
                time.sleep(0.2)

    # -- running and checking --------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        self.start()
        threads = [threading.Thread(target=self.spool_load), threading.Thread(target=self.api_load),
                   threading.Thread(target=self.mount_reader)]
        threads += [threading.Thread(target=self.mount_writer, args=(w,)) for w in range(a.writers)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        print(f"soak: {a.minutes:g} min, daemon pid {self.pid}, data in {self.home}")
        print(f"{'t (s)':>6} {'RSS MB':>7} {'DB MB':>7} {'spool':>6} {'waiting':>7} "
              f"{'api':>6} {'reads':>7} {'errors':>6}")
        try:
            while time.monotonic() < end and self.alive():
                time.sleep(min(a.report_every, max(0.0, end - time.monotonic())))
                self.report(time.monotonic() - t0)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=60)
        return self.check(time.monotonic() - t0)

    def db_mb(self) -> float:
        db = self.home / "skillfs.duckdb"
        return sum(p.stat().st_size for p in (db, Path(f"{db}.wal")) if p.exists()) / 2**20

    def report(self, t: float) -> None:
        backlog = str(self.waiting())
        t_ = self.tally
        sample = {"t": round(t, 1), "rss_mb": round(self.rss_mb(), 1),
                  "db_mb": round(self.db_mb(), 1)}
        print(f"{sample['t']:>6} {sample['rss_mb']:>7} {sample['db_mb']:>7} {t_.spool_files:>6} "
              f"{backlog:>7} {t_.api_messages:>6} {t_.reads:>7} {sum(t_.errors.values()):>6}",
              flush=True)
        with t_.lock:
            t_.samples.append(sample)

    def waiting(self) -> int:
        """Spool files not taken yet (the daemon's backlog counts only those it has seen)."""
        return sum(1 for p in (self.home / "spool").rglob("*")
                   if p.suffix in (".jsonl", ".json") and ".rejected" not in p.parts)

    def drain(self, stall: float = 60.0, limit: float = 600.0) -> bool:
        """Wait until the spool is empty; give up when it stops shrinking for `stall` s."""
        deadline = time.monotonic() + limit
        best, since = self.waiting(), time.monotonic()
        while time.monotonic() < deadline and self.alive():
            left = self.waiting()
            if left == 0:
                return True
            if left < best:
                best, since = left, time.monotonic()
            elif time.monotonic() - since > stall:
                return False
            time.sleep(0.5)
        return False

    def stored_markers(self) -> Counter:
        found: Counter = Counter()
        with self.http() as c:
            for s in c.get("/skillfs/v1/sessions").raise_for_status().json():
                for m in c.get(f"/skillfs/v1/sessions/{s['id']}").raise_for_status().json()[
                        "messages"]:
                    for word in m["text"].replace("(", " ").replace(")", " ").split():
                        if word.startswith("soak-"):
                            found[word.rstrip(".")] += 1
        return found

    def lost_lines(self) -> int:
        lost = 0
        for s in (x for x in self.tally.samples if "writer" in x):
            text = Path(s["path"]).read_text()
            have = set(text.splitlines())
            lost += sum(1 for i in range(s["lines"])
                        if f"writer {s['writer']} line {i}" not in have)
        return lost

    def check(self, seconds: float) -> dict:
        t0 = time.monotonic()
        drained = self.drain()
        print(f"soak: load stopped; the spool {'drained' if drained else 'did NOT drain'} "
              f"in {time.monotonic() - t0:.1f} s", flush=True)
        crashed = not self.alive()
        sent = Counter(self.tally.markers)
        stored = Counter() if crashed else self.stored_markers()
        lost = sum(1 for m in sent if stored[m] == 0)  # after draining: never stored
        duplicated = sum(1 for m in sent if stored[m] > 1)
        lost_lines = 0 if crashed else self.lost_lines()
        learning = Counter()
        rejected = 0
        if not crashed:
            with self.http() as c:
                for row in c.get("/skillfs/v1/learning").raise_for_status().json():
                    learning[row["status"]] += 1
            rejected = sum(1 for p in (self.home / "spool" / ".rejected").glob("*")
                           if not p.name.endswith(".error.json"))
        summary = {
            "seconds": round(seconds, 1), "crashed": crashed, "drained": drained,
            "spool_files": self.tally.spool_files, "api_messages": self.tally.api_messages,
            "messages_sent": len(sent), "lost": lost, "duplicated": duplicated,
            "lost_lines": lost_lines, "rejected_files": rejected, "reads": self.tally.reads,
            "errors": dict(self.tally.errors), "learning": dict(learning),
            "rss_mb": round(self.rss_mb(), 1), "db_mb": round(self.db_mb(), 1),
            "peak_rss_mb": max((s.get("rss_mb", 0) for s in self.tally.samples), default=0),
        }
        summary["ok"] = (not crashed and drained and lost == 0 and duplicated == 0
                         and lost_lines == 0 and rejected == 0 and not self.tally.errors)
        return summary

    def cleanup(self) -> None:
        if self.alive():
            subprocess.run([SKILLFS, "umount", str(self.mnt)], env=self.env,
                           capture_output=True, timeout=60)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    soak = Soak(args)
    try:
        summary = soak.run()
    finally:
        soak.cleanup()
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print("soak: " + ("ok" if summary["ok"] else "FAILED"))
    return 0 if summary["ok"] else 1
