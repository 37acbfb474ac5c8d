"""Loading the in-memory index (spaces, skills, folders, current files) from the database
at start; after that the services keep it current, change by change."""

from __future__ import annotations

import duckdb

from .tree import FileNode, Skill, Space, Tree
from .rows import _unjson


def load_tree(con: duckdb.DuckDBPyConnection, tree: Tree) -> int:
    """Fill `tree`; returns the next free file id."""
    for sid, name, user, meta, c, u in con.execute(
            'SELECT id, name, "user", meta, created_ns, updated_ns FROM spaces').fetchall():
        tree.add_space(Space(sid, name, user, _unjson(meta, {}), c, u))
    for kid, name, desc, meta, c, u, user in con.execute(
            'SELECT id, name, description, meta, created_ns, updated_ns, "user" FROM skills'
    ).fetchall():
        tree.add_skill(Skill(kid, name, desc, _unjson(meta, {}), c, u, user=user))
    for space_id, skill_id, c in con.execute(
            "SELECT space_id, skill_id, created_ns FROM space_skills ORDER BY created_ns"
    ).fetchall():
        tree.link_skill(tree.spaces[space_id], tree.skills[skill_id], c)
    for skill_id, path, c in con.execute(
            "SELECT skill_id, path, created_ns FROM skill_dirs").fetchall():
        tree.skills[skill_id].add_dir(path, c)
    cur = con.execute(
        "SELECT f.id, f.skill_id, f.path, f.version, v.size, v.sha256, v.at_ns, "
        "f.created_ns FROM files f JOIN file_versions v "
        "ON v.file_id = f.id AND v.version = f.version WHERE NOT f.deleted")
    skills = tree.skills
    # In chunks: all rows at once would double the memory the tree needs, for a moment.
    while rows := cur.fetchmany(8192):
        for fid, skill_id, path, version, size, digest, at, created in rows:
            # the skill's own id string, not a copy per file (~9 MB at 100,000 files)
            tree.add_file(FileNode(fid, skills[skill_id].id, path, version, size, digest,
                                   at, created))
    for space in tree.spaces.values():
        for skill in space.skills.values():
            space.updated_ns = max(space.updated_ns, skill.updated_ns)
    return (con.execute("SELECT max(id) FROM files").fetchall()[0][0] or 0) + 1
