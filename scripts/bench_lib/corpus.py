"""Deterministic corpus: spaces x skills x Markdown files of 1-8 KB.

The same (seed, n_files) always yields byte-identical trees, so figures from
different runs and machines are comparable. Text is built from a seeded pool
of sentences so that 100,000 files (~450 MB) are generated in seconds.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

# Rare token planted in ~1% of files: `grep -rl NEEDLE` must read every other
# file to the end, which is the worst case for a recursive grep.
NEEDLE = "zqxneedle"
NEEDLE_EVERY = 97

MIN_SIZE = 1024
MAX_SIZE = 8192

_WORDS = """
agent task session user request tool call result error retry timeout cache
memory skill file space folder path mount daemon store version history commit
rollback deploy build test lint format release branch merge review patch diff
config setting option flag default value schema field record message role
content prompt model token context window summary decision outcome learning
pattern approach rule fact preference note log entry daily weekly report
database query index table column row transaction lock writer reader thread
worker queue batch stream buffer flush sync async loop event signal handler
server client socket request response header body status route endpoint api
python rust shell script command argument output input parser module package
dependency install upgrade pin lockfile virtualenv container image volume
network proxy port host address certificate secret token key credential
kubernetes cluster node pod service ingress helm chart manifest namespace
terraform plan apply state backend provider resource variable module output
postgres migration backup restore replica primary vacuum analyze explain
frontend component render state hook effect style layout page form input
customer invoice payment order refund ticket support escalation priority
meeting agenda owner deadline milestone roadmap estimate scope risk blocker
always never usually first then after before when unless because instead
prefer avoid check verify confirm ensure keep remove rename move create update
quickly carefully explicitly safely again later early only also still
small large stale fresh broken stable flaky slow fast clean dirty empty full
""".split()

_TOPICS = """
deploy review debug triage write refactor migrate monitor document summarize
plan estimate release backup restore onboard audit profile benchmark package
""".split()

_OBJECTS = """
kubernetes postgres terraform python rust frontend invoices tickets meetings
releases incidents dashboards pipelines notebooks reports contracts emails
schemas migrations backups alerts queues caches containers
""".split()

_OWNERS = """
alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia
peggy rupert sybil trent victor walter yolanda
""".split()

_POOL_SENTENCES = 20000


@dataclass(frozen=True)
class Layout:
    n_files: int
    spaces: int
    skills_per_space: int
    files_per_skill: int


def layout_for(n_files: int) -> Layout:
    # Larger corpora get more skills and spaces rather than huge directories,
    # as a long-lived memory would grow.
    if n_files <= 5000:
        sps, fps = 25, 10
    elif n_files <= 50000:
        sps, fps = 50, 20
    else:
        sps, fps = 100, 20
    spaces = math.ceil(n_files / (sps * fps))
    return Layout(n_files, spaces, sps, fps)


@dataclass
class Corpus:
    root: Path
    seed: int
    n_files: int
    total_bytes: int
    spaces: list[str]
    skills: int
    files: list[str] = field(repr=False)  # relative paths, sorted
    needle_files: list[str] = field(repr=False)

    def space_files(self, space: str) -> list[str]:
        prefix = space + "/"
        return [f for f in self.files if f.startswith(prefix)]

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            "files": self.n_files,
            "bytes": self.total_bytes,
            "spaces": len(self.spaces),
            "skills": self.skills,
            "needle": NEEDLE,
            "needle_files": len(self.needle_files),
        }


class _Text:
    """Seeded pools of sentences, headings and bullets."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"skillfs-bench-pool:{seed}")
        w = _WORDS
        self.sentences = []
        for _ in range(_POOL_SENTENCES):
            k = rng.randint(6, 18)
            words = [rng.choice(w) for _ in range(k)]
            if rng.random() < 0.15:
                i = rng.randrange(k)
                words[i] = f"`{words[i]}_{rng.choice(w)}`"
            self.sentences.append(" ".join(words).capitalize() + ". ")
        self.headings = [
            " ".join(rng.choice(w) for _ in range(rng.randint(2, 5))).title()
            for _ in range(2000)
        ]
        self.bullets = [
            " ".join(rng.choice(w) for _ in range(rng.randint(3, 12)))
            for _ in range(4000)
        ]
        self.code = [
            f"{rng.choice(['git', 'kubectl', 'psql', 'make', 'uv', 'cargo'])} "
            f"{rng.choice(w)} --{rng.choice(w)}={rng.choice(w)}"
            for _ in range(1000)
        ]

    def body(self, rng: random.Random, size: int, title: str, needle: bool) -> str:
        line = f"Seen once: {NEEDLE} marks this note.\n\n" if needle else ""
        room = size - len(line)
        parts = [f"# {title}\n\n"]
        n = len(parts[0])
        while n < room:
            r = rng.random()
            if r < 0.18:
                s = f"\n## {rng.choice(self.headings)}\n\n"
            elif r < 0.40:
                s = "".join(
                    f"- {rng.choice(self.bullets)}\n" for _ in range(rng.randint(2, 6))
                ) + "\n"
            elif r < 0.47:
                s = "".join(
                    f"{i}. {rng.choice(self.bullets)}\n" for i in range(1, rng.randint(3, 6))
                ) + "\n"
            elif r < 0.52:
                s = "```bash\n" + "\n".join(
                    rng.choice(self.code) for _ in range(rng.randint(1, 4))
                ) + "\n```\n\n"
            else:
                s = "".join(
                    rng.choice(self.sentences) for _ in range(rng.randint(2, 6))
                ).rstrip() + "\n\n"
            parts.append(s)
            n += len(s)
        if line:
            # Somewhere in the first half, so truncation below never drops it.
            parts.insert(1 + rng.randrange(max(1, len(parts) // 2)), line)
        text = "".join(parts)
        # Cut at a word boundary just under the size, then pad with spaces to
        # the exact size so that sizes follow the drawn distribution.
        text = text[: size - 1]
        cut = text.rfind(" ")
        if cut > size - 64:
            text = text[:cut]
        text = text.rstrip()
        return text + " " * (size - 1 - len(text)) + "\n"


def _skill_name(rng: random.Random, index: int) -> str:
    # Agent Skills rule: lowercase, digits, single hyphens, <= 64 chars.
    # The index keeps names unique across the whole corpus.
    return f"{rng.choice(_TOPICS)}-{rng.choice(_OBJECTS)}-{index:05d}"


def _space_name(index: int) -> str:
    return f"{_OWNERS[index % len(_OWNERS)]}-{index:03d}"


def plan(n_files: int, seed: int) -> list[tuple[str, int, str]]:
    """(relative path, size, kind) for every file, in creation order."""
    lay = layout_for(n_files)
    rng = random.Random(f"skillfs-bench-layout:{seed}")
    out: list[tuple[str, int, str]] = []
    skill_index = 0
    for s in range(lay.spaces):
        space = _space_name(s)
        for _ in range(lay.skills_per_space):
            if len(out) >= n_files:
                return out
            skill = _skill_name(rng, skill_index)
            skill_index += 1
            out.append((f"{space}/{skill}/SKILL.md", rng.randint(MIN_SIZE, MAX_SIZE), "skill"))
            for j in range(1, lay.files_per_skill):
                if len(out) >= n_files:
                    return out
                size = rng.randint(MIN_SIZE, MAX_SIZE)
                r = rng.random()
                if r < 0.45:
                    # Daily logs: one file per day.
                    day = j - 1
                    name = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}.md"
                elif r < 0.85:
                    name = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{j}.md"
                else:
                    name = f"references/{rng.choice(_WORDS)}-{j}.md"
                out.append((f"{space}/{skill}/{name}", size, "note"))
    return out


def generate(root: Path, n_files: int, seed: int = 1) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    text = _Text(seed)
    files = plan(n_files, seed)
    total = 0
    needles: list[str] = []
    skills: set[str] = set()
    made_dirs: set[Path] = set()
    for i, (rel, size, kind) in enumerate(files):
        rng = random.Random(f"skillfs-bench-file:{seed}:{i}")
        needle = i % NEEDLE_EVERY == NEEDLE_EVERY // 2
        parts = rel.split("/")
        skill = parts[1]
        skills.add(f"{parts[0]}/{skill}")
        if kind == "skill":
            # Plain words only: a backtick cannot start a YAML plain scalar.
            desc = rng.choice(text.sentences).replace("`", "").strip()[:200]
            head = f"---\nname: {skill}\ndescription: {desc}\n---\n\n"
            body = text.body(rng, size - len(head), skill.replace("-", " ").title(), needle)
            data = head + body
        else:
            title = parts[-1][:-3].replace("-", " ").title()
            data = text.body(rng, size, title, needle)
        path = root / rel
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        raw = data.encode()
        with open(path, "wb") as f:
            f.write(raw)
        total += len(raw)
        if needle:
            needles.append(rel)
    spaces = sorted({rel.split("/", 1)[0] for rel, _, _ in files})
    corpus = Corpus(
        root=root,
        seed=seed,
        n_files=len(files),
        total_bytes=total,
        spaces=spaces,
        skills=len(skills),
        files=sorted(rel for rel, _, _ in files),
        needle_files=sorted(needles),
    )
    return corpus


def write_manifest(corpus: Corpus, path: Path) -> None:
    path.write_text(json.dumps(corpus.summary(), indent=2) + "\n")


if __name__ == "__main__":
    import sys
    import time

    t = time.perf_counter()
    c = generate(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    print(json.dumps(c.summary()), f"{time.perf_counter() - t:.2f}s", file=sys.stderr)
