"""Figures that only the skillfs daemon has: spool ingestion, edit-to-visible
latency, learning overhead.

They run against a mounted Skillfs system (see systems.Skillfs) after the
file-system figures. Each returns {key: {"value": ..., ...}}; an exception
becomes a "failed: ..." note in the report instead of a number.

- spool_ingestion: the spool contract of DESIGN §3 (write .tmp, rename in,
  wait until the daemon has committed and deleted the file).
- edit_to_visible: through the control API's PUT /files.
- learning_overhead: with the offline rules learner (no model time); the
  variant with a scripted zero-latency OpenAI-compatible model is still to add.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from .figures import pct

SPOOL_SIZES = (1, 100, 10_000)
SPOOL_TIMEOUT = 120.0

DAEMON_FIGURES: dict[str, tuple[str, str]] = {
    "spool_1_msgs_s": ("spool ingestion, files of 1 message", "msg/s"),
    "spool_100_msgs_s": ("spool ingestion, files of 100 messages", "msg/s"),
    "spool_10000_msgs_s": ("spool ingestion, files of 10,000 messages", "msg/s"),
    "spool_commit_p50": ("single small spool file to commit p50", "ms"),
    "spool_commit_p99": ("single small spool file to commit p99", "ms"),
    "edit_visible_p50": ("edit via API to visible in cat p50", "ms"),
    "edit_visible_p99": ("edit via API to visible in cat p99", "ms"),
    "learning_overhead": ("learning: session end to daily log visible, rules learner p50", "ms"),
}


def _message(i: int) -> bytes:
    # OpenAI chat form, alternating roles, ~200 bytes like a short turn.
    role = "user" if i % 2 == 0 else "assistant"
    text = f"step {i}: please check the deploy log for the payment service and summarise it"
    return json.dumps({"role": role, "content": text}).encode() + b"\n"


def _drop(spool: Path, space: str, session: str, name: str, n_msgs: int) -> Path:
    """Create one spool file the way writers must: write a .tmp, rename into place."""
    d = spool / space / session
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{name}.jsonl.tmp"
    tmp.write_bytes(b"".join(_message(i) for i in range(n_msgs)))
    final = d / f"{name}.jsonl"
    os.rename(tmp, final)
    return final


def _wait_gone(paths: list[Path], spool: Path, deadline: float) -> None:
    pending = set(paths)
    while pending:
        pending = {p for p in pending if p.exists()}
        if not pending:
            return
        rejected = spool / ".rejected"
        if rejected.is_dir() and any(rejected.iterdir()):
            errors = sorted(rejected.glob("*.error.json"))
            why = errors[0].read_text()[:300] if errors else "no sidecar"
            raise RuntimeError(f"the daemon rejected a spool file: {why}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} spool files still there after {SPOOL_TIMEOUT:.0f} s")
        time.sleep(0.0005)


def spool_ingestion(system, space: str, total_msgs: int, one_msg_files: int, singles: int) -> dict:
    """Messages per second for files of 1, 100 and 10,000 messages, until every
    file is committed and deleted; then single small file to commit, p50/p99.

    Note: the daemon deletes a spool file only after its records and ledger row
    committed (DESIGN §3), so "file gone" is "committed". A file moved to
    .rejected/ fails the figure.
    """
    spool = system.spool
    fig: dict = {}
    for size in SPOOL_SIZES:
        session = f"bench-{size}-{uuid.uuid4().hex[:8]}"
        # Files of one message are slow to ingest by nature: fewer of them.
        n_files = max(1, total_msgs // size) if size > 1 else one_msg_files
        # Write every file first in a staging dir beside the spool (same file
        # system), then rename them in, so writing speed does not limit the figure.
        stage = system.state / f"stage-{session}"
        for j in range(n_files):
            _drop(stage, space, session, f"{j:06d}", size)
        src = stage / space / session
        dst = spool / space / session
        dst.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in src.iterdir())
        paths = [dst / n for n in names]
        t0 = time.perf_counter()
        for n in names:
            os.rename(src / n, dst / n)
        _wait_gone(paths, spool, time.monotonic() + SPOOL_TIMEOUT)
        took = time.perf_counter() - t0
        fig[f"spool_{size}_msgs_s"] = {"value": n_files * size / took, "runs": 1,
                                       "files": n_files, "seconds": took}
        shutil.rmtree(stage, ignore_errors=True)
    session = f"bench-single-{uuid.uuid4().hex[:8]}"
    lat = []
    for j in range(singles):
        t0 = time.perf_counter()
        p = _drop(spool, space, session, f"{j:06d}", 1)
        _wait_gone([p], spool, time.monotonic() + SPOOL_TIMEOUT)
        lat.append((time.perf_counter() - t0) * 1000)
    fig["spool_commit_p50"] = {"value": pct(lat, 0.5), "runs": len(lat)}
    fig["spool_commit_p99"] = {"value": pct(lat, 0.99), "runs": len(lat)}
    return fig


def edit_to_visible(system, corpus, rel_path: str, runs: int) -> dict:
    """A change committed through the control API (PUT /files) until another
    process's `cat` shows it, p50/p99.

    The file is read before every edit so the kernel holds it in its page
    cache, and every edit keeps the size the same: only the daemon's
    invalidation can make the new content visible.
    """
    path = system.root / rel_path
    original = (corpus.root / rel_path).read_bytes()
    lat = []
    with system.api() as api:
        for i in range(runs):
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
            marker = f"edit-{i:06d}".encode()
            content = original + b"\n" + marker + b"\n"
            t0 = time.perf_counter()
            r = api.put("/files", params={"path": rel_path}, content=content,
                        headers={"Content-Type": "application/octet-stream"})
            if r.status_code >= 400:
                raise RuntimeError(f"PUT /files: HTTP {r.status_code} {r.text[:300]}")
            deadline = time.monotonic() + 10
            while marker not in subprocess.run(["cat", str(path)], capture_output=True).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"edit {i} not visible through the mount after 10 s (stale cache)")
            lat.append((time.perf_counter() - t0) * 1000)
    return {"edit_visible_p50": {"value": pct(lat, 0.5), "runs": len(lat)},
            "edit_visible_p99": {"value": pct(lat, 0.99), "runs": len(lat)}}


def learning_overhead(system, runs: int) -> dict:
    """Session end to files written, with no model time at all: the daemon's
    offline rules learner, which runs the same pipeline (buffer, tasks, write
    skills) without a model. Measured from the moment the session's spool file
    (messages and {"event": "end"}) is renamed into place until its daily-log
    entry can be read through the mount.

    Still to add: the same with the openai learner against a scripted,
    zero-latency OpenAI-compatible server, minus the time spent in that server.
    """
    system.unmount()
    system.mount(learner="rules")
    space = f"bench-learn-{uuid.uuid4().hex[:6]}"
    with system.api() as api:
        # A space made through the store starts with its daily-logs skill.
        r = api.post("/spaces", json={"name": space})
        if r.status_code >= 400:
            raise RuntimeError(f"POST /spaces: HTTP {r.status_code} {r.text[:300]}")
    logs = system.root / space / "daily-logs"
    lat = []
    for i in range(runs):
        marker = f"build{uuid.uuid4().hex[:8]}"
        records = [
            {"role": "user", "content": f"Please deploy the payment service {marker} to staging."},
            {"role": "assistant", "content": f"Deployed the payment service {marker} to staging; "
                                             "all health checks passed."},
            {"role": "user", "content": "Thanks, that worked."},
            {"event": "end"},
        ]
        d = system.spool / space / f"bench-learn-{i}"
        d.mkdir(parents=True)
        tmp = d / "000001.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        t0 = time.perf_counter()
        os.rename(tmp, d / "000001.jsonl")
        deadline = time.monotonic() + 60
        while not _shows(logs, marker.encode()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no daily-log entry for session {i} after 60 s")
            time.sleep(0.002)
        lat.append((time.perf_counter() - t0) * 1000)
    return {"learning_overhead": {"value": pct(lat, 0.5), "runs": len(lat),
                                  "samples": [round(x, 1) for x in lat],
                                  "learner": "rules (no model)"}}


def _shows(folder: Path, marker: bytes) -> bool:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return False
    for n in names:
        try:
            if marker in (folder / n).read_bytes():
                return True
        except (FileNotFoundError, IsADirectoryError):
            pass
    return False


def run_all(system, corpus, s) -> tuple[dict, dict]:
    """Returns (figures, {figure group: reason it was not measured})."""
    fig: dict = {}
    skipped: dict = {}
    space = corpus.spaces[0]
    steps = [
        ("spool ingestion", lambda: spool_ingestion(system, space, s.spool_msgs, s.spool_one_msg_files,
                                                    s.spool_singles)),
        ("edit to visible", lambda: edit_to_visible(system, corpus, corpus.files[1], s.edit_runs)),
        ("learning overhead", lambda: learning_overhead(system, s.learn_runs)),
    ]
    for name, fn in steps:
        try:
            fig.update(fn())
        except Exception as e:  # a daemon bug must not lose the other figures
            skipped[name] = f"failed: {type(e).__name__}: {e}"
    return fig, skipped
