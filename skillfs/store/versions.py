"""How file versions are kept: a whole copy, or a splice of the version before it.

Storing every version whole makes an append-only daily log grow quadratically. Most new
versions change one stretch of the previous one (an append, a learner's string replace, an
editor's save of a small edit), so a version is stored as a *splice* of its predecessor: how
many leading and trailing bytes they share, and the bytes between. An append costs the
appended bytes. Edits in several places store the stretch that spans them; that is larger
than a general binary diff but costs one linear pass to make and to apply.

`delta_depth` counts the splices since the last whole copy (0: this row is whole), so
reading version v takes the whole copy at v - depth and applies the splices after it, all
fetched in one query. A whole copy is stored again when the chain reaches MAX_CHAIN
splices or its splices together outweigh the new content: reading any version then reads
at most MAX_CHAIN + 1 rows and about twice the file's size.

`read_contents` is the one way to read version content; nothing else selects
file_versions.content.
"""

from __future__ import annotations

import struct

import duckdb

MAX_CHAIN = 128
_HEAD = struct.Struct("<QQ")  # shared leading bytes, shared trailing bytes
COLUMNS = 14  # file_versions' columns, in order (see _insert)


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
                if before[1] + len(delta) <= len(content):
                    stored, depth, chain = delta, before[0] + 1, before[1] + len(delta)
    con.execute("INSERT INTO file_versions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [*row[:3], stored, *row[3:], depth, chain])


def read_contents(con: duckdb.DuckDBPyConnection,
                  keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The content of each (file_id, version) that exists (b"" for a deletion)."""
    if not keys:
        return {}
    rows = _rows(con, keys)
    wanted = set(keys)
    out: dict[tuple[int, int], bytes] = {}
    chains = []
    for (fid, version), (content, depth) in rows.items():
        if (fid, version) not in wanted:
            continue
        if depth == 0:
            out[(fid, version)] = bytes(content) if content is not None else b""
        else:
            chains.append((fid, version - depth, version - 1))
    if chains:
        links = _chain_rows(con, chains)
        for fid, first, last in chains:
            buf = bytearray(links[(fid, first)])
            for v in range(first + 1, last + 2):
                apply(buf, links[(fid, v)] if v <= last else rows[(fid, v)][0])
            out[(fid, last + 1)] = bytes(buf)
    return out


def _rows(con, keys: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    # A filter (not a join) lets DuckDB skip row groups by file id and read content only
    # for matching rows: a join reads every row's content.
    ids = sorted({f for f, _ in keys})
    versions = sorted({n for _, n in keys})
    found = con.execute(
        "SELECT file_id, version, content, delta_depth FROM file_versions "
        f"WHERE file_id BETWEEN ? AND ? AND file_id IN ({','.join('?' * len(ids))}) "
        f"AND version IN ({','.join('?' * len(versions))})",
        [ids[0], ids[-1], *ids, *versions]).fetchall()
    return {(f, n): (c, d or 0) for f, n, c, d in found}


def _chain_rows(con, chains: list[tuple[int, int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored rows (a whole copy, then splices) of each (file, first, last) range."""
    ranges = " OR ".join("(file_id = ? AND version BETWEEN ? AND ?)" for _ in chains)
    found = con.execute(
        f"SELECT file_id, version, content FROM file_versions WHERE {ranges}",
        [x for chain in chains for x in chain]).fetchall()
    return {(f, n): bytes(c) if c is not None else b"" for f, n, c in found}
