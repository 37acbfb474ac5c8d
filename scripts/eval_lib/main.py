"""scripts/eval: score a learner on the scenarios in tests/scenarios.

One real daemon (`skillfs mount … --learner rules`, or `--learner openai` against any
OpenAI-compatible endpoint) learns every scenario in its own space, several at once. Each
scenario's sessions go through the spool (a temp name, then a rename), in order, each waited
for as `skillfs learn wait` does (the daemon's wait call); the space is then read through the
mount and scored. The table has one row per scenario and totals per category (tasks,
outcomes, facts, safety); with a model, the calls and tokens per learned task, counted from
the endpoint's `usage`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import httpx

from .scenarios import CATEGORIES, Check, Scenario, entries, load, read_space, score
from .usage import UsageProxy

REPO = Path(__file__).resolve().parents[2]
SKILLFS = str(Path(sys.executable).with_name("skillfs"))
WAIT_S = 120.0  # seconds one session may take to learn


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--learner", choices=("rules", "openai"), default=None,
                   help="rules (default) or openai (implied by --base-url)")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    p.add_argument("--model", help="the model to ask (with --base-url)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="the endpoint's key (default: $OPENAI_API_KEY)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--only", action="append", metavar="NAME", help="only this scenario (repeat)")
    p.add_argument("--scenarios", type=Path, default=REPO / "tests" / "scenarios")
    p.add_argument("--parallel", type=int, default=8, help="scenarios learned at once")
    p.add_argument("--keep", action="store_true", help="keep the daemon's data directory")
    args = p.parse_args(argv)
    args.learner = args.learner or ("openai" if args.base_url else "rules")
    if args.learner == "openai" and not (args.base_url and args.model):
        p.error("--learner openai needs --base-url and --model")
    return args


class EvalDaemon:
    """A daemon on a temporary mount, data directory and spool."""

    def __init__(self, root: Path, learner: dict, api_key: str | None = None):
        self.root, self.home, self.mnt = root, root / "home", root / "mnt"
        self.mnt.mkdir(parents=True)
        self.home.mkdir()
        self.spool = self.home / "spool"
        self.env = {**os.environ, "SKILLFS_HOME": str(self.home)}
        for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SKILLFS_LLM_API_KEY",
                    "SKILLFS_LLM_BASE_URL", "SKILLFS_LLM_MODEL", "SKILLFS_SOCKET",
                    "SKILLFS_CONFIG"):
            self.env.pop(var, None)
        if api_key:
            # the environment, not the config file: a key is never written to disk
            self.env["SKILLFS_LLM_API_KEY"] = api_key
        lines = ["[learner]"] + [f"{k} = {json.dumps(v)}" for k, v in learner.items()]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([SKILLFS, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self) -> None:
        r = self.cli("mount", str(self.mnt))
        if r.returncode != 0:
            log = self.home / "skillfs.log"
            raise SystemExit(f"skillfs mount failed: {r.stderr}\n"
                             f"{log.read_text()[-2000:] if log.exists() else ''}")

    def stop(self) -> None:
        r = self.cli("umount", str(self.mnt))
        if r.returncode != 0:
            print(f"umount failed: {r.stderr}", file=sys.stderr)

    def api(self, method: str, path: str, timeout: float = 60, **kw) -> httpx.Response:
        # no TLS on a Unix socket: verify=False spares loading the CA bundle twice
        transport = httpx.HTTPTransport(uds=str(self.home / "skillfs.sock"), verify=False)
        with httpx.Client(transport=transport, base_url="http://skillfs", timeout=timeout,
                          verify=False) as c:
            return c.request(method, path, **kw)

    def send(self, space: str, session: str, source: Path) -> None:
        """A spool file the way agents should write one: a temp name, then a rename."""
        folder = self.spool / space / session
        folder.mkdir(parents=True, exist_ok=True)
        tmp, path = folder / f".{source.name}.tmp", folder / source.name
        tmp.write_bytes(source.read_bytes())
        os.rename(tmp, path)
        # ingested once the daemon removed it; only then does `learn wait` see its messages
        deadline = time.monotonic() + WAIT_S
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait(self, session: str) -> str:
        """What `skillfs learn wait` asks the daemon, without a process per session."""
        r = self.api("POST", f"/skillfs/v1/learning/{session}/wait",
                     params={"timeout": WAIT_S}, timeout=WAIT_S + 60)
        if r.status_code != 200:
            return f"error {r.status_code}: {r.text[:200]}"
        return r.json()["status"]


def run_scenario(d: EvalDaemon, sc: Scenario) -> dict:
    started = time.monotonic()
    (d.mnt / sc.space).mkdir()
    problems = []
    for session in sc.sessions:
        ref = f"{sc.name}--{session.name}"
        if session.configs:
            # a session with configs (original_date) is made through the API first
            r = d.api("POST", "/api/v1/session", json={"configs": session.configs})
            r.raise_for_status()
            ref = r.json()["data"]["id"]
        for source in session.files:
            d.send(sc.space, ref, source)
            status = d.wait(ref)
            if status != "completed":
                problems.append(f"{session.name}/{source.name}: learning {status}")
    files = read_space(d.mnt / sc.space)
    checks = score(sc, files)
    return {"name": sc.name, "checks": checks, "problems": problems,
            "learned_tasks": len(entries(files)), "seconds": round(time.monotonic() - started, 1)}


def _counts(checks: list[Check], category: str) -> tuple[int, int]:
    mine = [c for c in checks if c.category == category]
    return sum(c.passed for c in mine), len(mine)


def _cell(passed: int, total: int) -> str:
    return f"{passed}/{total}" if total else "-"


def _pct(passed: int, total: int) -> float:
    return round(100.0 * passed / total, 1) if total else 100.0


def report(results: list[dict], usage: dict, seconds: float) -> dict:
    width = max(len(r["name"]) for r in results) + 2
    print(f"{'scenario':<{width}}" + "".join(f"{c:>10}" for c in CATEGORIES) + f"{'score':>8}")
    all_checks: list[Check] = []
    for r in results:
        checks = r["checks"]
        all_checks += checks
        cells = "".join(f"{_cell(*_counts(checks, c)):>10}" for c in CATEGORIES)
        passed = sum(c.passed for c in checks)
        print(f"{r['name']:<{width}}{cells}{_pct(passed, len(checks)):>7.1f}%")
    totals = {c: _counts(all_checks, c) for c in CATEGORIES}
    overall = (sum(c.passed for c in all_checks), len(all_checks))
    print("-" * (width + 10 * len(CATEGORIES) + 8))
    print(f"{'total':<{width}}" + "".join(f"{_cell(*totals[c]):>10}" for c in CATEGORIES)
          + f"{_pct(*overall):>7.1f}%")
    print(f"{'%':<{width}}" + "".join(f"{_pct(*totals[c]):>9.1f}%" for c in CATEGORIES))
    learned = sum(r["learned_tasks"] for r in results)
    per_task = {k: round(v / learned, 1) if learned else 0.0 for k, v in usage.items()
                if k in ("calls", "input_tokens", "output_tokens")}
    print(f"\nlearned tasks {learned}; model calls {usage['calls']}, input tokens "
          f"{usage['input_tokens']}, output tokens {usage['output_tokens']}; per learned task: "
          f"{per_task['calls']} calls, {per_task['input_tokens']} in, "
          f"{per_task['output_tokens']} out; {seconds:.1f} s")
    if usage["calls_without_usage"]:
        print(f"  {usage['calls_without_usage']} answers had no usage: their tokens are "
              "estimated at 4 bytes a token")
    failed = [(r["name"], c.category, c.what) for r in results for c in r["checks"]
              if not c.passed]
    for r in results:
        for p in r["problems"]:
            print(f"  {r['name']}: {p}")
    if failed:
        print("\nfailed checks:")
        for name, category, what in failed:
            print(f"  {name} [{category}] {what}")
    return {
        "scores": {c: _pct(*totals[c]) for c in CATEGORIES} | {"overall": _pct(*overall)},
        "checks": {c: {"passed": totals[c][0], "total": totals[c][1]} for c in CATEGORIES},
        "learned_tasks": learned, "usage": usage, "per_learned_task": per_task,
        "seconds": round(seconds, 1),
        "scenarios": [{"name": r["name"], "problems": r["problems"], "seconds": r["seconds"],
                       "learned_tasks": r["learned_tasks"],
                       "checks": [c.__dict__ for c in r["checks"]]} for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenarios = load(args.scenarios, args.only)
    if not scenarios:
        print("no scenarios", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="skillfs-eval-"))
    learner: dict = {"backend": args.learner, "idle_seconds": 1.0}
    proxy = UsageProxy(args.base_url) if args.learner == "openai" else None
    with proxy or nullcontext():
        if proxy is not None:
            learner.update(base_url=proxy.base_url, model=args.model)
        d = EvalDaemon(root, learner, (args.api_key or "unused") if proxy else None)
        started = time.monotonic()
        d.start()
        try:
            with ThreadPoolExecutor(max(1, args.parallel)) as pool:
                results = list(pool.map(lambda sc: run_scenario(d, sc), scenarios))
        finally:
            d.stop()
        u = proxy.usage if proxy is not None else None
        usage = {"calls": u.calls if u else 0, "input_tokens": u.input_tokens if u else 0,
                 "output_tokens": u.output_tokens if u else 0,
                 "calls_without_usage": u.without_usage if u else 0}
        summary = report(results, usage, time.monotonic() - started)
    summary["learner"] = args.learner if not args.model else f"{args.learner}:{args.model}"
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    else:
        print(f"kept {root}")
    return 0
