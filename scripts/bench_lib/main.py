"""scripts/bench: build corpora, measure every system on each, report."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import cleanup, corpus as corpus_mod, daemon_figures, figures, report, systems
from . import search_figures

QUICK_SIZES = [2000, 20000]
FULL_SIZES = [2000, 20000, 100000]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure skillfs against native tmpfs, a minimal pyfuse3 floor and "
                    "pyfuse3's passthrough example, on the same deterministic corpus.",
    )
    p.add_argument("--quick", action="store_true",
                   help="2,000 and 20,000 files, fewer runs (< 5 min)")
    p.add_argument("--out", type=Path, default=Path("bench-out"),
                   help="output directory (default ./bench-out)")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="corpus sizes, e.g. 2000,20000,100000 (--quick with 100,000 files "
                        "takes ~15 min more)")
    p.add_argument("--systems", default="native,floor,peer,skillfs", help="comma-separated subset")
    p.add_argument("--backend", choices=("duckdb", "postgres", "both"), default="duckdb",
                   help="the database under skillfs: its DuckDB file (the default), "
                        "PostgreSQL (a cluster of the bench's own), or both side by side")
    p.add_argument("--runs", type=int, help="runs per figure (default 3 quick, 5 full)")
    p.add_argument("--budget", type=float,
                   help="seconds per figure after which no further run starts "
                        "(default 8 quick, 60 full)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reads-only", action="store_true",
                   help="only the read figures: skip the daemon's own (ingestion, edits, "
                        "learning), e.g. for a 100,000-file run")
    p.add_argument("--search-only", action="store_true",
                   help="only the search figure (skillfs search against grep -rn through the "
                        "mount and on tmpfs): no other system's figures")
    p.add_argument("--no-chart", action="store_true",
                   help="skip the PNG (and the matplotlib install)")
    p.add_argument("--no-drop-caches", action="store_true",
                   help="do not write /proc/sys/vm/drop_caches")
    return p.parse_args(argv)


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def meta(args, s: figures.Settings) -> dict:
    import importlib.metadata as md

    fuse = _cmd("fusermount3", "-V").replace("fusermount3 version: ", "fusermount3 ")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "kernel": platform.release(),
        "fuse": fuse,
        "pyfuse3": md.version("pyfuse3"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "commit": _cmd("git", "-C", str(systems.REPO), "rev-parse", "--short", "HEAD") or "none",
        "seed": args.seed,
        "runs": s.runs,
        "budget_s": s.budget,
        "cat_samples": s.cat_samples,
        "orc_files": s.orc_files,
        "orc_passes": s.orc_passes,
        "daemon_figures": {"sizes": s.daemon_sizes, "spool_msgs": s.spool_msgs,
                           "spool_one_msg_files": s.spool_one_msg_files,
                           "spool_singles": s.spool_singles, "edit_runs": s.edit_runs,
                           "learn_runs": s.learn_runs, "learn_model_runs": s.learn_model_runs},
        "warnings": s.warnings,
    }


def scratch_dir() -> Path:
    """A temp dir on tmpfs: /dev/shm, or a tmpfs mounted for this run."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="skillfs-bench-", dir="/dev/shm"))
        cleanup.push(lambda: shutil.rmtree(d, ignore_errors=True))
        return d
    d = Path(tempfile.mkdtemp(prefix="skillfs-bench-"))
    cleanup.push(lambda: shutil.rmtree(d, ignore_errors=True))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", str(d)], check=True)
    cleanup.push(lambda: systems.force_unmount(d))
    return d


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    s = figures.Settings(
        runs=args.runs or (3 if args.quick else 5),
        budget=args.budget if args.budget is not None else (8.0 if args.quick else 60.0),
        cat_samples=200 if args.quick else 1000,
        orc_passes=3 if args.quick else 5,
        orc_files=500 if args.quick else 2000,
        drop_caches=not args.no_drop_caches,
    )
    if args.quick:
        # Ingestion and edit latency hardly depend on the corpus size.
        s.daemon_sizes = "first"
        # Enough one-message files that the watcher's debounce is not most of the time.
        s.spool_one_msg_files = 2000
        s.spool_singles = 20
        s.edit_runs = 30
        s.learn_runs = 5
        s.learn_model_runs = 10
    if args.reads_only or args.search_only:
        s.daemon_sizes = "none"
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cleanup.install_signal_handlers()
    try:
        return _run(args, sizes, s, out, logs, started)
    except KeyboardInterrupt:
        print("\nbench: interrupted; unmounting", file=sys.stderr)
        return 130
    finally:
        cleanup.run_all()


def _run(args, sizes, s, out: Path, logs: Path, started: float) -> int:
    work = scratch_dir()
    result = {"meta": meta(args, s), "sizes": {}, "skipped_systems": {}}
    chosen = []
    names = [n.strip() for n in args.systems.split(",")]
    if "skillfs" in names and args.backend != "duckdb":
        at = names.index("skillfs")
        names[at:at + 1] = ["skillfs", "skillfs-pg"] if args.backend == "both" else ["skillfs-pg"]
    for name in names:
        cls = systems.ALL.get(name)
        if cls is None:
            print(f"bench: unknown system {name!r}; known: {', '.join(systems.ALL)}",
                  file=sys.stderr)
            return 2
        sysm = cls(work, logs)
        try:
            sysm.check()
        except systems.Unavailable as e:
            print(f"bench: skipping {sysm.name}: {e}", file=sys.stderr)
            result["skipped_systems"][sysm.name] = str(e)
            continue
        chosen.append(sysm)
    if not any(x.name == "native" for x in chosen):
        chosen.insert(0, systems.Native(work, logs))  # ratios need it

    for size in sizes:
        t = time.monotonic()
        c = corpus_mod.generate(work / f"corpus-{size}", size, args.seed)
        print(f"bench: corpus of {c.n_files:,} files, {c.total_bytes / 1e6:.1f} MB "
              f"in {time.monotonic() - t:.1f} s", file=sys.stderr)
        sres = {"corpus": c.summary(), "systems": {}}
        result["sizes"][str(size)] = sres
        scratch = work / "out"
        scratch.mkdir(exist_ok=True)
        for sysm in chosen:
            t = time.monotonic()
            entry: dict = {"figures": {}, "skipped": {}}
            sres["systems"][sysm.name] = entry
            try:
                extra = sysm.prepare(c)
                if "import_s" in extra:
                    entry["figures"]["import"] = {"value": extra["import_s"], "runs": 1}
                    entry["figures"]["db_size"] = {"value": extra["db_mb"], "runs": 1}
                    entry["import_how"] = extra["import_how"]
                entry["check_failures"] = []
                if not args.search_only:
                    runner = figures.Runner(sysm, c, s, scratch)
                    entry["figures"].update(runner.run())
                    entry["check_failures"] = runner.checks
                    entry["extra_entries"] = runner.extra_entries
                if isinstance(sysm, systems.Skillfs):
                    found, checks = search_figures.run(sysm, c, s)
                    entry["figures"].update(found)
                    entry["check_failures"] += checks
                    print(f"bench: {size:,} files: {search_figures.ratios(found)}",
                          file=sys.stderr)
                for chk in entry["check_failures"]:
                    print(f"bench: {sysm.name} WRONG OUTPUT: {chk}", file=sys.stderr)
                if isinstance(sysm, systems.Skillfs) and (
                        s.daemon_sizes == "all" or (s.daemon_sizes == "first"
                                                    and size == sizes[0])):
                    sysm.mount()
                    try:
                        dfig, dskip = daemon_figures.run_all(sysm, c, s)
                    finally:
                        sysm.unmount()
                    entry["figures"].update(dfig)
                    entry["skipped"].update(dskip)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                msg = f"{type(e).__name__}: {e}"
                print(f"bench: {sysm.name} at {size:,} files failed: {msg}", file=sys.stderr)
                entry["skipped"]["run"] = f"failed: {msg}"
            finally:
                sysm.finish()
            print(f"bench: {sysm.name:8s} {size:>7,} files: {time.monotonic() - t:5.1f} s",
                  file=sys.stderr)
        shutil.rmtree(c.root, ignore_errors=True)
        # Partial results survive a later failure or Ctrl-C.
        report.write(result, out, with_chart=False)

    result["meta"]["warnings"] = s.warnings
    result["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    md = report.write(result, out, with_chart=not args.no_chart)
    print(md)
    print(f"bench: {result['meta']['elapsed_s']} s; wrote {out}/bench.json, bench.md"
          + ("" if args.no_chart else ", bench.png"), file=sys.stderr)
    failures = [n for sres in result["sizes"].values() for n, e in sres["systems"].items()
                if e.get("check_failures")]
    return 1 if failures else 0
