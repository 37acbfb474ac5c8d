"""The store: the only code that touches DuckDB.

Every change is one transaction on one worker thread (DuckDB connections are not
thread-safe, and one writer is all a single file needs). After a commit the store updates the
in-memory tree on the trio thread, tells the kernel what it must forget (when the change did
not come through the kernel itself) and tells subscribers (the learner) what happened.

Mutations hold `self._lock` from validation to tree update, so the tree and the database
never disagree; the kernel is told only after the lock is released, because telling it can
wait for FUSE requests that may themselves be waiting for the lock.
"""

from .base import StoreBase
from .files import FilesMixin
from .learning import LearningMixin
from .purging import PurgeMixin
from .rows import *  # noqa: F401,F403  (the rows and events callers use)
from .rows import __all__ as _rows_all
from .sessions import SessionsMixin
from .spaces import SpacesMixin
from .trash import TrashMixin


class Store(SpacesMixin, TrashMixin, FilesMixin, SessionsMixin, LearningMixin, PurgeMixin,
            StoreBase):
    """One DuckDB file: spaces, skills, versioned files, sessions, messages, learning."""


__all__ = ["Store", *_rows_all]
