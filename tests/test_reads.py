"""Reads at the floor's cost: file ids indexed for content reads, a compressed content cache
preloaded until full, one folder listing per pass."""

from __future__ import annotations

import os
import random
import threading

import trio
import zstandard

from skillfs.errors import Unavailable
from skillfs.schema import SCHEMA_VERSION
from skillfs.store import Store, versions
from skillfs.store.content import ContentCache


def _markdown(rng: random.Random, size: int) -> bytes:
    words = [b"agent", b"skill", b"memory", b"version", b"folder", b"rule", b"daily", b"log"]
    out = bytearray(b"# notes\n\n")
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def _tree(root, files: int, seed: int = 3) -> dict[str, bytes]:
    """A space `alice` with skills of 20 files each (some over a chunk); returns path -> bytes."""
    rng = random.Random(seed)
    made: dict[str, bytes] = {}
    for i in range(files):
        skill = f"s{i // 20:03d}"
        folder = root / "alice" / skill
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "SKILL.md").write_text(f"---\nname: {skill}\ndescription: d\n---\nbody\n")
        body = _markdown(rng, rng.choice([500, 2_000, 3 * versions.CHUNK + 7]))
        (folder / f"f{i}.md").write_bytes(body)
        made[f"{skill}/f{i}.md"] = body
    return made


def _imported(tmp_path, files: int, **store_args) -> tuple[Store, dict[str, bytes]]:
    made = _tree(tmp_path / "src", files)
    db = tmp_path / "r.duckdb"
    store = Store(str(db), duckdb_memory=None)
    store.import_tree(str(tmp_path / "src"))
    store.close()
    return Store(str(db), **store_args), made


def test_the_cache_keeps_content_compressed_and_within_its_bound():
    rng = random.Random(1)
    cache = ContentCache(200_000)
    cache.compress = True
    bodies = {(i, 1): _markdown(rng, 4_000) for i in range(2_000)}
    for key, body in bodies.items():
        cache.put(key, body)
    assert cache.bytes <= cache.max_bytes
    held = [key for key in bodies if key in cache]
    # Markdown compresses: the bound holds more than its size of raw content, and the
    # oldest entries went first.
    assert sum(len(bodies[k]) for k in held) > cache.max_bytes
    assert held == list(bodies)[-len(held):]
    assert all(cache.get(k) == bodies[k] for k in held)
    assert cache.full()
    cache.forget(held[0])
    assert held[0] not in cache and cache.get(held[0]) is None


def test_one_file_larger_than_a_quarter_of_the_cache_is_not_kept():
    cache = ContentCache(4_000)
    cache.compress = True
    cache.put((1, 1), os.urandom(2_000))  # random bytes do not compress
    assert (1, 1) not in cache and cache.bytes == 0


def test_the_cache_compresses_only_what_was_put_while_compressing():
    cache = ContentCache(1 << 20)
    cache.put((1, 1), b"plain " * 100)
    cache.compress = True
    cache.put((2, 1), b"packed " * 100)
    assert cache.bytes == 600 + len(zstandard.ZstdCompressor(level=ContentCache.LEVEL)
                                    .compress(b"packed " * 100))
    assert cache.get((1, 1)) == b"plain " * 100 and cache.get((2, 1)) == b"packed " * 100


def test_content_reads_use_the_file_id_indexes(tmp_path):
    store, made = _imported(tmp_path, 60)
    try:
        indexes = {r[0] for r in store.db.con.execute(
            "SELECT index_name FROM duckdb_indexes()").fetchall()}
        assert {"file_versions_file", "version_chunks_file"} <= indexes
        assert store.db.con.execute("SELECT max(version) FROM schema_version"
                                 ).fetchone()[0] == SCHEMA_VERSION
        plan = store.db.con.execute(
            "EXPLAIN ANALYZE SELECT data FROM version_chunks WHERE file_id IN (3, 4)"
        ).fetchall()[0][1]
        assert "Index Scan" in plan
    finally:
        store.close()


def test_a_store_reads_every_version_back_after_edits_through_the_index(tmp_path):
    store, made = _imported(tmp_path, 40)
    rng = random.Random(9)

    async def edit_and_read():
        skill = store.space("alice").skills["s000"]
        content = made["s000/f0.md"]
        history = [content]
        for _ in range(12):
            at = rng.randrange(len(content))
            content = content[:at] + b"edit " + content[at:] + b"more\n"
            await store.write_file(skill.id, "f0.md", content, author="api")
            history.append(content)
        node = skill.files["f0.md"]
        got = await store.db.run(versions.read_contents, store.db.con,
                                 [(node.id, v) for v in range(1, len(history) + 1)])
        return [got[(node.id, v)] for v in range(1, len(history) + 1)], history
    try:
        got, history = trio.run(edit_and_read)
        assert got == history
    finally:
        store.close()


def test_the_preload_fills_the_cache_and_reads_then_need_no_database(tmp_path):
    store, made = _imported(tmp_path, 120)

    async def scenario():
        loaded = await store.preload()

        async def broken(*args):
            raise Unavailable("the database is gone")
        store.ctx.read = broken  # type: ignore[method-assign]  # only the cache is left
        skills = store.space("alice").skills
        out = {}
        for rel in made:
            skill_name, path = rel.split("/", 1)
            out[rel] = (await store.read_file(skills[skill_name].id, path)).content
        return loaded, out
    try:
        loaded, got = trio.run(scenario)
        assert got == made
        assert loaded >= len(made)  # the skills' SKILL.md files too
    finally:
        store.close()


def test_the_preload_keeps_files_as_they_are_when_all_fit(tmp_path):
    store, made = _imported(tmp_path, 40)
    try:
        trio.run(store.preload)
        assert not store.cache.compress
        assert store.cache.bytes == sum(n.size for n in store.tree.file_ids.values())
    finally:
        store.close()


def test_the_preload_stops_when_the_cache_is_full_and_evicts_nothing(tmp_path):
    store, made = _imported(tmp_path, 120, cache_bytes=40_000)
    try:
        loaded = trio.run(store.preload)
        assert store.cache.compress  # 120 files do not fit in 40 KB as they are
        assert 0 < loaded < len(made)
        assert store.cache.bytes <= store.cache.max_bytes
        assert len(store.cache._data) == loaded  # nothing it loaded was pushed out again
    finally:
        store.close()


def test_a_folder_listed_while_its_files_are_deleted_names_each_file_once(daemon):
    folder = daemon.mnt / "alice" / "many"
    os.makedirs(folder)  # a space, and a skill in it
    names = [f"{'x' * 120}-{i:04d}.md" for i in range(400)]  # several getdents buffers
    for name in names:
        (folder / name).write_bytes(b"x\n")
    seen = []
    with os.scandir(folder) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i == 5:
                for name in names[:200]:  # deleted while the pass is under way
                    os.unlink(folder / name)
    assert sorted(set(seen)) == sorted(seen)  # no name twice
    assert set(names[200:]) <= set(seen)  # none still there was skipped
    assert sorted(os.listdir(folder)) == sorted(names[200:] + ["SKILL.md"])


def test_stat_sees_each_new_version_of_a_file(daemon):
    path = daemon.mnt / "alice" / "sizes" / "f.md"
    os.makedirs(path.parent, exist_ok=True)
    for size in (10, 3_000, 7, 12_000):
        path.write_bytes(b"y" * size)
        assert os.stat(path).st_size == size
        assert len(path.read_bytes()) == size
        assert [e.stat().st_size for e in os.scandir(path.parent) if e.name == "f.md"] == [size]


def test_the_preload_scans_current_versions_of_edited_and_deleted_files(tmp_path):
    store, made = _imported(tmp_path, 60)
    edited = made["s000/f0.md"]

    async def edit():
        skill = store.space("alice").skills["s000"]
        nonlocal edited
        for i in range(3):  # splices of the version before
            edited = edited + f"line {i}\n".encode()
            await store.write_file(skill.id, "f0.md", edited, author="api")
        await store.write_file(skill.id, "f1.md", b"z" * (3 * versions.CHUNK), author="api")
        await store.delete_file(skill.id, "f2.md", author="api")
    trio.run(edit)
    store.close()
    store = Store(str(tmp_path / "r.duckdb"))  # an empty cache
    try:
        loaded = trio.run(store.preload)
        want = dict(made, **{"s000/f0.md": edited, "s000/f1.md": b"z" * (3 * versions.CHUNK)})
        del want["s000/f2.md"]
        assert loaded == len(store.tree.file_ids)  # SKILL.md files included
        skills = store.space("alice").skills
        for rel, body in want.items():
            skill_name, path = rel.split("/", 1)
            node = skills[skill_name].files[path]
            assert node.version > 1 or rel != "s000/f0.md"
            assert store.cache.get((node.id, node.version)) == body
    finally:
        store.close()


def _hold_preload_scans(store):
    """Preload scans wait for `release` (set it); `in_flight` is set once one waits."""
    in_flight, release = threading.Event(), threading.Event()
    scan = store.files._scan

    def held_scan(cursor, keys):
        in_flight.set()
        release.wait(30)
        return scan(cursor, keys)
    store.files._scan = held_scan  # type: ignore[method-assign]
    return in_flight, release


def test_compaction_waits_for_the_preload_slice_in_flight(tmp_path):
    store, made = _imported(tmp_path, 40)
    in_flight, release = _hold_preload_scans(store)

    async def scenario():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.preload)
            await trio.to_thread.run_sync(in_flight.wait)
            nursery.start_soon(store.db.run, store.db.compact)
            await trio.sleep(0.5)
            release.set()  # the scan finishes on the old connection, then the swap
        return await store.read_file(store.space("alice").skills["s001"].id, "f21.md")

    try:
        assert trio.run(scenario).content == made["s001/f21.md"]
        assert len(store.cache._data) == len(store.tree.file_ids)
    finally:
        release.set()
        store.close()


def test_the_preload_lets_duckdb_drop_what_it_scanned_and_keeps_its_limit(tmp_path):
    store, made = _imported(tmp_path, 300, duckdb_memory="64MB")
    limit = "SELECT current_setting('memory_limit')"
    held = "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
    try:
        before = store.db.con.execute(limit).fetchone()
        trio.run(store.preload)
        assert store.db.con.execute(limit).fetchone() == before
        assert store.db.con.execute(held).fetchone()[0] <= 16 << 20
        assert len(store.cache._data) == len(store.tree.file_ids)
    finally:
        store.close()


def test_a_cold_miss_fetches_its_folder_only_when_reads_stay_there(tmp_path):
    store, made = _imported(tmp_path, 80)
    skills = store.space("alice").skills

    def cached(skill_name: str) -> set[str]:
        return {path for path, node in skills[skill_name].files.items()
                if (node.id, node.version) in store.cache}

    async def scenario():
        await store.read_file(skills["s001"].id, "f25.md")
        after_one = cached("s001")
        await store.read_file(skills["s003"].id, "f70.md")  # elsewhere: one file again
        await store.read_file(skills["s003"].id, "f65.md")  # the same folder: all of it
        return after_one, cached("s003")
    try:
        after_one, folder = trio.run(scenario)
        assert after_one == {"f25.md"}
        assert folder == set(skills["s003"].files)
    finally:
        store.close()
