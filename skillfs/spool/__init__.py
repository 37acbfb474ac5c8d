"""The spool: a directory agents drop session messages into, ingested exactly once.

Layout: ``SPOOL/<space>/<session>/<name>.jsonl`` (one JSON record per line) or ``.json`` (one
record or an array of records). A record is a message (see `skillfs.messages`) or a control
record ``{"event": "end" | "flush"}``. Writers create ``.name`` or ``name.tmp`` and rename it
into place; anything with a component starting with ``.`` or ending in ``.tmp`` is ignored.
A file that cannot be ingested is moved to ``SPOOL/.rejected/`` next to a ``.error.json``
sidecar saying why; nothing is dropped silently.

`parse` turns bytes and names into records or reasons (no I/O), `folders` reaches the spool
only through directory descriptors (its writers may be hostile), `ingest` is the loop that
watches, orders, retries and commits.
"""

from typing import TYPE_CHECKING, Any

from .folders import REJECTED_DIR, Folder, Rejected, open_spool
from .parse import SpoolReject, check_spool_path, file_sha256, parse_spool_bytes

if TYPE_CHECKING:
    from .ingest import IngestedFile, SpoolIngester


def __getattr__(name: str) -> Any:
    # The ingester brings trio and the store: loaded when first asked for, so that a spool
    # writer that only parses (`skillfs hook`) starts without them.
    if name in ("IngestedFile", "SpoolIngester"):
        from . import ingest

        return getattr(ingest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "REJECTED_DIR", "Folder", "IngestedFile", "Rejected", "SpoolIngester", "SpoolReject",
    "check_spool_path", "file_sha256", "open_spool", "parse_spool_bytes",
]
