"""The spool walked through directory descriptors, with symlinks swapped in at the worst moment.

The swaps are made deterministic by doing them between the walker's steps: after a folder
was listed and before its entry is opened, or after a session folder was opened. Nothing
outside the spool may be read, moved or deleted, and what the daemon creates is private.
"""

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from skillfs.spool import Folder, Rejected, SpoolIngester, SpoolReject, open_spool
from skillfs.spool.folders import Changed
from skillfs.store import Store


def _jsonl(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the spool a hostile writer wants read, moved or deleted."""
    out = tmp_path / "outside"
    _put(out / "victim.jsonl", _jsonl({"role": "user", "content": "SECRET from outside"}))
    _put(out / "private.txt", b"not for the spool")
    _put(out / "notes.json", b"{}")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _sidecars(spool: Path) -> dict[str, dict]:
    return {p.name[: -len(".error.json")]: json.loads(p.read_text())
            for p in (spool / ".rejected").glob("*.error.json")}


def _assert_private(spool: Path) -> None:
    rejected = spool / ".rejected"
    assert _mode(rejected) == 0o700
    sides = list(rejected.glob("*.error.json"))
    assert sides
    for side in sides:
        assert _mode(side) == 0o600, side


def test_session_swapped_for_a_link_after_listing_is_not_followed(tmp_path, outside):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", _jsonl({"role": "user", "content": "mine"}))
    before = _snapshot(outside)
    root = open_spool(spool)
    space = root.open_folder("sp")
    assert space.names() == ["se"]
    # the swap, between listing and opening
    os.rename(spool / "sp/se", tmp_path / "moved-away")
    os.symlink(outside, spool / "sp/se")
    with pytest.raises(SpoolReject):
        space.open_folder("se")
    dest = Rejected(root).move(space, "se", SpoolReject(None, "session", "a link"))
    assert os.path.islink(spool / ".rejected" / dest), "the link itself was moved"
    assert _snapshot(outside) == before
    _assert_private(spool)


def test_session_swapped_after_opening_reads_and_deletes_only_what_was_listed(tmp_path, outside):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/victim.jsonl", _jsonl({"role": "user", "content": "the spool's own"}))
    before = _snapshot(outside)
    session = open_spool(spool).open_folder("sp").open_folder("se")
    assert session.names() == ["victim.jsonl"]
    os.rename(spool / "sp/se", tmp_path / "moved-away")
    os.symlink(outside, spool / "sp/se")
    data, st = session.read("victim.jsonl", 1 << 20)
    assert b"the spool's own" in data
    session.unlink_if_same("victim.jsonl", st)
    assert not (tmp_path / "moved-away" / "victim.jsonl").exists()
    assert _snapshot(outside) == before


def test_file_swapped_for_a_link_is_moved_as_the_link(tmp_path, outside):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", _jsonl({"role": "user", "content": "mine"}))
    before = _snapshot(outside)
    root = open_spool(spool)
    session = root.open_folder("sp").open_folder("se")
    assert session.names() == ["1.jsonl"]
    os.unlink(spool / "sp/se/1.jsonl")
    os.symlink(outside / "victim.jsonl", spool / "sp/se/1.jsonl")
    with pytest.raises(SpoolReject, match="symbolic link"):
        session.read("1.jsonl", 1 << 20)
    Rejected(root).move(session, "1.jsonl", SpoolReject(None, None, "a link"))
    assert os.path.islink(spool / ".rejected/sp__se__1.jsonl")
    assert _snapshot(outside) == before


def test_planted_rejected_link_is_set_aside_not_written_through(tmp_path, outside):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", b"junk")
    os.symlink(outside, spool / ".rejected")
    before = _snapshot(outside)
    root = open_spool(spool)
    session = root.open_folder("sp").open_folder("se")
    Rejected(root).move(session, "1.jsonl", SpoolReject(1, None, "junk"))
    assert _snapshot(outside) == before
    assert (spool / ".rejected" / "sp__se__1.jsonl").read_bytes() == b"junk"
    _assert_private(spool)
    [aside] = [p for p in spool.iterdir() if p.name.startswith(".rejected.untrusted-")]
    assert os.path.islink(aside)


def test_wide_rejected_folder_is_made_private(tmp_path):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", b"junk")
    (spool / ".rejected").mkdir(mode=0o777)
    os.chmod(spool / ".rejected", 0o777)
    root = open_spool(spool)
    Rejected(root).move(root.open_folder("sp").open_folder("se"), "1.jsonl",
                        SpoolReject(1, None, "junk"))
    _assert_private(spool)


def test_new_spool_root_is_private_and_an_existing_one_keeps_its_mode(tmp_path):
    open_spool(tmp_path / "new").close()
    assert _mode(tmp_path / "new") == 0o700
    (tmp_path / "shared").mkdir()
    os.chmod(tmp_path / "shared", 0o1777)
    open_spool(tmp_path / "shared").close()
    assert _mode(tmp_path / "shared") == 0o1777


# --- the ingester, with the swap made between its steps ---------------------------------


class _SwapOnOpen:
    """Replace a folder by a symlink just before the walker opens it (after it was listed)."""

    def __init__(self, monkeypatch, target: Path, moved_to: Path, name: str):
        self.swapped = False
        real_open = Folder.open_folder

        def open_folder(folder: Folder, entry: str) -> Folder:
            if entry == name and not self.swapped:
                self.swapped = True
                path = Path(os.readlink(f"/proc/self/fd/{folder.fd}")) / entry
                os.rename(path, moved_to)
                os.symlink(target, path)
            return real_open(folder, entry)

        monkeypatch.setattr(Folder, "open_folder", open_folder)


def _store(tmp_path) -> Store:
    return Store(str(tmp_path / "db.duckdb"))


async def _all_texts(store: Store) -> list[str]:
    out = []
    for session in await store.list_sessions():
        out += [m.body["text"] for m in await store.get_messages(session.id)]
    return out


@pytest.mark.parametrize("level", ["space", "session"])
def test_ingester_never_follows_a_folder_swapped_for_a_link(tmp_path, outside, monkeypatch, level):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", _jsonl({"role": "user", "content": "mine"}))
    before = _snapshot(outside)
    swap = _SwapOnOpen(monkeypatch, outside, tmp_path / "moved-away",
                       "sp" if level == "space" else "se")
    store = _store(tmp_path)
    ing = SpoolIngester(store, spool)
    trio.run(ing.scan_once)
    assert swap.swapped
    assert _snapshot(outside) == before
    texts = trio.run(_all_texts, store)
    assert "SECRET from outside" not in texts
    name = "sp" if level == "space" else "sp__se"
    assert os.path.islink(spool / ".rejected" / name)
    assert "symbolic link" in _sidecars(spool)[name]["reason"]
    _assert_private(spool)
    store.close()


def test_ingester_rejects_links_at_every_level_and_takes_the_rest(tmp_path, outside):
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", _jsonl({"role": "user", "content": "mine"}))
    os.symlink(outside, spool / "evil-space")
    os.symlink(outside, spool / "sp/evil-session")
    os.symlink(outside / "victim.jsonl", spool / "sp/se/0.jsonl")
    before = _snapshot(outside)
    store = _store(tmp_path)
    trio.run(SpoolIngester(store, spool).scan_once)
    assert trio.run(_all_texts, store) == ["mine"]
    assert _snapshot(outside) == before
    side = _sidecars(spool)
    assert set(side) == {"evil-space", "sp__evil-session", "sp__se__0.jsonl"}
    for name, info in side.items():
        assert "symbolic link" in info["reason"], info
        assert os.path.islink(spool / ".rejected" / name)
    _assert_private(spool)
    store.close()


def test_entry_swapped_back_while_being_rejected_is_put_back(tmp_path, outside):
    """The walker saw a link and decided to reject it; by the time it moves the name, the
    writer has put its real folder back: the folder is returned, not rejected."""
    spool = tmp_path / "spool"
    _put(spool / "sp/se/1.jsonl", b"mine")
    root = open_spool(spool)
    space = root.open_folder("sp")
    os.rename(spool / "sp/se", tmp_path / "parked")
    os.symlink(outside, spool / "sp/se")
    link = space.lstat("se")
    os.unlink(spool / "sp/se")
    os.rename(tmp_path / "parked", spool / "sp/se")
    with pytest.raises(Changed):
        Rejected(root).move(space, "se", SpoolReject(None, None, "a link"), link)
    assert (spool / "sp/se/1.jsonl").read_bytes() == b"mine"
    assert not _sidecars(spool)


def test_hard_link_to_an_outside_file_is_rejected_unread(tmp_path, outside):
    spool = tmp_path / "spool"
    (spool / "sp/se").mkdir(parents=True)
    os.link(outside / "victim.jsonl", spool / "sp/se/1.jsonl")
    before = _snapshot(outside)
    store = _store(tmp_path)
    trio.run(SpoolIngester(store, spool).scan_once)
    assert trio.run(_all_texts, store) == []
    assert "hard links" in _sidecars(spool)["sp__se__1.jsonl"]["reason"]
    assert _snapshot(outside) == before
    store.close()


def test_an_unexpected_error_in_one_session_folder_does_not_stop_the_others(
        tmp_path, monkeypatch, caplog):
    spool = tmp_path / "spool"
    for session in ("a", "b", "c"):
        _put(spool / "sp" / session / "1.jsonl", _jsonl({"role": "user", "content": session}))
    real_open = Folder.open_folder
    failures = []

    def open_folder(folder: Folder, name: str) -> Folder:
        if name == "b" and not failures:
            failures.append(name)
            raise RuntimeError("something nobody expected")
        return real_open(folder, name)

    monkeypatch.setattr(Folder, "open_folder", open_folder)
    store = _store(tmp_path)
    ing = SpoolIngester(store, spool)
    trio.run(ing.scan_once)
    assert sorted(trio.run(_all_texts, store)) == ["a", "c"]
    assert "something nobody expected" in caplog.text and "Traceback" in caplog.text
    trio.run(ing.scan_once)
    assert sorted(trio.run(_all_texts, store)) == ["a", "b", "c"]
    store.close()
