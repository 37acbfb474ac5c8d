"""Skills as ZIP archives: import (SKILL.md required) and export."""

from __future__ import annotations

import io
import posixpath
import zipfile

from .errors import Invalid, TooBig
from .names import check_rel_path

MAX_ZIP_FILES = 10_000
_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return (any(p in _JUNK_DIRS for p in parts) or parts[-1] in _JUNK_FILES
            or parts[-1].startswith("._"))


def read_skill_zip(data: bytes, max_file_size: int) -> tuple[bytes, dict[str, bytes]]:
    """Return (SKILL.md, other files) from a ZIP. One top folder shared by every entry is
    stripped; macOS and Windows junk is skipped; paths that escape the skill are refused."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise Invalid("not a ZIP archive") from None
    entries = [i for i in zf.infolist() if not i.is_dir() and not _is_junk(i.filename)]
    if len(entries) > MAX_ZIP_FILES:
        raise Invalid(f"ZIP holds more than {MAX_ZIP_FILES} files")
    paths = []
    for info in entries:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/"):
            raise Invalid(f"ZIP entry {info.filename!r} escapes the skill folder")
        paths.append(posixpath.normpath(name))
    tops = {p.split("/", 1)[0] for p in paths}
    strip = len(tops) == 1 and all("/" in p for p in paths)
    files: dict[str, bytes] = {}
    for info, path in zip(entries, paths):
        if strip:
            path = path.split("/", 1)[1]
        check_rel_path(path)
        if info.file_size > max_file_size:
            raise TooBig(f"{path}: {info.file_size} bytes; the limit is {max_file_size}")
        files[path] = zf.read(info)
    skill_md = files.pop("SKILL.md", None)
    if skill_md is None:
        raise Invalid("the ZIP has no SKILL.md at its top level")
    return skill_md, files


def write_skill_zip(name: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            zf.writestr(f"{name}/{path}", files[path])
    return buf.getvalue()
