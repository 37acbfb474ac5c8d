"""Rules for names: path components, skill names and relative file paths."""

import re
import unicodedata

from .errors import Invalid, NameTooLong

MAX_NAME_BYTES = 255
MAX_SKILL_NAME = 64
MAX_SPACE_NAME = 128
_SKILL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# Like a skill name, with '.', '_' and '@' as separators too ("alice@example.com").
_SPACE_NAME = re.compile(r"^[a-z0-9]+([-._@][a-z0-9]+)*$")
SPACE_NAME_RULE = ("lowercase letters and digits, separated by single '-', '.', '_' or '@' "
                   f"(at most {MAX_SPACE_NAME} characters), e.g. alice or team-ops")


def check_component(name: str) -> str:
    """A single path component as the mount and the API accept it."""
    if not name or name in (".", ".."):
        raise Invalid(f"{name!r} is not a name")
    if "/" in name or "\0" in name:
        raise Invalid(f"{name!r}: a name may not contain '/' or NUL")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise NameTooLong(f"name longer than {MAX_NAME_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{name!r}: names must be valid UTF-8") from None
    if not unicodedata.is_normalized("NFC", name):
        # Two spellings of one name would make two entries that look the same.
        raise Invalid(f"{name!r} is not in Unicode NFC form; write it as "
                      f"{unicodedata.normalize('NFC', name)!r}")
    return name


def check_skill_name(name: str) -> str:
    check_component(name)
    if len(name) > MAX_SKILL_NAME:
        raise NameTooLong(f"skill name {name!r} is longer than {MAX_SKILL_NAME} characters")
    if not _SKILL_NAME.match(name):
        raise Invalid(
            f"skill name {name!r}: use lowercase letters, digits and single hyphens "
            "(no leading or trailing hyphen)"
        )
    return name


def check_space_name(name: str) -> str:
    check_component(name)
    if len(name) > MAX_SPACE_NAME or not _SPACE_NAME.match(name):
        raise Invalid(f"space name {name!r}: use {SPACE_NAME_RULE}")
    return name


def check_rel_path(path: str) -> str:
    """A file path inside a skill: relative, no '..', no empty components."""
    if not path or path.startswith("/"):
        raise Invalid(f"{path!r}: paths are relative to the skill folder")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise Invalid(f"{path!r}: '..', '.' and empty components are not allowed")
        check_component(part)
    return path
