"""The rows a change of spaces, skills and files writes, inside a caller's transaction.

Spaces, files, trash, purge and spool ingestion all create skills, files and versions; the
statements live here once, as functions of a connection, so no service reaches into
another for them.

A file's row moves to a new version only from the one the writer's tree holds (`bump`):
where several daemons share a database, another may have committed a version a moment
before this one's tree heard of it, and the database, not the tree, decides who was first.
"""

from __future__ import annotations

import duckdb

from ..errors import WriteConflict
from .tree import FileNode, Skill, Space
from . import versions
from .rows import _json, sha256


def space(con: duckdb.DuckDBPyConnection, space: Space,
          skills: list[tuple[Skill, FileNode, bytes]], author: str) -> None:
    """A new space with its default skills."""
    con.execute("INSERT INTO spaces VALUES (?,?,?,?,?,?)",
                [space.id, space.name, space.user, _json(space.meta), space.created_ns,
                 space.updated_ns])
    for skill, node, content in skills:
        new_skill(con, skill, node, content, author, "default skill")
        con.execute("INSERT INTO space_skills VALUES (?,?,?)",
                    [space.id, skill.id, space.created_ns])


def new_skill(con: duckdb.DuckDBPyConnection, skill: Skill, node: FileNode, content: bytes,
              author: str, reason: str, session_id: str | None = None,
              task_id: str | None = None) -> None:
    con.execute("INSERT INTO skills VALUES (?,?,?,?,?,?,?)",
                [skill.id, skill.name, skill.description, _json(skill.meta),
                 skill.created_ns, skill.updated_ns, skill.user])
    new_file(con, node, content, author, reason, session_id, task_id)


def new_file(con: duckdb.DuckDBPyConnection, node: FileNode, content: bytes, author: str,
             reason: str, session_id: str | None = None, task_id: str | None = None) -> None:
    con.execute("INSERT INTO files VALUES (?,?,?,?,false,?)",
                [node.id, node.skill_id, node.path, node.version, node.ctime_ns])
    version(con, node, content, author, reason, session_id, task_id, False)


def version(con: duckdb.DuckDBPyConnection, node: FileNode, content: bytes | None,
            author: str, reason: str, session_id: str | None, task_id: str | None,
            deleted: bool, prev: bytes | None = None) -> None:
    """`prev`: the previous version's content, when the caller has it at hand."""
    versions.insert(con, [node.id, node.version, node.path, node.sha256, node.size,
                          author, reason, session_id, task_id, node.mtime_ns, deleted],
                    content, prev)


def delete_version(con: duckdb.DuckDBPyConnection, node: FileNode, t: int, author: str,
                   reason: str, session_id: str | None, task_id: str | None) -> None:
    gone = FileNode(node.id, node.skill_id, node.path, node.version + 1, 0, sha256(b""), t,
                    node.ctime_ns)
    bump(con, node.id, gone.version, deleted=True)
    version(con, gone, None, author, reason, session_id, task_id, True)


def trash(con: duckdb.DuckDBPyConnection, kind: str, id: str, name: str, row: dict,
          links: list[str], author: str, t: int) -> None:
    con.execute("INSERT INTO trash VALUES (?,?,?,?,?,?,?)",
                [kind, id, name, _json(row), _json(links), author, t])


def bump(con: duckdb.DuckDBPyConnection, file_id: int, new_version: int,
         path: str | None = None, deleted: bool = False) -> None:
    """Move file `file_id` from version `new_version - 1` to `new_version` (and to `path`,
    or deleted); WriteConflict if it is no longer at that version."""
    sets = "version = ?" + (", path = ?" if path is not None else "") + (
        ", deleted = true" if deleted else "")
    args = [new_version, *([path] if path is not None else []), file_id, new_version - 1]
    if not con.execute(f"UPDATE files SET {sets} WHERE id = ? AND version = ? AND NOT deleted "
                       "RETURNING id", args).fetchall():
        raise WriteConflict(f"file {file_id} changed elsewhere before version {new_version}")
