"""Purging what must not stay: a secret or personal data in a file's history or a session.

History keeps every version, so what got into a file once stays until it is purged. A purge
keeps the rows (a version, a message) and replaces their content by a tombstone saying who
purged it, when and why, in one transaction; then the database is compacted, because the
old bytes stay in its files: DuckDB's is copied into a new file (store/database.py),
PostgreSQL's tables are rewritten by VACUUM FULL (store/postgres.py). The current
content of a file is never purged in place: it is first written again, as a new version,
with the matches taken out. What the learner already wrote into skill files from a purged
session is not touched: purge those files too.

Purging by pattern uses the search engine's patterns (skillfs/search.py: RE2, linear time,
its errors), matched against each version's whole content, and gives up, purging nothing,
after MATCH_SECONDS: a file can have thousands of versions.

Every purge is logged (path or session, versions, who, why), never the purged bytes.
"""

from __future__ import annotations

import logging
import time

from ..errors import Invalid, NotFound, SkillfsError
from ..patterns import Pattern, SearchError, compile_pattern
from . import versions, writes
from .context import Context, Service
from .events import FileChanged
from .files import Files
from .rows import PurgeResult, now_ns, sha256
from .tree import FileNode, Skill
from .sessions import Sessions

log = logging.getLogger("skillfs.store")

PURGED = b"[purged]"  # what a match in the current content is replaced by
BATCH = 64  # versions read at a time while matching: a file may have thousands
MATCH_SECONDS = 120.0


class Purge(Service):
    """Purging file versions and session messages, then compacting the database."""

    def __init__(self, ctx: Context, files: Files, sessions: Sessions) -> None:
        super().__init__(ctx)
        self.files = files
        self.sessions = sessions

    async def purge_file(self, skill_id: str, path: str, *, by: str, why: str,
                         version: int | None = None,
                         pattern: str | None = None) -> PurgeResult:
        """Purge one version of the file at `path` (or of the last file that had that
        path), or every version whose content the regular expression `pattern` matches."""
        if (version is None) == (pattern is None):
            raise Invalid("purge one version or the versions matching a pattern")
        compiled = _purge_pattern(pattern) if pattern is not None else None
        skill = self.ctx.skill(skill_id)
        async with self._lock:
            fid = await self._db(self.files.find_file_id, skill, path)
            node = skill.files.get(path)
            node = node if node is not None and node.id == fid and node.version else None
            if version is not None:
                doomed = await self._db(self._purgeable, fid, path, version,
                                        node.version if node else None)
            else:
                doomed = await self._db(self._matching, fid, compiled,
                                        time.monotonic() + MATCH_SECONDS)
            if not doomed:
                # Still compacted: after a compaction that failed, the same purge again
                # takes out what is left.
                return PurgeResult(path, [], None, await self._compact())
            stamp = (by, now_ns(), why)
            rewritten = None
            if node is not None and node.version in doomed:
                assert compiled is not None  # a current version cannot be purged by number
                content = compiled.regexp.sub(PURGED, await self.files.content(node))
                await self._rewrite_purged(skill, node, content, fid, doomed, stamp)
                rewritten = node.version
            else:
                await self._write(lambda con: versions.purge(con, fid, doomed, stamp))
            for v in doomed:
                self.cache.forget((fid, v))
        log.warning("purged %s/%s versions %s (file %d) by %s: %s%s", skill.name, path,
                    sorted(doomed), fid, by, why,
                    f"; the current content is version {rewritten}" if rewritten else "")
        if rewritten:
            await self.ctx.publish(FileChanged(skill.id, path, fid, by))
        return PurgeResult(path, sorted(doomed), rewritten, await self._compact())

    def _purgeable(self, fid: int, path: str, version: int, current: int | None) -> set[int]:
        row = self.con.execute(
            "SELECT deleted, purged_at_ns FROM file_versions WHERE file_id = ? AND version = ?",
            [fid, version]).fetchone()
        if row is None:
            raise NotFound(f"{path!r} has no version {version}")
        if row[0]:
            raise Invalid(f"version {version} of {path!r} is a deletion: it holds nothing")
        if version == current:
            raise Invalid(
                f"version {version} is the current content of {path!r}: write the file first "
                "(then purge this version), or purge by pattern (--all-matching REGEX), "
                "which also rewrites the current content without the matches")
        return set() if row[1] is not None else {version}

    def _matching(self, fid: int, pattern: Pattern, deadline: float) -> set[int]:
        listed = [v for (v,) in self.con.execute(
            "SELECT version FROM file_versions WHERE file_id = ? AND NOT deleted "
            "AND purged_at_ns IS NULL ORDER BY version", [fid]).fetchall()]
        found = set()
        for i in range(0, len(listed), BATCH):
            if time.monotonic() > deadline:
                raise SearchError(f"matching {len(listed)} versions took over {MATCH_SECONDS:.0f}"
                                  " s; nothing was purged: purge single versions (--version)")
            keys = [(fid, v) for v in listed[i:i + BATCH]]
            for (_, v), content in versions.read_contents(self.con, keys).items():
                if pattern.span(content, 0, len(content))[0] >= 0:
                    found.add(v)
        return found

    async def _rewrite_purged(self, skill: Skill, node: FileNode, content: bytes, fid: int,
                              doomed: set[int], stamp: tuple[str, int, str]) -> None:
        """Write the current content without the matches as a new version and purge the
        doomed versions (the old current one among them) in one transaction."""
        self.ctx.check_size(content)
        new_desc = self.files.check_skill_md(skill, node.path, content)
        t = stamp[1]
        new = FileNode(node.id, skill.id, node.path, node.version + 1, len(content),
                       sha256(content), t, node.ctime_ns)
        reason = f"purge: {stamp[2]}"

        def sql(con):
            writes.bump(con, fid, new.version)
            writes.version(con, new, content, stamp[0], reason, None, None, False)
            versions.purge(con, fid, doomed, stamp)
            if new_desc is not None:
                con.execute("UPDATE skills SET description = ?, updated_ns = ? WHERE id = ?",
                            [new_desc, t, skill.id])
        await self._write(sql)
        node.version, node.size, node.sha256, node.mtime_ns = (
            new.version, new.size, new.sha256, t)
        self.cache.put((fid, node.version), content)
        if new_desc is not None:
            skill.description = new_desc
        skill.updated_ns = t

    async def purge_session(self, session_id: str, *, by: str, why: str) -> tuple[int, bool]:
        """Replace the content of a session's messages (text, parts, meta) by a tombstone,
        and what the learner kept from them (task descriptions, progress, preferences, its
        lessons). The rows and the spool ledger stay: exactly-once ingestion still holds.
        Returns how many messages were purged, and whether the database was compacted."""
        await self.sessions.get_session(session_id)
        stamp = [by, now_ns(), why]

        def sql(con):
            count = len(con.execute(_TOMBSTONE, [*stamp, session_id]).fetchall())
            con.execute("UPDATE tasks SET description = '[purged]', progress = NULL, "
                        "preferences = NULL WHERE session_id = ?", [session_id])
            con.execute("DELETE FROM lessons WHERE session_id = ?", [session_id])
            return count
        count = await self._write(sql)
        log.warning("purged %d messages of session %s by %s: %s", count, session_id, by, why)
        return count, await self._compact()

    async def _compact(self) -> bool:
        """Compact the database so purged bytes leave the file; False if that failed (the
        purge stands: it is committed)."""
        t0 = time.monotonic()
        try:
            await self._db(self.ctx.db.compact)
        except (SkillfsError, OSError) as e:
            log.error("compacting the database after a purge failed: %s", e)
            return False
        log.info("compacted the database in %.2f s", time.monotonic() - t0)
        return True


# A session's messages not purged yet, each replaced by an empty message of the same role
# and form (its original too: the API hands that out as is), stamped (by, at, why).
_TOMBSTONE = (
    "UPDATE messages SET body = json_object('role', role, 'text', '', "
    "'tool_calls', CAST('[]' AS JSON), 'tool_call_id', NULL, 'name', NULL, "
    "'format', format)::VARCHAR, original = CASE format "
    "WHEN 'acontext' THEN json_object('role', role, 'parts', CAST('[]' AS JSON)) "
    "WHEN 'claude-code' THEN json_object('type', CASE role WHEN 'assistant' THEN 'assistant' "
    "ELSE 'user' END, 'message', json_object('content', '')) "
    "ELSE json_object('role', role, 'content', '') END::VARCHAR, "
    "meta = NULL, purged_by = ?, purged_at_ns = ?, purge_reason = ? "
    "WHERE session_id = ? AND purged_at_ns IS NULL RETURNING 1")


def _purge_pattern(text: str) -> Pattern:
    pattern = compile_pattern(text)
    if pattern.span(b"", 0, 0)[0] >= 0:
        raise SearchError(f"{text!r} matches the empty string, so it would match every version")
    return pattern
