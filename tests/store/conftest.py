"""The store tier: `Store` and `SkillFS` driven directly, on a real DuckDB file, no kernel.

After every test the in-memory index is checked against the database (every space, skill,
link, folder and current file, each file's current version, size and sha256, and that
content), and then the store is closed, opened again and the loaded index compared with
the one the test left: what the index says is what a restart finds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

from skillfs.fs import SkillFS
from storetier import RecordingKernel, check_consistency, snapshot
from skillfs.store import Store


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "skillfs.duckdb"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    store = Store(str(db_path))
    yield store
    store.close()


@pytest.fixture(autouse=True)
async def consistent(store: Store, db_path: Path) -> AsyncIterator[None]:
    """After the test: the index against the database, then against a reopened store."""
    yield
    checked = Store(str(db_path)) if _closed(store) else store  # closed: what is on disk
    try:
        check_consistency(checked)
        left = snapshot(checked.tree)
    finally:
        checked.close()
    again = Store(str(db_path))
    try:
        assert snapshot(again.tree) == left, "a restart loads another tree"
        check_consistency(again)
    finally:
        again.close()


def _closed(store: Store) -> bool:
    try:
        store.db.con.execute("SELECT 1")
    except duckdb.ConnectionException:
        return True
    return False


@pytest.fixture
def kernel() -> RecordingKernel:
    return RecordingKernel()


@pytest.fixture
def fs(store: Store, kernel: RecordingKernel) -> SkillFS:
    fs = SkillFS(store)
    fs.invalidations.kernel = kernel  # type: ignore[assignment]
    return fs
