"""The error boundary around every FUSE handler.

pyfuse3 answers a handler's `FUSEError` with its errno, but any other exception ends
`pyfuse3.main()`: the daemon stops serving and the mount is gone. So each handler of the
Operations class is wrapped once, here: skillfs errors answer with their own errno, a full
disk with ENOSPC, exhausted memory with ENOMEM, and anything unexpected is logged with its
traceback and answered EIO, while the daemon keeps serving.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging

from . import noflush  # noqa: F401  (before pyfuse3: see skillfs/noflush.py)

import pyfuse3

from .errors import SkillfsError

log = logging.getLogger("skillfs.fs")

# forget() gets no reply: an error there can only be logged.
_NO_REPLY = frozenset({"forget"})


def errno_for(exc: BaseException) -> int | None:
    """The errno a FUSE caller gets for `exc`, or None if it is unexpected (a bug, a
    failing database) and deserves a traceback."""
    if isinstance(exc, SkillfsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errno.ENOSPC
    if isinstance(exc, MemoryError):
        return errno.ENOMEM
    return None


def _guard(name: str, handler):
    @functools.wraps(handler)
    async def guarded(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            code = errno_for(e)
            if code is None:
                log.exception("FUSE %s failed; answering EIO", name)
                code = errno.EIO
            elif isinstance(e, SkillfsError):
                # the caller sees only an errno: the log says why
                log.info("FUSE %s refused (%s): %s", name, errno.errorcode.get(code, code),
                         e.message)
            else:
                log.warning("FUSE %s: %s", name, e or type(e).__name__)
            if name in _NO_REPLY:
                return None
            raise pyfuse3.FUSEError(code) from None
    return guarded


def error_boundary(cls: type[pyfuse3.Operations]) -> type[pyfuse3.Operations]:
    """Class decorator: wrap every FUSE handler `cls` defines."""
    for name, member in list(vars(cls).items()):
        if hasattr(pyfuse3.Operations, name) and inspect.iscoroutinefunction(member):
            setattr(cls, name, _guard(name, member))
    return cls
