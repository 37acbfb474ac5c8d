"""The store: the only code that touches the database.

`Store` (store.py) is the composition root: a `Database` part (the connection, its worker
thread, transactions; the only code that knows DuckDB's dialect), the in-memory index (the
tree and the content cache), and services that each own one kind of data, given what they
need in their constructors (context.py says what they share).

Every change is one transaction on one worker thread (DuckDB connections are not
thread-safe, and one writer is all a single file needs). After a commit the store updates the
in-memory index on the trio thread and tells its subscribers what changed (events.py): the
mount turns that into kernel invalidations, the learner into work.

Mutations hold the context's lock from validation to index update, so the index and the
database never disagree; subscribers are told only after the lock is released, because the
mount's invalidation can wait for FUSE requests that may themselves be waiting for it.
"""

from .events import *  # noqa: F401,F403  (the events subscribers get)
from .events import __all__ as _events_all
from .rows import *  # noqa: F401,F403  (the rows callers use)
from .rows import __all__ as _rows_all
from .store import Store

__all__ = ["Store", *_rows_all, *_events_all]
