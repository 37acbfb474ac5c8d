"""Figures that only the skillfs daemon has: spool ingestion, edit-to-visible
latency, learning overhead.

They run against a mounted Skillfs system (see systems.Skillfs) after the
file-system figures. Each returns {key: {"value": ..., ...}}; an exception
becomes a "failed: ..." note in the report instead of a number.

- spool_ingestion: the spool contract of DESIGN §3 (write .tmp, rename in,
  wait until the daemon has committed and deleted the file).
- edit_to_visible: through the control API's PUT /files.
- learning_overhead: with the offline rules learner (no model time).
- learning_model_overhead: with the openai learner against the bench's own
  scripted, zero-latency OpenAI-compatible server (scripted_model.py), minus
  the time that server spent answering.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from . import cleanup
from .figures import pct
from .systems import rss_kb
from .scripted_model import ScriptedModel

SPOOL_SIZES = (1, 100, 10_000)
SPOOL_TIMEOUT = 120.0

DAEMON_FIGURES: dict[str, tuple[str, str]] = {
    "spool_1_files_s": ("spool ingestion, one-message files (a file per message)", "files/s"),
    "spool_1_msgs_s": ("spool ingestion, files of 1 message", "msg/s"),
    "spool_100_msgs_s": ("spool ingestion, files of 100 messages", "msg/s"),
    "spool_10000_msgs_s": ("spool ingestion, files of 10,000 messages", "msg/s"),
    "spool_commit_p50": ("single small spool file to commit p50", "ms"),
    "spool_commit_p99": ("single small spool file to commit p99", "ms"),
    "edit_visible_p50": ("edit via API to visible in cat p50", "ms"),
    "edit_visible_p99": ("edit via API to visible in cat p99", "ms"),
    "learning_overhead": ("learning: session end to daily log visible, rules learner p50", "ms"),
    "learning_model_p50": (("learning: session end to daily log visible, scripted model, "
                            "beyond model time p50"), "ms"),
    "learning_model_p99": (("learning: session end to daily log visible, scripted model, "
                            "beyond model time p99"), "ms"),
    "learning_model_calls": ("learning: model calls per session (scripted model)", "calls"),
    "learning_model_per_call": (
        "learning: overhead per model call before the entry is visible p50", "ms"),
    "learning_model_tokens": (
        "learning: input tokens per learned task, scripted model p50", "tokens"),
    "db_mb_after_load": ("database size after the daemon figures' load (file + log)", "MB"),
    "rss_mb_after_load": ("daemon RSS after the daemon figures' load", "MB"),
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
    # A listing per folder, not a stat per file: checking 2,000 files every half
    # millisecond took the CPU the daemon was being measured on.
    pending = set(paths)
    folders = {p.parent for p in paths}
    while pending:
        there = {f / n for f in folders if f.is_dir() for n in os.listdir(f)}
        pending &= there
        if not pending:
            return
        rejected = spool / ".rejected"
        if rejected.is_dir() and any(rejected.iterdir()):
            errors = sorted(rejected.glob("*.error.json"))
            why = errors[0].read_text()[:300] if errors else "no sidecar"
            raise RuntimeError(f"the daemon rejected a spool file: {why}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(pending)} spool files still there after {SPOOL_TIMEOUT:.0f} s")
        time.sleep(0.0005 if len(pending) < 100 else 0.005)


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
        if size == 1:
            fig["spool_1_files_s"] = {"value": n_files / took, "runs": 1, "files": n_files,
                                      "seconds": took}
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
                    raise RuntimeError(
                        f"edit {i} not visible through the mount after 10 s (stale cache)")
            lat.append((time.perf_counter() - t0) * 1000)
    return {"edit_visible_p50": {"value": pct(lat, 0.5), "runs": len(lat)},
            "edit_visible_p99": {"value": pct(lat, 0.99), "runs": len(lat)}}


def learning_overhead(system, runs: int) -> dict:
    """Session end to files written, with no model time at all: the daemon's
    offline rules learner, which runs the same pipeline (buffer, tasks, write
    skills) without a model. Measured from the moment the session's spool file
    (messages and {"event": "end"}) is renamed into place until its daily-log
    entry can be read through the mount.

    learning_model_overhead() measures the same with the openai learner and a
    scripted model.
    """
    system.unmount()
    system.mount(learner="rules")
    space = f"bench-learn-{uuid.uuid4().hex[:6]}"
    with system.api() as api:
        backlog = _wait_learner_idle(api)
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
                                  "backlog_s": round(backlog, 2),
                                  "learner": "rules (no model)"}}


LEARN_TIMEOUT = 60.0
BACKLOG_TIMEOUT = 300.0


def _wait_learner_idle(api) -> float:
    """Wait until no session is left to learn; return the seconds it took.

    The spool figures ran with the learner off, so their sessions (tens of
    thousands of messages) are learned as soon as a learner starts; they take
    the learner's parallel slots, and a session measured meanwhile would wait
    behind them. The learning figures measure an idle learner instead.
    """
    t0 = time.monotonic()
    while True:
        r = api.get("/learning")
        if r.status_code >= 400:
            raise RuntimeError(f"GET /learning: HTTP {r.status_code} {r.text[:300]}")
        busy = [row for row in r.json() if row.get("status") not in ("completed", "failed")]
        if not busy:
            return time.monotonic() - t0
        if time.monotonic() - t0 > BACKLOG_TIMEOUT:
            raise RuntimeError(f"{len(busy)} session(s) still learning after "
                               f"{BACKLOG_TIMEOUT:.0f} s (e.g. {busy[0]})")
        time.sleep(0.05)


def _session_records(marker: str) -> list[dict]:
    return [
        {"role": "user", "content": f"Please deploy the payment service {marker} to staging."},
        {"role": "assistant", "content": f"Deployed the payment service {marker} to staging; "
                                         "all health checks passed."},
        {"role": "user", "content": "Thanks, that worked."},
        {"event": "end"},
    ]


def _learning_usage(api, space: str, name: str) -> dict:
    """The learner's own count of what learning the session cost (calls, tokens, tasks)."""
    r = api.get("/sessions", params={"space": space})
    sid = next((row["id"] for row in r.json() if row.get("name") == name), None)
    r = api.get("/learning", params={"session": sid})
    if r.status_code >= 400 or not r.json() or not r.json()[0].get("usage"):
        raise RuntimeError(f"no learning usage for session {name}: HTTP {r.status_code} "
                           f"{r.text[:300]}")
    return r.json()[0]["usage"]


def _learning_state(api, space: str, name: str) -> tuple[str | None, str | None]:
    r = api.get("/sessions", params={"space": space})
    if r.status_code >= 400:
        raise RuntimeError(f"GET /sessions: HTTP {r.status_code} {r.text[:300]}")
    for row in r.json():
        if row.get("name") == name:
            return row.get("learning_status"), row.get("learning_error")
    return None, None


def learning_model_overhead(system, runs: int) -> dict:
    """Session end to daily-log entry visible, with the openai learner talking to
    a scripted OpenAI-compatible server that answers at once (scripted_model.py),
    minus the time that server spent on the requests (its own handling time,
    from taking a request to having written the answer).

    Per session: extraction inserts one task (insert_task) and finishes,
    distillation reports a success, the writer appends a daily-logs entry
    (append_to_file) and finishes: 5 model calls. The day's daily-logs file is
    created through the API first, so every session appends to an existing file
    (the writer's path when a day's file exists). The clock starts at the rename of
    the session's spool file (messages and {"event": "end"}) and stops when the
    entry can be read through the mount from this process; model time is the part
    of each request's handling that falls inside that window. The writer's
    `finish` may come before or after the entry is visible, so "overhead per
    call" divides by the calls that started before it. Before the next session, this
    one must have been reported completed by the control API, so sessions never
    overlap. One session before the measured ones warms the daemon's model client
    (its connection, lazy imports); it is reported apart as `first_session_ms`.
    """
    model = ScriptedModel().start()
    cleanup.push(model.stop)
    try:
        system.unmount()
        cfg = system.state / "bench-learner.toml"
        cfg.write_text(
            "[learner]\n"
            'backend = "openai"\n'
            f"base_url = {json.dumps(model.base_url)}\n"
            'api_key = "bench-scripted"\n'
            'model = "bench-scripted"\n'
            # a failure must show at once, not after retries with backoff
            "retries = 0\n"
            "timeout = 10.0\n")
        system.mount(learner="openai", config=cfg)
        return _learning_model_runs(system, model, runs)
    finally:
        # The daemon first (it may still be talking to the model), then the model.
        system.unmount()
        model.stop()
        cleanup.discard(model.stop)


def _learning_model_runs(system, model: ScriptedModel, runs: int) -> dict:
    space = f"bench-model-{uuid.uuid4().hex[:6]}"
    day = time.strftime("%Y-%m-%d")
    with system.api() as api:
        backlog = _wait_learner_idle(api)
        r = api.post("/spaces", json={"name": space})
        if r.status_code >= 400:
            raise RuntimeError(f"POST /spaces: HTTP {r.status_code} {r.text[:300]}")
        r = api.put("/files", params={"path": f"{space}/daily-logs/{day}.md"},
                    content=f"# {day}\n".encode(),
                    headers={"Content-Type": "application/octet-stream"})
        if r.status_code >= 400:
            raise RuntimeError(f"PUT /files (the day's log): HTTP {r.status_code} {r.text[:300]}")
        logs = system.root / space / "daily-logs"
        samples: list[dict] = []
        for i in range(runs + 1):  # the first one warms up
            samples.append(_one_model_session(system, model, api, space, logs, i))
    first, measured = samples[0], samples[1:]
    over = [x["overhead_ms"] for x in measured]
    per_call = [x["overhead_ms"] / x["calls_before_visible"] for x in measured]
    calls = [x["calls"] for x in measured]
    detail = {
        "runs": len(measured),
        "samples": [round(x, 1) for x in over],
        "first_session_ms": round(first["overhead_ms"], 1),
        "backlog_s": round(backlog, 2),
        "wall_p50_ms": round(pct([x["wall_ms"] for x in measured], 0.5), 2),
        "model_p50_ms": round(pct([x["model_ms"] for x in measured], 0.5), 3),
        # where the overhead goes, p50 over sessions
        "to_first_call_p50_ms": round(pct([x["to_first_call_ms"] for x in measured], 0.5), 2),
        "between_calls_p50_ms": round(pct([x["between_calls_ms"] for x in measured], 0.5), 2),
        "last_answer_to_visible_p50_ms": round(
            pct([x["last_answer_to_visible_ms"] for x in measured], 0.5), 2),
        # each gap between one answer and the next request (the daemon's own work)
        "between_calls_by_step_p50_ms": {
            k: round(pct([x["steps_ms"][k] for x in measured if k in x["steps_ms"]], 0.5), 2)
            for k in measured[-1]["steps_ms"]},
        "calls_by_stage": measured[-1]["stages"],
        "learner": "openai, scripted zero-latency model",
    }
    return {
        "learning_model_p50": {"value": pct(over, 0.5), **detail},
        "learning_model_p99": {"value": pct(over, 0.99), "runs": len(over)},
        "learning_model_calls": {"value": pct(calls, 0.5), "runs": len(calls),
                                 "min": min(calls), "max": max(calls),
                                 "before_visible_p50": pct(
                                     [x["calls_before_visible"] for x in measured], 0.5)},
        "learning_model_per_call": {"value": pct(per_call, 0.5), "runs": len(per_call),
                                    "p99": pct(per_call, 0.99)},
        "learning_model_tokens": _tokens_figure([x["per_task"] for x in measured]),
    }


def _tokens_figure(per_task: list[dict]) -> dict:
    per_task = [p for p in per_task if p]
    if not per_task:
        raise RuntimeError("the learner reported no tasks learned for the bench's sessions")
    return {"value": pct([p["input_tokens"] for p in per_task], 0.5), "runs": len(per_task),
            "output_p50": pct([p["output_tokens"] for p in per_task], 0.5),
            "calls_p50": pct([p["calls"] for p in per_task], 0.5)}


def _one_model_session(system, model: ScriptedModel, api, space: str, logs: Path, i: int) -> dict:
    marker = f"lrn{uuid.uuid4().hex[:10]}"
    name = f"bench-model-{i}"
    d = system.spool / space / name
    d.mkdir(parents=True)
    tmp = d / "000001.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in _session_records(marker)))
    errors_before = len(model.errors)
    t0 = time.perf_counter()
    os.rename(tmp, d / "000001.jsonl")
    deadline = time.monotonic() + LEARN_TIMEOUT
    while not _shows(logs, marker.encode()):
        if len(model.errors) > errors_before:
            raise RuntimeError(f"session {i}: the scripted model refused a request: "
                               f"{model.errors[errors_before]}")
        if time.monotonic() > deadline:
            state = _learning_state(api, space, name)
            raise RuntimeError(f"no daily-log entry for session {i} after {LEARN_TIMEOUT:.0f} s "
                               f"(learning status {state[0]}, error {state[1]})")
        time.sleep(0.001)
    t1 = time.perf_counter()
    # Not timed: wait until the learner is done with the session, so the next one
    # starts alone (the writer's finish is usually answered after the entry shows).
    while True:
        status, error = _learning_state(api, space, name)
        if status == "completed":
            break
        if status == "failed":
            raise RuntimeError(f"session {i}: learning failed after the entry was written: {error}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {i}: learning status still {status} after "
                               f"{LEARN_TIMEOUT:.0f} s")
        time.sleep(0.005)
    usage = _learning_usage(api, space, name)
    mine = sorted((c for c in model.snapshot() if marker in c.markers), key=lambda c: c.received)
    if not mine:
        raise RuntimeError(
            f"session {i}: the daily-log entry appeared but the model was never asked")
    # Model time: the part of each request's handling inside [t0, t1].
    model_s = sum(max(0.0, min(c.answered, t1) - max(c.received, t0)) for c in mine)
    before = [c for c in mine if c.received < t1]
    steps = {f"{a.stage}:{a.tool} -> {b.stage}:{b.tool}": max(0.0, b.received - a.answered) * 1000
             for a, b in itertools.pairwise(before)}
    gaps = sum(steps.values()) / 1000
    stages: dict[str, int] = {}
    for c in mine:
        stages[f"{c.stage}:{c.tool}"] = stages.get(f"{c.stage}:{c.tool}", 0) + 1
    return {
        "wall_ms": (t1 - t0) * 1000,
        "model_ms": model_s * 1000,
        "overhead_ms": (t1 - t0 - model_s) * 1000,
        "calls": len(mine),
        "calls_before_visible": max(1, len(before)),
        "to_first_call_ms": (mine[0].received - t0) * 1000,
        "between_calls_ms": gaps * 1000,
        "steps_ms": steps,
        "last_answer_to_visible_ms": ((t1 - max(c.answered for c in before)) * 1000
                                      if before else 0.0),
        "stages": stages,
        "per_task": usage.get("per_task") or {},
    }


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
        ("spool ingestion", lambda: spool_ingestion(system, space, s.spool_msgs,
                                                    s.spool_one_msg_files, s.spool_singles)),
        ("edit to visible", lambda: edit_to_visible(system, corpus, corpus.files[1], s.edit_runs)),
        ("learning overhead", lambda: learning_overhead(system, s.learn_runs)),
        ("learning overhead, scripted model",
         lambda: learning_model_overhead(system, s.learn_model_runs)),
    ]
    for name, fn in steps:
        try:
            fig.update(fn())
        except Exception as e:  # a daemon bug must not lose the other figures
            skipped[name] = f"failed: {type(e).__name__}: {e}"
    fig.update(_footprint(system))
    return fig, skipped


def _footprint(system) -> dict:
    """What the load left behind: the database on disk and the daemon's memory."""
    out = {}
    db_mb = system.db_mb()
    if db_mb:
        out["db_mb_after_load"] = {"value": db_mb, "runs": 1}
    kb = rss_kb(system.pid())
    if kb is not None:
        out["rss_mb_after_load"] = {"value": kb / 1024, "runs": 1}
    return out
