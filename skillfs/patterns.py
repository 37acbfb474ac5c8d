"""Patterns and globs as search, glob and purge run them, apart from the search engine so
that the store (purge) can compile them without importing the engine that reads the store.

RE2 (google-re2): matching is linear in the text whatever the pattern; what RE2 does not do
(backreferences, look-around) is refused when the pattern is compiled, with RE2's reason.
Globs are wcmatch's, translated to regular expressions once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import re2
from wcmatch import glob as wcglob

from .errors import Invalid

MAX_PATTERN = 4096  # characters of a pattern or a glob
_GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.DOTMATCH | wcglob.BRACE | wcglob.MATCHBASE
_ANYWHERE = re2._Anchor.UNANCHORED


class SearchError(Invalid):
    """A pattern or glob that is invalid or refused; the message says why."""

    http_status = 400


class Pattern:
    """A compiled pattern and what finds its lines in a file's content."""

    def __init__(self, regexp: re2._Regexp) -> None:
        self.regexp = regexp
        self._match = regexp._regexp.Match  # spans only: no match object per call

    def span(self, content: bytes, pos: int, end: int) -> tuple[int, int]:
        """The first match in content[pos:end], or (-1, -1); what lies around that range
        is its context (for ^, $ and \\b)."""
        return self._match(_ANYWHERE, content, pos, end)[0]

    def lines(self, content: bytes) -> Iterator[tuple[int, int, int, int]]:
        """(line number, line start, line end, match start) of each line that matches."""
        pos, end = 0, len(content)
        line_no, counted = 1, 0
        while pos < end:
            start, stop = self.span(content, pos, end)
            if start < 0:
                return
            line_start = content.rfind(b"\n", 0, start) + 1
            line_end = content.find(b"\n", start)
            line_end = end if line_end < 0 else line_end
            if stop > line_end:  # across a newline: the line alone decides
                start = self.span(content, line_start, line_end)[0]
            if start >= 0:
                line_no += content.count(b"\n", counted, line_start)
                counted = line_start
                yield line_no, line_start, line_end, start
            pos = line_end + 1


def compile_pattern(pattern: str, *, fixed: bool = False,
                    ignore_case: bool = False) -> Pattern:
    """The pattern as RE2 runs it, on UTF-8 bytes; SearchError says what is wrong."""
    if len(pattern) > MAX_PATTERN:
        raise SearchError(f"the pattern is {len(pattern)} characters; at most {MAX_PATTERN}")
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    options.literal = fixed
    try:
        encoded = pattern.encode()
    except UnicodeEncodeError:
        raise SearchError(f"{pattern!r} is not valid Unicode") from None
    # (?m): ^ and $ at each line's start and end, as grep reads lines.
    text = encoded if fixed else b"(?m)" + encoded
    try:
        return Pattern(re2.compile(text, options))
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(
            e.args[0], bytes) else str(e)
        raise SearchError(f"{pattern!r} is not a regular expression RE2 can run: {reason}"
                          + _hint(reason)) from None


def _hint(reason: str) -> str:
    if "invalid escape sequence: \\" in reason and reason[-1:].isdigit():
        return " (backreferences need backtracking, which RE2 never does)"
    if "invalid perl operator: (?" in reason:
        return " (look-ahead and look-behind need backtracking, which RE2 never does)"
    return ""


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Whether a path relative to the space (`skill/file`) matches the glob."""
    if len(pattern) > MAX_PATTERN:
        raise SearchError(f"the glob is {len(pattern)} characters; at most {MAX_PATTERN}")
    if not pattern or pattern.startswith("/"):
        raise SearchError(f"{pattern!r} is not a glob relative to the space "
                          "(e.g. 'daily-logs/*.md')")
    try:
        include, _ = wcglob.translate(pattern, flags=_GLOB_FLAGS)
        compiled = [re.compile(p) for p in include]
    except (ValueError, re.error) as e:
        raise SearchError(f"{pattern!r} is not a glob: {e}") from None
    except Exception as e:  # wcmatch's PatternLimitException, not public: too many braces
        if type(e).__name__ != "PatternLimitException":
            raise
        raise SearchError(f"{pattern!r} expands to too many globs ({e})") from None
    return lambda path: any(p.match(path) for p in compiled)
