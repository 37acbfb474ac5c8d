"""The store tier: `Store` and `SkillFS` driven directly, on a real database, no kernel.

Each test runs twice: on a DuckDB file and on a fresh database of the tests' PostgreSQL server
(tests/pgserver.py); a test marked `duckdb_only` (DuckDB's own faults) runs on DuckDB alone.

Its fixtures (a plugin of tests/conftest.py) and helpers: the consistency check a store-tier
module asks for with `pytestmark = pytest.mark.usefixtures("consistent")` — after the test,
the in-memory index against the database (every space, skill, link, folder and current
file, each file's current version, size and sha256, and that content), then the store
closed, opened again and the loaded index compared with the one the test left: what the
index says is what a restart finds — and a kernel that records what the mount asks it to
forget."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skillfs.fs import SkillFS
from skillfs.store import Store, versions
from skillfs.store.tree import Tree


class RecordingKernel:
    """Stands in for the invalidation thread: keeps what the mount asked it to forget."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[tuple], bool]] = []

    async def invalidate(self, items: list[tuple], wait: bool) -> None:
        self.batches.append((items, wait))


def snapshot(tree: Tree) -> dict:
    """What the index holds that the database must hold too (reserved files, version 0,
    live only in memory; the mount's empty stand-in folders are not the store's)."""
    return {
        "spaces": {s.id: (s.name, s.user, s.meta, s.created_ns) for s in tree.spaces.values()},
        "skills": {k.id: (k.name, k.description, k.meta, k.user, k.created_ns)
                   for k in tree.skills.values()},
        "links": {(s.id, k.id) for s in tree.spaces.values() for k in s.skills.values()},
        "names": {(s.id, name) for s in tree.spaces.values() for name in s.skills},
        "folders": {(k.id, d) for k in tree.skills.values() for d in k.children if d},
        "files": {n.id: (n.skill_id, n.path, n.version, n.size, n.sha256)
                  for n in tree.file_ids.values() if n.version},
    }


def from_database(store: Store) -> dict:
    con = store.db.con
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    return {
        "spaces": {i: (n, u, json.loads(m) if m else {}, c)
                   for i, n, u, m, c in q('SELECT id, name, "user", meta, created_ns '
                                          'FROM spaces')},
        "skills": {i: (n, d, json.loads(m) if m else {}, u, c)
                   for i, n, d, m, u, c in q('SELECT id, name, description, meta, "user", '
                                             'created_ns FROM skills')},
        "links": set(q("SELECT space_id, skill_id FROM space_skills")),
        "names": set(q("SELECT l.space_id, k.name FROM space_skills l "
                       "JOIN skills k ON k.id = l.skill_id")),
        "folders": set(q("SELECT skill_id, path FROM skill_dirs")),
        "files": {i: (k, p, v, size, digest) for i, k, p, v, size, digest in q(
            "SELECT f.id, f.skill_id, f.path, f.version, v.size, v.sha256 FROM files f "
            "JOIN file_versions v ON v.file_id = f.id AND v.version = f.version "
            "WHERE NOT f.deleted")},
    }


def check_consistency(store: Store) -> None:
    """The index against the database, and every current content against its sha256."""
    mine, theirs = snapshot(store.tree), from_database(store)
    for part in mine:
        assert mine[part] == theirs[part], f"{part}: the index and the database disagree"
    files = theirs["files"]
    contents = versions.read_contents(store.db.con, [(i, f[2]) for i, f in files.items()])
    for fid, (_, path, version, size, digest) in files.items():
        content = contents[(fid, version)]
        assert (len(content), hashlib.sha256(content).hexdigest()) == (size, digest), path
        cached = store.cache.get((fid, version), touch=False)
        assert cached is None or cached == content, f"the cache holds another {path}"
    for skill in store.tree.skills.values():
        assert skill.spaces == {s for s, k in mine["links"] if k == skill.id}, skill.name


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "duckdb_only: a store-tier test of DuckDB's own ways")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("duckdb_only")
        metafunc.parametrize("store_backend", ["duckdb"] if only else ["duckdb", "postgres"])


@pytest.fixture
def database(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the store keeps its data: a DuckDB file's path, or a PostgreSQL URL."""
    if store_backend == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "skillfs.duckdb")


@pytest.fixture
def db_path(database: str) -> str:
    """`database` by the name tests/test_search.py asks for."""
    return database


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    store = Store(database)
    yield store
    store.close()


@pytest.fixture
async def consistent(store: Store, database: str) -> AsyncIterator[None]:
    """After the test: the index against the database, then against a reopened store."""
    yield
    checked = Store(database) if _closed(store) else store  # closed: what is stored
    try:
        check_consistency(checked)
        left = snapshot(checked.tree)
    finally:
        checked.close()
    again = Store(database)
    try:
        assert snapshot(again.tree) == left, "a restart loads another tree"
        check_consistency(again)
    finally:
        again.close()


def _closed(store: Store) -> bool:
    try:
        store.db.con.execute("SELECT 1")
    except store.db.Error:
        return True
    return False


def daemon_database(daemon) -> str:
    """What a daemon of tests/conftest.py keeps its data in: its `--db`, else its home's
    DuckDB file."""
    given = [arg for flag, arg in itertools.pairwise(daemon.args) if flag == "--db"]
    return given[-1] if given else str(daemon.db)


@pytest.fixture
def kernel() -> RecordingKernel:
    return RecordingKernel()


@pytest.fixture
def fs(store: Store, kernel: RecordingKernel) -> SkillFS:
    fs = SkillFS(store)
    fs.invalidations.kernel = kernel  # type: ignore[assignment]
    return fs
