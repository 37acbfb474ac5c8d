"""POSIX file semantics through the real kernel: handles of one file share one state.

Concurrent appenders from several processes, several handles in one process, truncation
with a writer open, readers during a rewrite (never a content nobody wrote), how many
versions a shell redirect makes, over-long names and over-size writes.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run

# every test works in a space of its own: one daemon serves the module
pytestmark = pytest.mark.xdist_group("posix")


@pytest.fixture
def daemon(shared_daemon):
    return shared_daemon

APPENDER = """
import os, sys
path, tag = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for i in range(100):
    line = f"{tag}:{i:03d}:" + tag * 40 + "\\n"
    assert os.write(fd, line.encode()) == len(line)
os.close(fd)
"""


def _versions(daemon, path: Path) -> list[int]:
    rows = json.loads(daemon.cli("log", str(path), "--json").stdout)
    return [r["version"] for r in rows]


def test_appends_from_four_processes_keep_every_line(space):
    f = space / "daily-logs" / "shared.md"
    f.write_text("")
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(f), tag])
             for tag in "abcd"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = f.read_text().splitlines()
    assert len(lines) == 400
    for tag in "abcd":
        mine = [line for line in lines if line.startswith(tag + ":")]
        assert mine == [f"{tag}:{i:03d}:" + tag * 40 for i in range(100)]
    assert os.stat(f).st_size == 400 * len("a:000:" + "a" * 40 + "\n")


def test_two_append_handles_in_one_process_see_each_other(space):
    f = space / "daily-logs" / "two.md"
    f.write_text("head\n")
    fd1 = os.open(f, os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd1, b"one\n")
        os.write(fd2, b"two\n")
        os.write(fd1, b"three\n")
        # a third handle, and a stat, see the shared state before anyone closes
        assert f.read_bytes() == b"head\none\ntwo\nthree\n"
        assert os.stat(f).st_size == len(b"head\none\ntwo\nthree\n")
    finally:
        os.close(fd1)
        os.close(fd2)
    assert f.read_bytes() == b"head\none\ntwo\nthree\n"


def test_handles_share_writes_and_truncation(space):
    f = space / "daily-logs" / "rw.md"
    f.write_bytes(b"0123456789")
    a = os.open(f, os.O_RDWR)
    b = os.open(f, os.O_RDWR)
    try:
        os.pwrite(a, b"AB", 2)
        assert os.pread(b, 100, 0) == b"01AB456789"
        os.ftruncate(b, 4)
        assert os.pread(a, 100, 0) == b"01AB"
        assert os.fstat(a).st_size == 4
    finally:
        os.close(a)
        os.close(b)
    assert f.read_bytes() == b"01AB"


def test_truncate_on_path_with_a_writer_open_holds(space):
    f = space / "daily-logs" / "trunc.md"
    f.write_bytes(b"A" * 100)
    fd = os.open(f, os.O_WRONLY)
    try:
        os.write(fd, b"x" * 20)
        os.truncate(f, 10)
        assert os.stat(f).st_size == 10
        assert f.read_bytes() == b"x" * 10
    finally:
        os.close(fd)
    assert f.read_bytes() == b"x" * 10
    assert os.stat(f).st_size == 10
    # what the handle writes after the truncation lands at its own offset
    fd = os.open(f, os.O_WRONLY)
    try:
        os.write(fd, b"y" * 20)
        os.truncate(f, 10)
        os.write(fd, b"YY")
    finally:
        os.close(fd)
    assert f.read_bytes() == b"y" * 10 + b"\0" * 10 + b"YY"


def test_readers_see_the_writers_content_after_o_trunc(space):
    f = space / "daily-logs" / "ab.md"
    with open(f, "wb") as fh:
        fh.write(b"A" * 100)
    assert f.read_bytes() == b"A" * 100  # cached in the kernel now
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    try:
        assert f.read_bytes() == b""
        os.write(fd, b"B" * 4)
        assert f.read_bytes() == b"BBBB"
        assert run("cat", str(f)).stdout == "BBBB"
    finally:
        os.close(fd)
    assert f.read_bytes() == b"BBBB"
    assert os.stat(f).st_size == 4


TORN_WRITER = """
import sys
path, rounds, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(rounds):
    with open(path, "wb") as fh:
        fh.write(bytes([65 + k % 26]) * size)
"""

TORN_READER = """
import subprocess, sys
path, reads, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad = 0
for _ in range(reads):
    out = subprocess.run(["cat", path], capture_output=True, check=True).stdout
    # a version is one byte repeated `size` times; between O_TRUNC and the write the file
    # is empty, which the writer's open made real
    if out and (len(out) != size or out.count(out[:1]) != size):
        bad += 1
        print(len(out), sorted(set(out)), file=sys.stderr)
sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("size", [3000, 3 * 4096 + 1000])
def test_no_torn_reads_while_a_file_is_rewritten(space, size):
    f = space / "daily-logs" / "torn.md"
    f.write_bytes(b"@" * size)
    writer = subprocess.Popen([sys.executable, "-c", TORN_WRITER, str(f), "400", str(size)])
    readers = [subprocess.Popen([sys.executable, "-c", TORN_READER, str(f), "300", str(size)],
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert writer.wait(timeout=300) == 0
    for r in readers:
        _, err = r.communicate(timeout=300)
        assert r.returncode == 0, f"torn reads:\n{err[:2000]}"
    assert f.read_bytes() == bytes([65 + 399 % 26]) * size


def test_shell_redirect_makes_one_version(daemon, space):
    f = space / "daily-logs" / "redirect.md"
    f.write_text("old\n")
    assert _versions(daemon, f) == [1]
    run("sh", "-c", f"echo hi > '{f}'")
    time.sleep(0.3)  # a release-time commit, if one were made, lands after close()
    assert f.read_text() == "hi\n"
    assert _versions(daemon, f) == [1, 2]
    run("sh", "-c", f": > '{f}'")  # a truncation alone is a version too, one
    time.sleep(0.3)
    assert f.read_bytes() == b""
    assert _versions(daemon, f) == [1, 2, 3]
    new = space / "daily-logs" / "fresh.md"
    run("sh", "-c", f"echo new > '{new}'")
    time.sleep(0.3)
    assert _versions(daemon, new) == [1]


def test_names_over_255_bytes_are_enametoolong(space):
    d = space / "daily-logs"
    long = "x" * 300
    (d / "short.md").write_text("s")
    calls = [
        lambda: os.stat(d / long),
        lambda: os.mkdir(d / long),
        lambda: os.unlink(d / long),
        lambda: os.rmdir(d / long),
        lambda: os.rename(d / "short.md", d / long),
        lambda: os.open(d / long, os.O_WRONLY | os.O_CREAT),
        lambda: os.stat(space / long),
    ]
    for call in calls:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.ENAMETOOLONG
    assert (d / "short.md").read_text() == "s"
    # 255 bytes is allowed
    (d / ("y" * 252 + ".md")).write_text("ok")
    assert (d / ("y" * 252 + ".md")).read_text() == "ok"


def test_over_size_write_leaves_the_file_as_it_was(daemon, space):
    d = space / "daily-logs"
    f = d / "keep.md"
    f.write_text("keep\n")
    r = run("sh", "-c", f"head -c 2M /dev/urandom > '{f}'", check=False)
    assert r.returncode != 0 and "too large" in r.stderr.lower()
    assert os.stat(f).st_size == 5
    assert f.read_bytes() == b"keep\n"
    assert run("ls", "-l", str(f)).stdout.split()[4] == "5"
    time.sleep(0.3)
    assert _versions(daemon, f) == [1]
    # a new file refused this way is not left behind, and leaves no history
    new = d / "new.md"
    r = run("sh", "-c", f"head -c 2M /dev/urandom > '{new}'", check=False)
    assert r.returncode != 0
    assert not new.exists()
    assert "new.md" not in os.listdir(d)
    assert daemon.cli("log", str(new), check=False).returncode != 0
    # and the file takes writes again
    f.write_text("after\n")
    assert f.read_text() == "after\n"
    assert _versions(daemon, f) == [1, 2]


def test_warm_reads_of_an_untouched_file_stay_in_the_kernel(daemon, space):
    """keep_cache on read handles: re-reading a file the daemon answered once costs opens
    only, no READ replies (measured by the bytes the daemon writes to /dev/fuse)."""
    f = space / "daily-logs" / "warm.md"
    body = b"w" * (64 << 10)
    f.write_bytes(body)
    time.sleep(0.3)  # the commit's own invalidation lands first
    assert f.read_bytes() == body

    def daemon_wchar() -> int:
        with open(f"/proc/{daemon.pid}/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar"))

    before = daemon_wchar()
    for _ in range(50):
        assert run("cat", str(f)).stdout.encode() == body
    spent = daemon_wchar() - before
    assert spent < len(body), f"the daemon wrote {spent} bytes for 50 warm reads"


def test_append_handles_write_at_the_shared_end_whatever_offset_the_kernel_sent(tmp_path):
    """Without the kernel: an O_APPEND write with a stale offset still lands at the end."""
    from test_fuse_errors import _new_file, _read_all, _run, _skill_dir

    async def scenario(fs, store):
        ino = await _new_file(fs, await _skill_dir(fs, store), b"a.md", b"head\n")
        a = (await fs.open(ino, os.O_WRONLY | os.O_APPEND, None)).fh
        b = (await fs.open(ino, os.O_WRONLY | os.O_APPEND, None)).fh
        await fs.write(a, 5, b"one\n")
        await fs.write(b, 5, b"two\n")  # the size b's kernel view last had
        assert (await fs.getattr(ino, None)).st_size == 13
        assert await _read_all(fs, ino) == b"head\none\ntwo\n"
        await fs.flush(a)
        await fs.release(a)
        await fs.release(b)
        assert await _read_all(fs, ino) == b"head\none\ntwo\n"
        node = fs.inodes.objects[ino]
        assert [row.version for row in await store.file_log(node.skill_id, node.path)] == [1, 2]

    _run(tmp_path, scenario)
