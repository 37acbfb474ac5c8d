"""Sessions, their messages, and exactly-once spool ingestion.

Messages are written through the database's group commit: many API messages and spool
files share a transaction. A message's sequence number is taken when its write is queued,
so writes of one session queued in order commit in that order, in one group or in groups
one after the other. Where other daemons write the same database, the numbers are moved
past theirs inside the transaction (`_renumber`).

Spool ingestion is exactly once per host: the ledger's rows name the host whose spool held
the file, so two hosts' `alice/s1/0001.jsonl` are two files.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import names
from ..errors import Conflict, Exists, Invalid, NotFound
from ..messages import Control
from . import writes
from .context import Context, Service
from .events import SessionEvent, SpaceAdded, StoreEvent
from .rows import (
    _LEARNING_COLS,
    _SESSION_COLS,
    IngestResult,
    LearningRow,
    SessionRow,
    StoredMessage,
    _is_uuid,
    _json,
    _MessageBatch,
    _session,
    _unjson,
    now_ns,
    where,
)
from .spaces import Spaces


class SpoolFile(NamedTuple):
    """A parsed spool file, as the ingester hands it over."""

    rel_path: str
    digest: str
    file_key: str | None
    records: Sequence[Any]


def _batch_bytes(batch: _MessageBatch) -> int:
    return sum(map(len, batch.texts)) + sum(map(len, batch.originals))


class Sessions(Service):
    """Sessions, their messages, and the spool's ledger."""

    def __init__(self, ctx: Context, spaces: Spaces, host: str) -> None:
        super().__init__(ctx)
        self.spaces = spaces
        self.host = host  # whose spool: the ledger's key includes it
        self._session_seq: dict[str, int] = dict(self.con.execute(
            "SELECT session_id, max(seq) FROM messages GROUP BY session_id").fetchall())

    # -- sessions and messages ------------------------------------------------------------

    async def create_session(self, user: str | None = None, configs: dict | None = None,
                             space_id: str | None = None, name: str | None = None,
                             session_id: str | None = None) -> SessionRow:
        """`session_id` (a UUID) lets the caller pick the id; Exists if it is taken."""
        if session_id is not None and not _is_uuid(session_id):
            raise Invalid(f"session id {session_id!r} is not a UUID (lower-case, with hyphens)")
        space = self.ctx.space(space_id) if space_id else None
        t = now_ns()
        row = SessionRow(session_id or str(uuid.uuid4()), name, user,
                         space.id if space else None, dict(configs or {}), False, t, t)

        def sql(con):
            if session_id is not None and con.execute(
                    "SELECT 1 FROM sessions WHERE id = ?", [session_id]).fetchone():
                raise Exists(f"a session with id {session_id} already exists")
            self._sql_session(con, row)
            if space is not None:
                self._sql_learning(con, row.id, space.id, t)
        await self._write(sql)
        if space is not None:
            await self.ctx.publish(SessionEvent("attached", row.id, space.id))
        return row

    @staticmethod
    def _sql_session(con, row: SessionRow) -> None:
        con.execute(f"INSERT INTO sessions ({_SESSION_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                    [row.id, row.name, row.user, row.space_id, _json(row.configs), row.ended,
                     row.created_ns, row.updated_ns])

    @staticmethod
    def _sql_learning(con, session_id: str, space_id: str, t: int) -> None:
        con.execute(f"INSERT INTO learning ({_LEARNING_COLS}) VALUES (?,?,'pending',NULL,-1,?,?)",
                    [session_id, space_id, t, t])

    async def get_session(self, session_id: str) -> SessionRow:
        return await self._db(self._session_row, self.con, session_id)

    @staticmethod
    def _session_row(con, session_id: str) -> SessionRow:
        row = con.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?",
                          [session_id]).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return _session(row)

    async def list_sessions(self, space_id: str | None = None,
                            user: str | None = None) -> list[SessionRow]:
        cond, args = where(space_id=self.ctx.space(space_id).id if space_id is not None else None,
                           user=user)
        rows = await self._db(lambda: self.con.execute(
            f"SELECT {_SESSION_COLS} FROM sessions{cond} ORDER BY created_ns", args).fetchall())
        return [_session(r) for r in rows]

    async def update_session_configs(self, session_id: str, configs: dict,
                                     replace: bool = False) -> SessionRow:
        """Replace a session's configs with `configs` (replace=True), or merge them in, where
        a key whose new value is None is removed. Read and write are one transaction."""
        t = now_ns()

        def sql(con):
            session = self._session_row(con, session_id)
            if replace:
                session.configs = dict(configs)
            else:
                merged = {**session.configs, **configs}
                session.configs = {k: v for k, v in merged.items()
                                   if not (k in configs and configs[k] is None)}
            session.updated_ns = t
            con.execute("UPDATE sessions SET configs = ?, updated_ns = ? WHERE id = ?",
                        [_json(session.configs), t, session_id])
            return session
        return await self._write(sql)

    async def delete_session(self, session_id: str) -> None:
        await self.get_session(session_id)

        def sql(con):
            for table, col in (("messages", "session_id"), ("tasks", "session_id"),
                               ("lessons", "session_id"), ("learning", "session_id"),
                               ("sessions", "id")):
                con.execute(f"DELETE FROM {table} WHERE {col} = ?", [session_id])
        await self._write(sql)
        self._session_seq.pop(session_id, None)
        await self.ctx.publish(SessionEvent("session_deleted", session_id))

    async def attach_session(self, session_id: str, space_id: str,
                             strict: bool = False) -> LearningRow:
        """Make a session learn into a space; Conflict if it learns into another one. With
        `strict`, Conflict too if it learns into this very space already (a session is
        attached once; of two concurrent strict attaches, one wins)."""
        async with self._lock:
            space = self.ctx.space(space_id)
            t = now_ns()

            def sql(con):
                # Checked in the transaction: a session deleted meanwhile is not attached.
                session = self._session_row(con, session_id)
                found = con.execute(f"SELECT {_LEARNING_COLS} FROM learning "
                                    "WHERE session_id = ?", [session_id]).fetchone()
                existing = LearningRow(*found) if found else None
                if strict and (existing is not None or session.space_id is not None):
                    same = (existing.space_id if existing else session.space_id) == space.id
                    raise Conflict(f"session {session_id} already learns into "
                                   f"{'this' if same else 'another'} space")
                if session.space_id not in (None, space.id) or (
                        existing is not None and existing.space_id != space.id):
                    raise Conflict(f"session {session_id} already learns into another space")
                if existing is not None:
                    return existing
                con.execute("UPDATE sessions SET space_id = ?, updated_ns = ? WHERE id = ?",
                            [space.id, t, session_id])
                self._sql_learning(con, session_id, space.id, t)
                return None
            existing = await self._write(sql)
            if existing is not None:
                return existing
        await self.ctx.publish(SessionEvent("attached", session_id, space.id))
        return LearningRow(session_id, space.id, "pending", None, -1, t, t)

    def _message_batch(self, session_id: str, messages: Sequence, source: str | None,
                       t: int, metas: Sequence[dict | None] | None = None) -> _MessageBatch:
        """The messages with their sequence numbers, taken now (see `_unreserve`)."""
        first = self._session_seq.get(session_id, -1) + 1
        if messages:
            self._session_seq[session_id] = first + len(messages) - 1
        return _MessageBatch(
            session_id, source, t, list(range(first, first + len(messages))),
            [m.role for m in messages], [m.format for m in messages],
            [m.text for m in messages],
            [_json([{"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in m.tool_calls]) if m.tool_calls else "[]" for m in messages],
            [m.tool_call_id for m in messages], [m.name for m in messages],
            [m.raw if m.raw is not None else _json(m.original) for m in messages],
            [_json(meta) if meta else None for meta in metas] if metas is not None
            else [None] * len(messages))

    def _unreserve(self, batch: _MessageBatch) -> None:
        """Give back a failed batch's sequence numbers unless a later batch took some after
        them (then they stay a gap: order, not density, is what a sequence promises)."""
        if batch.seqs and self._session_seq.get(batch.session_id) == batch.seqs[-1]:
            self._session_seq[batch.session_id] = batch.seqs[0] - 1

    async def _write_messages(self, batch: _MessageBatch, sql) -> None:
        def numbered(con):
            if self.ctx.db.shared:
                self._renumber(con, batch)
            return sql(con)
        try:
            await self.ctx.db.write(numbered, _batch_bytes(batch))
        except BaseException:
            self._unreserve(batch)
            raise
        if batch.seqs:
            top = max(self._session_seq.get(batch.session_id, -1), batch.seqs[-1])
            self._session_seq[batch.session_id] = top

    @staticmethod
    def _renumber(con, batch: _MessageBatch) -> None:
        """Inside the transaction, on a database other daemons write too: numbers after
        those another daemon gave the session meanwhile (writers are serialized there, so
        the highest number read here is still the highest at commit)."""
        top = con.execute("SELECT max(seq) FROM messages WHERE session_id = ?",
                          [batch.session_id]).fetchall()[0][0]
        if batch.seqs and top is not None and top >= batch.seqs[0]:
            shift = top + 1 - batch.seqs[0]
            batch.seqs[:] = [seq + shift for seq in batch.seqs]

    async def add_messages(self, session_id: str, messages: Sequence, author: str = "api",
                           source: str | None = None,
                           metas: Sequence[dict | None] | None = None) -> list[int]:
        """Append messages; `metas` (one dict or None per message) is kept with each."""
        if metas is not None and len(metas) != len(messages):
            raise Invalid(f"{len(metas)} metas for {len(messages)} messages")
        session = await self.get_session(session_id)
        batch = self._message_batch(session_id, messages, source or author, now_ns(), metas)
        await self._write_messages(batch, batch.insert)
        if batch.seqs:
            await self.ctx.publish(SessionEvent("messages", session_id, session.space_id,
                                                len(batch.seqs)))
        return batch.seqs

    async def mark_session(self, session_id: str, event: str) -> None:
        """Record a control event ('end' or 'flush') for a session and tell subscribers."""
        session = await self.get_session(session_id)
        if event == "end":
            await self._write(lambda con: con.execute(
                "UPDATE sessions SET ended = true, updated_ns = ? WHERE id = ?",
                [now_ns(), session_id]))
        await self.ctx.publish(SessionEvent(event, session_id, session.space_id))

    async def get_messages(self, session_id: str, after_seq: int = -1,
                           limit: int | None = None) -> list[StoredMessage]:
        sql = ("SELECT session_id, seq, role, format, body, original, task_id, created_ns, "
               "meta FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq")
        args: list = [session_id, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self._db(lambda: self.con.execute(sql, args).fetchall())
        return [StoredMessage(r[0], r[1], r[2], r[3], json.loads(r[4]), _unjson(r[5]), r[6],
                              r[7], _unjson(r[8], {})) for r in rows]

    def last_seq(self, session_id: str) -> int:
        return self._session_seq.get(session_id, -1)

    async def message_counts(self, session_id: str, upto_seq: int) -> tuple[int, int]:
        """How many of a session's messages are at or before `upto_seq`, and how many after."""
        [(upto, after)] = await self._db(lambda: self.con.execute(
            "SELECT count(*) FILTER (WHERE seq <= ?), count(*) FILTER (WHERE seq > ?) "
            "FROM messages WHERE session_id = ?", [upto_seq, upto_seq, session_id]).fetchall())
        return upto, after

    async def patch_message_meta(self, session_id: str, seq: int, patch: dict) -> dict:
        """Merge `patch` into a message's meta (a key whose new value is None is removed);
        return the meta now. Read and write are one transaction; NotFound if there is no
        such message."""
        def sql(con):
            row = con.execute("SELECT meta FROM messages WHERE session_id = ? AND seq = ?",
                              [session_id, seq]).fetchone()
            if row is None:
                raise NotFound(f"no message {seq} in session {session_id!r}")
            merged = {**_unjson(row[0], {}), **patch}
            meta = {k: v for k, v in merged.items() if not (k in patch and patch[k] is None)}
            con.execute("UPDATE messages SET meta = ? WHERE session_id = ? AND seq = ?",
                        [_json(meta) if meta else None, session_id, seq])
            return meta
        return await self._write(sql)

    # -- spool -------------------------------------------------------------------------

    async def ingest_spool_files(self, space_name: str, session_name: str,
                                 files: Sequence[SpoolFile]) -> list[IngestResult | None]:
        """Commit spool files of one session, in order, in one transaction: each file's
        messages, control events and ledger row. A file the ledger has (the same path,
        sha256 and file key: committed before a crash) is left out, None in its place. A
        missing space is created; a missing session is created and attached to it."""
        names.check_component(session_name)
        async with self._lock:
            seen = await self._db(self._spool_seen, files)
            new = [f for i, f in enumerate(files) if i not in seen]
            done, published = (await self._ingest_new(space_name, session_name, new) if new
                               else ([], []))
        await self.ctx.publish(*published)
        results = iter(done)
        return [None if i in seen else next(results) for i in range(len(files))]

    def _spool_seen(self, files: Sequence[SpoolFile]) -> set[int]:
        """Which of `files` the ledger has (their indexes)."""
        rows = self.con.execute(
            "SELECT path, sha256, file_key FROM spool_ledger "
            "WHERE path IN (SELECT unnest(?::VARCHAR[])) AND (host = ? OR host IS NULL)",
            [[f.rel_path for f in files], self.host]).fetchall()
        ledger = set(rows)
        return {i for i, f in enumerate(files) if (f.rel_path, f.digest, f.file_key) in ledger}

    async def _ingest_new(self, space_name: str, session_name: str,
                          files: Sequence[SpoolFile]
                          ) -> tuple[list[IngestResult], list[StoreEvent]]:
        """Commit `files` (none of them in the ledger); return their results and the
        events to publish once the lock is released."""
        t = now_ns()
        space = self.tree.space_names.get(space_name)
        new_space = None
        if space is None:
            new_space = self.spaces.plan_space(space_name, None, None, "spool")
            space = new_space[0]
        session = await self._db(self._find_session, space.id, session_name)
        new_session = None
        if session is None:
            session = new_session = SessionRow(
                str(uuid.uuid4()) if not _is_uuid(session_name) else session_name,
                session_name, None, space.id, {}, False, t, t)
        elif session.space_id not in (None, space.id):
            raise Conflict(f"session {session_name!r} learns into another space")
        attach = session.space_id is None
        per_file = [[r for r in f.records if not isinstance(r, Control)] for f in files]
        events = [[r.event for r in f.records if isinstance(r, Control)] for f in files]
        batch = self._message_batch(session.id, [m for ms in per_file for m in ms], "spool", t)

        def sql(con):
            nonlocal session, new_session, attach
            if new_session is not None and self.ctx.db.shared:
                # another host's daemon may have made it since it was looked up
                found = self._find_session(space.id, session_name)
                if found is not None:
                    session, new_session, attach = found, None, found.space_id is None
                    batch.session_id = found.id
                    self._renumber(con, batch)
            if new_space is not None:
                writes.space(con, *new_space, "spool")
            if new_session is not None:
                self._sql_session(con, new_session)
            elif attach:
                con.execute("UPDATE sessions SET space_id = ? WHERE id = ?",
                            [space.id, session.id])
            if new_session is not None or attach:
                has = con.execute("SELECT 1 FROM learning WHERE session_id = ?",
                                  [session.id]).fetchone()
                if not has:
                    self._sql_learning(con, session.id, space.id, t)
            batch.insert(con)
            if any("end" in e for e in events):
                con.execute("UPDATE sessions SET ended = true, updated_ns = ? WHERE id = ?",
                            [t, session.id])
            con.execute(
                "INSERT INTO spool_ledger SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::INTEGER[]), ?, ?",
                [[f.rel_path for f in files], [f.digest for f in files],
                 [f.file_key for f in files], [len(ms) for ms in per_file], t, self.host])
        await self._write_messages(batch, sql)
        published: list[StoreEvent] = []
        if new_space is not None:
            self.spaces.apply_space(*new_space)
            published.append(SpaceAdded(space.id, space.name, "spool"))
        if new_session is not None or attach:
            published.append(SessionEvent("attached", session.id, space.id))
        for messages, file_events in zip(per_file, events, strict=True):
            if messages:
                published.append(SessionEvent("messages", session.id, space.id, len(messages)))
            published += [SessionEvent(event, session.id, space.id) for event in file_events]
        return ([IngestResult(space.id, session.id, len(ms), e)
                 for ms, e in zip(per_file, events, strict=True)], published)

    def _find_session(self, space_id: str, name: str) -> SessionRow | None:
        row = self.con.execute(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ? OR (name = ? AND space_id = ?) "
            "ORDER BY (id = ?) DESC LIMIT 1", [name, name, space_id, name]).fetchone()
        return _session(row) if row else None
