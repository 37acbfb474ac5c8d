"""Skills as ZIP archives: import (SKILL.md required) and export.

An uploaded ZIP is untrusted: its sizes, ratios and checksums are claims. Entries are
inflated in chunks and counted as they come, so a bomb stops at the first limit it passes
instead of filling memory, and every way an archive can be broken or hostile is a 4xx that
says why.
"""

from __future__ import annotations

import io
import posixpath
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .errors import Exists, Invalid, TooBig
from .names import check_rel_path

_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_CHUNK = 64 << 10
_DIR_ENTRY_BYTES = 512  # generous for one directory entry: 46 bytes, a name, extra fields


class BadZip(Invalid):
    """The archive is broken or uses what skillfs does not read (400 on both APIs)."""

    http_status = 400


@dataclass(frozen=True)
class ZipLimits:
    max_file_size: int  # one file, inflated (the store's file cap)
    max_files: int = 10_000
    max_total: int = 64 << 20  # all files, inflated
    max_ratio: int = 200  # inflated / compressed, for an entry past ratio_floor
    ratio_floor: int = 64 << 10


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return (any(p in _JUNK_DIRS for p in parts) or parts[-1] in _JUNK_FILES
            or parts[-1].startswith("._"))


def _open(data: bytes | BinaryIO, limits: ZipLimits) -> zipfile.ZipFile:
    fp = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        # The end record's entry count and directory size, before zipfile builds an object
        # for each entry (hundreds of thousands fit in a body under the cap). zipfile reads
        # the whole directory whatever the count says, so its size is bounded too.
        # (zipfile's own end-record reader and its field indices: private, not in typeshed)
        end = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
        count_at = zipfile._ECD_ENTRIES_TOTAL  # type: ignore[attr-defined]
        size_at = zipfile._ECD_SIZE  # type: ignore[attr-defined]
        if end and end[count_at] > limits.max_files:
            raise BadZip(f"ZIP holds more than {limits.max_files} entries")
        if end and end[size_at] > limits.max_files * _DIR_ENTRY_BYTES:
            raise BadZip(f"ZIP's directory is over {limits.max_files * _DIR_ENTRY_BYTES} "
                         "bytes")
        return zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError, ValueError,
            EOFError, OSError, struct.error) as e:
        raise BadZip(f"not a readable ZIP archive ({e})") from None


def _entry_paths(entries: list[zipfile.ZipInfo]) -> list[str]:
    """Paths relative to the skill folder: one top folder shared by every entry is
    stripped; paths that escape the skill, duplicates and file/folder clashes are refused."""
    paths = []
    for info in entries:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/"):
            raise BadZip(f"ZIP entry {info.filename!r} escapes the skill folder")
        paths.append(posixpath.normpath(name))
    if len({p.split("/", 1)[0] for p in paths}) == 1 and all("/" in p for p in paths):
        paths = [p.split("/", 1)[1] for p in paths]
    seen: set[str] = set()
    for path in paths:
        check_rel_path(path)
        if path in seen:
            raise BadZip(f"ZIP holds {path!r} twice")
        seen.add(path)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise Exists(f"ZIP holds {'/'.join(parts[:i])!r} both as a file and as "
                             f"the folder of {path!r}")
    return paths


def _check_entry(info: zipfile.ZipInfo, path: str, limits: ZipLimits) -> None:
    """Refuse what the central directory already gives away, before inflating anything."""
    if info.flag_bits & 0x1:
        raise BadZip(f"{path}: encrypted ZIP entries are not supported")
    if info.compress_type not in _METHODS:
        raise BadZip(f"{path}: compression method {info.compress_type} is not supported "
                     "(only stored and deflate)")
    if info.file_size > limits.max_file_size:
        raise TooBig(f"{path}: {info.file_size} bytes; the limit is {limits.max_file_size}")


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, limits: ZipLimits,
             budget: int) -> bytes:
    """One entry, inflated a chunk at a time and held to every limit as it grows."""
    chunks, size = [], 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                size += len(chunk)
                if size > limits.max_file_size:
                    raise TooBig(f"{path}: more than {limits.max_file_size} bytes")
                if size > budget:
                    raise TooBig(f"the ZIP inflates to more than {limits.max_total} bytes")
                if size > limits.ratio_floor and \
                        size > limits.max_ratio * max(info.compress_size, 1):
                    raise BadZip(f"{path}: inflates more than {limits.max_ratio} times "
                                 "its compressed size")
                chunks.append(chunk)
    except zipfile.BadZipFile as e:
        raise BadZip(f"{path}: {e}") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError,
            OSError) as e:
        raise BadZip(f"{path}: corrupt entry ({e})") from None
    if size != info.file_size:
        raise BadZip(f"{path}: inflates to {size} bytes, not the {info.file_size} it "
                     "declares")
    return b"".join(chunks)


def read_skill_zip(data: bytes | BinaryIO, max_file_size: int
                   ) -> tuple[bytes, dict[str, bytes]]:
    """Return (SKILL.md, other files) from a ZIP. macOS and Windows junk is skipped."""
    limits = ZipLimits(max_file_size=max_file_size)
    with _open(data, limits) as zf:
        entries = [i for i in zf.infolist() if not i.is_dir() and not _is_junk(i.filename)]
        if len(entries) > limits.max_files:
            raise BadZip(f"ZIP holds more than {limits.max_files} files")
        paths = _entry_paths(entries)
        for info, path in zip(entries, paths, strict=True):
            _check_entry(info, path, limits)
        files: dict[str, bytes] = {}
        budget = limits.max_total
        for info, path in zip(entries, paths, strict=True):
            files[path] = _inflate(zf, info, path, limits, budget)
            budget -= len(files[path])
    skill_md = files.pop("SKILL.md", None)
    if skill_md is None:
        raise BadZip("the ZIP has no SKILL.md at its top level")
    return skill_md, files


def write_skill_zip(name: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            zf.writestr(f"{name}/{path}", files[path])
    return buf.getvalue()
