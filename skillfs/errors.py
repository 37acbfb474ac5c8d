"""Errors shared by the store, the mount and the API.

Each carries an errno so the mount can answer with it and an HTTP status so the API can.
"""

import errno


class SkillfsError(Exception):
    errno = errno.EIO
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(SkillfsError):
    errno = errno.ENOENT
    http_status = 404


class Exists(SkillfsError):
    errno = errno.EEXIST
    http_status = 409


class Conflict(SkillfsError):
    """A state conflict other than a name clash (e.g. a session already learning elsewhere)."""

    errno = errno.EBUSY
    http_status = 409


class Invalid(SkillfsError):
    errno = errno.EINVAL
    http_status = 422


class NameTooLong(Invalid):
    errno = errno.ENAMETOOLONG


class TooBig(SkillfsError):
    errno = errno.EFBIG
    http_status = 413


class NotEmpty(SkillfsError):
    errno = errno.ENOTEMPTY
    http_status = 409


class Forbidden(SkillfsError):
    """An operation the layout does not allow (e.g. deleting SKILL.md)."""

    errno = errno.EPERM
    http_status = 403


class StaleVersion(SkillfsError):
    """An edit was computed against a version that is no longer current."""

    errno = errno.EAGAIN
    http_status = 409


class WriteConflict(SkillfsError):
    """Another daemon sharing the database changed the same thing first: nothing was
    written, and this daemon's tree catches up at once (a retry sees the other's change)."""

    errno = errno.ESTALE
    http_status = 409


class StorageFull(SkillfsError):
    """The disk under the database (or its spill directory) is full. Nothing was changed;
    the same call can succeed once space is freed."""

    errno = errno.ENOSPC
    http_status = 507


class Unavailable(SkillfsError):
    """The database cannot take changes right now (it failed and is being reopened, or it
    is out of memory). Reads served from memory still work."""

    errno = errno.EIO
    http_status = 503


class OutOfMemory(Unavailable):
    """The database ran out of its memory limit (`duckdb_memory`) for this call; smaller
    calls, or the same one later, may fit."""


class ConfigError(Exception):
    """A setting that is unknown or has a bad value; the text names it and its source.
    (Here, not in config.py, so that what reads a path without the typed configuration can
    catch it without importing pydantic-settings.)"""
