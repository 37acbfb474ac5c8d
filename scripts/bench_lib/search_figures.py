"""The search figure: `skillfs search` against `grep -rn` through the mount and `grep -rn`
on tmpfs (the corpus itself), the same token, in the same run, at every corpus size.

`skillfs search` is the whole command as a user types it: the CLI's start, the request on
the control socket, the daemon's search over its content cache (skillfs/search.py), the
printing. `grep -rn` through the mount is measured warm (after a first pass that fills the
kernel's page cache, the best case for grep), and once cold, right after the mount. Every
output is checked against the corpus: the same `path:line:text` lines, under the mount
root.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from .corpus import NEEDLE
from .figures import ENV, Settings, drop_caches

SEARCH_FIGURES: dict[str, tuple[str, str]] = {
    "search_skillfs": ("skillfs search, whole mount (CLI included)", "s"),
    "search_grep_mount_warm": ("grep -rn through the mount, warm", "s"),
    "search_grep_mount_cold": ("grep -rn through the mount, cold (one run)", "s"),
    "search_grep_tmpfs": ("grep -rn on tmpfs (the corpus)", "s"),
}


def _timed(cmd: list[str], root: Path | None, env: dict) -> tuple[float, list[str]]:
    """Seconds the command took, and its output lines with `root/` taken off, sorted."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if r.returncode not in (0, 1) or r.stderr:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}): "
                           f"{r.stderr.decode(errors='replace')[-300:]}")
    prefix = f"{root}/" if root is not None else ""
    lines = r.stdout.decode(errors="replace").splitlines()
    return took, sorted(line[len(prefix):] if line.startswith(prefix) else line
                        for line in lines)


def run(system, corpus, s: Settings) -> tuple[dict, list[str]]:
    """Mount the corpus and measure; returns the figures and any output mismatch."""
    checks: list[str] = []
    fig: dict[str, dict] = {}
    grep_tmpfs = ["grep", "-rn", NEEDLE, str(corpus.root)]
    _, want = _timed(grep_tmpfs, corpus.root, ENV)
    system.mount()
    try:
        drop_caches(s)
        grep_mount = ["grep", "-rn", NEEDLE, str(system.root)]
        took, got = _timed(grep_mount, system.root, ENV)
        fig["search_grep_mount_cold"] = {"value": took, "runs": 1}
        _check(checks, "grep -rn through the mount, cold", got, want)
        search = [*system.cli(), "search", NEEDLE, "--max-results", "10000", "--timeout", "30"]
        commands = {"search_grep_mount_warm": (grep_mount, system.root, ENV),
                    "search_skillfs": (search, None, {**system._env(), "LC_ALL": "C"}),
                    "search_grep_tmpfs": (grep_tmpfs, corpus.root, ENV)}
        for key, (cmd, root, env) in commands.items():
            runs = []
            while len(runs) < s.runs and sum(runs) < s.budget:
                took, got = _timed(cmd, root, env)
                _check(checks, SEARCH_FIGURES[key][0], got, want)
                runs.append(took)
            fig[key] = {"value": statistics.median(runs), "runs": len(runs),
                        "samples": [round(x, 6) for x in runs]}
    finally:
        system.unmount()
    return fig, checks


def _check(checks: list[str], what: str, got: list[str], want: list[str]) -> None:
    if got != want:
        missing = sorted(set(want) - set(got))[:3]
        extra = sorted(set(got) - set(want))[:3]
        checks.append(f"{what}: {len(got)} lines, want {len(want)}; "
                      f"missing {missing} extra {extra}")


def ratios(figures: dict) -> str:
    """skillfs search ÷ each grep, as printed after each size."""
    mine = figures.get("search_skillfs", {}).get("value")
    parts = []
    for key, name in (("search_grep_mount_warm", "grep -rn through the mount (warm)"),
                      ("search_grep_mount_cold", "grep -rn through the mount (cold)"),
                      ("search_grep_tmpfs", "grep -rn on tmpfs")):
        other = figures.get(key, {}).get("value")
        if mine and other:
            parts.append(f"{mine / other:.2f}× {name}")
    return f"skillfs search {mine:.3f} s = " + ", ".join(parts) if mine else "no figure"
