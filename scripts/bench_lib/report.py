"""Results as JSON, a Markdown table and a PNG chart of ratios to native."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .daemon_figures import DAEMON_FIGURES
from .figures import FIGURES
from .search_figures import SEARCH_FIGURES

ORDER = ["native", "floor", "peer", "skillfs", "skillfs-pg"]
# skillfs on each backend: its own DuckDB file, and PostgreSQL (`scripts/bench --backend`)
BACKENDS = {"skillfs": "DuckDB", "skillfs-pg": "PostgreSQL"}


def label(key: str) -> tuple[str, str, bool]:
    if key in FIGURES:
        return FIGURES[key]
    name, unit = DAEMON_FIGURES.get(key) or SEARCH_FIGURES.get(key, (key, ""))
    return name, unit, False


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit in ("µs", "msg/s", "files/s"):
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:,.1f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def add_ratios(size_result: dict) -> None:
    """ratio = figure / native's figure, measured in the same run."""
    systems = size_result["systems"]
    native = systems.get("native", {}).get("figures", {})
    for res in systems.values():
        for key, f in res.get("figures", {}).items():
            base = native.get(key, {}).get("value")
            f["ratio"] = f["value"] / base if label(key)[2] and base else None


def targets(result: dict) -> list[tuple[str, str, str]]:
    """(target, where it stands, met/missed/not measured) for skillfs."""
    rows = []
    sizes = result["sizes"]

    def get(size, system, key):
        figures = sizes.get(str(size), {}).get("systems", {}).get(system, {}).get("figures", {})
        return figures.get(key, {}).get("value")

    def row(target, value_text, ok):
        rows.append((target, value_text,
                     "not measured" if ok is None else ("met" if ok else "missed")))

    small = min((int(s) for s in sizes), default=None)
    if small is None:
        return rows
    w, fl, nat, peer = (get(small, s, "grep_all_warm")
                        for s in ("skillfs", "floor", "native", "peer"))
    n = f"{small:,} files"
    row(f"warm grep -r ≤ 1.2× floor ({n})", f"{w / fl:.2f}× floor" if w and fl else "—",
        (w / fl <= 1.2) if w and fl else None)
    row(f"warm grep -r ≤ 10× native ({n})", f"{w / nat:.1f}× native" if w and nat else "—",
        (w / nat <= 10) if w and nat else None)
    row(f"warm grep -r ≥ 8× faster than peer ({n})",
        f"{peer / w:.1f}× faster" if w and peer else "—", (peer / w >= 8) if w and peer else None)
    c, cn = get(small, "skillfs", "grep_all_cold"), get(small, "native", "grep_all_cold")
    row(f"cold grep -r ≤ 20× native ({n})", f"{c / cn:.1f}× native" if c and cn else "—",
        (c / cn <= 20) if c and cn else None)
    o = get(small, "skillfs", "orc_p50")
    row("file read p50 < 150 µs warm (in-process open+read+close; `cat` itself spawns a process)",
        f"{o:.0f} µs" if o else "—", (o < 150) if o else None)
    e = get(small, "skillfs", "edit_visible_p99")
    row("edit-to-visible p99 < 50 ms", f"{e:.1f} ms" if e else "—", (e < 50) if e else None)
    i = get(small, "skillfs", "spool_10000_msgs_s")
    row("ingestion ≥ 50,000 msg/s (large files)", f"{i:,.0f} msg/s" if i else "—",
        (i >= 50000) if i else None)
    sc = get(small, "skillfs", "spool_commit_p50")
    row("single small spool file committed < 50 ms p50", f"{sc:.1f} ms" if sc else "—",
        (sc < 50) if sc else None)
    big = 100_000
    m, r = get(big, "skillfs", "mount_ready"), get(big, "skillfs", "rss")
    row("100,000 files: mount ready < 3 s", f"{m:.2f} s" if m else "—", (m < 3) if m else None)
    row("100,000 files: RSS < 300 MB", f"{r:.0f} MB" if r else "—", (r < 300) if r else None)
    g_big, g_small = get(big, "skillfs", "grep_all_warm"), get(small, "skillfs", "grep_all_warm")
    if g_big and g_small and small != big:
        per = (g_big / big) / (g_small / small)
        row("100,000 files: grep -r linear in files (per-file cost vs smallest, ≤ 1.5×)",
            f"{per:.2f}×", per <= 1.5)
    else:
        row("100,000 files: grep -r linear in files", "—", None)
    lo = get(small, "skillfs", "learning_overhead")
    row("learning overhead < 200 ms beyond model time (rules learner, no model; p50)",
        f"{lo:.0f} ms" if lo else "—", (lo < 200) if lo else None)
    lm = get(small, "skillfs", "learning_model_p50")
    lm99 = get(small, "skillfs", "learning_model_p99")
    calls = get(small, "skillfs", "learning_model_calls")
    per = get(small, "skillfs", "learning_model_per_call")
    tokens = get(small, "skillfs", "learning_model_tokens")
    row("learning overhead < 200 ms beyond model time "
        "(openai learner, scripted zero-latency model; p50)",
        f"{lm:.0f} ms p50, {lm99:.0f} ms p99; {calls:.0f} calls/session, {per:.1f} ms/call"
        + (f"; {tokens:.0f} input tokens/task" if tokens else "")
        if lm is not None and lm99 is not None and calls and per is not None else "—",
        (lm < 200) if lm is not None else None)
    return rows


# Reads against the floor (floorfs.py: the same tree from Python dicts, the cost of FUSE and
# Python alone): (figure, largest ratio to the floor that meets the target).
FLOOR_TARGETS = [("orc_cold_p50", 2.0), ("grep_all_warm", 1.2), ("grep_space_warm", 1.2),
                 ("find_warm", 1.2), ("ls_lR_warm", 1.2), ("orc_p50", 1.2), ("cat_p50", 1.2)]


def against_floor(result: dict) -> list[str]:
    """Tables of skillfs's read figures as ratios to the floor's, at every size: one for
    each backend measured."""
    return [line for system in BACKENDS for line in _against_floor(result, system)]


def _against_floor(result: dict, system: str) -> list[str]:
    sizes = [size for size, sres in result["sizes"].items()
             if {"floor", system} <= set(sres["systems"])]
    if not sizes:
        return []
    lines = ["", f"## Reads against the floor (skillfs on {BACKENDS[system]} ÷ floor, same "
                 "run)", "",
             "| figure | target | " + " | ".join(f"{int(s):,} files" for s in sizes) + " |",
             "|---|---:|" + "---:|" * len(sizes)]
    for key, limit in FLOOR_TARGETS:
        lab, unit, _ = label(key)
        cells = []
        for size in sizes:
            systems = result["sizes"][size]["systems"]
            mine = systems[system].get("figures", {}).get(key, {}).get("value")
            floor = systems["floor"].get("figures", {}).get(key, {}).get("value")
            if not mine or not floor:
                cells.append("—")
                continue
            ratio = mine / floor
            cells.append(f"{fmt(mine, unit)} / {fmt(floor, unit)} = **{ratio:.2f}×** "
                         + ("met" if ratio <= limit else "missed"))
        lines.append(f"| {lab} ({unit}) | ≤ {limit:g}× | " + " | ".join(cells) + " |")
    return lines


def search_table(result: dict) -> list[str]:
    """skillfs search against grep -rn through the mount and on tmpfs, at every size."""
    rows = []
    for size, sres in result["sizes"].items():
        figs = sres["systems"].get("skillfs", {}).get("figures", {})
        mine = figs.get("search_skillfs", {}).get("value")
        if not mine:
            continue
        cells = [f"{int(size):,}", f"{mine:.3f}"]
        for key in ("search_grep_mount_warm", "search_grep_mount_cold", "search_grep_tmpfs"):
            other = figs.get(key, {}).get("value")
            cells.append(f"{other:.3f} (**{mine / other:.2f}×**)" if other else "—")
        warm = figs.get("search_grep_mount_warm", {}).get("value")
        cells.append("—" if not warm else "met" if mine < warm else "missed")
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "## Search (skillfs search ÷ grep -rn, same run)", "",
            "| files | skillfs search (s) | grep -rn, mount, warm (s) | grep -rn, mount, cold "
            "(s) | grep -rn, tmpfs (s) | faster than grep -rn through the mount |",
            "|---:|---:|---:|---:|---:|---|", *rows]


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# skillfs benchmark",
        "",
        f"{meta['date']} · {meta['mode']} · kernel {meta['kernel']} · {meta['fuse']} · "
        f"pyfuse3 {meta['pyfuse3']} · "
        f"Python {meta['python']} · {meta['cpus']} CPUs · commit {meta['commit']}",
        "",
        "Each time is the median of the runs shown in the JSON (fewer than asked when one run "
        "exceeded the per-figure budget); latencies are p50/p99 over all samples. "
        "In brackets: ratio to native in the same run. `grep` looks for a token present in ~1% "
        "of files, so every other file is read to its end.",
    ]
    for w in meta.get("warnings", []):
        lines += ["", f"> warning: {w}"]
    for size, sres in result["sizes"].items():
        c = sres["corpus"]
        systems = [s for s in ORDER if s in sres["systems"]]
        lines += ["", f"## {int(size):,} files · {c['bytes'] / 1e6:.1f} MB · "
                      f"{c['spaces']} spaces · {c['skills']} skills", ""]
        lines.append("| figure | " + " | ".join(systems) + " |")
        lines.append("|---|" + "---:|" * len(systems))
        keys = []
        for s in systems:
            for k in sres["systems"][s].get("figures", {}):
                if k not in keys:
                    keys.append(k)
        known = list(FIGURES) + list(DAEMON_FIGURES) + list(SEARCH_FIGURES)
        keys.sort(key=lambda k: known.index(k) if k in known else 999)
        for k in keys:
            lab, unit, _ = label(k)
            cells = []
            for s in systems:
                f = sres["systems"][s].get("figures", {}).get(k)
                if not f:
                    cells.append("—")
                    continue
                cell = fmt(f["value"], unit)
                if f.get("ratio") is not None and s != "native":
                    cell += f" ({f['ratio']:.3g}×)"
                cells.append(cell)
            lines.append(f"| {lab} ({unit}) | " + " | ".join(cells) + " |")
        notes = []
        for s in systems:
            for what, why in sres["systems"][s].get("skipped", {}).items():
                notes.append(f"- {s}, {what}: {why}")
            if sres["systems"][s].get("import_how"):
                notes.append(f"- {s}: corpus imported through {sres['systems'][s]['import_how']}")
            if sres["systems"][s].get("extra_entries"):
                notes.append(f"- {s}: {sres['systems'][s]['extra_entries']} entries beyond the "
                             "corpus (skills every space starts with); grep reads them too")
            lm = sres["systems"][s].get("figures", {}).get("learning_model_p50")
            if lm and "wall_p50_ms" in lm:
                by_step = lm.get("between_calls_by_step_p50_ms", {})
                notes.append(
                    f"- {s}, learning with the scripted model ({lm['runs']} sessions after one "
                    f"warm-up of {lm['first_session_ms']:.0f} ms): wall {lm['wall_p50_ms']:.1f} ms "
                    f"p50, of which model {lm['model_p50_ms']:.2f} ms; spool rename to first call "
                    f"{lm['to_first_call_p50_ms']:.1f} ms, between calls "
                    f"{lm['between_calls_p50_ms']:.1f} ms, last answer to entry visible "
                    f"{lm['last_answer_to_visible_p50_ms']:.1f} ms (p50s); between calls by step: "
                    + ", ".join(f"{k} {v:.1f} ms" for k, v in by_step.items())
                    + f"; calls: {', '.join(f'{k} {v}' for k, v in lm['calls_by_stage'].items())}")
            for key in ("learning_overhead", "learning_model_p50"):
                b = sres["systems"][s].get("figures", {}).get(key, {}).get("backlog_s")
                if b and b >= 0.5:
                    notes.append(f"- {s}, {key}: {b:.1f} s waited first for the learner to "
                                 "finish the sessions the spool figures left (the figure "
                                 "measures an idle learner)")
            for chk in sres["systems"][s].get("check_failures", []):
                notes.append(f"- {s}: WRONG OUTPUT: {chk}")
        if notes:
            lines += [""] + notes
    skipped = result.get("skipped_systems", {})
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {s}: {why}" for s, why in skipped.items()]
    lines += against_floor(result)
    lines += search_table(result)
    lines += ["", "## Targets (skillfs)", "", "| target | now | status |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {st} |" for t, v, st in targets(result)]
    return "\n".join(lines) + "\n"


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    print("bench: matplotlib is missing; installing it into the venv for the chart",
          file=sys.stderr)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    if r.returncode != 0:
        print("bench: could not install matplotlib; no chart (pip install matplotlib)",
              file=sys.stderr)
        return False
    return True


def chart(result: dict, path: Path) -> bool:
    if not ensure_matplotlib():
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(result["sizes"])
    keys = [k for k, (_, _, cmp) in FIGURES.items() if cmp]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(13, 4.2 * len(sizes)), squeeze=False)
    colors = {"floor": "#4c72b0", "peer": "#dd8452", "skillfs": "#55a868"}
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        systems = [s for s in ORDER if s != "native" and s in result["sizes"][size]["systems"]]
        width = 0.8 / max(1, len(systems))
        for j, s in enumerate(systems):
            figs = result["sizes"][size]["systems"][s].get("figures", {})
            xs, ys = [], []
            for i, k in enumerate(keys):
                r = figs.get(k, {}).get("ratio")
                if r:
                    xs.append(i + (j - (len(systems) - 1) / 2) * width)
                    ys.append(r)
            ax.bar(xs, ys, width, label=s, color=colors.get(s))
        ax.axhline(1, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([FIGURES[k][0] for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("× native (log)")
        ax.set_title(f"{int(size):,} files")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict, out: Path, with_chart: bool = True) -> str:
    for sres in result["sizes"].values():
        add_ratios(sres)
    (out / "bench.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    md = markdown(result)
    (out / "bench.md").write_text(md)
    if with_chart:
        chart(result, out / "bench.png")
    return md
