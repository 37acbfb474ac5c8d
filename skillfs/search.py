"""Search and glob over the current version of every file: one engine behind the CLI, the
control API, Acontext's artifact routes and the MCP server, so that they all match alike.

Not through the mount: grep through FUSE pays a round trip into Python for every open, read
and release, while the daemon holds the index and the content in memory already.

Never blocking the mount or ingestion: which files to search is read from the index on the
trio thread, each skill's files at once; then the files go, in slices, to a worker thread
that takes their contents from the content cache (without reordering it; decompressing is
the cost) and matches them (RE2 releases the GIL); what the cache does not hold is read from
the database in one query per slice, between which its other users' queries and commits
run. Between slices the loop is free, and a deadline (`timeout`) ends the search with what
it found so far. Searches take turns on that thread, so many at once still use one core.

Patterns are RE2's (google-re2): matching is linear in the text whatever the pattern, so
`(a+)+$` on a long line answers at once. The `regex` module's `timeout` was the other way:
it only stops a runaway match once it has burnt its time (`(\\w+\\s?)+$` on a 10 KB line
overran a 2 s timeout by 2 s here), and a search over 100,000 files has no time to give
one file. What RE2 does not do (backreferences, look-around) is refused when the pattern is
compiled, with RE2's reason.

Lines as grep reads them: a match lies within one line (a match found across a newline is
tried again on its line alone). A file holding a NUL byte is binary: one `Match` with
`binary` set and no text says it matches, as grep's "binary file matches". A line longer
than MAX_TEXT characters is shown cut around its first match, each cut end marked with `…`.

Globs are matched against paths relative to the space (`daily-logs/*.md`): `*` and `?`
stay within a path component, `**` spans any number of them, `[abc]` and `{a,b}` as in the
shell; a glob without `/` is matched against the file's name, at any depth (`*.md`); names
starting with a dot are not hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from .errors import NotFound
from .patterns import Pattern, compile_glob, compile_pattern
from .store.tree import FileNode, Skill, Space

MAX_TEXT = 1000  # characters of a line shown
SLICE_FILES = 1024  # files matched per trip to a worker thread
SLICE_BYTES = 4 << 20
# Searches take turns on one worker thread, a slice at a time: however many agents search at
# once, matching uses one core, and the other stays free for the mount and the spool.
_MATCHING = trio.CapacityLimiter(1)


@dataclass(frozen=True)
class Match:
    space: str  # "" for a skill in no space (found by its id): it has no path in the mount
    skill: str
    path: str  # in the skill
    line: int  # 1-based
    text: str  # the line, without its newline; "" for a binary file
    binary: bool = False

    @property
    def mount_path(self) -> str:
        """The file's path under the mount root."""
        return f"{self.space}/{self.skill}/{self.path}"


@dataclass(frozen=True)
class Found:
    matches: list[Match]
    truncated: bool  # more matched than max_results
    timed_out: bool  # the deadline ended the search: files were left unsearched

    def as_json(self) -> dict:
        """The answer the control API and MCP give: `file` under the mount root, `path` in
        the skill."""
        return {"matches": [{"file": m.mount_path, "space": m.space, "skill": m.skill,
                             "path": m.path, "line": m.line, "text": m.text,
                             "binary": m.binary} for m in self.matches],
                "truncated": self.truncated, "timed_out": self.timed_out}






# -- scope ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """One skill as seen in one space."""

    space: str
    skill: Skill


def _units(store, spaces: list[str] | None, skill: str | None) -> list[_Unit]:
    """The skills to search, by space name then skill name. `spaces`: names or ids."""
    tree = store.tree
    if spaces is None:
        chosen: list[Space] = list(tree.spaces.values())
    else:
        chosen = [store.ctx.space(ref) for ref in spaces]
    chosen.sort(key=lambda s: s.name)
    if skill is None:
        return [_Unit(space.name, sk) for space in chosen
                for _, sk in sorted(space.skills.items())]
    units = [_Unit(space.name, sk) for space in chosen
             for sk in [space.skills.get(skill) or _by_id(space, skill)] if sk is not None]
    if not units and spaces is None and skill in tree.skills:
        units = [_Unit("", tree.skills[skill])]  # a skill in no space, by id
    if not units:
        where = "any space" if spaces is None else "space " + ", ".join(repr(s) for s in spaces)
        raise NotFound(f"no skill {skill!r} in {where}")
    return units


def _by_id(space: Space, skill_id: str) -> Skill | None:
    found = [sk for sk in space.skills.values() if sk.id == skill_id]
    return found[0] if found else None


def _files(skill: Skill, globbed: Callable[[str], bool] | None) -> list[FileNode]:
    """The skill's current files in path order (a reserved file, not yet written, is not
    one); taken at once, on the trio thread."""
    return [node for path, node in sorted(skill.files.items()) if node.version
            and (globbed is None or globbed(f"{skill.name}/{path}"))]


# -- search -----------------------------------------------------------------------------


async def search(store, pattern: str, *, spaces: list[str] | None = None,
                 skill: str | None = None, glob: str | None = None, fixed: bool = False,
                 ignore_case: bool = False, max_results: int = 1000,
                 timeout: float = 5.0) -> Found:
    """Lines of current files that match `pattern`, in space, skill and path order."""
    compiled = compile_pattern(pattern, fixed=fixed, ignore_case=ignore_case)
    globbed = compile_glob(glob) if glob is not None else None
    run = _Search(store, compiled, max_results, time.monotonic() + timeout)
    await run.run(_units(store, spaces, skill), globbed)
    return Found(run.matches, run.truncated, run.timed_out)


_Line = tuple[str, int, str, bool]  # path, line, text, binary


class _Search:
    """One search's progress. The skills are searched once each (a skill in several spaces
    too), as one stream of files cut into slices: a slice may span many small skills, so a
    search costs a few trips to a worker thread, not a few per skill. Matches are handed
    out per space and skill, in order, as each skill is done."""

    def __init__(self, store, pattern: Pattern, max_results: int, deadline: float) -> None:
        self.store = store
        self.pattern = pattern
        self.max_results = max_results
        self.deadline = deadline
        self.matches: list[Match] = []
        self.truncated = False
        self.timed_out = False
        self._found: dict[str, list[_Line]] = {}  # by skill id
        self._lines = 0  # found, each skill counted once
        self._done: set[str] = set()  # skill ids
        self._next_unit = 0

    async def run(self, units: list[_Unit], globbed: Callable[[str], bool] | None) -> None:
        skills = list({unit.skill.id: unit.skill for unit in units}.values())
        self._found = {sk.id: [] for sk in skills}
        listed = await _listed(skills, globbed)
        pos = 0
        while pos < len(listed) and not self._stopped():
            end = _slice_end(listed, pos)
            await self._slice(listed[pos:end])
            # Files are listed skill by skill: the slice's skills are done but its last
            # one, unless the next slice starts another.
            last = listed[end - 1][0]
            self._done.update(sid for sid, _ in listed[pos:end] if sid != last)
            if end == len(listed) or listed[end][0] != last:
                self._done.add(last)
            pos = end
            self._hand_out(units)
        self._done.update(self._found)  # what is left holds what was found of it
        self._hand_out(units)

    def _stopped(self) -> bool:
        return self.truncated or self._lines > self.max_results or self._out_of_time()

    def _hand_out(self, units: list[_Unit]) -> None:
        while self._next_unit < len(units) and not self.truncated:
            unit = units[self._next_unit]
            if unit.skill.id not in self._done:
                return
            for path, line, text, binary in self._found[unit.skill.id]:
                if len(self.matches) == self.max_results:
                    self.truncated = True
                    return
                self.matches.append(Match(unit.space, unit.skill.name, path, line, text,
                                          binary))
            self._next_unit += 1

    async def _slice(self, part: list[tuple[str, FileNode]]) -> None:
        """Match a slice of files: those the cache holds at once, then those it does not,
        read from the database in one query."""
        room = self.max_results - self._lines + 1  # one more than fits: truncated
        found, missing = await trio.to_thread.run_sync(
            self._match, part, range(len(part)), None, room, limiter=_MATCHING)
        if missing and not self._out_of_time():
            contents = await self.store.ctx.read(self.store.files.read_versions,
                                                 [_key(part[i][1]) for i in missing])
            more, _ = await trio.to_thread.run_sync(self._match, part, missing, contents, room,
                                                    limiter=_MATCHING)
            found.update(more)
        for i in sorted(found):
            self._found[part[i][0]].extend(found[i])
            self._lines += len(found[i])

    def _out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out

    # On a worker thread. The cache is read without touching its order: a search must not
    # make it keep what only the search read.
    def _match(self, part: list[tuple[str, FileNode]], which: Iterable[int],
               contents: dict[tuple[int, int], bytes] | None, room: int
               ) -> tuple[dict[int, list[_Line]], list[int]]:
        """Lines found in each file of `part` (by index) and the files whose content was
        not at hand, stopping after `room` lines."""
        found: dict[int, list[_Line]] = {}
        missing = []
        for i in which:
            node = part[i][1]
            key = _key(node)
            content = (self.store.cache.get(key, touch=False) if contents is None
                       else contents.get(key))
            if content is None:
                # Not cached; in the second pass, a version purged since the slice was taken.
                missing.append(i)
                continue
            lines = file_matches(self.pattern, content, node.path, room)
            if lines:
                found[i] = lines
                room -= len(lines)
            if room <= 0 or self._out_of_time():
                break
        return found, missing


def _key(node: FileNode) -> tuple[int, int]:
    return node.id, node.version


async def _listed(skills: list[Skill], globbed: Callable[[str], bool] | None
                  ) -> list[tuple[str, FileNode]]:
    """(skill id, file) for every file to search, skill by skill, each skill's files taken
    at once; the loop is let go now and then."""
    listed: list[tuple[str, FileNode]] = []
    for i, skill in enumerate(skills, start=1):
        listed.extend((skill.id, node) for node in _files(skill, globbed))
        if i % 64 == 0:
            await trio.sleep(0)
    return listed


def _slice_end(listed: list[tuple[str, FileNode]], pos: int) -> int:
    """Where the slice that starts at `pos` ends: SLICE_FILES files, or SLICE_BYTES of
    them (one at least)."""
    end, size = pos, 0
    limit = min(len(listed), pos + SLICE_FILES)
    while end < limit and (end == pos or size + listed[end][1].size <= SLICE_BYTES):
        size += listed[end][1].size
        end += 1
    return end


def file_matches(pattern: Pattern, content: bytes, path: str, limit: int) -> list[_Line]:
    """(path, line, text, binary) for each matching line of one file, at most `limit`."""
    if limit <= 0 or pattern.span(content, 0, len(content))[0] < 0:
        return []
    if b"\0" in content:
        for line_no, _, _, _ in pattern.lines(content):
            return [(path, line_no, "", True)]
        return []
    out = []
    for line_no, start, end, at in pattern.lines(content):
        out.append((path, line_no, _shown(content, start, end, at), False))
        if len(out) == limit:
            break
    return out


def _shown(content: bytes, start: int, end: int, at: int) -> str:
    text = content[start:end].decode(errors="replace")
    if len(text) <= MAX_TEXT:
        return text
    # Roughly where the match is, in characters: a tenth of the window before it.
    at_char = len(content[start:at].decode(errors="replace"))
    begin = max(0, min(at_char - MAX_TEXT // 10, len(text) - MAX_TEXT))
    shown = text[begin:begin + MAX_TEXT]
    return ("…" if begin else "") + shown + ("…" if begin + MAX_TEXT < len(text) else "")


# -- glob -------------------------------------------------------------------------------


async def glob(store, pattern: str, *, spaces: list[str] | None = None,
               skill: str | None = None, max_results: int = 10000) -> list[str]:
    """Paths under the mount root (`space/skill/file`) of current files that match the
    glob, in order; at most `max_results`."""
    globbed = compile_glob(pattern)
    out: list[str] = []
    for unit in _units(store, spaces, skill):
        prefix = f"{unit.space}/{unit.skill.name}/"
        out.extend(prefix + node.path for node in _files(unit.skill, globbed))
        if len(out) >= max_results:
            return out[:max_results]
        await trio.sleep(0)
    return out
