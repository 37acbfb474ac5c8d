"""How file versions are kept: a whole copy, or a splice of the version before it.

Storing every version whole makes an append-only daily log grow quadratically. Most new
versions change one stretch of the previous one (an append, a learner's string replace, an
editor's save of a small edit), so a version is stored as a *splice* of its predecessor: how
many leading and trailing bytes they share, and the bytes between. An append costs the
appended bytes. Edits in several places store the stretch that spans them; that is larger
than a general binary diff but costs one linear pass to make and to apply.

`delta_depth` counts the splices since the last whole copy (0: this row is whole), so
reading version v takes the whole copy at v - depth and applies the splices after it, all
fetched in one query. `chain_bytes` is what rebuilding a version moves: a splice moves the
bytes after the shared head, so an append moves only what it appended. A whole copy is
stored again when the chain would reach MAX_CHAIN splices, or move more than WORK times
the file's size: reading any version then reads at most MAX_CHAIN + 1 rows and moves at
most WORK + 1 times its size, and an append-only log stays linear (its appends move
nothing else; a whole copy comes every MAX_CHAIN versions, and files are at most 1 MiB).

What is stored (a whole copy or a splice) goes in file_versions.content when it is short,
and otherwise in CHUNK-byte rows of version_chunks: DuckDB keeps every string longer than
a few KB of a row group in memory while it checkpoints that row group, so a few long
strings make a checkpoint fail under a small memory limit and invalidate the database.
Strings this short are written block by block.

`read_contents` is the one way to read version content; nothing else selects
file_versions.content or version_chunks.

A purged version keeps its row (who purged it, when, why) but no content: it reads as b"".
`purge` first stores whole every later version that was a splice of a purged one, and
shortens the chains after it; the splices of other versions hold only their own bytes.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import duckdb

MAX_CHAIN = 1024
WORK = 8
CHUNK = 3000  # longest string stored (measured: 4,000 bytes checkpoint in blocks, 8,000 not)
_HEAD = struct.Struct("<QQ")  # shared leading bytes, shared trailing bytes
COLUMNS = 18  # file_versions' columns, in order (see insert)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # the first difference is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    if limit <= 0:
        return 0
    if a[len(a) - limit:] == b[len(b) - limit:]:
        return limit
    lo, hi = 0, limit  # the longest shared tail is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid
    return lo


def splice(old: bytes, new: bytes) -> bytes:
    """`new` as a splice of `old`."""
    head = _common_prefix(old, new)
    tail = _common_suffix(old, new, min(len(old), len(new)) - head)
    return _HEAD.pack(head, tail) + new[head:len(new) - tail]


def apply(buf: bytearray, delta: bytes) -> None:
    head, tail = _HEAD.unpack_from(delta)
    buf[head:len(buf) - tail] = memoryview(delta)[_HEAD.size:]


def insert(con: duckdb.DuckDBPyConnection, row: list, content: bytes | None,
           prev: bytes | None = None) -> None:
    """Insert a file_versions row (file_id, version, path, content, sha256, size, author,
    reason, session_id, task_id, at_ns, deleted — `content` apart) storing the content as a
    splice of the version before when that is worth it. `prev` is the previous version's
    content if the caller has it at hand."""
    stored, depth, chain = content, 0, 0
    file_id, version = row[0], row[1]
    if content and version > 1:
        before = con.execute(
            "SELECT delta_depth, chain_bytes, deleted FROM file_versions "
            "WHERE file_id = ? AND version = ?", [file_id, version - 1]).fetchone()
        if before is not None and not before[2] and before[0] < MAX_CHAIN:
            if prev is None:
                prev = read_contents(con, [(file_id, version - 1)]).get((file_id, version - 1))
            if prev:
                delta = splice(prev, content)
                work = before[1] + len(content) - _HEAD.unpack_from(delta)[0]
                if len(delta) < len(content) and work <= WORK * len(content):
                    stored, depth, chain = delta, before[0] + 1, work
    chunks = 0
    pieces = split(stored) if stored is not None else None
    if pieces:
        con.execute("INSERT INTO version_chunks SELECT ?, ?, unnest(?::INTEGER[]), "
                    "unnest(?::BLOB[])", [file_id, version, list(range(len(pieces))), pieces])
        stored, chunks = None, len(pieces)
    con.execute("INSERT INTO file_versions VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,NULL)",  # not purged
                [*row[:3], stored, *row[3:], depth, chain, chunks])


def read_contents(con: duckdb.DuckDBPyConnection, keys: list[tuple[int, int]],
                  scan: bool = False) -> dict[tuple[int, int], bytes]:
    """The content of each (file_id, version) that exists (b"" for a deletion). With
    `scan`, the rows of every file id between the least and the greatest key are scanned
    instead of looked up one by one in the index: for many files with neighbouring ids
    (the preload) one pass costs a tenth of the lookups."""
    if not keys:
        return {}
    rows = _rows(con, keys, scan)
    out: dict[tuple[int, int], bytes] = {}
    chains = []
    for (fid, version), (stored, depth) in rows.items():
        if depth == 0:
            out[(fid, version)] = stored
        else:
            chains.append((fid, version - depth, version - 1))
    if chains:
        links = _chain_rows(con, chains, scan)
        for fid, first, last in chains:
            buf = bytearray(links[(fid, first)])
            for v in range(first + 1, last + 2):
                apply(buf, links[(fid, v)] if v <= last else rows[(fid, v)][0])
            out[(fid, last + 1)] = bytes(buf)
    return out


def _rows(con, keys: list[tuple[int, int]], scan: bool
          ) -> dict[tuple[int, int], tuple[bytes, int]]:
    """What is stored for each key (whole content or a splice) and its delta_depth."""
    versions = sorted({n for _, n in keys})
    found = _stored(con, {f for f, _ in keys},
                    f"version IN ({','.join('?' * len(versions))})", versions, scan)
    return {key: found[key] for key in keys if key in found}


def _chain_rows(con, chains: list[tuple[int, int, int]], scan: bool
                ) -> dict[tuple[int, int], bytes]:
    """What is stored (a whole copy, then splices) for each (file, first, last) range."""
    found = _stored(con, {f for f, _, _ in chains}, "version BETWEEN ? AND ?",
                    [min(c[1] for c in chains), max(c[2] for c in chains)], scan)
    wanted = {(f, v) for f, first, last in chains for v in range(first, last + 1)}
    return {key: stored for key, (stored, _) in found.items() if key in wanted}


def _stored(con, file_ids: set[int], versions_sql: str, versions_args: list, scan: bool
            ) -> dict[tuple[int, int], tuple[bytes, int]]:
    """(stored bytes, delta_depth) of the versions of `file_ids` matching `versions_sql`:
    the row and its chunks in one query. An equality or IN list on file_id is looked up in
    the file_id indexes (schema 5); a join, or an OR of (file, version) pairs, scans; with
    `scan`, a range of file ids is scanned (rows of other files are left out after)."""
    ids = sorted(file_ids)
    if scan:
        where = f"file_id BETWEEN ? AND ? AND {versions_sql}"
        args = [ids[0], ids[-1], *versions_args]
    else:
        where = f"file_id IN ({','.join('?' * len(ids))}) AND {versions_sql}"
        args = [*ids, *versions_args]
    found = con.execute(
        f"SELECT file_id, version, -1 AS seq, content, delta_depth FROM file_versions "
        f"WHERE {where} UNION ALL SELECT file_id, version, seq, data, 0 FROM version_chunks "
        f"WHERE {where} ORDER BY file_id, version, seq", args + args).fetchall()
    depths: dict[tuple[int, int], int] = {}
    pieces: dict[tuple[int, int], list[bytes]] = {}
    for f, n, seq, data, depth in found:
        if scan and f not in file_ids:
            continue
        if seq < 0:  # the version's own row; its content is inline or in chunks, not both
            depths[(f, n)] = depth or 0
        if data is not None:
            pieces.setdefault((f, n), []).append(data)
    return {key: (b"".join(pieces.get(key, ())), depth) for key, depth in depths.items()}


def purge(con: duckdb.DuckDBPyConnection, file_id: int, doomed: set[int],
          stamp: tuple[str, int, str]) -> None:
    """Replace the content of the versions `doomed` of a file by the tombstone `stamp`
    (purged_by, purged_at_ns, purge_reason), in the caller's transaction. Later versions
    that were rebuilt through a doomed one are re-based first, so they read as before."""
    rows = con.execute(
        "SELECT version, delta_depth, chain_bytes FROM file_versions "
        "WHERE file_id = ? AND version >= ? ORDER BY version",
        [file_id, min(doomed)]).fetchall()
    whole, chains = _rebase_plan(rows, doomed)
    contents = read_contents(con, [(file_id, v) for v in whole])
    marks = ",".join("?" * len(doomed))
    con.execute(f"DELETE FROM version_chunks WHERE file_id = ? AND version IN ({marks})",
                [file_id, *sorted(doomed)])
    con.execute(
        "UPDATE file_versions SET content = NULL, chunks = 0, delta_depth = 0, "
        "chain_bytes = 0, sha256 = '', purged_by = ?, purged_at_ns = ?, purge_reason = ? "
        f"WHERE file_id = ? AND version IN ({marks})", [*stamp, file_id, *sorted(doomed)])
    for version in whole:
        _store_whole(con, file_id, version, contents[(file_id, version)])
    for version, depth, chain in chains:
        con.execute("UPDATE file_versions SET delta_depth = ?, chain_bytes = ? "
                    "WHERE file_id = ? AND version = ?", [depth, chain, file_id, version])


def tombstone(purged_by: str, purged_at_ns: int, purge_reason: str) -> str:
    """What a purged version says instead of its content."""
    at = datetime.fromtimestamp(purged_at_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"purged by {purged_by} at {at}: {purge_reason}"


def _rebase_plan(rows: list[tuple[int, int, int]], doomed: set[int]
                 ) -> tuple[list[int], list[tuple[int, int, int]]]:
    """From (version, delta_depth, chain_bytes) rows in order, starting at a doomed one:
    the splices of a doomed version (to store whole), and the new (version, depth, chain)
    of splices whose chain got shorter."""
    whole: list[int] = []
    chains: list[tuple[int, int, int]] = []
    before_old = before_new = (0, 0)  # the previous version's (depth, chain): as was, as is
    for version, depth, chain in rows:
        depth, chain = depth or 0, chain or 0
        if version in doomed or depth == 0:
            new = (0, 0) if version in doomed else (depth, chain)
        elif version - 1 in doomed:
            whole.append(version)
            new = (0, 0)
        else:
            # A splice moves the same bytes on whatever chain it sits.
            new = (before_new[0] + 1, before_new[1] + chain - before_old[1])
            if new != (depth, chain):
                chains.append((version, *new))
        before_old, before_new = (depth, chain), new
    return whole, chains


def _store_whole(con, file_id: int, version: int, content: bytes) -> None:
    pieces = split(content)
    con.execute("DELETE FROM version_chunks WHERE file_id = ? AND version = ?",
                [file_id, version])
    if pieces:
        con.execute("INSERT INTO version_chunks SELECT ?, ?, unnest(?::INTEGER[]), "
                    "unnest(?::BLOB[])", [file_id, version, list(range(len(pieces))), pieces])
    con.execute("UPDATE file_versions SET content = ?, chunks = ?, delta_depth = 0, "
                "chain_bytes = 0 WHERE file_id = ? AND version = ?",
                [None if pieces else content, len(pieces or ()), file_id, version])


def split(data: bytes) -> list[bytes] | None:
    """`data` in version_chunks rows, or None if it is short enough to keep in its row."""
    if len(data) <= CHUNK:
        return None
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
