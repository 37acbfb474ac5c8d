"""The content cache: current file contents in memory, bounded in bytes, so a read needs
no query. Kept apart from the tree, which holds only names and attributes."""

from __future__ import annotations

import zlib
from collections import OrderedDict


class ContentCache:
    """Least-recently-used file contents, keyed by (file id, version), bounded in the bytes
    it holds. A cold read from DuckDB costs milliseconds (a query per miss) where the
    floor's costs a few hundred microseconds, so the cache should hold every current file.
    When they would not fit as they are, it keeps them compressed (`compress`, set by the
    store's preload): Markdown compresses two to four times at zlib's fastest level, and
    decompressing a few KB costs tens of microseconds. Each entry says whether it is."""

    LEVEL = 1

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.compress = False
        self._data: OrderedDict[tuple[int, int], tuple[bytes, bool]] = OrderedDict()

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._data

    def get(self, key: tuple[int, int], touch: bool = True) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if touch:
            self._data.move_to_end(key)
        payload, packed = entry
        return zlib.decompress(payload) if packed else payload

    def pack(self, data: bytes) -> tuple[bytes, bool]:
        """What `put_packed` takes: zlib releases the GIL, so a worker thread can do it."""
        return (zlib.compress(data, self.LEVEL), True) if self.compress else (data, False)

    def put(self, key: tuple[int, int], data: bytes) -> None:
        self.put_packed(key, self.pack(data))

    def put_packed(self, key: tuple[int, int], entry: tuple[bytes, bool]) -> None:
        size = len(entry[0])
        if size > self.max_bytes // 4:
            return  # one huge file must not flush the whole cache
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0])
        self._data[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._data.popitem(last=False)
            self.bytes -= len(evicted[0])

    def full(self) -> bool:
        """Whether another file would evict one (a preload stops there)."""
        return self.bytes >= self.max_bytes - self.max_bytes // 64

    def forget(self, key: tuple[int, int]) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])
