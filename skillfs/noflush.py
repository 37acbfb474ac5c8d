"""Loads skillfs._noflush (see its C source) so read-only opens skip the FLUSH round trip.

Import this module before pyfuse3: the library must be in the global symbol scope when
pyfuse3's extension is loaded, or pyfuse3 binds to libfuse's own fuse_reply_open.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)

BIT = 1 << 62


def _load():
    if os.environ.get("SKILLFS_NOFLUSH", "1") == "0":
        return None
    if "pyfuse3" in sys.modules:
        log.warning("pyfuse3 was imported before skillfs.noflush; close() will cost a FLUSH")
        return None
    spec = importlib.util.find_spec("skillfs._noflush")
    if spec is None or not spec.origin:
        return None
    try:
        ctypes.CDLL(spec.origin, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        from . import _noflush
    except (OSError, ImportError) as e:
        log.warning("cannot load %s: %s", spec.origin, e)
        return None
    return _noflush


_lib = _load()
ACTIVE = _lib is not None


def replies() -> int:
    """How many opens were answered with noflush (0 when inactive)."""
    return _lib.replies() if _lib is not None else 0
